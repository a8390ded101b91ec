"""The fast/slow fixture of real tasks is correct, and those tasks get perf tests from effirl's recipes.

The measurement itself (do perf tests rank the variants right, how noisy are they) is a benchmark:
``scripts/bench_perf_inputs.py``. Here a few tasks are checked end to end, cheaply.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rewards.datasets import load_humanevalplus, load_mbppplus
from rewards.datasets.evalplus import read_release
from rewards.datasets.perf_inputs import load_recipes, recipes_path
from rewards.scorer import submit_run
from sandbox import Sandbox
from tests.rewards.fixtures.perf_variants import VARIANTS

FEW = ("HumanEval/24", "HumanEval/27", "Mbpp/226")


def subset(source: Path, task_ids: tuple[str, ...], target: Path) -> Path:
    records = [r for r in read_release(source) if r["task_id"] in task_ids]
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(target, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return target


@pytest.fixture(scope="module")
def tasks(
    humanevalplus_file: Path, mbppplus_file: Path, box: Sandbox, tmp_path_factory: pytest.TempPathFactory
):
    root = tmp_path_factory.mktemp("perf_variants")
    he = subset(humanevalplus_file, FEW, root / "HumanEvalPlus.jsonl.gz")
    mbpp = subset(mbppplus_file, FEW, root / "MbppPlus.jsonl.gz")
    loaded = load_humanevalplus(he, sandbox=box, cache_dir=root / "cache")
    loaded += load_mbppplus(mbpp, sandbox=box, cache_dir=root / "cache")
    return {t.id: t for t in loaded}


def test_the_fixture_covers_twenty_real_tasks_with_recipes() -> None:
    ids = [v.task_id for v in VARIANTS]
    assert len(set(ids)) == len(ids) >= 20
    recipes = {**load_recipes(recipes_path("humanevalplus")), **load_recipes(recipes_path("mbppplus"))}
    assert [i for i in ids if not recipes.get(i)] == []


def test_tasks_get_perf_tests_from_the_recipes(tasks) -> None:
    assert sorted(tasks) == sorted(FEW)
    for task in tasks.values():
        perf = task.metadata["perf"]
        assert (
            task.perf_tests
            and perf["note"] == "from effirl's recipe"
            and len(perf["sizes"]) == len(task.perf_tests)
        )
        assert perf["reference_cost_ms"] > 0


def test_both_variants_pass_correctness_and_perf_tests(tasks, box: Sandbox) -> None:
    chosen = [v for v in VARIANTS if v.task_id in FEW]
    futures = [
        (v.task_id, side, submit_run(box, tasks[v.task_id], getattr(v, side), timeout_s=60))
        for v in chosen
        for side in ("fast", "slow")
    ]
    outcomes = [(task_id, side, f.result()) for task_id, side, f in futures]
    failures = [(t, s, r.status.value, r.error) for t, s, r in outcomes if not r.ok or r.error_kind]
    assert failures == []
    assert all(r.total == len(tasks[t].function_tests) + len(tasks[t].perf_tests) for t, _, r in outcomes)
