"""Task files in effirl's schema: exact round trips through JSONL and Parquet, clear errors."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from rewards.datasets import TaskFormatError, load_task_dataset, load_task_file, save_tasks, task_to_record
from rewards.tasks import Task
from sandbox import codec
from sandbox.types import FunctionTest, ProgramTest


def tricky_tasks() -> list[Task]:
    return [
        Task(
            id="t/0",
            prompt="Write `f(xs, *, scale)`.\nUnicode: é ✓",
            entry_point="f",
            function_tests=(
                FunctionTest(
                    ((1, 2), {3, 4}, frozenset({5})), expected=(b"\x00\xff", 10**40), kwargs={"scale": -1}
                ),
                FunctionTest([[1, [2, 3]]], expected={1: "one", (2, 3): [None, True]}),
                FunctionTest((float("inf"), -0.0, 1e-300), expected=[float("-inf"), 2.5]),
                FunctionTest(({"__tuple__": [1]},), expected={"__set__": "a dict that looks like a tag"}),
                FunctionTest((complex(1, -2),), expected=""),
            ),
            n_base_tests=2,
            test_script="assert f((1,), set(), frozenset(), scale=1) is not None\n",
            perf_tests=(FunctionTest(([1] * 50, {7}, frozenset()), expected=(b"", 3), kwargs={"scale": 2}),),
            references=("def f(*a, **k):\n    return 1\n", "def f(*a, **k):\n    return 2\n"),
            atol=1e-6,
            metadata={
                "source": "test",
                "split": "train",
                "tags": ("a", "b"),
                "ids": {1, 2},
                "dropped": {3: "why"},
            },
        ),
        Task(
            id="t/1",
            prompt="Read n and print n*2.",
            program_tests=(ProgramTest("3\n", "6\n"), ProgramTest("", "")),
            perf_tests=(ProgramTest("100000\n", "200000\n"),),
            metadata={"split": "heldout"},
        ),
        Task(id="t/2", prompt="Nothing else set."),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_round_trip_gives_equal_tasks(tmp_path: Path, suffix: str) -> None:
    tasks = tricky_tasks()
    path = save_tasks(tasks, tmp_path / f"tasks{suffix}")
    loaded = load_task_file(path)
    assert loaded == tasks
    assert type(loaded[0].function_tests[0].args[0]) is tuple
    assert type(loaded[0].function_tests[1].args) is list
    assert loaded[0].metadata["dropped"] == {3: "why"}


def test_round_trip_of_nan_values(tmp_path: Path) -> None:
    task = Task(
        id="nan", prompt="p", entry_point="f", function_tests=(FunctionTest((float("nan"),), float("nan")),)
    )
    (loaded,) = load_task_file(save_tasks([task], tmp_path / "nan.jsonl"))
    test = loaded.function_tests[0]
    assert math.isnan(test.args[0]) and math.isnan(test.expected)


def test_jsonl_layout_is_the_documented_one(tmp_path: Path) -> None:
    path = save_tasks(tricky_tasks()[:1], tmp_path / "one.jsonl")
    (line,) = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(line)
    assert list(row) == [
        "format",
        "id",
        "prompt",
        "entry_point",
        "function_tests",
        "n_base_tests",
        "program_tests",
        "test_script",
        "perf_tests",
        "references",
        "atol",
        "metadata",
    ]
    assert row["format"] == "effirl-task/1"
    tests = json.loads(row["function_tests"])
    assert tests[0]["args"] == {
        "__tuple__": [{"__tuple__": [1, 2]}, {"__set__": [3, 4]}, {"__frozenset__": [5]}]
    }
    assert tests[0]["kwargs"] == {"scale": -1}
    assert json.loads(row["metadata"])["tags"] == {"__tuple__": ["a", "b"]}
    assert json.loads(row["perf_tests"])[0]["args"]["__tuple__"][1] == {"__set__": [7]}


def test_files_written_before_perf_tests_still_load(tmp_path: Path) -> None:
    # A row of the format as it was before the perf_tests column existed.
    row = task_to_record(tricky_tasks()[0])
    del row["perf_tests"]
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (task,) = load_task_file(path)
    assert task.perf_tests == () and task.function_tests == tricky_tasks()[0].function_tests
    old_parquet = tmp_path / "old.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([row]), old_parquet)
    (task,) = load_task_file(old_parquet)
    assert task.perf_tests == ()


def test_tasks_without_perf_tests_write_null() -> None:
    record = task_to_record(tricky_tasks()[2])
    assert record["perf_tests"] is None


def test_hand_written_file_with_plain_json_values(tmp_path: Path) -> None:
    rows = [
        {
            "id": "hand/0",
            "prompt": "Add two numbers.",
            "entry_point": "add",
            "function_tests": [
                {"args": [1, 2], "expected": 3},
                {"args": [{"__tuple__": [1]}, 0], "expected": 1},
            ],
            "references": ["def add(a, b):\n    return a + b\n"],
        }
    ]
    path = tmp_path / "hand.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    (task,) = load_task_file(path)
    assert task.function_tests[0] == FunctionTest([1, 2], 3)
    assert task.function_tests[1].args == [(1,), 0]
    assert task.metadata == {} and task.n_base_tests is None and task.atol is None


def test_split_and_limit_filter_rows(tmp_path: Path) -> None:
    path = save_tasks(tricky_tasks(), tmp_path / "tasks.jsonl")
    assert [t.id for t in load_task_file(path, split="heldout")] == ["t/1"]
    assert [t.id for t in load_task_file(path, limit=2)] == ["t/0", "t/1"]


def test_dataset_folder_is_read_through_datasets(tmp_path: Path) -> None:
    folder = tmp_path / "my_dataset"
    save_tasks(tricky_tasks(), folder / "train.parquet")
    assert load_task_dataset(str(folder)) == tricky_tasks()
    with pytest.raises(ValueError, match="split 'test'"):
        load_task_dataset(str(folder), split="test")


def test_empty_task_list_round_trips(tmp_path: Path) -> None:
    assert load_task_file(save_tasks([], tmp_path / "none.jsonl")) == []
    assert load_task_file(save_tasks([], tmp_path / "none.parquet")) == []


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.jsonl"):
        save_tasks(tricky_tasks(), tmp_path / "tasks.csv")
    (tmp_path / "tasks.csv").write_text("id,prompt\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_task_file(tmp_path / "tasks.csv")
    with pytest.raises(FileNotFoundError):
        load_task_file(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "x"}, "lacks \\['prompt'\\]"),
        ({"id": "x", "prompt": 3}, "'prompt' must be a string"),
        ({"id": "x", "prompt": "p", "format": "other/9"}, "format 'other/9'"),
        ({"id": "x", "prompt": "p", "function_tests": '[{"__float__": "big"}]'}, "__float__"),
        (
            {"id": "x", "prompt": "p", "function_tests": '[{"expected": 1}]'},
            "function test 0 must be an object",
        ),
        ({"id": "x", "prompt": "p", "function_tests": '{"args": []}'}, "must encode a list"),
        ({"id": "x", "prompt": "p", "function_tests": '[{"args": 5}]'}, "args must be a list"),
        ({"id": "x", "prompt": "p", "perf_tests": '[{"expected": 1}]'}, "perf test 0 must be an object"),
        ({"id": "x", "prompt": "p", "perf_tests": '[{"args": [1]}]'}, "need an entry_point"),
        (
            {
                "id": "x",
                "prompt": "p",
                "entry_point": "f",
                "perf_tests": '[{"args": [1]}, {"stdin": "", "expected_stdout": ""}]',
            },
            "all FunctionTest or all ProgramTest",
        ),
    ],
)
def test_bad_rows_name_the_problem(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskFormatError, match=message):
        load_task_file(path)


def test_unstorable_value_is_refused_with_the_task_id() -> None:
    task = Task(id="odd", prompt="p", function_tests=(FunctionTest((object(),), 1),))
    with pytest.raises(TaskFormatError, match=r"task 'odd'.*object"):
        task_to_record(task)


def test_function_tests_column_is_tagged_json_text() -> None:
    record = task_to_record(tricky_tasks()[0])
    assert isinstance(record["function_tests"], str) and isinstance(record["metadata"], str)
    assert codec.loads(record["function_tests"])[2]["args"][0] == float("inf")
