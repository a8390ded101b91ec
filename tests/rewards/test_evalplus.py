"""HumanEval+ and MBPP+ loaders on small subsets of the real release files."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from rewards.datasets import load_humanevalplus, load_mbppplus, load_tasks
from rewards.datasets.evalplus import read_release
from rewards.datasets.mbppplus import restore_types
from rewards.tasks import Task
from sandbox import Sandbox, SandboxConfig, Status


def subset(source: Path, task_ids: Sequence[str], target: Path) -> Path:
    """A release file holding only ``task_ids`` (in the release's order)."""
    records = [r for r in read_release(source) if r["task_id"] in task_ids]
    assert len(records) == len(task_ids), "a task id of the test is not in the release"
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(target, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return target


def by_id(tasks: list[Task]) -> dict[str, Task]:
    return {t.id: t for t in tasks}


HUMANEVAL_IDS = ("HumanEval/0", "HumanEval/32", "HumanEval/53")
MBPP_IDS = ("Mbpp/2", "Mbpp/124", "Mbpp/252", "Mbpp/580", "Mbpp/722", "Mbpp/737", "Mbpp/120")


@pytest.fixture(scope="module")
def humaneval_tasks(
    humanevalplus_file: Path, box: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> list[Task]:
    root = tmp_path_factory.mktemp("heplus")
    path = subset(humanevalplus_file, HUMANEVAL_IDS, root / "HumanEvalPlus.jsonl.gz")
    # Perf tests have their own tests (test_perf_inputs.py, test_perf_variants.py).
    return load_humanevalplus(path, sandbox=box, cache_dir=root / "cache", perf_tests=False)


@pytest.fixture(scope="module")
def mbpp_tasks(mbppplus_file: Path, box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> list[Task]:
    root = tmp_path_factory.mktemp("mbppplus")
    path = subset(mbppplus_file, MBPP_IDS, root / "MbppPlus.jsonl.gz")
    return load_mbppplus(path, sandbox=box, cache_dir=root / "cache", perf_tests=False)


def test_humanevalplus_task_fields(humaneval_tasks: list[Task], humanevalplus_file: Path) -> None:
    records = {r["task_id"]: r for r in read_release(humanevalplus_file) if r["task_id"] in HUMANEVAL_IDS}
    for task in humaneval_tasks:
        record = records[task.id]
        assert task.prompt == record["prompt"] and task.entry_point == record["entry_point"]
        assert task.n_base_tests == len(record["base_input"])
        assert len(task.function_tests) == len(record["base_input"]) + len(record["plus_input"])
        assert [list(t.args) for t in task.function_tests[:3]] == record["base_input"][:3]
        assert task.references == (record["prompt"] + record["canonical_solution"],)
        assert task.test_script == f"{record['test']}\n\ncheck({record['entry_point']})\n"
        assert task.metadata["source"] == "humanevalplus" and task.metadata["contract"] == record["contract"]
    tasks = by_id(humaneval_tasks)
    assert tasks["HumanEval/0"].atol is None
    assert (
        tasks["HumanEval/32"].atol == pytest.approx(1e-4)
        and tasks["HumanEval/32"].metadata["oracle"] == "poly_root"
    )


def test_expected_outputs_match_running_the_reference_here(humaneval_tasks: list[Task]) -> None:
    for task in humaneval_tasks:
        namespace: dict = {}
        exec(task.references[0], namespace)  # dataset code, trusted
        for test in task.function_tests[:: max(1, len(task.function_tests) // 20)]:
            assert namespace[task.entry_point](*test.args) == pytest.approx(test.expected)


def test_reference_passes_and_a_mutant_fails_both_test_kinds(
    humaneval_tasks: list[Task], box: Sandbox
) -> None:
    task = by_id(humaneval_tasks)["HumanEval/0"]
    assert box.run_function_tests(task.reference, task.entry_point, task.function_tests, atol=task.atol).ok
    assert box.run_script(task.reference, task.test_script).ok
    wrong = task.reference.replace("return True", "return 1 > 2")
    assert wrong != task.reference
    assert (
        box.run_function_tests(wrong, task.entry_point, task.function_tests, atol=task.atol).status
        is Status.FAILED
    )
    assert box.run_script(wrong, task.test_script).status is Status.FAILED
    # A subtler mutant slips through HumanEval's own assertions; the plus inputs catch it.
    subtle = task.reference.replace("< threshold", "<= threshold")
    assert box.run_script(subtle, task.test_script).ok
    result = box.run_function_tests(subtle, task.entry_point, task.function_tests, atol=task.atol)
    assert result.status is Status.FAILED and 0 < result.passed < result.total


def test_mbppplus_restores_tuples_sets_and_complex_numbers(mbpp_tasks: list[Task]) -> None:
    tasks = by_id(mbpp_tasks)
    assert all(type(a) is tuple for t in tasks["Mbpp/2"].function_tests for a in t.args)
    assert all(
        type(t.args[0]) is float and type(t.args[1]) is complex for t in tasks["Mbpp/124"].function_tests
    )
    assert all(type(t.args[0]) is complex for t in tasks["Mbpp/252"].function_tests)
    nested = tasks["Mbpp/580"].function_tests[0].args[0]
    assert nested == (4, 5, (7, 6, (2, 4)), 6, 8)
    assert all(type(v) is tuple for t in tasks["Mbpp/722"].function_tests for v in t.args[0].values())
    assert tasks["Mbpp/2"].metadata["oracle"] == "set_equal"
    assert tasks["Mbpp/2"].references == (tasks["Mbpp/2"].metadata["canonical_solution"],)


def test_mbppplus_match_object_tasks_expect_booleans(mbpp_tasks: list[Task], box: Sandbox) -> None:
    task = by_id(mbpp_tasks)["Mbpp/737"]
    assert task.metadata["oracle"] == "not_none"
    assert {type(t.expected) for t in task.function_tests} == {bool}
    assert {t.expected for t in task.function_tests} == {True, False}
    assert box.run_function_tests(task.reference, task.entry_point, task.function_tests).ok
    # The canonical solution returns re.Match objects: the documented false negative of function tests...
    original = task.metadata["canonical_solution"]
    assert not box.run_function_tests(original, task.entry_point, task.function_tests).ok
    # ...which the assertion script, testing truthiness, accepts.
    assert box.run_script(original, task.test_script).ok


def test_mbppplus_assertion_scripts_get_math_imported(mbpp_tasks: list[Task], box: Sandbox) -> None:
    task = by_id(mbpp_tasks)["Mbpp/120"]
    assert task.test_script is not None and task.test_script.startswith("import math\n")
    assert box.run_script(task.reference, task.test_script).ok


def test_all_subset_references_pass_their_function_tests(
    humaneval_tasks: list[Task], mbpp_tasks: list[Task], box: Sandbox
) -> None:
    for task in humaneval_tasks + mbpp_tasks:
        result = box.run_function_tests(task.reference, task.entry_point, task.function_tests, atol=task.atol)
        assert result.ok, (task.id, result.error)


def test_second_load_comes_from_the_cache(mbppplus_file: Path, box: Sandbox, tmp_path: Path) -> None:
    path = subset(mbppplus_file, ("Mbpp/2", "Mbpp/580"), tmp_path / "MbppPlus.jsonl.gz")
    first = load_mbppplus(path, sandbox=box, cache_dir=tmp_path / "cache")
    closed = Sandbox(SandboxConfig(workers=1))
    closed.close()  # any attempt to run a reference now raises
    assert load_mbppplus(path, sandbox=closed, cache_dir=tmp_path / "cache") == first


def test_default_path_comes_from_the_data_dir_variable(
    humanevalplus_file: Path, box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subset(
        humanevalplus_file, ("HumanEval/0",), tmp_path / "data" / "humanevalplus" / "HumanEvalPlus.jsonl.gz"
    )
    monkeypatch.setenv("EFFIRL_DATA_DIR", str(tmp_path / "data"))
    (task,) = load_tasks("humanevalplus", sandbox=box, cache_dir=tmp_path / "cache")
    assert task.id == "HumanEval/0"
    monkeypatch.delenv("EFFIRL_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="EFFIRL_DATA_DIR"):
        load_humanevalplus()


def test_limit_and_split(humanevalplus_file: Path, box: Sandbox, tmp_path: Path) -> None:
    path = subset(humanevalplus_file, HUMANEVAL_IDS, tmp_path / "he.jsonl.gz")
    assert [t.id for t in load_humanevalplus(path, limit=1, sandbox=box, cache_dir=tmp_path)] == [
        "HumanEval/0"
    ]
    assert load_humanevalplus(path, limit=0, split="test", cache_dir=tmp_path) == []
    with pytest.raises(ValueError, match="only a 'test' split"):
        load_humanevalplus(path, split="train")


def test_release_file_without_required_fields_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"task_id": "HumanEval/0", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match="missing field"):
        load_humanevalplus(path, cache_dir=tmp_path)


def test_restore_types_table() -> None:
    assert restore_types("Mbpp/2", [[[1, 2], [3]]]) == [((1, 2), (3,))]
    assert restore_types("Mbpp/106", [[[1], [2, 3]]]) == [([1], (2, 3))]
    assert restore_types("Mbpp/115", [[[[1, 2], []]]]) == [([{1, 2}, {}],)]
    assert restore_types("Mbpp/259", [[[[1, 2]], [[3]]]]) == [(((1, 2),), ((3,),))]
    assert restore_types("Mbpp/278", [[[1, [2, 3], 4]]]) == [((1, (2, 3), 4),)]
    assert restore_types("Mbpp/791", [[[1, [2, [3]]]]]) == [((1, (2, (3,))),)]
    assert restore_types("Mbpp/3", [[[1, 2], 3]]) == [([1, 2], 3)]  # no conversion for other tasks
    with pytest.raises(ValueError, match="Mbpp/2: inputs do not have the shape"):
        restore_types("Mbpp/2", [[1, 2]])
    with pytest.raises(ValueError, match="not a list of arguments"):
        restore_types("Mbpp/3", [5])
