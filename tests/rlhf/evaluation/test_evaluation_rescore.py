"""`effirl eval --rescore`: completions made elsewhere (a GPU machine) are scored here, no model loaded."""

from __future__ import annotations

import json

import pytest

from rewards.datasets import load_tasks
from rlhf.evaluation import run_evaluation
from rlhf.evaluation.generation import EvaluationInputError
from rlhf.evaluation.records import EvaluationResult, SampleRecord

META = {
    "model": "tiny:llama",
    "label": "tuned",
    "benchmark": "synthetic",
    "split": None,
    "limit": 3,
    "n_samples": 1,
    "prompt_style": "chat_fence",
    "temperature": 0.0,
    "cost": "cpu",
}


def earlier_evaluation(folder) -> list[str]:
    tasks = load_tasks("synthetic", split="heldout", limit=3)
    answers = [tasks[0].reference, "def nothing():\n    pass\n", tasks[2].reference]
    records = [
        SampleRecord(task.id, 0, f"{answer}```\n", "", "unknown", False, False, 0, 0)
        for task, answer in zip(tasks, answers)
    ]
    EvaluationResult.build(META, records).save(folder)
    return [task.id for task in tasks]


def test_rescored_completions_are_judged_here(tmp_path) -> None:
    ids = earlier_evaluation(tmp_path / "gpu")
    assert (
        run_evaluation(
            benchmark="synthetic", limit=3, out=str(tmp_path / "here"), rescore=str(tmp_path / "gpu")
        )
        == 0
    )
    data = json.loads((tmp_path / "here" / "results.json").read_text())
    passed = {s["task_id"]: s["passed"] for s in data["samples"]}
    assert passed == {ids[0]: True, ids[1]: False, ids[2]: True}
    assert data["meta"]["model"] == "tiny:llama" and data["meta"]["rescored"] == str(tmp_path / "gpu")


def test_rescoring_other_tasks_is_refused(tmp_path) -> None:
    earlier_evaluation(tmp_path / "gpu")
    with pytest.raises(EvaluationInputError, match="used limit 3, this one 4"):
        run_evaluation(benchmark="synthetic", limit=4, out=str(tmp_path / "x"), rescore=str(tmp_path / "gpu"))
    with pytest.raises(EvaluationInputError, match="loads no model"):
        run_evaluation(
            benchmark="synthetic",
            limit=3,
            out=str(tmp_path / "x"),
            rescore=str(tmp_path / "gpu"),
            model="tiny:llama",
        )


def test_generate_only_then_rescore(tmp_path) -> None:
    options = {"benchmark": "synthetic", "limit": 2, "max_new_tokens": 8}
    run_evaluation(model="tiny:llama", out=str(tmp_path / "gpu"), generate_only=True, **options)
    written = EvaluationResult.load(tmp_path / "gpu")
    assert {s.status for s in written.samples} == {"not_scored"} and len(written.samples) == 2
    run_evaluation(out=str(tmp_path / "cpu"), rescore=str(tmp_path / "gpu"), **options)
    scored = EvaluationResult.load(tmp_path / "cpu")
    assert [s.completion for s in scored.samples] == [s.completion for s in written.samples]
    assert "not_scored" not in {s.status for s in scored.samples}


def test_generate_only_leaves_perf_inputs_to_the_rescore(tmp_path, monkeypatch) -> None:
    """Completions need prompts only: HumanEval+'s perf inputs (reference runs, minutes for the whole
    set) are derived when the completions are scored, on the machine that scores them."""
    from tests.rewards.conftest import HUMANEVALPLUS_FILE, release_file

    monkeypatch.setenv("EFFIRL_DATA_DIR", str(release_file(HUMANEVALPLUS_FILE).parents[1]))
    monkeypatch.setenv("EFFIRL_CACHE", str(tmp_path / "cache"))
    options = {"benchmark": "humanevalplus", "limit": 2, "max_new_tokens": 8}
    run_evaluation(model="tiny:llama", out=str(tmp_path / "gpu"), generate_only=True, **options)
    assert not (tmp_path / "cache" / "perf_inputs").exists()
    run_evaluation(out=str(tmp_path / "cpu"), rescore=str(tmp_path / "gpu"), **options)
    scored = EvaluationResult.load(tmp_path / "cpu")
    assert scored.meta["tasks_with_perf_tests"] == 2 and any((tmp_path / "cache" / "perf_inputs").iterdir())
    assert len(scored.samples) == 2 and "not_scored" not in {s.status for s in scored.samples}
