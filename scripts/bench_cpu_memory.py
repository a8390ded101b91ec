#!/usr/bin/env python3
"""Peak memory and step time of the CPU quickstart, for two learner micro-batch sizes side by side.

Each run is a real ``effirl train`` of ``--recipe`` (default: the CPU quickstart) for ``--steps``
steps without evaluations, in a subprocess of its own: its peak resident set comes from the kernel
(``wait4``), its times from the run's metrics. The variants (``train.micro_batch_tokens`` of
``--tokens``) alternate ``--rounds`` times, so that both see the same machine load; the medians and
their ratios are printed.

The learner's forward pass keeps every layer's activations for the backward pass: about 1.4 MiB a
token for SmolLM2-135M in fp32, so the micro-batch's token budget decides the peak.

    python scripts/bench_cpu_memory.py                          # 4096 vs 1024 tokens, 2 rounds
    python scripts/bench_cpu_memory.py --tokens 4096 2048 --rounds 3 --json bench_cpu_memory.json
    python scripts/bench_cpu_memory.py --recipe smoke --tokens 512 256 --rounds 1    # a tiny model

Time: about 2 minutes a run on 2 idle CPU cores (model load, one step of 16 completions); with
``--recipe smoke`` (a tiny model) seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_table import (  # noqa: E402
    add_table_flag,
    append_row,
    machine_description,
    reproduce_command,
    table_row,
)


def one_run(recipe: str, tokens: int, steps: int, folder: Path) -> dict[str, float]:
    """Peak RSS (GiB) and the last step's times of one training run in a fresh process."""
    command = [
        sys.executable,
        "-m",
        "rlhf.cli",
        "-q",
        "train",
        recipe,
        f"output_dir={folder}",
        f"train.steps={steps}",
        f"train.micro_batch_tokens={tokens}",
        "eval_at_start=false",
        "eval_at_end=false",
        "--overwrite",
    ]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the run with micro_batch_tokens={tokens} failed: {' '.join(command)}")
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "time_train_s": last["time_train_s"],
        "time_step_s": last["time_step_s"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="quickstart", help="recipe name or file (default: quickstart)")
    parser.add_argument("--tokens", type=int, nargs=2, default=[4096, 1024], metavar=("A", "B"))
    parser.add_argument("--steps", type=int, default=1, help="training steps a run (default: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_table_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    runs: dict[int, list[dict[str, float]]] = {tokens: [] for tokens in args.tokens}
    with tempfile.TemporaryDirectory(prefix="effirl-bench-memory-") as scratch:
        for round_ in range(args.rounds):
            for tokens in args.tokens if round_ % 2 == 0 else reversed(args.tokens):
                result = one_run(args.recipe, tokens, args.steps, Path(scratch) / f"{tokens}-{round_}")
                runs[tokens].append(result)
                print(f"[memory] micro_batch_tokens={tokens}: {result}", flush=True)
    medians = {
        tokens: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for tokens, results in runs.items()
    }
    a, b = (medians[t] for t in args.tokens)
    results = {
        "recipe": args.recipe,
        "machine": machine_description("cpu"),
        "command": reproduce_command(),
        "runs": {str(t): r for t, r in runs.items()},
        "medians": {str(t): m for t, m in medians.items()},
        "peak_ratio": b["peak_rss_gib"] / a["peak_rss_gib"],
        "train_time_ratio": b["time_train_s"] / a["time_train_s"],
    }
    summary = (
        f"`{args.recipe}` one step, learner micro-batch of {args.tokens[0]} vs {args.tokens[1]} tokens, "
        f"medians of {args.rounds} alternating runs: peak RSS {a['peak_rss_gib']:.2f} vs "
        f"{b['peak_rss_gib']:.2f} GiB ({results['peak_ratio']:.2f}x); learner {a['time_train_s']:.1f} vs "
        f"{b['time_train_s']:.1f} s ({results['train_time_ratio']:.2f}x); step {a['time_step_s']:.1f} vs "
        f"{b['time_step_s']:.1f} s"
    )
    print(summary, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        append_row(args.markdown, table_row("CPU memory", results["machine"], summary, results["command"]))
    return results


if __name__ == "__main__":
    main()
