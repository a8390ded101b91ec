"""Run a recipe under several seeds and report whether it learns beyond the seed-to-seed spread.

Each seed is one `effirl train` run (``train.seed`` and ``data.seed`` set to it) into
``OUT/seed-N``; the recipe's evaluations at step 0 and at the end (held-out tasks) are read back
from each run's ``eval.jsonl``. The acceptance the quickstart is held to: the held-out pass rate and
the mean speedup over the reference both end above their step-0 values by more than the spread of
the final values across seeds (max - min).

    python scripts/quickstart_seeds.py --out runs/seeds                      # 3 seeds, one at a time
    python scripts/quickstart_seeds.py --recipe quickstart_gpu --parallel 3 --out runs/g

Writes ``OUT/seeds.json``, plots every seed's evaluations and training pass rate against the step
(``OUT/learning_curves.png``) and prints a Markdown table (one row per seed plus the verdict).
``--report-only`` does the writing and printing for runs already in OUT.

Long runs on a machine lent by the hour: ``--budget-min M`` stops the runs after M minutes (each
keeps its newest checkpoint; set ``save_every``), and ``--resume`` later continues every unfinished
seed from its checkpoint instead of starting over. Minutes add up across those invocations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CURVE_KEYS = ("step", "pass_rate", "speedup_mean", "speedup_geomean", "reward")
# eval.jsonl of runs from before the metrics took TRL's names.
OLD_NAMES = {"reward": "reward_mean"}


def train_command(recipe: str, seed: int, out: Path, overrides: list[str]) -> list[str]:
    # This interpreter's own effirl, not whichever `effirl` comes first on PATH.
    return [
        sys.executable,
        "-m",
        "rlhf.cli",
        "train",
        recipe,
        f"train.seed={seed}",
        f"data.seed={seed}",
        f"output_dir={out}",
        *overrides,
    ]


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """A finished run's evaluation records, the first at step 0 and the last at the end."""
    path = run_dir / "eval.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} is missing: the run failed (see {run_dir / 'train.log'})")
    records = _records(path)
    if len(records) < 2 or records[0].get("step") != 0:
        raise SystemExit(
            f"{path} needs an evaluation at step 0 and at the end: set eval_at_start/eval_at_end"
        )
    return records


def metric(record: dict[str, Any], name: str) -> float:
    """A metric as a number; no passing sample means no speedup, which counts as 0 (no gain)."""
    value = record.get(name)
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def verdict(rows: list[dict[str, Any]], name: str) -> dict[str, float | bool]:
    starts = [metric(r["start"], name) for r in rows]
    ends = [metric(r["end"], name) for r in rows]
    spread = max(ends) - min(ends) if len(ends) > 1 else 0.0
    gain = sum(ends) / len(ends) - sum(starts) / len(starts)
    worst_gain = min(e - s for s, e in zip(starts, ends))
    return {
        "start_mean": sum(starts) / len(starts),
        "end_mean": sum(ends) / len(ends),
        "gain_mean": gain,
        "worst_seed_gain": worst_gain,
        "spread": spread,
        "learns": gain > spread and worst_gain > 0,
    }


