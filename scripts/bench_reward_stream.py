#!/usr/bin/env python3
"""Reward streaming on and off, side by side: how much of a step waits for rewards.

One process builds the recipe's placement, reward stage and controller once, then runs real
training steps (generate, score, train) with ``rollout.stream_rewards`` on and off in turn, after
one warm-up step, so both variants see the same model, the same kind of batch and the same machine
load. Per variant it prints the medians of the step's wall time, generation, the whole reward time
(``time_reward_s``: from the first completion handed over to scored), the part of it the step
waited for after generation (``time_reward_exposed_s``) and that part's share of the step.

    python scripts/bench_reward_stream.py                     # the CPU quickstart, 3 rounds
    python scripts/bench_reward_stream.py --rounds 5 --json bench_reward_stream.json
    python scripts/bench_reward_stream.py --recipe quickstart_gpu      # on a GPU
    python scripts/bench_reward_stream.py --tiny              # a tiny model, one row at a time (CI)

Time: on 2 CPU cores with the quickstart, about 1 minute to load and 45 s a step (1 + 2 x rounds
steps: 6 minutes with 3 rounds); --tiny under a minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Runnable from a source checkout that is not pip-installed.
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_table import (  # noqa: E402
    add_table_flag,
    append_row,
    machine_description,
    reproduce_command,
    table_row,
)

KEYS = (
    "time_step_s",
    "time_generate_s",
    "time_reward_s",
    "time_reward_exposed_s",
    "exposed_share",
    "reward_stream/scored_during_generation",
)
# --tiny: the smoke recipe's random model, decoding one row at a time so that samples finish apart.
TINY = ["rollout.engine=fast", "rollout.batch_size=1", "rollout.max_new_tokens=32"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe", default="quickstart.yaml", help="recipe name or file (default: quickstart.yaml)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="steps of each variant, alternating")
    parser.add_argument("--tiny", action="store_true", help="the smoke recipe's tiny model, one round")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_table_flag(parser)
    return parser.parse_args(argv)


def timed_step(controller: Any, streaming: bool) -> dict[str, float]:
    controller.streaming = streaming
    started = time.perf_counter()
    metrics = controller.step()
    metrics["time_step_s"] = time.perf_counter() - started
    metrics["exposed_share"] = metrics["time_reward_exposed_s"] / metrics["time_step_s"]
    return {key: float(metrics[key]) for key in KEYS}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from rlhf.algorithms import resolve_algorithm
    from rlhf.config import load_config
    from rlhf.distributed.placement import make_placement
    from rlhf.models.loading import resolve_device
    from rlhf.rollout.task_sampler import TaskSampler
    from rlhf.scoring.reward_stage import RewardStage
    from rlhf.training.controller import Controller
    from rlhf.training.trainer import load_run_tasks

    recipe = "smoke" if args.tiny else args.recipe
    rounds = 1 if args.tiny else args.rounds
    runs: dict[str, list[dict[str, float]]] = {"after": [], "streamed": []}
    with tempfile.TemporaryDirectory(prefix="effirl-bench-stream-") as scratch:
        config = load_config(recipe, [*(TINY if args.tiny else []), *args.overrides, f"output_dir={scratch}"])
        spec = resolve_algorithm(config.algorithm.name, config.algorithm.policy_loss)
        train_tasks, _ = load_run_tasks(config)
        placement = make_placement(config, spec)
        rewards = RewardStage(config)
        sampler = TaskSampler(
            train_tasks, config.data.prompts_per_step, seed=config.data.seed, shuffle=config.data.shuffle
        )
        controller = Controller(config, spec, placement, rewards, sampler)
        try:
            print(f"[stream] warm-up step: {timed_step(controller, True)}", flush=True)
            for round_ in range(rounds):
                for streaming in (True, False) if round_ % 2 == 0 else (False, True):
                    result = timed_step(controller, streaming)
                    runs["streamed" if streaming else "after"].append(result)
                    print(f"[stream] streamed={streaming}: {result}", flush=True)
        finally:
            rewards.close()
            placement.close()
    medians = {
        variant: {key: statistics.median(r[key] for r in results) for key in KEYS}
        for variant, results in runs.items()
    }
    after, streamed = medians["after"], medians["streamed"]
    results = {
        "recipe": recipe,
        "overrides": [*(TINY if args.tiny else []), *args.overrides],
        "machine": machine_description(str(resolve_device(config.model.device))),
        "command": reproduce_command(),
        "runs": runs,
        "medians": medians,
        "exposed_reward_ratio": streamed["time_reward_exposed_s"] / max(after["time_reward_exposed_s"], 1e-9),
    }
    summary = (
        f"`{recipe}` ({config.data.prompts_per_step} x {config.rollout.n_samples} completions, "
        f"{config.rollout.engine} engine, {rewards.backend} rewards), medians of {rounds} alternating "
        f"steps, scored after generation vs streamed: reward time the step waited for "
        f"{after['time_reward_exposed_s'] * 1e3:.3g} vs {streamed['time_reward_exposed_s'] * 1e3:.3g} ms "
        f"({100 * after['exposed_share']:.2g}% vs {100 * streamed['exposed_share']:.2g}% of the step; "
        f"whole reward time {after['time_reward_s']:.2f} vs {streamed['time_reward_s']:.2f} s; "
        f"{streamed['reward_stream/scored_during_generation']:.0%} of the samples scored before "
        f"generation ended); generation {after['time_generate_s']:.1f} vs "
        f"{streamed['time_generate_s']:.1f} s, step {after['time_step_s']:.1f} vs "
        f"{streamed['time_step_s']:.1f} s"
    )
    print(summary, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown and not args.tiny:
        append_row(
            args.markdown, table_row("reward streaming", results["machine"], summary, results["command"])
        )
    return results


if __name__ == "__main__":
    main()
