"""Measure two solutions of each task side by side: one process, the same load, the same timer.

Costs of two evaluations made at different times (or on different machines) differ by whatever else
the machine was doing. To compare a tuned model's solution with the base model's, both are run again
here, alternately, ``rounds`` times each (old then new, new then old, ...), on one sandbox worker, and
compared round by round.

The significance rule: a task's difference counts (``faster`` or ``slower``) only when

- the two sides' median costs differ by more than ``tolerance`` (relative), and
- for a noisy measure (CPU time, hardware counters), the rounds agree on the direction more often
  than chance allows: a two-sided sign test over the per-round pairs at level ``alpha`` (with 10
  rounds, at least 9 of 10 must agree). Deterministic measures (``python_events``, ``callgrind``)
  are run once each: their difference is exact, so only the tolerance applies.

Everything else is ``equal``. A solution that does not pass when run again is reported as such and
left out of the shares.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rewards.scorer import job_for
from rewards.shaping import cost_value
from rewards.tasks import Task
from sandbox.jobs import Job

EXACT_MEASURES = ("python_events", "callgrind")
DEFAULT_ROUNDS = 10
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class PairMeasurement:
    """One task's two solutions measured side by side. ``ratio`` is old cost / new cost (>1: new is
    faster); ``agree`` the rounds in which new was cheaper; ``p_value`` the sign test's."""

    task_id: str
    old_costs: tuple[float, ...]
    new_costs: tuple[float, ...]
    ratio: float | None
    agree: int
    rounds: int
    p_value: float
    verdict: str  # faster, slower, equal, or "failed" when a solution did not pass again
    note: str = ""


def sign_test_p(successes: int, trials: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this lopsided under a fair coin."""
    if trials == 0:
        return 1.0
    extreme = max(successes, trials - successes)
    tail = sum(math.comb(trials, k) for k in range(extreme, trials + 1)) / 2**trials
    return min(1.0, 2 * tail)


def verdict_for(
    old_costs: Sequence[float],
    new_costs: Sequence[float],
    *,
    exact: bool,
    tolerance: float,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[float | None, int, float, str]:
    """(ratio, rounds new was cheaper, p-value, verdict) for costs measured round by round."""
    old_median, new_median = statistics.median(old_costs), statistics.median(new_costs)
    if new_median <= 0 or old_median <= 0:
        return None, 0, 1.0, "equal"
    ratio = old_median / new_median
    agree = sum(n < o for o, n in zip(old_costs, new_costs))
    ties = sum(n == o for o, n in zip(old_costs, new_costs))
    trials = len(old_costs) - ties
    p_value = 0.0 if exact else sign_test_p(agree, trials)
    beyond = ratio > 1.0 + tolerance or ratio < 1.0 / (1.0 + tolerance)
    if not beyond or p_value >= alpha:
        return ratio, agree, p_value, "equal"
    return ratio, agree, p_value, "faster" if ratio > 1.0 else "slower"


def measure_pairs(
    pairs: Sequence[tuple[Task, str, str]],
    *,
    cost: str,
    rounds: int = DEFAULT_ROUNDS,
    tolerance: float,
    alpha: float = DEFAULT_ALPHA,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    cost_job: Callable[[Task, str], Job] = job_for,
    progress: bool = True,
) -> list[PairMeasurement]:
    """Measure each (task, old code, new code) side by side (see the module docstring)."""
    exact = cost in EXACT_MEASURES
    runs = 1 if exact else rounds
    measure_once = _callgrind_measurer() if cost == "callgrind" else None
    from tqdm.auto import tqdm

    from sandbox import Sandbox, SandboxConfig

    config = SandboxConfig(
        workers=1,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        count_python_events=cost == "python_events",
        count_instructions=cost == "instructions",
    )
    measured: list[PairMeasurement] = []
    with Sandbox(config) as box:
        for task, old_code, new_code in tqdm(pairs, desc="compare", unit="task", disable=not progress):
            jobs = {"old": cost_job(task, old_code), "new": cost_job(task, new_code)}
            costs: dict[str, list[float]] = {"old": [], "new": []}
            failed = ""
            for round_number in range(runs):
                order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
                for side in order:
                    value, problem = (
                        measure_once(jobs[side]) if measure_once else _sandbox_cost(box, jobs[side], cost)
                    )
                    if value is None:
                        failed = failed or f"the {side} solution: {problem}"
                        break
                    costs[side].append(value)
                if failed:
                    break
            if failed:
                measured.append(PairMeasurement(task.id, (), (), None, 0, 0, 1.0, "failed", failed))
                continue
            ratio, agree, p_value, verdict = verdict_for(
                costs["old"], costs["new"], exact=exact, tolerance=tolerance, alpha=alpha
            )
            measured.append(
                PairMeasurement(
                    task.id, tuple(costs["old"]), tuple(costs["new"]), ratio, agree, runs, p_value, verdict
                )
            )
    return measured


def _sandbox_cost(box: object, job: Job, cost: str) -> tuple[float | None, str]:
    result = box.run(job)  # type: ignore[attr-defined]
    if not result.ok:
        return None, f"{result.status.value} when run again ({result.error})"
    value = cost_value(result.cost, cost)
    return (None, f"no {cost} measurement") if value is None else (value, "")


def _callgrind_measurer() -> Callable[[Job], tuple[float | None, str]]:
    from sandbox.callgrind import CallgrindFailed, count_instructions

    def measure(job: Job) -> tuple[float | None, str]:
        try:
            return float(count_instructions(job)), ""
        except CallgrindFailed as exc:
            return None, str(exc)

    return measure
