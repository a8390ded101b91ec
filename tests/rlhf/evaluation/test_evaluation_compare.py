"""Base and tuned solutions measured side by side, and the significance rule that judges them."""

from __future__ import annotations

import pytest

from rewards.tasks import Task
from rlhf.evaluation.compare import compare_results
from rlhf.evaluation.interleaved import measure_pairs, sign_test_p, verdict_for
from rlhf.evaluation.records import EvaluationResult, SampleRecord
from sandbox import FunctionTest

TASK = Task(
    id="dup",
    prompt="",
    entry_point="has_dup",
    function_tests=(FunctionTest(([1, 2, 3],), False), FunctionTest(([*range(3000), 7],), True)),
)
FAST = "def has_dup(xs):\n    return len(set(xs)) != len(xs)\n"
SLOW = (
    "def has_dup(xs):\n    seen = []\n    for x in xs:\n        if x in seen:\n            return True\n"
    "        seen.append(x)\n    return False\n"
)
WRONG = "def has_dup(xs):\n    return False\n"


def test_sign_test() -> None:
    assert sign_test_p(10, 10) == pytest.approx(2 / 1024)
    assert sign_test_p(9, 10) == pytest.approx(2 * 11 / 1024)
    assert sign_test_p(1, 10) == sign_test_p(9, 10)
    assert sign_test_p(5, 10) == 1.0
    assert sign_test_p(0, 0) == 1.0


def test_a_difference_counts_only_beyond_the_tolerance_and_the_noise() -> None:
    consistent = verdict_for([2.0] * 10, [1.0] * 10, exact=False, tolerance=0.05)
    assert consistent[3] == "faster" and consistent[0] == pytest.approx(2.0) and consistent[1] == 10
    # Twice as fast by the medians, but the rounds disagree on the direction half the time: noise.
    noisy = verdict_for([2, 2, 2, 2, 2, 1, 1, 1, 1, 1.1], [1] * 5 + [2] * 5, exact=False, tolerance=0.05)
    assert noisy[3] == "equal"
    # Every round agrees, but by 3%: within the tolerance.
    small = verdict_for([1.03] * 10, [1.0] * 10, exact=False, tolerance=0.05)
    assert small[3] == "equal"
    # An exact measure needs one run each; only the tolerance applies.
    assert verdict_for([100.0], [200.0], exact=True, tolerance=0.05)[3] == "slower"
    assert verdict_for([100.0], [103.0], exact=True, tolerance=0.05)[3] == "equal"


@pytest.mark.parametrize("cost", ["cpu", "python_events"])
def test_measured_side_by_side_in_one_sandbox(cost: str) -> None:
    pairs = [(TASK, SLOW, FAST), (TASK, FAST, SLOW), (TASK, FAST, FAST), (TASK, FAST, WRONG)]
    measured = measure_pairs(pairs, cost=cost, rounds=8, tolerance=0.05, progress=False)
    verdicts = [m.verdict for m in measured]
    assert verdicts[:2] == ["faster", "slower"], measured
    assert verdicts[3] == "failed" and "new solution" in measured[3].note
    if cost == "python_events":
        assert verdicts[2] == "equal" and measured[2].ratio == 1.0 and measured[2].rounds == 1
    else:
        assert verdicts[2] == "equal" and measured[0].rounds == 8
        assert measured[0].agree == 8 and measured[0].ratio > 3  # quadratic vs linear on 3,000 items


def _result(label: str, code: str, passed: bool, speedup: float) -> EvaluationResult:
    record = SampleRecord(
        task_id="dup",
        index=0,
        completion=code,
        code=code,
        status="passed" if passed else "failed",
        passed=passed,
        base_passed=passed,
        tests_passed=2 if passed else 0,
        tests_total=2,
        cost=1.0 / speedup,
        reference_cost=1.0,
    )
    return EvaluationResult.build({"label": label, "cost": "cpu"}, [record])


def test_side_by_side_measurements_decide_the_verdicts() -> None:
    new, old = _result("tuned", FAST, True, 0.5), _result("base", SLOW, True, 2.0)
    # Each run's own speedups say "slower" (noise between runs); measured side by side it is faster.
    assert compare_results(new, old).tasks[0].verdict == "slower"
    [measured] = measure_pairs([(TASK, SLOW, FAST)], cost="python_events", tolerance=0.05, progress=False)
    comparison = compare_results(new, old, measurements=[measured])
    assert comparison.tasks[0].verdict == "faster"
    headline = comparison.headline
    assert headline["measured_side_by_side"] and headline["significant"] == 1
    assert headline["faster_of_significant"] == 1.0
    assert headline["pass@1_ci95_new"][0] < 1.0 <= headline["pass@1_ci95_new"][1]
