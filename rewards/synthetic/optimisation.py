"""Code-optimisation variants of the synthetic tasks: the prompt shows a correct but slow solution.

The same problems, tests and fast references as :func:`rewards.synthetic.synthetic_tasks`; only the
prompt changes. It adds the naive solution and asks for a faster one with the same behaviour, the
setting of code-optimisation benchmarks (PIE's performance-improving edits, EffiBench-style
"make it faster" tasks) and of efficiency-aware tuning data such as Effi-Code's.

Why offer it: writing a task from scratch is mostly out of reach for very small models (the built-in
SmolLM2-135M passes well under 1% of the from-scratch held-out tasks greedily), so a reward for speed
rarely fires. Starting from working code, a small model is usually correct (it can copy), and the
efficiency reward then has correct samples of differing cost to rank: the signal RL needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from rewards.synthetic.generate import synthetic_tasks
from rewards.tasks import Task

DATASET_NAME = "synthetic_optimise"


def optimisation_prompt(task: Task) -> str:
    """``task``'s prompt followed by its slow solution and the request to make it faster."""
    slow = task.metadata["slow_reference"].rstrip() + "\n"
    return (
        f"{task.prompt.rstrip()}\n\nThis version is correct but slow:\n```python\n{slow}```\n"
        f"Write a faster `{task.entry_point}` with exactly the same behaviour."
    )


def optimisation_task(task: Task) -> Task:
    """The optimisation variant of one synthetic task (its own id, so caches keep them apart)."""
    if "slow_reference" not in task.metadata or not task.entry_point:
        raise ValueError(f"task {task.id} has no slow reference to show; only synthetic tasks do")
    return dataclasses.replace(
        task,
        id=task.id.replace("synthetic/", f"{DATASET_NAME}/", 1),
        prompt=optimisation_prompt(task),
        metadata={**task.metadata, "source": DATASET_NAME, "shows_slow_solution": True},
    )


def optimisation_tasks(
    split: str = "train", n: int | None = None, seed: int = 0, families: Sequence[str] | None = None
) -> list[Task]:
    """:func:`synthetic_tasks` with prompts that show the slow solution (same arguments)."""
    return [optimisation_task(t) for t in synthetic_tasks(split, n=n, seed=seed, families=families)]
