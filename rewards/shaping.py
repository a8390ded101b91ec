"""Reward shaping: sandbox verdicts and costs in, one reward per sample with its parts out.

Pure functions of their inputs (see docs/rewards.md for the formulas)::

    reward = correctness + efficiency_weight * efficiency + format_weight * format + penalty

- correctness: 1 if every test passed else 0 (``binary``), or passed / total (``fraction``).
- efficiency (correct samples only, else 0): ``log(clamp(speedup, 1/c, c)) / log(c)`` with
  ``c = speedup_clip``, so it lies in [-1, 1]; the speedup is ``baseline_cost / cost`` against the
  task's reference (``reference``), the median cost of the correct samples of the same group
  (``group``; needs two or more of them), or the mean of the two scores that exist (``both``).
- format: the mean of "a code fence was found" and, for function tasks, "the entry point is defined".
- penalty: ``timeout_penalty``, ``syntax_error_penalty`` or ``missing_entry_point_penalty`` by the
  verdict's error kind; 0 otherwise.

A ``sandbox_error`` verdict (the sandbox failed, not the sample) scores 0 in every part.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from rewards.settings import RewardSettings, cost_trusted
from rewards.tasks import Task
from sandbox.types import Cost, ExecutionResult, Status

# error_kind of a sample that passed its correctness tests but ran past the limit on its perf tests
# (rewards.scorer.submit_run): correct, and as slow as can be measured.
PERF_TIMEOUT = "perf_timeout"
# Costs are floored at one unit of each measure's resolution so that a run too short to measure
# cannot divide by zero or claim an unbounded speedup.
COST_FLOOR = {"cpu": 1e-6, "instructions": 1.0, "python_events": 1.0}


class FormatSignals(Protocol):
    """What extraction saw in a completion (``rewards.extraction.ExtractedCode`` has these fields)."""

    @property
    def had_fence(self) -> bool: ...

    @property
    def found_entry_point(self) -> bool: ...


@dataclass(frozen=True)
class Evidence:
    """What a reward is based on.

    status: the sandbox verdict (``passed``, ``failed``, ``timeout``, ...).
    passed / total: tests passed and run.
    cost: the sample's cost in ``cost_measure`` units (CPU seconds for ``cpu``), None if not measured.
    reference_cost: the task's reference cost in the same units, None without a reference.
    speedup: ``reference_cost / cost`` (floored costs), None unless both exist and the sample passed.
    group_cost / group_speedup: the median cost of the correct samples of the group and
        ``group_cost / cost``; None with fewer than two correct samples.
    cost_measure: the unit of the costs (``rewards.settings.COST_MEASURES``).
    error_kind / error: the sandbox's machine-readable kind and message of what went wrong.
    """

    status: str
    passed: int
    total: int
    cost: float | None
    reference_cost: float | None
    speedup: float | None
    group_cost: float | None = None
    group_speedup: float | None = None
    cost_measure: str = "cpu"
    error_kind: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def cost_trusted(self) -> bool:
        """Whether the costs were read from outside the candidate (False for ``python_events``)."""
        return cost_trusted(self.cost_measure)


EVIDENCE_FIELDS = frozenset(f.name for f in fields(Evidence))


@dataclass(frozen=True)
class Reward:
    """One sample's reward (``value``), its unweighted parts and the evidence behind it."""

    value: float
    correctness: float
    efficiency: float
    format: float
    penalty: float
    evidence: Evidence

    @property
    def parts(self) -> dict[str, float]:
        return {
            "correctness": self.correctness,
            "efficiency": self.efficiency,
            "format": self.format,
            "penalty": self.penalty,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"reward": self.value, "parts": self.parts, "evidence": self.evidence.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reward:
        """Inverse of :meth:`to_dict` (what the HTTP service returns per scored item)."""
        parts = data["parts"]
        return cls(
            value=float(data["reward"]),
            correctness=float(parts["correctness"]),
            efficiency=float(parts["efficiency"]),
            format=float(parts["format"]),
            penalty=float(parts["penalty"]),
            # Fields a newer service adds are left out, so that older clients keep reading its answers.
            evidence=Evidence(**{k: v for k, v in data["evidence"].items() if k in EVIDENCE_FIELDS}),
        )


def cost_value(cost: Cost | None, measure: str) -> float | None:
    """A run's cost in ``measure`` units (CPU seconds, instructions, Python events); None if missing."""
    if cost is None:
        return None
    if measure == "cpu":
        return cost.cpu_ns / 1e9
    if measure == "instructions":
        return None if cost.instructions is None else float(cost.instructions)
    if measure == "python_events":
        return None if cost.python_events is None else float(cost.python_events)
    raise ValueError(f"unknown cost measure {measure!r}; use cpu, instructions or python_events")


def speedup_of(baseline: float, cost: float, measure: str) -> float:
    """``baseline / cost`` with both floored at the measure's resolution."""
    floor = COST_FLOOR[measure]
    return max(baseline, floor) / max(cost, floor)


def efficiency_score(speedup: float, clip: float) -> float:
    """``log(clamp(speedup, 1/clip, clip)) / log(clip)``: 0 at parity, +-1 at the clip, log-symmetric."""
    if not clip > 1:
        raise ValueError(f"speedup_clip must be > 1, got {clip}")
    clamped = min(max(speedup, 1.0 / clip), clip)
    return math.log(clamped) / math.log(clip)


def correctness_score(result: ExecutionResult, mode: str) -> float:
    if mode == "binary":
        return 1.0 if result.status is Status.PASSED else 0.0
    if result.status is Status.PASSED:
        return 1.0
    return result.passed / result.total if result.total else 0.0


def penalty_of(result: ExecutionResult, settings: RewardSettings) -> float:
    if result.status is Status.TIMEOUT:
        return settings.timeout_penalty
    if result.status is Status.SYNTAX_ERROR:
        return settings.syntax_error_penalty
    if result.error_kind == "missing_entry_point":
        return settings.missing_entry_point_penalty
    return 0.0


def format_score(signals: FormatSignals | None, task: Task) -> float:
    """Mean of the format indicators that apply; 0 when nothing is known about the completion."""
    if signals is None:
        return 0.0
    checks = [bool(signals.had_fence)]
    if task.entry_point is not None:
        checks.append(bool(signals.found_entry_point))
    return sum(checks) / len(checks)


def group_baselines(
    results: Sequence[ExecutionResult], group_ids: Sequence[Hashable], measure: str
) -> dict[Hashable, float]:
    """Median cost of the correct samples per group, for groups with at least two of them."""
    costs: dict[Hashable, list[float]] = defaultdict(list)
    for result, group in zip(results, group_ids):
        value = cost_value(result.cost, measure) if result.status is Status.PASSED else None
        if value is not None:
            costs[group].append(value)
    return {group: statistics.median(values) for group, values in costs.items() if len(values) >= 2}


def shape_rewards(
    results: Sequence[ExecutionResult],
    tasks: Sequence[Task],
    group_ids: Sequence[Hashable] | None,
    settings: RewardSettings,
    *,
    reference_costs: Sequence[Cost | None] | None = None,
    formats: Sequence[FormatSignals | None] | None = None,
) -> list[Reward]:
    """One :class:`Reward` per result.

    results[i] is the verdict on sample i, which answers tasks[i]; group_ids[i] names its group (the
    samples of one prompt; None puts each task's samples in one group). reference_costs[i] is the
    measured cost of tasks[i]'s reference (None where there is none), formats[i] what extraction saw.
    """
    count = len(results)
    if len(tasks) != count:
        raise ValueError(f"got {count} results but {len(tasks)} tasks; pass one task per result")
    groups = list(group_ids) if group_ids is not None else [task.id for task in tasks]
    references = list(reference_costs) if reference_costs is not None else [None] * count
    signals = list(formats) if formats is not None else [None] * count
    for name, values in (("group_ids", groups), ("reference_costs", references), ("formats", signals)):
        if len(values) != count:
            raise ValueError(f"got {count} results but {len(values)} {name}; pass one per result")
    measure = settings.cost_measure
    baselines = group_baselines(results, groups, measure)
    return [
        _shape_one(result, task, baselines.get(group), reference, signal, settings)
        for result, task, group, reference, signal in zip(results, tasks, groups, references, signals)
    ]


def _shape_one(
    result: ExecutionResult,
    task: Task,
    group_cost: float | None,
    reference: Cost | None,
    signals: FormatSignals | None,
    settings: RewardSettings,
) -> Reward:
    measure = settings.cost_measure
    cost = cost_value(result.cost, measure)
    reference_cost = cost_value(reference, measure)
    passed = result.status is Status.PASSED
    speedup = (
        speedup_of(reference_cost, cost, measure)
        if passed and cost is not None and reference_cost is not None
        else None
    )
    group_speedup = (
        speedup_of(group_cost, cost, measure)
        if passed and cost is not None and group_cost is not None
        else None
    )
    evidence = Evidence(
        status=result.status.value,
        passed=result.passed,
        total=result.total,
        cost=cost,
        reference_cost=reference_cost,
        speedup=speedup,
        group_cost=group_cost,
        group_speedup=group_speedup,
        cost_measure=measure,
        error_kind=result.error_kind,
        error=result.error,
    )
    if result.status is Status.SANDBOX_ERROR:
        return Reward(0.0, 0.0, 0.0, 0.0, 0.0, evidence)
    scores = []
    if settings.efficiency_mode in ("reference", "both") and speedup is not None:
        scores.append(efficiency_score(speedup, settings.speedup_clip))
    if settings.efficiency_mode in ("group", "both") and group_speedup is not None:
        scores.append(efficiency_score(group_speedup, settings.speedup_clip))
    efficiency = sum(scores) / len(scores) if scores else 0.0
    if passed and result.error_kind == PERF_TIMEOUT and settings.efficiency_mode != "none":
        # Past the time limit on perf tests: slower than anything measured, whatever the measure
        # (Python events and instruction counts of a killed run are unknown).
        efficiency = -1.0
    correctness = correctness_score(result, settings.correctness)
    fmt = format_score(signals, task)
    penalty = penalty_of(result, settings)
    value = correctness + settings.efficiency_weight * efficiency + settings.format_weight * fmt + penalty
    return Reward(value, correctness, efficiency, fmt, penalty, evidence)
