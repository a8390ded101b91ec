#!/usr/bin/env python3
"""Learner micro-batch cost: padded vs padding-free packing, chunked output head, checkpointing.

One learner micro-batch is a forward and backward pass of the policy (a Qwen2.5 shape with random
weights plus a LoRA adapter, bf16 autocast as the learner runs it) over samples of mixed prompt and
completion lengths, computing per-token log-probs and entropies. Timed variants:

  * padded: the learner's rectangle (left-padded prompts, right-padded completions);
  * padded + chunked head: the output head and log-softmax ``--chunk`` completion tokens at a time;
  * packed + chunked head: all samples in one padding-free row (:mod:`rlhf.models.packed_logprobs`);
  * padded + chunked head + gradient checkpointing.

Then the memory check: peak memory above the model's for 4 samples of growing completion length,
with and without the chunked head. Unchunked, the float32 logits, their log-softmax and its
exponential are each tokens x vocab (vocab is 151,936 for Qwen2.5) and are kept for the backward
pass; chunked, only chunk x vocab exists at a time, so the extra memory grows with tokens x hidden.

Prints a table, writes JSON (--json) and, with --markdown, appends a row to docs/benchmarks.md
(--tiny never does).

Time: about a minute on one H100; --tiny runs on a CPU in about 20 seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
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

from rlhf.models.loading import apply_lora, resolve_device  # noqa: E402
from rlhf.models.logprobs import completion_logprobs_and_entropy  # noqa: E402
from rlhf.models.packed_logprobs import packed_completion_logprobs_and_entropy  # noqa: E402
from rlhf.models.policy_model import enable_activation_checkpointing  # noqa: E402
from rlhf.models.shapes import MODEL_SHAPES, random_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (CI check)")
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cuda, cpu")
    parser.add_argument("--rows", type=int, default=16, help="samples in the timed micro-batch")
    parser.add_argument("--max-prompt", type=int, default=384, help="prompt lengths are drawn up to this")
    parser.add_argument("--max-completion", type=int, default=512, help="completion lengths up to this")
    parser.add_argument("--chunk", type=int, default=1024, help="completion tokens per output-head chunk")
    parser.add_argument("--memory-lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write results here")
    add_table_flag(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.shape, args.device, args.rows, args.max_prompt, args.max_completion = "tiny", "cpu", 4, 24, 24
        args.chunk, args.memory_lengths, args.repeats, args.markdown = 16, [16, 32], 1, None
    args.device = str(resolve_device(args.device))
    return args


def batch_of(
    lengths: list[tuple[int, int]], vocab: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, ...]:
    """Left-padded prompts and right-padded completions of the given (prompt, completion) lengths."""
    gen = torch.Generator().manual_seed(seed)
    width_p, width_c = max(p for p, _ in lengths), max(c for _, c in lengths)
    prompt_ids = torch.zeros(len(lengths), width_p, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    completion_ids = torch.zeros(len(lengths), width_c, dtype=torch.long)
    completion_mask = torch.zeros_like(completion_ids)
    for i, (p, c) in enumerate(lengths):
        prompt_ids[i, width_p - p :] = torch.randint(3, vocab, (p,), generator=gen)
        prompt_mask[i, width_p - p :] = 1
        completion_ids[i, :c] = torch.randint(3, vocab, (c,), generator=gen)
        completion_mask[i, :c] = 1
    return tuple(t.to(device) for t in (prompt_ids, prompt_mask, completion_ids, completion_mask))


def step(model: Any, batch: tuple[torch.Tensor, ...], packed: bool, chunk: int | None) -> None:
    """A learner micro-batch: log-probs and entropies under autocast, a policy-gradient loss, backward."""
    device = batch[0].device
    function = packed_completion_logprobs_and_entropy if packed else completion_logprobs_and_entropy
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        logprobs, entropy = function(model, *batch, chunk_size=chunk)
    mask = batch[3].float()
    (-(logprobs * mask).sum() / mask.sum() - 1e-3 * (entropy * mask).sum() / mask.sum()).backward()
    model.zero_grad(set_to_none=True)


def measure(device: torch.device, repeats: int, work: Callable[[], None]) -> tuple[float, float]:
    """(median ms, peak GiB above what was allocated before) of ``work``."""
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, _ = random_model(
        args.shape, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32, device=device
    )
    model = apply_lora(model, rank=16, alpha=32)
    model.train()
    vocab = model.get_base_model().config.vocab_size
    gen = torch.Generator().manual_seed(0)
    lengths = [
        (
            int(torch.randint(8, args.max_prompt + 1, (1,), generator=gen)),
            int(torch.randint(8, args.max_completion + 1, (1,), generator=gen)),
        )
        for _ in range(args.rows)
    ]
    batch = batch_of(lengths, vocab, device, seed=1)
    real = sum(p + c for p, c in lengths)
    padded = args.rows * (max(p for p, _ in lengths) + max(c for _, c in lengths))
    results: dict[str, Any] = {
        "machine": machine_description(args.device),
        "command": reproduce_command(),
        "shape": args.shape,
        "rows": args.rows,
        "real_tokens": real,
        "padded_tokens": padded,
        "variants": {},
        "memory": [],
    }
    variants = {
        "padded": (False, None, False),
        "padded_chunked": (False, args.chunk, False),
        "packed_chunked": (True, args.chunk, False),
        "padded_chunked_checkpointing": (False, args.chunk, True),
    }
    for name, (packed, chunk, checkpointing) in variants.items():
        if checkpointing:
            enable_activation_checkpointing(model)
        ms, peak = measure(
            device, args.repeats, lambda packed=packed, chunk=chunk: step(model, batch, packed, chunk)
        )
        results["variants"][name] = {"ms": ms, "peak_gib": peak}
        print(f"{name:32s} {ms:9.1f} ms  peak +{peak:.2f} GiB", flush=True)
    # Newer transformers renamed it (the old name warns).
    getattr(model, "activation_checkpointing_disable", model.gradient_checkpointing_disable)()
    for length in args.memory_lengths:
        sweep = batch_of([(64, length)] * 4, vocab, device, seed=2)
        entry = {"completion_tokens": 4 * length}
        for label, chunk in (("unchunked", None), ("chunked", args.chunk)):
            try:
                _, peak = measure(
                    device, 1, lambda sweep=sweep, chunk=chunk: step(model, sweep, False, chunk)
                )
            except torch.OutOfMemoryError:
                peak = float("inf")
                torch.cuda.empty_cache()
            entry[f"{label}_peak_gib"] = peak
        results["memory"].append(entry)
        print(f"memory, {4 * length:6d} completion tokens: unchunked +{entry['unchunked_peak_gib']:.2f} GiB, "
              f"chunked +{entry['chunked_peak_gib']:.2f} GiB", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        v = results["variants"]
        first, last = results["memory"][0], results["memory"][-1]
        timing = ", ".join(
            f"{label} {v[key]['ms']:.0f} ms (+{v[key]['peak_gib']:.1f} GiB)"
            for label, key in (
                ("padded", "padded"),
                ("chunked head", "padded_chunked"),
                ("packed", "packed_chunked"),
                ("checkpointing", "padded_chunked_checkpointing"),
            )
        )
        summary = (
            f"{args.shape} bf16 + LoRA r16, micro-batch of {args.rows} samples "
            f"({real} real / {padded} padded tokens): {timing}; {first['completion_tokens']} -> "
            f"{last['completion_tokens']} completion tokens: unchunked +{first['unchunked_peak_gib']:.1f} -> "
            f"+{last['unchunked_peak_gib']:.1f} GiB, chunked +{first['chunked_peak_gib']:.1f} -> "
            f"+{last['chunked_peak_gib']:.1f} GiB"
        )
        append_row(
            args.markdown, table_row("learner micro-batch", results["machine"], summary, results["command"])
        )
    return results


if __name__ == "__main__":
    main()
