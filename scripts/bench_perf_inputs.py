"""Does measuring on perf tests make efficiency visible on real tasks? Fast vs slow, side by side.

For each entry of ``tests/rewards/fixtures/perf_variants.py`` (a HumanEval+ or MBPP+ task, a correct
fast solution and a correct slower one), both solutions are first checked against every correctness
test and every perf test of the task. Then, ``--trials`` times, each solution's cost is measured on
the task's perf tests and on its correctness tests alone (what cost meant before perf tests), each
measurement the minimum CPU time of ``--repeats`` sandbox runs, fast and slow back to back in
alternating order. Reported, for both kinds of test side by side:

- rank accuracy: the share of (task, trial) measurements in which the fast solution cost less than
  the slow one (one measurement is what a reward sees), and the share of tasks whose median costs
  rank right;
- cost CV: the coefficient of variation of each solution's cost over the trials (median and worst
  over the tasks, and the share of tasks at or below 2%), for all solutions and for those whose
  cost reaches the perf-input floor; and the CV of the slow/fast ratio of the measurements taken
  back to back, in which a change of the machine's load between trials cancels.

Perf tests come from effirl's recipes (``effirl data perf-inputs``), built and cached on first use.
Writes JSON with ``--json`` and a row in docs/benchmarks.md with ``--markdown``; nothing otherwise.

    python scripts/bench_perf_inputs.py [--trials 5] [--repeats 5] [--tasks HumanEval/9 Mbpp/96]

Time: about 10 minutes on 2 busy cores with the defaults (plus building the perf inputs once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from rewards.datasets import load_tasks  # noqa: E402
from rewards.datasets.perf_search import DEFAULT_FLOOR_MS  # noqa: E402
from rewards.tasks import Task  # noqa: E402
from sandbox.jobs import FunctionJob  # noqa: E402
from tests.rewards.fixtures.perf_variants import VARIANTS, Variant  # noqa: E402

CV_TARGET = 0.02
KINDS = ("perf", "correctness")


@dataclass
class Row:
    """One variant's measurements: CPU ms per trial, per kind of test and side."""

    task_id: str
    pattern: str
    ok: bool
    problem: str = ""
    perf_inputs: list[str] = field(default_factory=list)
    costs: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def summary(self, kind: str) -> dict[str, Any]:
        fast, slow = self.costs[kind]["fast"], self.costs[kind]["slow"]
        right = sum(f < s for f, s in zip(fast, slow))
        return {
            "fast_ms": statistics.median(fast),
            "slow_ms": statistics.median(slow),
            "ratio": statistics.median(slow) / max(statistics.median(fast), 1e-9),
            "cv_fast": cv(fast),
            "cv_slow": cv(slow),
            # slow/fast of the measurements taken back to back: load drift between trials cancels
            "cv_ratio": cv([s / max(f, 1e-9) for f, s in zip(fast, slow)]),
            "ranked_right": right,
            "trials": len(fast),
            "median_ranked_right": statistics.median(fast) < statistics.median(slow),
        }


def cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if len(values) > 1 and mean > 0 else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5, help="measurements per solution (default 5)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs per measurement; the min counts (default 5)"
    )
    parser.add_argument("--tasks", nargs="+", metavar="ID", help="only these task ids")
    parser.add_argument(
        "--workers", type=int, default=1, help="sandbox workers (default 1: runs one at a time)"
    )
    parser.add_argument("--timeout-s", type=float, default=60.0, help="limit of one run (default 60)")
    parser.add_argument(
        "--noise",
        action="store_true",
        help="only measure how the cost of a loop varies with its length (what the floor is chosen from)",
    )
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument(
        "--markdown", type=Path, help="append a summary row to this table (docs/benchmarks.md)"
    )
    return parser.parse_args(argv)


def load_variant_tasks(variants: list[Variant]) -> dict[str, Task]:
    wanted = {v.task_id for v in variants}
    tasks: dict[str, Task] = {}
    for dataset, prefix in (("humanevalplus", "HumanEval/"), ("mbppplus", "Mbpp/")):
        if any(t.startswith(prefix) for t in wanted):
            tasks.update({t.id: t for t in load_tasks(dataset) if t.id in wanted})
    return tasks


