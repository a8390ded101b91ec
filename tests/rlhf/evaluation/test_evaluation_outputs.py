"""Scoring hand-written solutions in the real sandbox, results.json, report.md, plots and comparisons."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rewards.tasks import Task
from rlhf.evaluation.command import _load_benchmark as load_benchmark
from rlhf.evaluation.compare import compare_results, comparison_markdown, verdict_of
from rlhf.evaluation.generation import EvaluationInputError
from rlhf.evaluation.records import EvaluationResult, task_labels
from rlhf.evaluation.report import group_tables, plot_metrics_vs_step, write_report
from rlhf.evaluation.scoring import ScoringOptions, SolutionScorer, base_tests_passed
from sandbox.types import ExecutionResult, FunctionTest, Status
from sandbox.types import TestOutcome as Outcome

SUM_TASK = Task(
    id="toy/sum_to",
    prompt='def sum_to(n):\n    """The sum 0 + 1 + ... + n."""\n',
    entry_point="sum_to",
    function_tests=(FunctionTest((3,), 6), FunctionTest((10,), 55), FunctionTest((3000,), 4501500)),
    n_base_tests=2,
    references=(
        "def sum_to(n):\n    total = 0\n    for i in range(n + 1):\n        total += i\n    return total\n",
    ),
)
MAX_TASK = Task(
    id="toy/largest",
    prompt='def largest(xs):\n    """The largest element."""\n',
    entry_point="largest",
    function_tests=(FunctionTest(([1, 5, 2],), 5), FunctionTest((list(range(2000)),), 1999)),
    references=("def largest(xs):\n    return sorted(xs)[-1]\n",),
)
# Completions as a chat_fence model writes them: the prompt opened the fence, the answer closes it.
FAST_SUM = "def sum_to(n):\n    return n * (n + 1) // 2\n```"
LOOP_SUM = (
    "def sum_to(n):\n    total = 0\n    for i in range(n + 1):\n        total += i\n    return total\n```"
)
SMALL_ONLY_SUM = "def sum_to(n):\n    return n * (n + 1) // 2 if n < 100 else -1\n```"
SLOW_SUM = (
    "def sum_to(n):\n    total = 0\n    for i in range(n + 1):\n        for _ in range(3):\n"
    "            total += i\n    return total // 3\n```"
)
HANG = "def sum_to(n):\n    while True:\n        pass\n```"
FAST_MAX = "def largest(xs):\n    return max(xs)\n```"
WRONG_MAX = "def largest(xs):\n    return xs[0]\n```"


@pytest.fixture(scope="module")
def scorer() -> SolutionScorer:
    options = ScoringOptions(cost="python_events", timeout_s=2.0, workers=2, prompt_style="chat_fence")
    with SolutionScorer(options) as scorer:
        yield scorer


def score(scorer: SolutionScorer, pairs: list[tuple[Task, str]], label: str) -> EvaluationResult:
    indices, seen = [], {}
    for task, _ in pairs:
        indices.append(seen.get(task.id, 0))
        seen[task.id] = indices[-1] + 1
    records = scorer.score([t for t, _ in pairs], [c for _, c in pairs], indices)
    meta = {"label": label, "benchmark": "toy", "cost": "python_events", "temperature": 0.8, "repeats": 1}
    return EvaluationResult.build(meta, records)


def test_records_hold_verdicts_base_tests_and_costs(scorer: SolutionScorer) -> None:
    pairs = [(SUM_TASK, FAST_SUM), (SUM_TASK, SMALL_ONLY_SUM), (SUM_TASK, HANG), (SUM_TASK, LOOP_SUM)]
    records = scorer.score([t for t, _ in pairs], [c for _, c in pairs], [0, 1, 2, 3])
    fast, small_only, hang, loop = records
    assert fast.status == "passed" and fast.base_passed and fast.code.startswith("def sum_to")
    assert small_only.status == "failed" and small_only.base_passed and not small_only.passed
    assert hang.status == "timeout" and not hang.base_passed and hang.cost is None
    # the reference is measured once, in the same units, and the same code costs the same
    assert loop.reference_cost == fast.reference_cost and loop.cost == loop.reference_cost
    assert loop.cost_ratio == 1.0
    assert fast.cost < fast.reference_cost / 10 and fast.speedup > 10
    assert fast.reward > loop.reward > small_only.reward > hang.reward


def test_base_tests_passed_reads_test_outcomes() -> None:
    outcomes = [Outcome(True), Outcome(True), Outcome(False, "no result")]
    timed_out = ExecutionResult(Status.TIMEOUT, passed=2, total=3, tests=outcomes)
    assert base_tests_passed(SUM_TASK, timed_out)
    early = ExecutionResult(Status.FAILED, passed=2, total=3, tests=[outcomes[0], outcomes[2], outcomes[1]])
    assert not base_tests_passed(SUM_TASK, early)
    assert not base_tests_passed(
        MAX_TASK, ExecutionResult(Status.FAILED, passed=1, total=2, tests=outcomes[1:])
    )


def test_results_report_plots_and_comparison(scorer: SolutionScorer, tmp_path: Path) -> None:
    old = score(
        scorer, [(SUM_TASK, LOOP_SUM), (SUM_TASK, HANG), (MAX_TASK, FAST_MAX), (MAX_TASK, WRONG_MAX)], "old"
    )
    new = score(
        scorer,
        [(SUM_TASK, FAST_SUM), (SUM_TASK, FAST_SUM), (MAX_TASK, FAST_MAX), (MAX_TASK, FAST_MAX)],
        "new",
    )
    assert old.metrics["pass@1"] == pytest.approx(0.5) and new.metrics["pass@1"] == 1.0
    assert old.metrics["pass@2"] == 1.0
    assert new.metrics["eff@1"] > old.metrics["eff@1"]
    assert old.metrics["status/timeout"] == 0.25

    new.save(tmp_path / "new")
    loaded = EvaluationResult.load(tmp_path / "new")
    assert loaded.metrics == pytest.approx(new.metrics)
    assert [s.to_dict() for s in loaded.samples] == [s.to_dict() for s in new.samples]

    comparison = compare_results(new, old)
    rows = {row.task_id: row for row in comparison.tasks}
    assert rows["toy/sum_to"].verdict == "faster"  # closed form vs loop
    assert rows["toy/largest"].verdict == "equal"  # the same code in both
    assert comparison.headline["pass@1_delta"] == pytest.approx(0.5)
    assert comparison.headline["faster"] == 0.5 and comparison.headline["equal"] == 0.5
    table = comparison_markdown(comparison)
    assert "| toy/sum_to | 1.00 | 0.50 |" in table and "faster in 50%" in table

    report = write_report(tmp_path / "new", new, comparison=comparison, other=old)
    text = report.read_text()
    assert "## Comparison" in text and "| toy/largest | 2/2 | 2/2 |" in text and "pass@1" in text
    for name in ("pass_at_k.png", "speedup_cdf.png"):
        assert (tmp_path / "new" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = [{"step": 0, "metrics": old.metrics}, {"step": 5, "metrics": new.metrics}]
    assert plot_metrics_vs_step(steps, tmp_path / "steps.png").stat().st_size > 1000


def test_a_slower_solution_is_reported_slower(scorer: SolutionScorer) -> None:
    old = score(scorer, [(SUM_TASK, LOOP_SUM)], "old")
    new = score(scorer, [(SUM_TASK, SLOW_SUM)], "new")
    [row] = compare_results(new, old).tasks
    assert row.verdict == "slower" and row.relative_speed < 0.95


def test_comparison_refuses_mismatched_measures(scorer: SolutionScorer) -> None:
    result = score(scorer, [(MAX_TASK, FAST_MAX)], "a")
    other = EvaluationResult(dict(result.meta, cost="cpu"), result.metrics, result.tasks, result.samples)
    with pytest.raises(ValueError, match="same --cost"):
        compare_results(result, other)


def test_verdict_band() -> None:
    assert verdict_of(1.04) == "equal" and verdict_of(1 / 1.04) == "equal"
    assert verdict_of(1.06) == "faster" and verdict_of(0.94) == "slower"
    assert verdict_of(1.2, tolerance=0.25) == "equal"


def test_metrics_per_split_and_per_family(scorer: SolutionScorer, tmp_path: Path) -> None:
    sums = dataclasses.replace(SUM_TASK, metadata={"split": "heldout", "family": "sums"})
    maxima = dataclasses.replace(MAX_TASK, metadata={"split": "heldout_families", "family": "maxima"})
    unlabelled = dataclasses.replace(MAX_TASK, id="toy/plain")
    pairs = [(sums, FAST_SUM), (maxima, WRONG_MAX), (unlabelled, FAST_MAX)]
    records = scorer.score([t for t, _ in pairs], [c for _, c in pairs], [0, 0, 0])
    labels = task_labels(t for t, _ in pairs)
    assert labels == {
        "toy/sum_to": {"split": "heldout", "family": "sums"},
        "toy/largest": {"split": "heldout_families", "family": "maxima"},
    }
    result = EvaluationResult.build(
        {"label": "x", "benchmark": "toy", "cost": "python_events"}, records, labels=labels
    )
    by_split = {row["split"]: row for row in result.groups["split"]}
    assert by_split["heldout"]["pass@1"] == 1.0 and by_split["heldout"]["speedup_geomean"] > 10
    assert by_split["heldout_families"]["pass@1"] == 0.0 and by_split["heldout_families"]["tasks"] == 1
    assert [(r["split"], r["family"]) for r in result.groups["family"]] == [
        ("heldout", "sums"),
        ("heldout_families", "maxima"),
    ]
    assert result.tasks[0]["family"] == "sums" and "family" not in result.tasks[2]
    assert result.metrics["tasks"] == 3  # the headline still covers every task

    result.save(tmp_path)
    assert EvaluationResult.load(tmp_path).groups == result.groups
    text = write_report(tmp_path, result).read_text()
    assert "## Per split" in text and "## Per family" in text
    assert "| heldout_families | maxima | 1 | 0 | 0 | 0 | n/a |" in text
    # Results without labels (or written before groups existed) have no group tables.
    plain = EvaluationResult.build({"benchmark": "toy"}, records)
    assert plain.groups == {} and "Per family" not in "\n".join(group_tables(plain))


def test_eval_loads_several_splits_of_a_benchmark() -> None:
    tasks = load_benchmark("synthetic", "heldout, heldout_families", 3)
    assert [t.metadata["split"] for t in tasks] == ["heldout"] * 3 + ["heldout_families"] * 3
    assert {t.metadata["split"] for t in load_benchmark("synthetic", None, 2)} == {"heldout"}
    with pytest.raises(EvaluationInputError, match="unknown synthetic split 'nope'"):
        load_benchmark("synthetic", "heldout,nope", 1)
    with pytest.raises(EvaluationInputError, match="names an empty split"):
        load_benchmark("synthetic", "heldout,", 1)
