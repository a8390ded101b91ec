"""Scoring hand-written solutions in the real sandbox, results.json, report.md, plots and comparisons."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards.tasks import Task
from rlhf.evaluation.compare import compare_results, comparison_markdown, verdict_of
from rlhf.evaluation.records import EvaluationResult
from rlhf.evaluation.report import plot_metrics_vs_step, write_report
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
