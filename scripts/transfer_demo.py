#!/usr/bin/env python3
"""Does efficiency learnt on the training families carry over? Base vs tuned, on four benchmarks.

Two phases, so that the GPU is used only for what needs it:

    # on the GPU, after `scripts/quickstart_seeds.py --recipe transfer_gpu --out runs/transfer`:
    python scripts/transfer_demo.py generate --runs runs/transfer --out eval/transfer
    # anywhere (a quiet machine measures costs best):
    python scripts/transfer_demo.py measure --out eval/transfer [--json summary.json] [--markdown]

``generate`` writes greedy completions (``effirl eval --generate-only``) of the base model and of every
seed's newest checkpoint for each benchmark. ``measure`` scores them (``--rescore``) and compares each
seed with the base (``--compare``: the solutions of tasks both solve are measured again side by side,
and a difference counts only when it is significant; docs/evaluation.md). It prints, per seed and as
mean and spread over seeds:

- (a) held-out families (never trained on): speedup geomean over the base on co-solved tasks, eff@1;
- (b) held-out tasks of the training families: pass@1 and eff@1;
- (c) HumanEval+ and MBPP+: pass@1 with its 95% interval, and faster / equal / slower on co-solved
  tasks (and the share of significant differences that favour the tuned model).

Writes ``OUT/summary.json`` and ``OUT/transfer.png``; ``--markdown`` appends a row to
docs/benchmarks.md (otherwise the checkout stays untouched).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = "builtin:smollm2-135m-instruct"
# name -> (benchmark, split, limit, max new tokens)
BENCHMARKS: dict[str, tuple[str, str | None, int | None, int]] = {
    "heldout_families": ("synthetic_mixed", "heldout_families", 360, 160),
    "in_family": ("synthetic_mixed", "heldout", 300, 160),
    "humanevalplus": ("humanevalplus", None, None, 384),
    "mbppplus": ("mbppplus", None, None, 384),
}


def effirl(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhf.cli", *args]


def benchmark_args(name: str, most: int | None = None) -> list[str]:
    benchmark, split, limit, _ = BENCHMARKS[name]
    if most is not None:
        limit = most if limit is None else min(limit, most)
    args = ["--benchmark", benchmark]
    if split is not None:
        args += ["--split", split]
    if limit is not None:
        args += ["--limit", str(limit)]
    return args


def newest_checkpoints(runs: Path) -> dict[str, Path]:
    """seed name -> its newest complete checkpoint."""
    sys.path.insert(0, str(REPO))
    from rlhf.training.checkpoint import list_checkpoints

    found = {}
    for seed in sorted(p for p in runs.glob("seed-*") if p.is_dir()):
        checkpoints = list_checkpoints(seed)
        if checkpoints:
            found[seed.name] = checkpoints[-1]
    if not found:
        raise SystemExit(f"no checkpoints under {runs}/seed-*/checkpoints; train first")
    return found


def run(command: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")


def generate(args: argparse.Namespace) -> int:
    models = {"base": ["--model", args.base_model]}
    models.update({seed: ["--checkpoint", str(path)] for seed, path in newest_checkpoints(args.runs).items()})
    jobs = [
        (
            effirl(
                "eval",
                *source,
                *benchmark_args(name, args.limit),
                "--max-new-tokens",
                str(BENCHMARKS[name][3]),
                "--generate-only",
                "--out",
                str(args.out / name / f"{model}-completions"),
            ),
            args.out / "logs" / f"generate-{name}-{model}.log",
        )
        for name in args.benchmarks
        for model, source in models.items()
    ]
    run(*jobs[0])  # alone first: it converts the built-in model once for the others
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda job: run(*job), jobs[1:]))
    print(f"[transfer] completions of {', '.join(models)} on {', '.join(args.benchmarks)} in {args.out}")
    return 0


def measure(args: argparse.Namespace) -> int:
    summary: dict[str, Any] = {"benchmarks": {}, "created": _now()}
    for name in args.benchmarks:
        folder = args.out / name
        seeds = sorted(p.name[: -len("-completions")] for p in folder.glob("seed-*-completions"))
        common = [*benchmark_args(name, args.limit), "--cost", args.cost, "--repeats", str(args.repeats)]
        if args.workers:
            common += ["--workers", str(args.workers)]
        base = folder / "base"
        if not (base / "results.json").exists() or args.again:
            run(
                effirl("eval", "--rescore", str(folder / "base-completions"), *common, "--out", str(base)),
                args.out / "logs" / f"measure-{name}-base.log",
            )
        rows = []
        for seed in seeds:
            tuned = folder / seed
            if not (tuned / "compare.json").exists() or args.again:
                run(
                    effirl(
                        "eval",
                        "--rescore",
                        str(folder / f"{seed}-completions"),
                        *common,
                        "--compare",
                        str(base),
                        "--compare-rounds",
                        str(args.rounds),
                        "--out",
                        str(tuned),
                    ),
                    args.out / "logs" / f"measure-{name}-{seed}.log",
                )
            rows.append(seed_row(seed, tuned, base))
        summary["benchmarks"][name] = {"base": _metrics(base), "seeds": rows, "spread": spread(rows)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(markdown(summary))
    try:
        plot(summary, args.out / "transfer.png")
    except ImportError:
        print("[transfer] matplotlib is not installed: transfer.png not drawn")
    if args.markdown:
        append_benchmark_row(summary, args)
    return 0


def _metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())["metrics"]


def seed_row(seed: str, tuned: Path, base: Path) -> dict[str, Any]:
    metrics = _metrics(tuned)
    compare = json.loads((tuned / "compare.json").read_text())
    ratios = [t["relative_speed"] for t in compare["tasks"] if t["verdict"] in ("faster", "equal", "slower")]
    head = compare["headline"]
    return {
        "seed": seed,
        "pass@1": metrics["pass@1"],
        "pass@1_ci95": [metrics.get("pass@1_ci95_low"), metrics.get("pass@1_ci95_high")],
        "eff@1": metrics["eff@1"],
        "co_solved": head["both_solved"],
        "speedup_geomean_vs_base": _geomean(ratios),
        "faster": head["faster"],
        "equal": head["equal"],
        "slower": head["slower"],
        "significant": head.get("significant"),
        "faster_of_significant": head.get("faster_of_significant"),
    }


def spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("pass@1", "eff@1", "speedup_geomean_vs_base", "faster", "slower", "faster_of_significant"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    return out


def _geomean(values: list[float]) -> float | None:
    positive = [v for v in values if v and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in positive)) if positive else None


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for name, block in summary["benchmarks"].items():
        base = block["base"]
        lines += [
            f"### {name}",
            "",
            f"base: pass@1 {_f(base['pass@1'])} [{_f(base.get('pass@1_ci95_low'))}, "
            f"{_f(base.get('pass@1_ci95_high'))}], eff@1 {_f(base['eff@1'])}",
            "",
            "| seed | pass@1 [95%] | eff@1 | co-solved | speedup vs base (geomean) "
            "| faster / equal / slower | faster of significant |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in block["seeds"]:
            low, high = row["pass@1_ci95"]
            lines.append(
                f"| {row['seed']} | {_f(row['pass@1'])} [{_f(low)}, {_f(high)}] | {_f(row['eff@1'])} | "
                f"{row['co_solved']} | {_f(row['speedup_geomean_vs_base'], 2)}x | {_f(row['faster'], 2)} / "
                f"{_f(row['equal'], 2)} / {_f(row['slower'], 2)} | {_f(row['faster_of_significant'], 2)} "
                f"({row['significant']}) |"
            )
        for key, stats in block["spread"].items():
            lines.append(f"- {key}: mean {_f(stats['mean'])}, spread {_f(stats['max'] - stats['min'])}")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["benchmarks"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    for i, name in enumerate(names):
        block = summary["benchmarks"][name]
        tuned = [r["pass@1"] for r in block["seeds"]]
        left.bar(i - 0.2, block["base"]["pass@1"], 0.4, color="#999999", label="base" if i == 0 else None)
        left.bar(
            i + 0.2,
            statistics.fmean(tuned) if tuned else 0,
            0.4,
            color="#3070b0",
            label="tuned (mean of seeds)" if i == 0 else None,
        )
        left.scatter([i + 0.2] * len(tuned), tuned, color="black", s=10, zorder=3)
        shares = [
            statistics.fmean(r[k] or 0 for r in block["seeds"]) if block["seeds"] else 0
            for k in ("faster", "equal", "slower")
        ]
        bottom = 0.0
        for share, colour, label in zip(
            shares, ("#2a9d55", "#cccccc", "#c0392b"), ("faster", "equal", "slower")
        ):
            right.bar(i, share, 0.6, bottom=bottom, color=colour, label=label if i == 0 else None)
            bottom += share
    for axes, title in ((left, "pass@1 (greedy)"), (right, "tuned vs base on co-solved tasks")):
        axes.set_xticks(range(len(names)), names, fontsize=8)
        axes.set_title(title)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def append_benchmark_row(summary: dict[str, Any], args: argparse.Namespace) -> None:
    cells = []
    for name, block in summary["benchmarks"].items():
        stats = block["spread"]
        mean = {key: value["mean"] for key, value in stats.items()}
        cells.append(
            f"{name}: pass@1 {_f(block['base']['pass@1'])} -> {_f(mean.get('pass@1'))}, speedup vs base "
            f"{_f(mean.get('speedup_geomean_vs_base'), 2)}x, faster {_f(mean.get('faster'), 2)} / slower "
            f"{_f(mean.get('slower'), 2)}"
        )
    row = (
        f"| {summary['created'][:10]} | transfer: SmolLM2-135M + LoRA trained on 25 families, judged on "
        f"unseen ones and on HumanEval+/MBPP+ ({len(next(iter(summary['benchmarks'].values()))['seeds'])} "
        "seeds) | "
        f"see docs/bench_results | {'; '.join(cells)} | `python scripts/transfer_demo.py measure --out "
        f"{args.out}` |"
    )
    with (REPO / "docs" / "benchmarks.md").open("a") as f:
        f.write(row + "\n")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    phases = parser.add_subparsers(dest="phase", required=True)
    gen = phases.add_parser("generate", help="greedy completions of the base and every seed (GPU)")
    gen.add_argument("--runs", type=Path, required=True, help="the --out of scripts/quickstart_seeds.py")
    gen.add_argument("--parallel", type=int, default=4, help="evaluations at once (default: 4)")
    gen.add_argument("--base-model", default=BASE_MODEL, help=f"the base model (default: {BASE_MODEL})")
    gen.add_argument("--limit", type=int, help="at most this many tasks per benchmark (a quick check)")
    mea = phases.add_parser("measure", help="score, compare with the base side by side, summarise")
    mea.add_argument("--cost", default="cpu", help="cost measure (default: cpu)")
    mea.add_argument("--repeats", type=int, default=3, help="runs per solution and reference (default: 3)")
    mea.add_argument("--rounds", type=int, default=10, help="side-by-side rounds per co-solved task")
    mea.add_argument("--workers", type=int, help="sandbox processes (default: one per core)")
    mea.add_argument("--again", action="store_true", help="score again what was scored already")
    mea.add_argument("--limit", type=int, help="the --limit given to generate")
    mea.add_argument("--json", help="also write the summary here")
    mea.add_argument("--markdown", action="store_true", help="append a row to docs/benchmarks.md")
    for sub in (gen, mea):
        sub.add_argument("--out", type=Path, required=True, help="folder of the completions and results")
        sub.add_argument(
            "--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS), help="which to run"
        )
    args = parser.parse_args(argv)
    return generate(args) if args.phase == "generate" else measure(args)


if __name__ == "__main__":
    sys.exit(main())
