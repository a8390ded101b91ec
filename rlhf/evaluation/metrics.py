"""Correctness and efficiency metrics of sampled solutions: pure functions of per-sample records.

- ``pass@k`` (Chen et al. 2021): the chance that at least one of k samples drawn without
  replacement from n (c correct) is correct, ``1 - C(n-c, k) / C(n, k)``, averaged over tasks.
- ``eff@k`` (ENAMEL, Qiu et al. 2024): the expected *best* efficiency score among k samples drawn
  from n, estimated without bias from the sorted scores ``e_(1) <= ... <= e_(n)`` as
  ``sum_i C(i-1, k-1) / C(n, k) * e_(i)``. A sample's score is
  ``e = max(0, T - t) / (T - t_ref)`` with time limit ``T = alpha * t_ref`` (ENAMEL's alpha = 2),
  i.e. ``max(0, alpha - r) / (alpha - 1)`` for the cost ratio ``r = t / t_ref``: 1 at the reference's
  cost, above 1 when faster, 0 at ``alpha`` times the reference or slower. Wrong samples score 0,
  and so do timeouts: their cost is right-censored at the sandbox's limit, which lies beyond ``T``,
  so ``T - t`` is negative however long they would have run. ENAMEL scores each input size level
  separately and weights them; here ``t`` is the cost over all of a task's tests.
- Normalised cost (EffiBench's NET for time, NMU for peak memory): candidate cost / reference cost
  on the samples that pass, averaged per task, then reported as the mean and the worst over tasks.
- Speedup: reference cost / candidate cost (costs floored at the measure's resolution).
- 95% intervals of pass@1: Wilson's score interval over tasks when every task has one sample (or all
  of a task's samples agree), else the normal interval of the mean of the per-task pass rates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

ENAMEL_ALPHA = 2.0
# Peak memory below this is noise of the page-granular high-water mark; both sides are floored to it.
MEMORY_FLOOR_BYTES = 64 * 1024
# Relative cost differences within this band count as "equal" (timing noise, not a real change).
DEFAULT_TOLERANCE = 0.05


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with ``c`` correct samples out of ``n`` (needs ``k <= n``)."""
    if not 0 <= c <= n:
        raise ValueError(f"correct samples must be in [0, n]; got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n samples; got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - C(n-c, k) / C(n, k) as a product, which stays exact enough for large n.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def eff_at_k(scores: Sequence[float], k: int) -> float:
    """Unbiased estimate of the expected maximum of ``k`` of the per-sample ``scores`` (ENAMEL)."""
    n = len(scores)
    if not 1 <= k <= n:
        raise ValueError(f"eff@k needs 1 <= k <= n samples; got k={k}, n={n}")
    ordered = sorted(scores)
    total = math.comb(n, k)
    return sum(math.comb(i - 1, k - 1) * ordered[i - 1] for i in range(k, n + 1)) / total


def enamel_score(cost_ratio: float | None, alpha: float = ENAMEL_ALPHA) -> float:
    """A sample's ENAMEL efficiency score from its cost ratio ``t / t_ref`` (None: not passed: 0)."""
    if not alpha > 1:
        raise ValueError(f"the ENAMEL time-limit factor alpha must be > 1, got {alpha}")
    if cost_ratio is None:
        return 0.0
    return max(0.0, alpha - cost_ratio) / (alpha - 1.0)


def pass_rate_interval(rates: Sequence[float], z: float = 1.959964) -> tuple[float, float]:
    """A 95% interval for the mean of per-task pass rates (pass@1), clipped to [0, 1].

    With 0/1 rates (one sample per task) it is Wilson's score interval, which stays sensible at 0 and 1;
    otherwise the normal interval of a mean, from the spread of the per-task rates.
    """
    count = len(rates)
    if count == 0:
        raise ValueError("no tasks to estimate a pass rate from")
    mean = statistics.fmean(rates)
    if all(r in (0.0, 1.0) for r in rates):
        centre = (mean + z * z / (2 * count)) / (1 + z * z / count)
        half = z * math.sqrt(mean * (1 - mean) / count + z * z / (4 * count * count)) / (1 + z * z / count)
        return max(0.0, centre - half), min(1.0, centre + half)
    half = z * (statistics.stdev(rates) / math.sqrt(count) if count > 1 else 0.0)
    return max(0.0, mean - half), min(1.0, mean + half)


def ks_for(n: int, wanted: Sequence[int] = (1, 5, 10, 100)) -> list[int]:
    """The k of ``wanted`` that ``n`` samples per task can estimate, plus 1, plus ``n`` itself when it
    is below 10 (so that 2 or 3 samples still report their pass@n)."""
    return sorted({k for k in wanted if 1 <= k <= n} | {1} | ({n} if n < 10 else set()))


def geometric_mean(values: Sequence[float]) -> float | None:
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


@dataclass(frozen=True)
class SampleOutcome:
    """What the metrics need of one sample.

    passed: every test passed. base_passed: the base tests passed (equal to ``passed`` for
    benchmarks without extra tests). cost_ratio / memory_ratio: candidate over reference (None
    unless passed and both were measured).
    """

    task_id: str
    passed: bool
    base_passed: bool
    cost_ratio: float | None = None
    memory_ratio: float | None = None


@dataclass(frozen=True)
class TaskSummary:
    """Per-task numbers: sample counts, median ratios over passing samples, ENAMEL scores."""

    task_id: str
    n: int
    correct: int
    correct_base: int
    cost_ratio: float | None
    memory_ratio: float | None
    speedup: float | None
    enamel_scores: tuple[float, ...]


def summarise_task(
    task_id: str, samples: Sequence[SampleOutcome], alpha: float = ENAMEL_ALPHA
) -> TaskSummary:
    ratios = [s.cost_ratio for s in samples if s.passed and s.cost_ratio is not None]
    memory = [s.memory_ratio for s in samples if s.passed and s.memory_ratio is not None]
    cost_ratio = statistics.median(ratios) if ratios else None
    return TaskSummary(
        task_id=task_id,
        n=len(samples),
        correct=sum(s.passed for s in samples),
        correct_base=sum(s.base_passed for s in samples),
        cost_ratio=cost_ratio,
        memory_ratio=statistics.median(memory) if memory else None,
        speedup=None if cost_ratio is None else 1.0 / cost_ratio,
        enamel_scores=tuple(enamel_score(s.cost_ratio if s.passed else None, alpha) for s in samples),
    )


def aggregate(summaries: Sequence[TaskSummary], ks: Sequence[int] | None = None) -> dict[str, float | None]:
    """Benchmark-level metrics (keys documented in docs/evaluation.md)."""
    if not summaries:
        raise ValueError("no tasks to aggregate")
    n = min(s.n for s in summaries)
    ks = ks_for(n) if ks is None else [k for k in ks if k <= n]
    metrics: dict[str, float | None] = {"tasks": float(len(summaries)), "samples_per_task": float(n)}
    for k in ks:
        metrics[f"pass@{k}"] = statistics.fmean(pass_at_k(s.n, s.correct, k) for s in summaries)
        metrics[f"base_pass@{k}"] = statistics.fmean(pass_at_k(s.n, s.correct_base, k) for s in summaries)
        metrics[f"eff@{k}"] = statistics.fmean(eff_at_k(s.enamel_scores, k) for s in summaries)
    for name, correct in (("pass@1", lambda s: s.correct), ("base_pass@1", lambda s: s.correct_base)):
        low, high = pass_rate_interval([correct(s) / s.n for s in summaries])
        metrics[f"{name}_ci95_low"], metrics[f"{name}_ci95_high"] = low, high
    solved = [s for s in summaries if s.correct > 0]
    measured = [s for s in solved if s.cost_ratio is not None]
    metrics["solved_tasks"] = float(len(solved))
    metrics["measured_tasks"] = float(len(measured))
    ratios = [s.cost_ratio for s in measured if s.cost_ratio is not None]
    memory = [s.memory_ratio for s in measured if s.memory_ratio is not None]
    metrics["normalized_cost_mean"] = statistics.fmean(ratios) if ratios else None
    metrics["normalized_cost_max"] = max(ratios) if ratios else None
    metrics["normalized_memory_mean"] = statistics.fmean(memory) if memory else None
    metrics["normalized_memory_max"] = max(memory) if memory else None
    speedups = [1.0 / r for r in ratios]
    metrics["speedup_geomean"] = geometric_mean(speedups)
    metrics["speedup_median"] = statistics.median(speedups) if speedups else None
    metrics["faster_than_reference"] = (
        sum(s > 1.0 + DEFAULT_TOLERANCE for s in speedups) / len(speedups) if speedups else None
    )
    return metrics
