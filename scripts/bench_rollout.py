#!/usr/bin/env python3
"""Rollout throughput: effirl's fast engine against transformers' generate, side by side.

For each model shape (Qwen2.5-0.5B and 1.5B configs with random weights: speed does not depend on
the weights, and nothing is downloaded) the same policy -- base model plus a LoRA adapter, bf16 --
samples the same prompts (P tokens each, n samples per prompt) for exactly T new tokens (EOS
ignored), once with each of:

  * generate: ``model.generate`` on the PeftModel (LoRA unmerged), as the generate engine and TRL
    run it; the prompt is repeated n times;
  * generate (merged): the same after peft's ``merge_adapter`` (the fairest generate baseline);
  * fast: ``FastRolloutEngine.sample_token_ids`` with its buffers kept warm between calls;
  * fast (cold): the same after ``release_memory``, as in training, so merged weights, KV cache
    and CUDA graphs are rebuilt inside the timed call;
  * fast (fused), with --fused: each decoder layer's halves compiled by torch.compile;
  * with --steps-per-sync K [K ...], the fast engine (and fused) once per block length K (decode
    steps per read of the tokens by the host); the first K is the headline figure;
  * fast (unpacked), with --unpacked on a CPU: float32 weights left in F.linear's layout instead of
    oneDNN's packed one (``pack_weights=False``).

With --profile, one short decode of every variant also runs under torch.profiler with CUDA graphs
off: kernels launched per decode step, GPU time per step (the kernels' own time) against the wall
time per step, and the kernels that take most of it (``profile`` in the JSON). GPU time near wall
time means the step is bound by its kernels; far below, by launching them.

First, a correctness check: greedy tokens of the fast engine (CUDA graphs, and compiled kernels with
--fused) must equal the generate engine's on tiny float32 models (``engine_check`` in the JSON).

Tokens/s counts generated tokens (rows x T) over wall time, prefill included. The memory-bandwidth
bound is the time to read every weight once per decode step plus each row's KV cache so far, at the
device bandwidth measured in the same run by a large device-to-device copy; "% of bound" is that
time over the measured time.

Prints a table, writes JSON (--json) and, with --markdown, appends one row per shape to
docs/benchmarks.md (--tiny never does).

Time: about 2 minutes per shape on one H100 at the defaults (generate dominates: ~20 s per run);
--tiny runs on a CPU in well under a minute (for CI: it checks the script works, not its speed).
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
from transformers import GenerationConfig  # noqa: E402

from rlhf.models.loading import adapter_parameters, apply_lora, resolve_device  # noqa: E402
from rlhf.models.shapes import MODEL_SHAPES, ascii_prompt, random_model  # noqa: E402
from rlhf.rollout import SamplingConfig  # noqa: E402
from rlhf.rollout.fast_engine import FastRolloutEngine  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"], choices=sorted(MODEL_SHAPES)
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU, small batch (CI check)")
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cuda, cpu")
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts")
    parser.add_argument("--n-samples", type=int, default=8, help="samples per prompt (rows = prompts x n)")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt tokens")
    parser.add_argument(
        "--new-tokens", type=int, default=512, help="generated tokens per sample (EOS ignored)"
    )
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant (median reported)")
    parser.add_argument(
        "--fused", action="store_true", help="also time the fast engine with compiled kernels"
    )
    parser.add_argument(
        "--unpacked", action="store_true", help="on a CPU, also time the fast engine without packed weights"
    )
    parser.add_argument("--skip-merged-generate", action="store_true", help="skip generate with LoRA merged")
    parser.add_argument("--skip-generate", action="store_true", help="time the fast engine alone")
    parser.add_argument(
        "--steps-per-sync",
        type=int,
        nargs="+",
        default=[8],
        help="decode steps per host read of the tokens; several values time one variant each",
    )
    parser.add_argument(
        "--profile", action="store_true", help="kernel breakdown of a decode step per variant (GPU)"
    )
    parser.add_argument(
        "--skip-check", action="store_true", help="skip the greedy-token check against generate"
    )
    parser.add_argument("--json", type=Path, help="write results here")
    add_table_flag(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.shapes, args.device = ["tiny"], "cpu"
        args.prompts, args.n_samples, args.prompt_len, args.new_tokens = 2, 2, 16, 12
        args.repeats, args.lora_rank, args.markdown = 1, 4, None
        args.steps_per_sync = [4]
    args.device = str(resolve_device(args.device))
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    started = time.perf_counter()
    result = work()
    synchronize(device)
    return time.perf_counter() - started, result


def measure_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (each byte is read once and written once)."""
    size = 2**30 if device.type == "cuda" else 2**28
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    iterations = 20 if device.type == "cuda" else 3

    def copies() -> None:
        for _ in range(iterations):
            target.copy_(source)

    elapsed, _ = timed(device, copies)
    return 2 * size * iterations / elapsed


