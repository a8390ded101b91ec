"""Run a recipe under several seeds and report whether it learns beyond the seed-to-seed spread.

Each seed is one `effirl train` run (``train.seed`` and ``data.seed`` set to it) into
``OUT/seed-N``; the recipe's evaluations at step 0 and at the end (held-out tasks) are read back
from each run's ``eval.jsonl``. The acceptance the quickstart is held to: the held-out pass rate and
the mean speedup over the reference both end above their step-0 values by more than the spread of
the final values across seeds (max - min).

    python scripts/quickstart_seeds.py --out runs/seeds                      # 3 seeds, one at a time
    python scripts/quickstart_seeds.py --recipe recipes/quickstart_gpu.yaml --parallel 3 --out runs/g

Writes ``OUT/seeds.json`` and prints a Markdown table (one row per seed plus the verdict).
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


def read_evaluations(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first (step-0) and last evaluation records of a finished run."""
    path = run_dir / "eval.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} is missing: the run failed (see {run_dir / 'train.log'})")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(records) < 2 or records[0].get("step") != 0:
        raise SystemExit(
            f"{path} needs an evaluation at step 0 and at the end: set eval_at_start/eval_at_end"
        )
    return records[0], records[-1]


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


def run_seeds(args: argparse.Namespace) -> list[dict[str, Any]]:
    args.out.mkdir(parents=True, exist_ok=True)
    pending = list(args.seeds)
    running: list[tuple[int, subprocess.Popen[bytes], float, Any]] = []
    finished: dict[int, float] = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            run_dir = args.out / f"seed-{seed}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            log = (run_dir / "train.log").open("wb")
            command = train_command(args.recipe, seed, run_dir, args.override)
            print(f"[seeds] seed {seed}: {' '.join(command)}", flush=True)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((seed, process, time.perf_counter(), log))
        time.sleep(2.0)
        for item in list(running):
            seed, process, started, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            if process.returncode != 0:
                tail = (args.out / f"seed-{seed}" / "train.log").read_text(errors="replace")[-3000:]
                for _, other, _, _ in running:
                    other.kill()
                raise SystemExit(f"seed {seed} failed with exit status {process.returncode}:\n{tail}")
            finished[seed] = time.perf_counter() - started
            print(f"[seeds] seed {seed} done in {finished[seed] / 60:.1f} min", flush=True)
    rows = []
    for seed in args.seeds:
        start, end = read_evaluations(args.out / f"seed-{seed}")
        rows.append({"seed": seed, "minutes": finished[seed] / 60, "start": start, "end": end})
    return rows


def markdown(rows: list[dict[str, Any]], verdicts: dict[str, dict[str, Any]]) -> str:
    def cell(record: dict[str, Any], name: str) -> str:
        value = record.get(name)
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
            f"{cell(s, 'reward_mean')} -> {cell(e, 'reward_mean')} |"
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
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (default 1: CPU runs compete)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and seeds.json")
    parser.add_argument("override", nargs="*", help="key=value overrides passed to every run")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    rows = run_seeds(args)
    verdicts = {name: verdict(rows, name) for name in ("pass_rate", "speedup_mean")}
    summary = {"recipe": args.recipe, "overrides": args.override, "seeds": rows, "verdicts": verdicts}
    (args.out / "seeds.json").write_text(json.dumps(summary, indent=2))
    print(markdown(rows, verdicts))
    return 0 if all(v["learns"] for v in verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