def check(box: Any, task: Task, variant: Variant) -> str:
    """Why a variant cannot be measured (a side fails a test), or ''."""
    for side in ("fast", "slow"):
        code = getattr(variant, side)
        for kind, tests in (("correctness", task.function_tests), ("perf", task.perf_tests)):
            result = box.run(FunctionJob(code, task.entry_point, tuple(tests), task.atol))
            if not result.ok:
                return f"{side} fails its {kind} tests: {result.status.value} {result.error}"
    if not task.perf_tests:
        return "the task has no perf tests"
    return ""


def measure(box: Any, task: Task, code: str, tests: tuple, repeats: int) -> float:
    result = box.run(FunctionJob(code, task.entry_point, tests, task.atol, repeats=repeats))
    if not result.ok or result.cost is None:
        raise RuntimeError(f"{task.id}: {result.status.value} while measuring: {result.error}")
    return result.cost.cpu_ns / 1e6


def run(args: argparse.Namespace) -> list[Row]:
    from rewards.datasets.input_growth import describe
    from sandbox import Sandbox, SandboxConfig

    variants = [v for v in VARIANTS if not args.tasks or v.task_id in args.tasks]
    tasks = load_variant_tasks(variants)
    rows = [Row(v.task_id, v.pattern, ok=v.task_id in tasks) for v in variants]
    config = SandboxConfig(workers=args.workers, timeout_s=args.timeout_s, cost_aggregate="min")
    with Sandbox(config) as box:
        for row, variant in zip(rows, variants):
            if not row.ok:
                row.problem = "task not found"
                continue
            task = tasks[row.task_id]
            row.perf_inputs = [describe(t.args) for t in task.perf_tests]
            row.problem = check(box, task, variant)
            row.ok = not row.problem
            row.costs = {kind: {"fast": [], "slow": []} for kind in KINDS}
        live = [(row, variant) for row, variant in zip(rows, variants) if row.ok]
        for trial in range(args.trials):
            started = time.monotonic()
            for row, variant in live:
                task = tasks[row.task_id]
                sides = ("fast", "slow") if trial % 2 == 0 else ("slow", "fast")
                for kind, tests in (("perf", task.perf_tests), ("correctness", task.function_tests)):
                    for side in sides:
                        cost = measure(box, task, getattr(variant, side), tuple(tests), args.repeats)
                        row.costs[kind][side].append(cost)
            print(f"trial {trial + 1}/{args.trials}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return rows


def totals(rows: list[Row], kind: str, floor_ms: float) -> dict[str, Any]:
    measured = [r for r in rows if r.ok]
    summaries = [r.summary(kind) for r in measured]
    cvs = [s[f"cv_{side}"] for s in summaries for side in ("fast", "slow")]
    above = [s[f"cv_{side}"] for s in summaries for side in ("fast", "slow") if s[f"{side}_ms"] >= floor_ms]
    trials = sum(s["trials"] for s in summaries)
    ratio_cvs = [s["cv_ratio"] for s in summaries]
    return {
        "ratio_cv_median": statistics.median(ratio_cvs) if ratio_cvs else 0.0,
        "ratio_cv_within_target": sum(c <= CV_TARGET for c in ratio_cvs) / max(len(ratio_cvs), 1),
        "tasks": len(measured),
        "rank_accuracy": sum(s["ranked_right"] for s in summaries) / trials if trials else 0.0,
        "median_rank_accuracy": sum(s["median_ranked_right"] for s in summaries) / max(len(summaries), 1),
        "cv_median": statistics.median(cvs) if cvs else 0.0,
        "cv_max": max(cvs, default=0.0),
        "cv_within_target": sum(c <= CV_TARGET for c in cvs) / max(len(cvs), 1),
        "costs_above_floor": len(above),
        "cv_median_above_floor": statistics.median(above) if above else None,
        "cv_max_above_floor": max(above, default=None),
        "cv_within_target_above_floor": sum(c <= CV_TARGET for c in above) / len(above) if above else None,
    }


def table(rows: list[Row]) -> str:
    head = (
        "| task | slower variant | perf: fast / slow ms | ratio | CV fast / slow | right "
        "| correctness tests: fast / slow ms | ratio | CV fast / slow | right |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if not row.ok:
            lines.append(f"| {row.task_id} | {row.pattern} | not measured: {row.problem} |||||||| |")
            continue
        cells = [row.task_id, row.pattern]
        for kind in KINDS:
            s = row.summary(kind)
            cells += [
                f"{s['fast_ms']:.2f} / {s['slow_ms']:.2f}",
                f"{s['ratio']:.2f}x",
                f"{100 * s['cv_fast']:.1f}% / {100 * s['cv_slow']:.1f}%",
                f"{s['ranked_right']}/{s['trials']}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_text(result: dict[str, dict[str, Any]]) -> str:
    lines = []
    for kind in KINDS:
        t = result[kind]
        above = (
            f"; costs at or above the {DEFAULT_FLOOR_MS:g} ms floor: {t['costs_above_floor']}, "
            f"CV median {100 * t['cv_median_above_floor']:.1f}%, worst {100 * t['cv_max_above_floor']:.1f}%, "
            f"{100 * t['cv_within_target_above_floor']:.0f}% at or below 2%"
            if t["costs_above_floor"]
            else ""
        )
        lines.append(
            f"{kind} tests: {t['tasks']} tasks, ranked right in {100 * t['rank_accuracy']:.1f}% of "
            f"measurements ({100 * t['median_rank_accuracy']:.1f}% of tasks by median); cost CV median "
            f"{100 * t['cv_median']:.1f}%, worst {100 * t['cv_max']:.1f}%, "
            f"{100 * t['cv_within_target']:.0f}% of costs at or below 2%{above}; CV of the paired slow/fast "
            f"ratio median {100 * t['ratio_cv_median']:.1f}%, {100 * t['ratio_cv_within_target']:.0f}% of "
            "tasks at or below 2%"
        )
    return "\n".join(lines)


LOOP = "def f(n):\n    s = 0\n    for i in range(n):\n        s += i * i\n    return s\n"


def noise(args: argparse.Namespace) -> list[dict[str, float]]:
    """CV over ``--trials`` (at least 10) measurements of a loop of growing length, one run per
    measurement and the min of ``--repeats``."""
    from sandbox import Sandbox, SandboxConfig
    from sandbox.types import FunctionTest

    rows = []
    config = SandboxConfig(workers=args.workers, timeout_s=args.timeout_s, cost_aggregate="min")
    with Sandbox(config) as box:
        for n in (2_000, 20_000, 100_000, 200_000, 500_000, 1_000_000):
            test = (FunctionTest((n,), sum(i * i for i in range(n))),)
            for repeats in (1, args.repeats):
                costs = []
                for _ in range(max(args.trials, 10)):
                    result = box.run(FunctionJob(LOOP, "f", test, repeats=repeats))
                    costs.append(result.cost.cpu_ns / 1e6)  # type: ignore[union-attr]
                row = {"n": n, "repeats": repeats, "mean_ms": statistics.fmean(costs), "cv": cv(costs)}
                rows.append(row)
                print(
                    f"loop of {n:>9,}  min of {repeats}: {row['mean_ms']:8.3f} ms  CV {100 * row['cv']:5.1f}%"
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.noise:
        rows = noise(args)
        if args.json:
            args.json.write_text(json.dumps({"noise": rows}, indent=2) + "\n")
        return 0
    os.environ.setdefault("EFFIRL_DATA_DIR", str(REPO.parent / "shared" / "data"))
    rows = run(args)
    result = {kind: totals(rows, kind, DEFAULT_FLOOR_MS) for kind in KINDS}
    print(table(rows))
    print()
    print(summary_text(result))
    if args.json:
        payload = {
            "trials": args.trials,
            "repeats": args.repeats,
            "floor_ms": DEFAULT_FLOOR_MS,
            "totals": result,
            "rows": [asdict(r) | ({k: r.summary(k) for k in KINDS} if r.ok else {}) for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        import platform

        from scripts.benchmark_table import append_row, reproduce_command, table_row

        machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
        text = summary_text(result).replace("\n", "; ")
        append_row(
            args.markdown,
            table_row(
                "perf tests vs correctness tests (fast vs slow variants)", machine, text, reproduce_command()
            ),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
