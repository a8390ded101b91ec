"""Side-by-side comparison of two evaluations of the same benchmark (e.g. tuned vs base).

Headlines: pass@1 of both with their 95% intervals and the delta, and on the tasks both solve, the
share where the new model's code is faster, equal or slower, the way ACECode reports "runtime reduced
in X% of cases".

How the costs are compared: `effirl eval --compare` runs the first passing solution of each side
again, interleaved on one sandbox worker (:mod:`rlhf.evaluation.interleaved`), and a difference
counts only when it passes that module's significance rule (beyond the tolerance, and for noisy
measures a sign test over the rounds). Without those measurements (comparing two saved results),
each run's costs are compared through its own reference measurement: the new task speedup
(reference / candidate, both measured in the same run) over the old one, within a tolerance band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rewards.tasks import Task
from rlhf.evaluation.interleaved import PairMeasurement
from rlhf.evaluation.metrics import DEFAULT_TOLERANCE
from rlhf.evaluation.records import EvaluationResult


@dataclass(frozen=True)
class TaskComparison:
    """One task in both runs. ``relative_speed`` is new speed over old speed (>1: new is faster)."""

    task_id: str
    pass_rate_new: float
    pass_rate_old: float
    speedup_new: float | None
    speedup_old: float | None
    relative_speed: float | None
    verdict: str  # faster, equal, slower, "failed" (did not pass when run again), "" when not both solved
    p_value: float | None = None  # the sign test's, when measured side by side


@dataclass
class Comparison:
    """The headline numbers and the per-task rows."""

    new_label: str
    old_label: str
    tolerance: float
    headline: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "new": self.new_label,
            "old": self.old_label,
            "tolerance": self.tolerance,
            "headline": self.headline,
            "tasks": [t.__dict__ for t in self.tasks],
        }


def verdict_of(relative_speed: float, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """``faster`` / ``slower`` when the speeds differ by more than ``tolerance``, else ``equal``."""
    if relative_speed > 1.0 + tolerance:
        return "faster"
    if relative_speed < 1.0 / (1.0 + tolerance):
        return "slower"
    return "equal"


def co_solved_pairs(
    new: EvaluationResult, old: EvaluationResult, tasks: dict[str, Task]
) -> list[tuple[Task, str, str]]:
    """(task, old code, new code) for each task of ``tasks`` that both solved: each side's first
    passing sample, to be measured side by side."""

    def first_passing(result: EvaluationResult) -> dict[str, str]:
        chosen: dict[str, str] = {}
        for sample in sorted(result.samples, key=lambda s: s.index):
            if sample.passed:
                chosen.setdefault(sample.task_id, sample.code)
        return chosen

    new_codes, old_codes = first_passing(new), first_passing(old)
    return [(tasks[t], old_codes[t], new_codes[t]) for t in new_codes if t in old_codes and t in tasks]


def compare_results(
    new: EvaluationResult,
    old: EvaluationResult,
    tolerance: float = DEFAULT_TOLERANCE,
    measurements: list[PairMeasurement] | None = None,
) -> Comparison:
    """Compare ``new`` against ``old`` on the tasks both evaluated.

    ``measurements`` (from :func:`rlhf.evaluation.interleaved.measure_pairs`) decide the runtime
    verdicts of the tasks they cover; without them the runs' own speedups are compared.
    Raises ValueError when they measured cost differently or share no task.
    """
    if tolerance < 0:
        raise ValueError(f"the equal band must be >= 0, got {tolerance}")
    measure_new, measure_old = new.meta.get("cost"), old.meta.get("cost")
    if measure_new != measure_old:
        raise ValueError(
            f"cannot compare costs measured as {measure_new!r} with costs measured as {measure_old!r}; "
            f"evaluate both with the same --cost"
        )
    new_rows, old_rows = new.task_rows(), old.task_rows()
    shared = [task_id for task_id in new_rows if task_id in old_rows]
    if not shared:
        raise ValueError("the two evaluations share no task; compare runs of the same benchmark")
    comparison = Comparison(label_of(new), label_of(old), tolerance)
    side_by_side = {m.task_id: m for m in measurements or ()}
    for task_id in shared:
        a, b = new_rows[task_id], old_rows[task_id]
        relative, p_value = None, None
        if task_id in side_by_side:
            measured = side_by_side[task_id]
            relative, verdict, p_value = measured.ratio, measured.verdict, measured.p_value
        else:
            if a.get("speedup") is not None and b.get("speedup") is not None and not side_by_side:
                relative = a["speedup"] / b["speedup"]
            verdict = "" if relative is None else verdict_of(relative, tolerance)
        comparison.tasks.append(
            TaskComparison(
                task_id=task_id,
                pass_rate_new=a["correct"] / a["n"],
                pass_rate_old=b["correct"] / b["n"],
                speedup_new=a.get("speedup"),
                speedup_old=b.get("speedup"),
                relative_speed=relative,
                verdict=verdict,
                p_value=p_value,
            )
        )
    both = [t for t in comparison.tasks if t.verdict in ("faster", "equal", "slower")]
    significant = [t for t in both if t.verdict != "equal"]
    pass_new = sum(t.pass_rate_new for t in comparison.tasks) / len(comparison.tasks)
    pass_old = sum(t.pass_rate_old for t in comparison.tasks) / len(comparison.tasks)
    comparison.headline = {
        "shared_tasks": len(shared),
        "pass@1_new": pass_new,
        "pass@1_old": pass_old,
        "pass@1_delta": pass_new - pass_old,
        "pass@1_ci95_new": _interval(new),
        "pass@1_ci95_old": _interval(old),
        "measured_side_by_side": bool(side_by_side),
        "both_solved": len(both),
        "failed_when_rerun": sum(t.verdict == "failed" for t in comparison.tasks),
        "faster": _share(both, "faster"),
        "equal": _share(both, "equal"),
        "slower": _share(both, "slower"),
        "significant": len(significant),
        "faster_of_significant": _share(significant, "faster"),
        "solved_only_new": sum(t.pass_rate_new > 0 and t.pass_rate_old == 0 for t in comparison.tasks),
        "solved_only_old": sum(t.pass_rate_old > 0 and t.pass_rate_new == 0 for t in comparison.tasks),
    }
    return comparison


def _interval(result: EvaluationResult) -> list[float] | None:
    low, high = result.metrics.get("pass@1_ci95_low"), result.metrics.get("pass@1_ci95_high")
    return None if low is None or high is None else [low, high]


def _share(rows: list[TaskComparison], verdict: str) -> float | None:
    return sum(t.verdict == verdict for t in rows) / len(rows) if rows else None


def label_of(result: EvaluationResult) -> str:
    """A short name for a result: its adapter or checkpoint, else its base model."""
    meta = result.meta
    return str(meta.get("label") or meta.get("checkpoint") or meta.get("adapter") or meta.get("model") or "?")


def comparison_markdown(comparison: Comparison, max_rows: int = 50) -> str:
    """The headline and the per-task table as Markdown (the first ``max_rows`` tasks)."""
    h = comparison.headline
    lines = [
        f"**new** = `{comparison.new_label}`, **old** = `{comparison.old_label}`; "
        f"equal = within {comparison.tolerance:.0%}.",
        "",
        f"- pass@1: {h['pass@1_new']:.3f} vs {h['pass@1_old']:.3f} ({h['pass@1_delta']:+.3f}) "
        f"on {h['shared_tasks']} shared tasks",
        f"- solved by new only: {h['solved_only_new']}, by old only: {h['solved_only_old']}",
    ]
    for side in ("new", "old"):
        interval = h.get(f"pass@1_ci95_{side}")
        if interval:
            lines.append(f"- pass@1 {side}: 95% interval [{interval[0]:.3f}, {interval[1]:.3f}]")
    how = (
        "measured again side by side (a difference counts beyond the tolerance and a sign test at 5%)"
        if h.get("measured_side_by_side")
        else "from each run's own speedups"
    )
    if h["both_solved"]:
        lines.append(
            f"- on the {h['both_solved']} tasks both solve, {how}, new code is faster in "
            f"{h['faster']:.0%}, equal in {h['equal']:.0%} and slower in {h['slower']:.0%} of cases"
        )
        if h.get("significant"):
            lines.append(
                f"- of the {h['significant']} tasks with a significant difference, new code is faster "
                f"in {h['faster_of_significant']:.0%}"
            )
    else:
        lines.append("- no task is solved by both, so no runtime comparison")
    lines += [
        "",
        "| task | pass new | pass old | speedup new | speedup old | new/old speed | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in comparison.tasks[:max_rows]:
        lines.append(
            f"| {row.task_id} | {row.pass_rate_new:.2f} | {row.pass_rate_old:.2f} | {_x(row.speedup_new)} | "
            f"{_x(row.speedup_old)} | {_x(row.relative_speed)} | {row.verdict or '-'} |"
        )
    if len(comparison.tasks) > max_rows:
        lines.append(f"| ... {len(comparison.tasks) - max_rows} more in compare.json | | | | | | |")
    return "\n".join(lines) + "\n"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
