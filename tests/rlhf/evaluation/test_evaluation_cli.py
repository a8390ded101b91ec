"""`effirl eval` end to end on a real (tiny) training run: outputs, runs, comparisons, input errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlhf.cli import main
from rlhf.evaluation.records import EvaluationResult

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "rlhf" / "recipes" / "smoke.yaml")
FAST = ["--benchmark", "synthetic", "--limit", "2", "--max-new-tokens", "8", "--workers", "1"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("smoke")
    assert main(["train", SMOKE, f"output_dir={run}"]) == 0
    return run


def test_checkpoint_evaluation_writes_results_report_and_plots(smoke_run: Path, tmp_path: Path) -> None:
    checkpoint = smoke_run / "checkpoints" / "step-2"
    assert main(["eval", "--checkpoint", str(checkpoint), *FAST, "--out", str(tmp_path)]) == 0
    result = EvaluationResult.load(tmp_path)
    assert result.meta["model"] == "tiny:llama" and result.meta["step"] == 2
    assert len(result.samples) == 2 and len(result.tasks) == 2
    assert {s.task_id for s in result.samples} == {t["task_id"] for t in result.tasks}
    assert all(
        s.status in ("passed", "failed", "syntax_error", "runtime_error", "timeout") for s in result.samples
    )
    assert set(result.metrics) >= {
        "pass@1",
        "base_pass@1",
        "eff@1",
        "normalized_cost_mean",
        "speedup_geomean",
    }
    assert "# Evaluation: step-2 on synthetic" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "pass_at_k.png").stat().st_size > 0 and (
        tmp_path / "speedup_cdf.png"
    ).stat().st_size > 0

    compared = tmp_path / "again"
    assert (
        main(["eval", "--run", str(smoke_run), *FAST, "--out", str(compared), "--compare", str(tmp_path)])
        == 0
    )
    comparison = json.loads((compared / "compare.json").read_text())
    assert comparison["headline"]["shared_tasks"] == 2
    # greedy decoding of the same checkpoint: the same completions
    again = EvaluationResult.load(compared)
    assert [s.completion for s in again.samples] == [s.completion for s in result.samples]
    assert "## Comparison" in (compared / "report.md").read_text()


def test_the_fast_engine_decodes_what_generate_decodes(smoke_run: Path, tmp_path: Path) -> None:
    checkpoint = str(smoke_run / "checkpoints" / "step-2")
    results = {}
    for engine in ("generate", "fast"):
        out = tmp_path / engine
        argv = ["eval", "--checkpoint", checkpoint, *FAST, "--limit", "3", "--engine", engine]
        assert main([*argv, "--batch-size", "2", "--out", str(out)]) == 0
        results[engine] = EvaluationResult.load(out)
        assert results[engine].meta["engine"] == engine
    # greedy decoding in fp32 on CPU: the same tokens, whichever engine decodes them
    completions = {e: [s.completion for s in r.samples] for e, r in results.items()}
    assert len(completions["fast"]) == 3 and completions["fast"] == completions["generate"]


def test_all_checkpoints_of_a_run(smoke_run: Path, tmp_path: Path) -> None:
    assert main(["eval", "--run", str(smoke_run), "--all-checkpoints", *FAST, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["format"] == "effirl-eval-run/1"
    assert [row["step"] for row in summary["steps"]] == [0, 2]
    assert EvaluationResult.load(tmp_path / "step-0").meta["label"] == "base (step 0)"
    assert EvaluationResult.load(tmp_path / "step-2").meta["checkpoint"].endswith("step-2")
    assert (tmp_path / "metrics_vs_step.png").stat().st_size > 0
    assert "[step-2](step-2/report.md)" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "tiny:llama", "--benchmark", "nosuchbench"], "unknown dataset 'nosuchbench'"),
        (
            ["--model", "tiny:llama", "--adapter", "{tmp}/missing", "--benchmark", "synthetic"],
            "not a PEFT adapter",
        ),
        (
            ["--model", "tiny:qwen2", "--checkpoint", "{run}/checkpoints/step-2", "--benchmark", "synthetic"],
            "trained on base model 'tiny:llama', not 'tiny:qwen2'",
        ),
        (["--checkpoint", "{tmp}/nothing", "--benchmark", "synthetic"], "does not exist"),
        (
            ["--model", "tiny:llama", "--benchmark", "synthetic", "--n-samples", "3"],
            "needs --temperature > 0",
        ),
        (["--model", "tiny:llama", "--all-checkpoints", "--benchmark", "synthetic"], "needs --run"),
        (
            ["--model", "tiny:llama", "--benchmark", "synthetic", "--compare", "{tmp}"],
            "no evaluation results",
        ),
        (["--benchmark", "synthetic"], "--model is required"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, smoke_run: Path, tmp_path: Path, capsys: Any
) -> None:
    argv = [a.format(tmp=tmp_path, run=smoke_run) for a in argv]
    assert main(["eval", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