def decode_bound_s(
    model: torch.nn.Module, rows: int, prompt_len: int, new_tokens: int, bandwidth: float
) -> float:
    """Seconds to stream, at ``bandwidth``, what ``new_tokens`` decode steps must read: every weight
    once per step (the embedding table only when it is also the output head) plus each row's KV
    cache up to its position."""
    config = model.config.get_text_config()
    element = next(model.parameters()).element_size()
    embed = model.get_input_embeddings().weight
    weights = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name) * element
    if model.get_output_embeddings().weight is not embed:
        weights -= embed.numel() * element  # only the sampled rows of an untied table are read
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_per_token = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * element
    steps = range(new_tokens)
    total = sum(weights + rows * (prompt_len + t + 1) * kv_per_token for t in steps)
    return total / bandwidth


def peak_memory_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def median_of(device: torch.device, repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        elapsed, result = timed(device, work)
        times.append(elapsed)
    return statistics.median(times), result


def bench_generate(model: Any, tok: Any, prompt_ids: list[list[int]], args: argparse.Namespace) -> float:
    """Median seconds of ``model.generate`` for every row, exactly ``new_tokens`` new tokens each."""
    device = next(model.parameters()).device
    rows = torch.tensor([ids for ids in prompt_ids for _ in range(args.n_samples)], device=device)
    mask = torch.ones_like(rows)

    def run(new_tokens: int) -> torch.Tensor:
        config = GenerationConfig(
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        with torch.no_grad():
            return model.generate(input_ids=rows, attention_mask=mask, generation_config=config)

    run(min(16, args.new_tokens))  # warm-up: kernels, allocator
    seconds, out = median_of(device, args.repeats, lambda: run(args.new_tokens))
    if out.shape[1] != rows.shape[1] + args.new_tokens:
        raise RuntimeError(
            f"generate returned {out.shape[1] - rows.shape[1]} new tokens, expected {args.new_tokens}"
        )
    return seconds


def bench_fast(
    engine: FastRolloutEngine, prompt_ids: list[list[int]], args: argparse.Namespace
) -> dict[str, Any]:
    """Warm and cold timings of the fast engine; checks every sample got exactly ``new_tokens``."""
    device = engine.device
    config = SamplingConfig(
        n_samples=args.n_samples, temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens
    )
    run = lambda: engine.sample_token_ids(prompt_ids, config, ignore_eos=True)
    first_s, first = timed(device, run)  # builds buffers, captures graphs (and compiles when fused)
    warm_s, sampled = median_of(device, args.repeats, run)
    engine.keep_warm = False
    engine.release_memory()
    cold_s, cold = timed(device, run)
    engine.release_memory()
    for result in (first, sampled, cold):
        if any(len(t) != args.new_tokens for t in result.tokens):
            raise RuntimeError("the fast engine returned a sample of the wrong length")
    return {
        "first_call_s": first_s,
        "warm_s": warm_s,
        "cold_s": cold_s,
        "graph_capture_s_cold": cold.metrics["rollout/graph_capture_s"],
        "graphs": cold.metrics["rollout/graphs"],
        "decode_steps": sampled.metrics["rollout/decode_steps"],
    }


def bench_shape(name: str, args: argparse.Namespace, bandwidth: float) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tok = random_model(name, dtype=dtype, device=device, seed=0)
    model = apply_lora(model, rank=args.lora_rank, alpha=2 * args.lora_rank)
    with torch.no_grad():  # a nonzero adapter, so merging it is real work
        for key, param in adapter_parameters(model).items():
            if "lora_B" in key:
                param.normal_(std=1e-3)
    model.eval()
    prompt_ids = [
        tok(ascii_prompt(args.prompt_len, seed=i), add_special_tokens=False).input_ids
        for i in range(args.prompts)
    ]
    assert all(len(ids) == args.prompt_len for ids in prompt_ids)
    rows = args.prompts * args.n_samples
    tokens = rows * args.new_tokens
    result: dict[str, Any] = {
        "shape": name,
        "dtype": str(dtype).removeprefix("torch."),
        "rows": rows,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
    }

    if not args.skip_generate:
        reset_peak(device)
        generate_s = bench_generate(model, tok, prompt_ids, args)
        result["generate"] = {
            "seconds": generate_s,
            "tokens_per_s": tokens / generate_s,
            "peak_gib": peak_memory_gib(device),
        }

    # (compiled kernels, packed CPU weights, steps per sync)
    variants = [(False, True, k) for k in args.steps_per_sync]
    if args.fused and device.type == "cuda":
        variants += [(True, True, k) for k in args.steps_per_sync]
    if args.unpacked and device.type == "cpu":
        variants += [(False, False, k) for k in args.steps_per_sync]
    result["variants"] = {}
    for fuse, pack, steps_per_sync in variants:
        kind = "fast_fused" if fuse else "fast" if pack else "fast_unpacked"
        name = f"{kind}/steps_per_sync={steps_per_sync}"
        reset_peak(device)
        try:
            engine = FastRolloutEngine(
                model,
                tok,
                keep_warm=True,
                fuse_kernels=fuse,
                steps_per_sync=steps_per_sync,
                pack_weights=pack,
            )
            timing = bench_fast(engine, prompt_ids, args)
            timing.update(
                tokens_per_s=tokens / timing["warm_s"],
                cold_tokens_per_s=tokens / timing["cold_s"],
                peak_gib=peak_memory_gib(device),
            )
            if args.profile:
                timing["profile"] = profile_decode(engine, prompt_ids, args)
        except Exception as exc:  # a failed variant is reported, the others still run
            timing = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        result["variants"][name] = timing
        if "fast" not in result and kind == "fast" and "error" not in timing:
            result["fast"] = timing
        if "fast_fused" not in result and fuse:
            result["fast_fused"] = timing

    if not (args.skip_merged_generate or args.skip_generate):
        model.merge_adapter()  # last: peft's unmerge does not restore the weights bit for bit
        merged_s = bench_generate(model, tok, prompt_ids, args)
        model.unmerge_adapter()
        result["generate_merged"] = {"seconds": merged_s, "tokens_per_s": tokens / merged_s}

    bound = decode_bound_s(model.get_base_model(), rows, args.prompt_len, args.new_tokens, bandwidth)
    result["bandwidth_bound_s"] = bound
    result["bound_tokens_per_s"] = tokens / bound
    for timing in result["variants"].values():
        if "warm_s" in timing:
            timing["fraction_of_bound"] = bound / timing["warm_s"]
    fast = result["fast"]
    if "generate" in result:
        generate_s = result["generate"]["seconds"]
        result["generate"]["fraction_of_bound"] = bound / generate_s
        result["speedup_vs_generate"] = generate_s / fast["warm_s"]
        result["speedup_cold_vs_generate"] = generate_s / fast["cold_s"]
    if "generate_merged" in result:
        result["speedup_vs_generate_merged"] = result["generate_merged"]["seconds"] / fast["warm_s"]
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def profile_decode(
    engine: FastRolloutEngine, prompt_ids: list[list[int]], args: argparse.Namespace, new_tokens: int = 24
) -> dict[str, Any]:
    """Kernels per decode step and where the step's GPU time goes, CUDA graphs off (so every
    kernel is seen) and the engine's other settings kept."""
    from torch.profiler import ProfilerActivity, profile

    device = engine.device
    graphs, engine.cuda_graphs = engine.cuda_graphs, False
    engine._state = None
    config = SamplingConfig(n_samples=args.n_samples, temperature=1.0, top_p=1.0, max_new_tokens=new_tokens)
    run = lambda: engine.sample_token_ids(prompt_ids, config, ignore_eos=True)
    try:
        run()  # warm: buffers, compiled kernels
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            wall_s, sampled = timed(device, run)
    finally:
        engine.cuda_graphs = graphs
        engine._state = None
    steps = sampled.metrics["rollout/decode_steps"]
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if device.type == "cuda" and event.device_type == torch.autograd.DeviceType.CUDA:
            kernels.setdefault(event.name, []).append(event.device_time_total)
    gpu_us = sum(sum(times) for times in kernels.values())
    top = sorted(kernels.items(), key=lambda item: -sum(item[1]))[:12]
    return {
        "decode_steps": steps,
        "wall_ms_per_step": 1e3 * wall_s / steps,
        "gpu_ms_per_step": gpu_us / 1e3 / steps,
        "kernels_per_step": sum(len(times) for times in kernels.values()) / steps,
        "top_kernels": [
            {"name": name[:120], "per_step": len(times) / steps, "us_per_step": sum(times) / steps}
            for name, times in top
        ],
    }


def engine_check(device: torch.device, fused: bool) -> dict[str, Any]:
    """Greedy tokens of the fast engine (graphs on a GPU) against the generate engine's, on tiny
    float32 Llama and Qwen2 models with a random adapter, so a run shows the engine is right before
    it shows it is fast. Returns, per variant, whether every token matched."""
    from rewards.tasks import Task
    from rlhf.models.loading import tiny_model_and_tokenizer
    from rlhf.rollout import GenerateRolloutEngine
    from rlhf.types import TaskBatch

    prompts = ['def add(a, b):\n    """Add a and b."""\n', "Double x.", "Print hello.", "x" * 70]
    batch = TaskBatch(tasks=[Task(id=f"check/{i}", prompt=p) for i, p in enumerate(prompts)], prompts=prompts)
    config = SamplingConfig(n_samples=2, temperature=0.0, max_new_tokens=40, stop=("e",))
    results: dict[str, Any] = {}
    for architecture in ("llama", "qwen2"):
        model, tok = tiny_model_and_tokenizer(
            architecture=architecture, initializer_range=0.2, dtype=torch.float32, device=device
        )
        model = apply_lora(model, rank=4, alpha=8)
        with torch.no_grad():
            for param in adapter_parameters(model).values():
                param.normal_(std=0.2)
        reference = GenerateRolloutEngine(model, tok).generate(batch, config)
        for batch_size in (None, 3):
            for fuse in (False, True) if fused and device.type == "cuda" else (False,):
                name = f"{architecture}/batch={batch_size}/fused={fuse}"
                try:
                    engine = FastRolloutEngine(
                        model, tok, batch_size=batch_size, context_block=16, fuse_kernels=fuse
                    )
                    out = engine.generate(batch, config)
                    results[name] = {
                        "tokens_match": bool(torch.equal(out.completion_ids, reference.completion_ids)),
                        "logprob_max_abs_diff": float(
                            (out.behaviour_logprobs - reference.behaviour_logprobs).abs().max()
                        ),
                        "decode_logprob_max_abs_diff": out.metrics["rollout/decode_logprob_max_abs_diff"],
                        "graphs": out.metrics["rollout/graphs"],
                    }
                except Exception as exc:  # report, and go on to the timings
                    results[name] = {"tokens_match": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return results


def summary(r: dict[str, Any]) -> str:
    text = (
        f"{r['shape']} {r['dtype']} + LoRA, {r['rows']} rows "
        f"({r['prompt_len']} prompt + {r['new_tokens']} new tokens): "
        f"fast {r['fast']['tokens_per_s']:.0f} tok/s ({r['fast']['cold_tokens_per_s']:.0f} cold)"
    )
    if "generate" in r:
        text += f" vs generate {r['generate']['tokens_per_s']:.0f} tok/s = {r['speedup_vs_generate']:.1f}x"
    if "generate_merged" in r:
        text += f" ({r['speedup_vs_generate_merged']:.1f}x vs generate with LoRA merged)"
    bound = r["bound_tokens_per_s"]
    text += f"; {100 * r['fast']['fraction_of_bound']:.0f}% of the bandwidth bound ({bound:.0f} tok/s)"
    fused = r.get("fast_fused", {})
    if "tokens_per_s" in fused:
        text += f"; fused kernels {fused['tokens_per_s']:.0f} tok/s ({100 * fused['fraction_of_bound']:.0f}%)"
    unpacked = next(
        (v for n, v in r["variants"].items() if n.startswith("fast_unpacked/") and "tokens_per_s" in v), None
    )
    if unpacked is not None:
        text += (
            f"; unpacked CPU weights {unpacked['tokens_per_s']:.0f} tok/s "
            f"({unpacked['cold_tokens_per_s']:.0f} cold): packed "
            f"{r['fast']['tokens_per_s'] / unpacked['tokens_per_s']:.2f}x "
            f"({r['fast']['cold_tokens_per_s'] / unpacked['cold_tokens_per_s']:.2f}x cold)"
        )
    if len(r["variants"]) > 2:
        text += "; by variant: " + ", ".join(
            f"{name} {v['tokens_per_s']:.0f}" if "tokens_per_s" in v else f"{name} failed"
            for name, v in r["variants"].items()
        )
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    bandwidth = measure_bandwidth(device)
    results = {
        "machine": machine_description(args.device),
        "bandwidth_gb_s": bandwidth / 1e9,
        "command": reproduce_command(),
        "shapes": [],
    }
    if not args.skip_check:
        results["engine_check"] = engine_check(device, args.fused)
        matched = sum(r["tokens_match"] for r in results["engine_check"].values())
        print(
            f"engine check: {matched}/{len(results['engine_check'])} variants give generate's greedy tokens"
        )
        for name, check in results["engine_check"].items():
            if not check["tokens_match"]:
                print(f"  MISMATCH {name}: {check}", flush=True)
    for name in args.shapes:
        shape = bench_shape(name, args, bandwidth)
        results["shapes"].append(shape)
        print(summary(shape), flush=True)
        for variant, timing in shape["variants"].items():
            profiled = timing.get("profile")
            if profiled:
                print(
                    f"  {variant}: {profiled['kernels_per_step']:.0f} kernels/step, GPU "
                    f"{profiled['gpu_ms_per_step']:.2f} ms of {profiled['wall_ms_per_step']:.2f} ms/step "
                    "(graphs off); top: "
                    + "; ".join(
                        f"{k['name'][:50]} {k['us_per_step']:.0f}us" for k in profiled["top_kernels"][:6]
                    )
                )
        if args.json:  # written after every shape, so a later failure keeps the earlier results
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"measured device bandwidth: {bandwidth / 1e9:.0f} GB/s")
    if args.markdown:
        for shape in results["shapes"]:
            line = table_row(
                f"rollout throughput ({shape['shape']})",
                results["machine"],
                summary(shape) + f"; copy bandwidth {bandwidth / 1e9:.0f} GB/s",
                results["command"],
            )
            append_row(args.markdown, line)
    return results


if __name__ == "__main__":
    main()
