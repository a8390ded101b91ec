"""load_tasks: names, paths sniffed by content, options checked."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rewards.datasets import dataset_names, evaluation_split, load_tasks, register_dataset, save_tasks
from rewards.datasets.registry import LOADERS, sniff_file
from rewards.synthetic import synthetic_tasks
from rewards.tasks import Task
from sandbox import Sandbox


def test_builtin_names_are_registered() -> None:
    assert {"humanevalplus", "mbppplus", "humaneval", "synthetic", "synthetic_optimise"} <= set(
        dataset_names()
    )


def test_synthetic_by_name_with_split_limit_and_options() -> None:
    assert load_tasks("synthetic", limit=5) == synthetic_tasks("train", n=5)
    heldout = load_tasks("synthetic", split="heldout", limit=4, seed=3, families=["pair_sum"])
    assert heldout == synthetic_tasks("heldout", n=4, seed=3, families=["pair_sum"])
    assert {t.metadata["split"] for t in heldout} == {"heldout"}


def test_humaneval_by_name() -> None:
    assert [t.id for t in load_tasks("humaneval", limit=1)] == ["HumanEval/0"]


def test_task_file_by_path(tmp_path: Path) -> None:
    tasks = synthetic_tasks("train", n=3)
    for name in ("tasks.jsonl", "tasks.parquet"):
        path = save_tasks(tasks, tmp_path / name)
        assert load_tasks(path) == tasks
        assert load_tasks(str(path), limit=1) == tasks[:1]


def test_dataset_folder_by_path(tmp_path: Path) -> None:
    tasks = synthetic_tasks("heldout", n=3)
    save_tasks(tasks, tmp_path / "ds" / "train.jsonl")
    assert load_tasks(tmp_path / "ds") == tasks


def test_evalplus_release_file_is_recognised(
    mbppplus_file: Path, humanevalplus_file: Path, box: Sandbox, tmp_path: Path
) -> None:
    assert sniff_file(mbppplus_file) == "mbppplus" and sniff_file(humanevalplus_file) == "humanevalplus"
    (task,) = load_tasks(mbppplus_file, limit=1, sandbox=box, cache_dir=tmp_path)
    assert task.id == "Mbpp/2" and task.metadata["source"] == "mbppplus"


def test_humaneval_style_file_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "he.jsonl.gz"
    row = {
        "task_id": "X/0",
        "prompt": "def f():\n",
        "entry_point": "f",
        "canonical_solution": "    return 1\n",
    }
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({**row, "test": "def check(c):\n    assert c() == 1\n"}) + "\n")
    assert sniff_file(path) == "humaneval"
    (task,) = load_tasks(path)
    assert task.reference == "def f():\n    return 1\n" and task.test_script.endswith("check(f)\n")


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'mbppplus'"):
        load_tasks("mbpplus")
    with pytest.raises(ValueError, match=r"unknown dataset 'nothing-here\.jsonl'"):
        load_tasks("nothing-here.jsonl")


def test_option_a_loader_does_not_take_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"'synthetic' does not take option\(s\) \['sandbox'\]"):
        load_tasks("synthetic", sandbox=None)


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_tasks("synthetic", limit=-1)


def test_register_custom_dataset() -> None:
    def tiny(*, split: str | None = None, limit: int | None = None) -> list[Task]:
        return [Task(id=f"tiny/{i}", prompt="p") for i in range(3)][:limit]

    register_dataset("tiny-test", tiny)
    try:
        assert [t.id for t in load_tasks("tiny-test", limit=2)] == ["tiny/0", "tiny/1"]
        with pytest.raises(ValueError, match="registered"):
            register_dataset("tiny-test", tiny)
    finally:
        LOADERS.pop("tiny-test")


def test_unreadable_first_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="first line is not a JSON object"):
        load_tasks(path)


def test_each_dataset_names_the_split_it_is_evaluated_on(tmp_path: Path) -> None:
    assert evaluation_split("synthetic") == evaluation_split("synthetic_optimise") == "heldout"
    assert evaluation_split("humanevalplus") is None and evaluation_split("mbppplus") is None
    assert evaluation_split("synthetic", "train") == "train"  # an explicit split wins
    # A task file is not a registered dataset, whatever its name says.
    assert evaluation_split(tmp_path / "synthetic_mine.jsonl") is None

    def tiny(*, split: str | None = None, limit: int | None = None) -> list[Task]:
        return [Task(id=f"tiny/{split}", prompt="p")]

    register_dataset("tiny-eval", tiny, evaluation_split="test")
    try:
        assert evaluation_split("tiny-eval") == "test"
    finally:
        LOADERS.pop("tiny-eval")
