#!/usr/bin/env python3
"""Learner step with and without shared prompt passes (``train.share_prompts``), side by side.

One RL step of the learner (:class:`rlhf.learner.updates.Learner`: micro-batch packing, forward, backward,
clipping, AdamW) on a GRPO batch of ``--prompts`` distinct prompts with ``--samples`` completions
each, on a model of ``--shape`` with random weights plus a rank-16 LoRA adapter. The defaults are
the CPU quickstart's batch: SmolLM2-135M, 4 prompts of about 225 tokens (191-262 in the
synthetic_optimise training tasks), 4 samples of up to 96 tokens. The two variants alternate,
``--repeats`` times each, and the medians and their ratio are printed, with the largest difference
of the two variants' gradients relative to their norm.

    python scripts/bench_shared_prompts.py                      # the CPU quickstart's batch
    python scripts/bench_shared_prompts.py --tiny               # a tiny model, seconds (CI check)
    python scripts/bench_shared_prompts.py --shape qwen2.5-0.5b --prompts 16 --samples 8 --device cuda

Time: about 2 minutes on 2 CPU cores with the defaults; under a minute on a GPU; --tiny seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402
from benchmark_table import (  # noqa: E402
    add_table_flag,
    append_row,
    machine_description,
    reproduce_command,
    table_row,
)

from rlhf.algorithms import resolve_algorithm  # noqa: E402
from rlhf.config import AlgorithmConfig, TrainConfig  # noqa: E402
from rlhf.learner.updates import Learner, LearnerOptions  # noqa: E402
from rlhf.models.loading import adapter_parameters, apply_lora  # noqa: E402
from rlhf.models.shapes import MODEL_SHAPES, random_model  # noqa: E402
from rlhf.types import TrainBatch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="smollm2-135m", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--tiny", action="store_true", help="tiny model, short sequences (CI check)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda")
    parser.add_argument("--prompts", type=int, default=4, help="distinct prompts (groups)")
    parser.add_argument("--samples", type=int, default=4, help="completions per prompt")
    parser.add_argument("--prompt-tokens", type=int, nargs=2, default=[191, 262], metavar=("MIN", "MAX"))
    parser.add_argument("--completion-tokens", type=int, nargs=2, default=[20, 96], metavar=("MIN", "MAX"))
    parser.add_argument("--micro-batch-tokens", type=int, default=4096, help="the learner's budget")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    add_table_flag(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.shape, args.device, args.repeats, args.markdown = "tiny", "cpu", 1, None
        args.prompt_tokens, args.completion_tokens = [12, 20], [4, 10]
    for name in ("prompts", "samples", "repeats", "micro_batch_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def grpo_batch(args: argparse.Namespace, vocab: int) -> TrainBatch:
    """Left-padded prompts repeated ``samples`` times, right-padded completions, +-1 advantages."""
    gen = torch.Generator().manual_seed(0)

    def draw(bounds: list[int]) -> int:
        return int(torch.randint(bounds[0], bounds[1] + 1, (1,), generator=gen))

    prompt_lengths = [draw(args.prompt_tokens) for _ in range(args.prompts)]
    rows = args.prompts * args.samples
    width_p, width_c = max(prompt_lengths), args.completion_tokens[1]
    prompt_ids = torch.zeros(rows, width_p, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    completion_ids = torch.randint(3, vocab, (rows, width_c), generator=gen)
    completion_mask = torch.zeros_like(completion_ids)
    for group, length in enumerate(prompt_lengths):
        prompt = torch.randint(3, vocab, (length,), generator=gen)
        for row in range(group * args.samples, (group + 1) * args.samples):
            prompt_ids[row, width_p - length :] = prompt
            prompt_mask[row, width_p - length :] = 1
            completion_mask[row, : draw(args.completion_tokens)] = 1
    completion_ids = completion_ids * completion_mask
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(rows)]).unsqueeze(1)
    return TrainBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        old_logprobs=torch.zeros(rows, width_c),
        advantages=signs.expand(rows, width_c).clone(),
    )


def learner_of(model: Any, args: argparse.Namespace, share: bool, temperature: float) -> Learner:
    options = LearnerOptions(
        # A learning rate of ~0 leaves the shared model as it was, so both variants see the same weights.
        train=TrainConfig(lr=1e-12, micro_batch_tokens=args.micro_batch_tokens, share_prompts=share),
        algorithm=AlgorithmConfig(),
        temperature=temperature,
        max_new_tokens=args.completion_tokens[1],
        spec=resolve_algorithm("grpo"),
        on_policy=True,
    )
    return Learner(model, list(adapter_parameters(model).values()), options)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, _ = random_model(args.shape, dtype=dtype, device=device)
    model = apply_lora(model, rank=16, alpha=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for parameter in adapter_parameters(model).values():
            torch.nn.init.normal_(parameter, std=0.01)  # a trained-looking adapter, not B = 0
    batch = grpo_batch(args, model.get_base_model().config.vocab_size)
    learners = {share: learner_of(model, args, share, temperature=0.7) for share in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    gradients: dict[bool, torch.Tensor] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not timed
        for share, learner in learners.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            learner.step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if repeat:
                times[share].append(time.perf_counter() - started)
            gradients[share] = torch.cat([p.grad.float().reshape(-1) for p in learner.policy_parameters])
    full, shared = statistics.median(times[False]), statistics.median(times[True])
    mask = batch.completion_mask
    real_full = int(batch.prompt_mask.sum() + mask.sum())
    real_shared = int(batch.prompt_mask[:: args.samples].sum() + mask.sum())
    results = {
        "machine": machine_description(args.device),
        "command": reproduce_command(),
        "shape": args.shape,
        "rows": len(batch),
        "groups": args.prompts,
        "tokens_full": real_full,
        "tokens_shared": real_shared,
        "step_s_full": full,
        "step_s_shared": shared,
        "speedup": full / shared,
        "gradient_difference": float((gradients[False] - gradients[True]).norm() / gradients[False].norm()),
    }
    print(
        f"{args.shape}, {args.prompts} prompts x {args.samples} samples ({real_full} real tokens, "
        f"{real_shared} with shared prompts), {args.repeats} repeats on {results['machine']}:\n"
        f"  full pass      {full:8.3f} s a learner step\n"
        f"  shared prompts {shared:8.3f} s a learner step\n"
        f"  ratio {results['speedup']:.2f}x; gradients differ by {results['gradient_difference']:.1e} "
        "of their norm",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        summary = (
            f"{args.shape} + LoRA r16, learner step on {args.prompts} prompts x {args.samples} samples "
            f"({real_full} real tokens, {real_shared} with shared prompts): full pass {full:.3f} s, "
            f"shared prompts {shared:.3f} s: {results['speedup']:.2f}x; gradients differ by "
            f"{results['gradient_difference']:.1e} of their norm"
        )
        row = table_row("learner shared prompt passes", results["machine"], summary, results["command"])
        append_row(args.markdown, row)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