class SeedState:
    """Bookkeeping in ``OUT/seed-N/seeds_state.json``: seconds spent so far and whether it finished."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "seeds_state.json"
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.seconds: float = float(saved.get("seconds", 0.0))
        self.done: bool = bool(saved.get("done", False))

    def save(self) -> None:
        self.path.write_text(json.dumps({"seconds": self.seconds, "done": self.done}))


def _start(args: argparse.Namespace, seed: int) -> tuple[subprocess.Popen[bytes], Any] | None:
    """Start (or, with --resume, continue) one seed's run; None when it already finished."""
    run_dir = args.out / f"seed-{seed}"
    # A seed stopped before its first checkpoint has nothing to resume: it starts over.
    resuming = args.resume and any((run_dir / "checkpoints").glob("step-*"))
    if args.resume and run_dir.exists() and SeedState(run_dir).done:
        print(f"[seeds] seed {seed}: finished earlier", flush=True)
        return None
    if not resuming:
        # The minutes already spent on this seed still count when it starts over.
        spent = SeedState(run_dir).seconds if args.resume and run_dir.exists() else 0.0
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        if spent:
            state = SeedState(run_dir)
            state.seconds = spent
            state.save()
    log = (run_dir / "train.log").open("ab")
    command = train_command(args.recipe, seed, run_dir, args.override)
    if resuming:
        command.append("resume=auto")
    print(f"[seeds] seed {seed}: {' '.join(command)}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log


def run_seeds(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """Every seed's first and last evaluation; None when --budget-min stopped runs before the end."""
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    pending = list(args.seeds)
    running: list[tuple[int, subprocess.Popen[bytes], float, Any]] = []
    stopped = False
    while pending or running:
        while pending and len(running) < args.parallel and not stopped:
            seed = pending.pop(0)
            started = _start(args, seed)
            if started is not None:
                running.append((seed, started[0], time.perf_counter(), started[1]))
        if stopped and not running:
            break
        time.sleep(2.0)
        if args.budget_min and not stopped and time.perf_counter() - began > args.budget_min * 60:
            stopped = True
            print(f"[seeds] budget of {args.budget_min} min spent: stopping; continue with --resume")
            for _, process, _, _ in running:
                process.terminate()
        for item in list(running):
            seed, process, started_at, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            state = SeedState(args.out / f"seed-{seed}")
            state.seconds += time.perf_counter() - started_at
            state.done = process.returncode == 0
            state.save()
            if not state.done and not stopped:
                tail = (args.out / f"seed-{seed}" / "train.log").read_text(errors="replace")[-3000:]
                for _, other, _, _ in running:
                    other.kill()
                raise SystemExit(f"seed {seed} failed with exit status {process.returncode}:\n{tail}")
            verb = "done" if state.done else "stopped"
            print(f"[seeds] seed {seed} {verb} after {state.seconds / 60:.1f} min in all", flush=True)
    if stopped or pending:
        return None
    return read_rows(args.out, args.seeds)


def read_rows(out: Path, seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        run_dir = out / f"seed-{seed}"
        evaluations = read_evaluations(run_dir)
        curve = [{k: r.get(k, r.get(OLD_NAMES.get(k, k))) for k in CURVE_KEYS} for r in evaluations]
        rows.append(
            {
                "seed": seed,
                "minutes": SeedState(run_dir).seconds / 60,
                "start": evaluations[0],
                "end": evaluations[-1],
                "curve": curve,
            }
        )
    return rows


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _rolling_mean(values: list[float], window: int) -> list[float]:
    means = []
    for end in range(1, len(values) + 1):
        recent = values[max(0, end - window) : end]
        means.append(sum(recent) / len(recent))
    return means


def plot_learning_curves(out: Path, rows: list[dict[str, Any]], path: Path, window: int = 10) -> Path:
    """Held-out pass rate and mean speedup at each evaluation (the rows' curves), and the training
    batches' pass rate (each run's metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    for row in rows:
        seed, evaluations = row["seed"], row["curve"]
        steps = [r["step"] for r in evaluations]
        for axis, name in zip(axes[:2], ("pass_rate", "speedup_mean")):
            axis.plot(steps, [metric(r, name) for r in evaluations], marker="o", label=f"seed {seed}")
        training = _records(out / f"seed-{seed}" / "metrics.jsonl")
        passed = _rolling_mean([metric(r, "pass_rate") for r in training], window)
        axes[2].plot([r["step"] for r in training], passed, label=f"seed {seed}")
    titles = (
        "held-out pass rate",
        "held-out mean speedup over the reference",
        f"training pass rate (mean of {window} steps)",
    )
    for axis, title in zip(axes, titles):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def markdown(rows: list[dict[str, Any]], verdicts: dict[str, dict[str, Any]]) -> str:
    def cell(record: dict[str, Any], name: str) -> str:
        value = record.get(name, record.get(OLD_NAMES.get(name, name)))
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        "| seed | minutes | pass rate step 0 -> end | mean speedup step 0 -> end | reward step 0 -> end |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        s, e = row["start"], row["end"]
        lines.append(
            f"| {row['seed']} | {row['minutes']:.1f} | {cell(s, 'pass_rate')} -> {cell(e, 'pass_rate')} | "
            f"{cell(s, 'speedup_mean')} -> {cell(e, 'speedup_mean')} | "
            f"{cell(s, 'reward')} -> {cell(e, 'reward')} |"
        )
    for name, v in verdicts.items():
        lines.append(
            f"\n{name}: mean {v['start_mean']:.3f} -> {v['end_mean']:.3f} (gain {v['gain_mean']:+.3f}, "
            f"worst seed {v['worst_seed_gain']:+.3f}); spread of final values {v['spread']:.3f}: "
            f"{'learns' if v['learns'] else 'NOT above the spread'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe",
        default="quickstart",
        help="a recipe file or a built-in recipe's name (default: quickstart, or quickstart_gpu on a GPU)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (default 1: CPU runs compete)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and seeds.json")
    parser.add_argument(
        "--budget-min", type=float, default=None, help="stop the runs after this many minutes (see --resume)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue unfinished seeds in OUT from their newest checkpoints"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing: report on the seeds' runs already in OUT"
    )
    parser.add_argument("override", nargs="*", help="key=value overrides passed to every run")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.budget_min is not None and args.budget_min <= 0:
        parser.error("--budget-min must be positive")
    rows = read_rows(args.out, args.seeds) if args.report_only else run_seeds(args)
    if rows is None:
        print(f"[seeds] unfinished: run again with --resume --out {args.out} to continue")
        return 3
    try:
        plot_learning_curves(args.out, rows, args.out / "learning_curves.png")
    except ImportError:  # a lean GPU image: plot later with --report-only where matplotlib is
        print("[seeds] matplotlib is not installed: learning_curves.png not drawn")
    verdicts = {name: verdict(rows, name) for name in ("pass_rate", "speedup_mean")}
    summary = {"recipe": args.recipe, "overrides": args.override, "seeds": rows, "verdicts": verdicts}
    (args.out / "seeds.json").write_text(json.dumps(summary, indent=2))
    print(markdown(rows, verdicts))
    return 0 if all(v["learns"] for v in verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
