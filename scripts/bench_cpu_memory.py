#!/usr/bin/env python3
"""Peak memory and step time of the CPU quickstart, for variants of its config side by side.

Each run is a real ``effirl train`` of ``--recipe`` (default: the CPU quickstart) for ``--steps``
steps without evaluations, in a subprocess of its own: its peak resident set comes from the kernel
(``wait4``), its times from the run's last metrics line. A variant is a label and config overrides
(``--variant LABEL:KEY=VALUE,KEY=VALUE``; ``--tokens A B`` is short for two variants of
``train.micro_batch_tokens``). The variants run in turn, ``--rounds`` times, each round in the
opposite order to the last, so that all see the same machine load; the medians and their ratios to
the first variant are printed.

By default the learner's forward allocations in pages of their own (``train.map_activations``,
on for a CPU) are compared with the plain heap: what decides the peak is the C heap's
fragmentation, not what the step needs (docs/performance.md, "CPU memory").

    python scripts/bench_cpu_memory.py                       # heap vs mapped activations, 2 rounds
    python scripts/bench_cpu_memory.py --rounds 3 --json bench_cpu_memory.json
    python scripts/bench_cpu_memory.py --tokens 4096 1024    # two learner micro-batch budgets
    python scripts/bench_cpu_memory.py --variant a:train.micro_batch_tokens=512 --variant b:...
    python scripts/bench_cpu_memory.py --tiny --rounds 1     # a tiny model (CI)

Time: about 1 minute a run on 2 idle CPU cores (model load, one step of 16 completions), so about
4 minutes with the defaults; with ``--tiny`` (``--recipe smoke``) seconds a run.
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

DEFAULT_VARIANTS = ["heap:train.map_activations=false", "mapped:train.map_activations=true"]
# The run's metrics worth a median: the step's parts as the controller timed them.
TIMES = ("time_generate_s", "time_train_s", "time_step_s")


def one_run(recipe: str, overrides: list[str], steps: int, folder: Path) -> dict[str, float]:
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
        "eval_at_start=false",
        "eval_at_end=false",
        *overrides,
        "--overwrite",
    ]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        what = " ".join(overrides) or "the recipe as it is"
        raise SystemExit(f"the run with {what} failed: {' '.join(command)}")
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    return {"peak_rss_gib": usage.ru_maxrss / 2**20, **{key: last[key] for key in TIMES}}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``LABEL:KEY=VALUE,KEY=VALUE`` -> (label, overrides); a bare ``LABEL:`` runs the recipe as it is."""
    label, colon, overrides = text.partition(":")
    if not colon or not label:
        raise argparse.ArgumentTypeError(f"a variant is LABEL:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    pairs = [pair for pair in overrides.split(",") if pair]
    if any("=" not in pair for pair in pairs):
        raise argparse.ArgumentTypeError(f"variant {label!r}: overrides are KEY=VALUE, got {overrides!r}")
    return label, pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="quickstart", help="recipe name or file (default: quickstart)")
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        metavar="LABEL:OVERRIDES",
        help=f"a config variant, repeated; the first is the baseline (default: {' '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--tokens", type=int, nargs=2, metavar=("A", "B"), help="two variants of train.micro_batch_tokens"
    )
    parser.add_argument("--steps", type=int, default=1, help="training steps a run (default: 1)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--tiny", action="store_true", help="the smoke recipe's tiny model (CI)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_table_flag(parser)
    args = parser.parse_args(argv)
    if args.tokens and args.variant:
        parser.error("give --tokens or --variant, not both")
    if args.tokens:
        args.variant = [(str(t), [f"train.micro_batch_tokens={t}"]) for t in args.tokens]
    args.variant = args.variant or [parse_variant(v) for v in DEFAULT_VARIANTS]
    labels = [label for label, _ in args.variant]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        parser.error(f"give at least two variants with distinct labels, got {labels}")
    if args.tiny:
        args.recipe, args.markdown = "smoke", None
    return args


def summary_line(
    recipe: str, steps: int, rounds: int, medians: dict[str, dict[str, float]], ratios: dict
) -> str:
    """The result as one sentence: each variant's medians, and its ratios to the first."""
    parts = []
    for label, median in medians.items():
        text = (
            f"{label}: peak RSS {median['peak_rss_gib']:.2f} GiB, learner {median['time_train_s']:.1f} s, "
            f"step {median['time_step_s']:.1f} s"
        )
        if label in ratios:
            ratio = ratios[label]
            text += f" ({ratio['peak_rss_gib']:.2f}x peak, {ratio['time_train_s']:.2f}x learner, "
            text += f"{ratio['time_step_s']:.2f}x step)"
        parts.append(text)
    run = "one step a run" if steps == 1 else f"{steps} steps a run (times of the last)"
    return f"`{recipe}`, {run}, medians of {rounds} alternating runs: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    variants = dict(args.variant)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="effirl-bench-memory-") as scratch:
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for label in order:
                folder = Path(scratch) / f"{label}-{round_}"
                result = one_run(args.recipe, variants[label], args.steps, folder)
                runs[label].append(result)
                print(f"[memory] {label} ({' '.join(variants[label])}): {result}", flush=True)
    medians = {
        label: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for label, results in runs.items()
    }
    baseline, *others = medians
    ratios = {
        label: {key: medians[label][key] / max(medians[baseline][key], 1e-9) for key in medians[label]}
        for label in others
    }
    results = {
        "recipe": args.recipe,
        "machine": machine_description("cpu"),
        "command": reproduce_command(),
        "variants": variants,
        "runs": runs,
        "medians": medians,
        "ratios_to_first": ratios,
    }
    summary = summary_line(args.recipe, args.steps, args.rounds, medians, ratios)
    print(summary, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        append_row(args.markdown, table_row("CPU memory", results["machine"], summary, results["command"]))
    return results


if __name__ == "__main__":
    main()
