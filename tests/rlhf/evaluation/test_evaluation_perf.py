"""effirl eval on tasks with perf tests: speedups, NET and eff@k come from the perf-test costs."""

from __future__ import annotations

import dataclasses

import pytest

from rewards.tasks import Task
from rlhf.evaluation.records import EvaluationResult
from rlhf.evaluation.scoring import ScoringOptions, SolutionScorer
from sandbox.jobs import FunctionJob
from sandbox.types import FunctionTest

SUM_TASK = Task(
    id="toy/sum_to",
    prompt='def sum_to(n):\n    """The sum 0 + 1 + ... + n."""\n',
    entry_point="sum_to",
    function_tests=(FunctionTest((3,), 6), FunctionTest((10,), 55), FunctionTest((30,), 465)),
    n_base_tests=2,
    perf_tests=(FunctionTest((4000,), 8002000),),
    references=(
        "def sum_to(n):\n    total = 0\n    for i in range(n + 1):\n        total += i\n    return total\n",
    ),
)
FAST = "def sum_to(n):\n    return n * (n + 1) // 2\n```"
LOOP = "def sum_to(n):\n    total = 0\n    for i in range(n + 1):\n        total += i\n    return total\n```"
SMALL_ONLY = "def sum_to(n):\n    return n * (n + 1) // 2 if n < 100 else 0\n```"


@pytest.fixture(scope="module")
def scorer():
    options = ScoringOptions(cost="python_events", timeout_s=2.0, workers=1, prompt_style="chat_fence")
    with SolutionScorer(options) as scorer:
        yield scorer


def test_costs_and_speedups_come_from_perf_tests(scorer: SolutionScorer) -> None:
    fast, loop, small_only = scorer.score([SUM_TASK] * 3, [FAST, LOOP, SMALL_ONLY], [0, 1, 2])
    assert fast.passed and loop.passed and loop.cost == loop.reference_cost
    code = LOOP.removesuffix("```")
    alone = scorer.sandbox.run(FunctionJob(code, "sum_to", SUM_TASK.perf_tests))
    assert loop.cost == alone.cost.python_events  # the perf test's events, the small tests not counted
    assert fast.speedup > 50
    # right on every correctness test, wrong on the perf input: it fails, base tests still pass
    assert not small_only.passed and small_only.base_passed and small_only.cost is None
    metrics = EvaluationResult.build(
        {"cost": "python_events", "label": "x"}, [fast, loop, small_only]
    ).metrics
    assert metrics["speedup_geomean"] > 1.0


def test_without_perf_tests_costs_span_all_tests(scorer: SolutionScorer) -> None:
    plain = dataclasses.replace(SUM_TASK, id="toy/sum_plain", perf_tests=())
    (loop,) = scorer.score([plain], [LOOP], [0])
    code = LOOP.removesuffix("```")
    alone = scorer.sandbox.run(FunctionJob(code, "sum_to", plain.function_tests))
    assert loop.cost == alone.cost.python_events
