"""Two toy tasks and one of each kind of completion, for tests that compare scoring backends.

Each task has a fast reference and a slow loop; the completions are the fast code, a copy of the slow
code, a wrong answer, a syntax error and (for the first task) one that sleeps past a 1 s time limit
but would pass under the service's default 5 s. Costs are meant to be counted in `python_events`,
which is deterministic, so backends must agree exactly.
"""

from __future__ import annotations

from rewards.settings import RewardSettings
from rewards.tasks import Task
from sandbox.types import FunctionTest

DATASET = "toy"

TASKS = (
    Task(
        id="toy/total",
        prompt="Write total(n), the sum of 0..n-1.",
        entry_point="total",
        function_tests=tuple(FunctionTest((n,), n * (n - 1) // 2) for n in (0, 7, 150, 300)),
        references=("def total(n):\n    return n * (n - 1) // 2\n",),
        metadata={"slow": "def total(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"},
    ),
    Task(
        id="toy/squares",
        prompt="Write squares(n), the sum of i*i for i in 0..n-1.",
        entry_point="squares",
        function_tests=tuple(FunctionTest((n,), sum(i * i for i in range(n))) for n in (1, 9, 120, 240)),
        references=("def squares(n):\n    return (n - 1) * n * (2 * n - 1) // 6\n",),
        metadata={
            "slow": "def squares(n):\n    s = 0\n    i = 0\n    while i < n:\n        s += i * i\n"
            "        i += 1\n    return s\n"
        },
    ),
)


def fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}```\n"


def completions() -> tuple[list[Task], list[str], list[int]]:
    """(tasks, completions, group ids): every kind of completion for each task, one group per task."""
    tasks, texts, groups = [], [], []
    for group, task in enumerate(TASKS):
        name = task.entry_point
        kinds = [
            fenced(task.reference or ""),
            fenced(task.metadata["slow"]),
            fenced(f"def {name}(n):\n    return n\n"),
            fenced(f"def {name}(n) return n\n"),
        ]
        if group == 0:
            kinds.append(
                fenced(f"import time\n\ndef {name}(n):\n    time.sleep(4)\n    return n * (n - 1) // 2\n")
            )
        tasks += [task] * len(kinds)
        texts += kinds
        groups += [group] * len(kinds)
    return tasks, texts, groups


def task_source(name: str, split: str | None) -> list[Task]:
    """A reward service's ``(dataset, split) -> tasks`` serving the toy tasks."""
    if name != DATASET:
        raise ValueError(f"unknown dataset {name!r}; this test serves only {DATASET!r}")
    return list(TASKS)


# Shaping unlike the service's defaults (weight 0.5, clip 4, no format score, 5 s limit), so that a
# backend scoring with its own defaults gives other numbers.
SETTINGS = RewardSettings(
    efficiency_weight=1.0,
    speedup_clip=3.0,
    format_weight=0.25,
    timeout_penalty=-0.25,
    cost_measure="python_events",
    # Room for the slow copies on a loaded machine, and still below the service's 5 s, which the
    # 4 s sleeper above would pass under: a backend ignoring the request's limit fails the test.
    timeout_s=2.5,
    memory_mb=512,
    workers=2,
)
