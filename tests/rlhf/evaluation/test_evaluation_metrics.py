"""pass@k, eff@k, ENAMEL scores and benchmark aggregates on hand-made data."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rlhf.evaluation.metrics import (
    SampleOutcome,
    aggregate,
    eff_at_k,
    enamel_score,
    ks_for,
    pass_at_k,
    summarise_task,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    outcomes = [True] * c + [False] * (n - c)
    draws = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in draw) for draw in draws) / len(draws)


def test_pass_at_k_exact_values() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # 0.91666...
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0  # fewer than k wrong samples: some draw of k must hold a right one
    assert pass_at_k(1, 1, 1) == 1.0


def test_pass_at_k_matches_enumeration() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="correct samples"):
        pass_at_k(3, 4, 1)


def test_eff_at_k_on_hand_made_scores() -> None:
    scores = [1.0, 0.0, 1.5, 0.5]
    assert eff_at_k(scores, 1) == pytest.approx(0.75)  # the mean
    # the six pairs have maxima .5, 1, 1.5, 1, 1.5, 1.5
    assert eff_at_k(scores, 2) == pytest.approx(7.0 / 6.0)
    assert eff_at_k(scores, 4) == pytest.approx(1.5)  # the best of all


def test_eff_at_k_is_the_expected_maximum_over_draws() -> None:
    rng = random.Random(3)
    for n in range(1, 7):
        scores = [rng.choice([0.0, rng.uniform(0, 2)]) for _ in range(n)]
        for k in range(1, n + 1):
            draws = list(itertools.combinations(scores, k))
            assert eff_at_k(scores, k) == pytest.approx(sum(map(max, draws)) / len(draws))


def test_enamel_score() -> None:
    assert enamel_score(1.0) == 1.0  # as costly as the reference
    assert enamel_score(0.5) == pytest.approx(1.5)  # twice as fast
    assert enamel_score(1.5) == pytest.approx(0.5)
    assert enamel_score(2.0) == 0.0  # at the time limit alpha * reference
    assert enamel_score(7.0) == 0.0
    assert enamel_score(None) == 0.0  # wrong or timed out
    assert enamel_score(2.0, alpha=3.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="alpha"):
        enamel_score(1.0, alpha=1.0)


def test_task_summary_and_aggregate() -> None:
    fast = [
        SampleOutcome("a", True, True, cost_ratio=0.5, memory_ratio=1.0),
        SampleOutcome("a", False, True),  # right on the base tests, wrong on the extra ones
    ]
    slow = [
        SampleOutcome("b", True, True, cost_ratio=3.0, memory_ratio=2.0),
        SampleOutcome("b", True, True, cost_ratio=1.0, memory_ratio=4.0),
    ]
    timed_out = [SampleOutcome("c", False, False), SampleOutcome("c", False, False)]
    summaries = [summarise_task("a", fast), summarise_task("b", slow), summarise_task("c", timed_out)]
    a, b, c = summaries
    assert (a.correct, a.correct_base, a.cost_ratio, a.speedup) == (1, 2, 0.5, 2.0)
    assert a.enamel_scores == (1.5, 0.0)
    assert b.cost_ratio == 2.0 and b.memory_ratio == 3.0  # medians over passing samples
    assert b.enamel_scores == (0.0, 1.0)
    assert c.cost_ratio is None and c.enamel_scores == (0.0, 0.0)

    metrics = aggregate(summaries)
    assert metrics["pass@1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert metrics["base_pass@1"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert metrics["pass@2"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert metrics["eff@1"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert metrics["eff@2"] == pytest.approx((1.5 + 1.0 + 0.0) / 3)
    assert metrics["solved_tasks"] == 2 and metrics["measured_tasks"] == 2
    assert metrics["normalized_cost_mean"] == pytest.approx(1.25)
    assert metrics["normalized_cost_max"] == pytest.approx(2.0)
    assert metrics["normalized_memory_max"] == pytest.approx(3.0)
    assert metrics["speedup_geomean"] == pytest.approx(1.0)  # sqrt(2 * 0.5)
    assert metrics["faster_than_reference"] == pytest.approx(0.5)


def test_ks_for() -> None:
    assert ks_for(1) == [1]
    assert ks_for(3) == [1, 3]
    assert ks_for(10) == [1, 5, 10]
    assert ks_for(200) == [1, 5, 10, 100]
