"""report.md and PNG plots of evaluations (matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf.evaluation.compare import Comparison, comparison_markdown, label_of
from rlhf.evaluation.records import EvaluationResult

COST_UNITS = {
    "cpu": "CPU s",
    "python_events": "Python events",
    "instructions": "instructions",
    "callgrind": "instructions",
}
STEP_METRICS = ("pass@1", "base_pass@1", "eff@1", "speedup_geomean", "normalized_cost_mean")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots_available() -> bool:
    """Whether matplotlib can be imported; without it reports are written without their plots (a
    lean GPU image, say), and say so."""
    try:
        _pyplot()
    except ImportError:
        return False
    return True


NO_PLOTS = "_Plots were not drawn: matplotlib is not installed here (`pip install matplotlib`)._"


def plot_pass_at_k(results: Sequence[EvaluationResult], path: Path) -> Path:
    """Grouped bars: pass@k on all tests and on the base tests, and eff@k, per result."""
    plt = _pyplot()
    keys = [k for k in results[0].metrics if k.startswith(("pass@", "base_pass@", "eff@"))]
    figure, axes = plt.subplots(figsize=(max(5.0, 0.9 * len(keys) * len(results)), 3.6))
    width = 0.8 / len(results)
    for i, result in enumerate(results):
        values = [result.metrics.get(k) or 0.0 for k in keys]
        positions = [j + i * width for j in range(len(keys))]
        bars = axes.bar(positions, values, width, label=label_of(result))
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(keys))], keys, fontsize=8)
    axes.set_ylabel("score")
    axes.set_title("correctness (pass@k) and efficiency (eff@k)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_speedup_cdf(results: Sequence[EvaluationResult], path: Path) -> Path:
    """Empirical CDF of the speedups of passing samples over the reference (log scale)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for result in results:
        speedups = sorted(s.speedup for s in result.samples if s.speedup is not None)
        if speedups:
            fractions = [(i + 1) / len(speedups) for i in range(len(speedups))]
            axes.step(speedups, fractions, where="post", label=f"{label_of(result)} (n={len(speedups)})")
    axes.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xscale("log")
    axes.set_xlabel("speedup over the reference (reference cost / cost)")
    axes.set_ylabel("share of passing samples")
    axes.set_title("speedup distribution")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    else:
        axes.text(0.5, 0.5, "no passing samples", ha="center", va="center", transform=axes.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_metrics_vs_step(steps: Sequence[dict[str, Any]], path: Path) -> Path:
    """Headline metrics against training step (``steps``: dicts with ``step`` and ``metrics``)."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    xs = [row["step"] for row in steps]
    for key in ("pass@1", "base_pass@1", "eff@1"):
        left.plot(xs, [_value(row["metrics"].get(key)) for row in steps], marker="o", label=key)
    left.set_xlabel("training step")
    left.set_ylabel("score")
    left.set_title("correctness and efficiency")
    left.legend(fontsize=8)
    for key in ("speedup_geomean", "normalized_cost_mean"):
        right.plot(xs, [_value(row["metrics"].get(key)) for row in steps], marker="o", label=key)
    right.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    right.set_xlabel("training step")
    right.set_title("cost relative to the reference (solved tasks)")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _value(value: float | None) -> float:
    return math.nan if value is None else value


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(
    folder: Path,
    result: EvaluationResult,
    *,
    comparison: Comparison | None = None,
    other: EvaluationResult | None = None,
    max_task_rows: int = 50,
) -> Path:
    """Write report.md with its plots (pass_at_k.png, speedup_cdf.png) into ``folder``."""
    shown = [result] if other is None else [result, other]
    plotted = plots_available()
    if plotted:
        plot_pass_at_k(shown, folder / "pass_at_k.png")
        plot_speedup_cdf(shown, folder / "speedup_cdf.png")
    meta, metrics = result.meta, result.metrics
    unit = COST_UNITS.get(str(meta.get("cost")), "cost")
    lines = [
        f"# Evaluation: {label_of(result)} on {meta.get('benchmark')}",
        "",
        f"{int(metrics['tasks'])} tasks, {int(metrics['samples_per_task'])} samples each "
        f"(temperature {meta.get('temperature')}, prompt style {meta.get('prompt_style')}); cost measured as "
        f"{meta.get('cost')} ({unit}), {meta.get('repeats')} run(s) per solution{_perf_note(meta)}.",
        "",
        "## Correctness",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if k.startswith(("pass@", "base_pass@"))),
        "",
        "## Efficiency",
        "",
        "| metric | value |",
        "|---|---|",
        *(
            f"| {k} | {_fmt(metrics.get(k))} |"
            for k in metrics
            if k.startswith("eff@")
            or k
            in (
                "solved_tasks",
                "measured_tasks",
                "speedup_geomean",
                "speedup_median",
                "faster_than_reference",
                "normalized_cost_mean",
                "normalized_cost_max",
                "normalized_memory_mean",
                "normalized_memory_max",
            )
        ),
        "",
        f"eff@k uses ENAMEL's score with alpha = {meta.get('enamel_alpha')}; normalized cost/memory are "
        "candidate over reference on solved tasks (EffiBench's NET/NMU): mean and worst.",
        "",
        *(["![pass@k](pass_at_k.png)", "", "![speedups](speedup_cdf.png)"] if plotted else [NO_PLOTS]),
        "",
        "## Verdicts",
        "",
        "| status | share |",
        "|---|---|",
        *(f"| {k.split('/', 1)[1]} | {v:.3f} |" for k, v in metrics.items() if k.startswith("status/")),
        "",
    ]
    lines += group_tables(result)
    if comparison is not None:
        lines += ["## Comparison", "", comparison_markdown(comparison), ""]
    lines += [
        "## Tasks",
        "",
        f"| task | passed | base passed | speedup | cost ({unit}) | reference cost |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.tasks[:max_task_rows]:
        lines.append(
            f"| {row['task_id']} | {row['correct']}/{row['n']} | {row['correct_base']}/{row['n']} | "
            f"{_fmt(row.get('speedup'))} | {_fmt(row.get('cost'))} | {_fmt(row.get('reference_cost'))} |"
        )
    if len(result.tasks) > max_task_rows:
        lines.append(f"\n{len(result.tasks) - max_task_rows} more tasks in results.json.")
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _perf_note(meta: dict[str, Any]) -> str:
    count = meta.get("tasks_with_perf_tests")
    if not count:
        return ""
    return (
        f", on the perf tests of the {count} task(s) that have them "
        "(after the correctness tests pass; on all tests elsewhere)"
    )


def group_tables(result: EvaluationResult) -> list[str]:
    """Markdown lines: metrics per split (when there are several) and per family, if tasks had them."""
    lines: list[str] = []
    splits, families = result.groups.get("split", []), result.groups.get("family", [])
    header = "| tasks | pass@1 | eff@1 | solved | speedup geomean |"
    rule = "|---|---|---|---|---|"

    def cells(row: dict[str, Any]) -> str:
        keys = ("tasks", "pass@1", "eff@1", "solved_tasks", "speedup_geomean")
        values = [_fmt(int(row[k]) if k in ("tasks", "solved_tasks") else row.get(k)) for k in keys]
        return " | ".join(values) + " |"

    if len(splits) > 1:
        lines += ["## Per split", "", "| split " + header, "|---" + rule]
        lines += [f"| {row['split']} | " + cells(row) for row in splits]
        lines.append("")
    if families:
        lines += [
            "## Per family",
            "",
            "Speedup: reference cost over candidate cost, on the solved tasks of each family.",
            "",
            "| split | family " + header,
            "|---|---" + rule,
        ]
        lines += [f"| {row.get('split', '')} | {row['family']} | " + cells(row) for row in families]
        lines.append("")
    return lines


def write_run_report(folder: Path, steps: Sequence[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """report.md and metrics_vs_step.png for every checkpoint of a run (``steps`` as in results.json)."""
    plotted = plots_available()
    if plotted:
        plot_metrics_vs_step(steps, folder / "metrics_vs_step.png")
    lines = [
        f"# Evaluation of run {meta.get('run')} on {meta.get('benchmark')}",
        "",
        f"Step 0 is the base model `{meta.get('model')}`; each later step is that checkpoint's adapter. "
        "Each step's own report is in its folder.",
        "",
        "![metrics vs step](metrics_vs_step.png)" if plotted else NO_PLOTS,
        "",
        "| step | " + " | ".join(STEP_METRICS) + " | report |",
        "|---|" + "---|" * (len(STEP_METRICS) + 1),
    ]
    for row in steps:
        values = " | ".join(_fmt(row["metrics"].get(k)) for k in STEP_METRICS)
        lines.append(f"| {row['step']} | {values} | [{row['folder']}]({row['folder']}/report.md) |")
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
