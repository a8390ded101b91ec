#!/usr/bin/env python3
"""Weight sync: bytes and milliseconds of pushing the LoRA adapter vs pushing merged full weights.

After each update the rollout side needs the new policy. With LoRA only the adapter changed, so
effirl moves the adapter's tensors (``rlhf.models.loading.adapter_state_dict`` into
``load_adapter_state_dict``); an engine that cannot apply LoRA needs the merged weights of every
adapted layer instead (``rlhf.distributed.weight_sync.merged_weights`` into ``load_merged_weights``). Both are
measured end to end between two model instances of the same shape (Qwen2.5 configs with random
weights), the way the split placement moves them, through host memory:

  * in process: source tensors to host memory, then copied into the second instance;
  * Ray object store (when ``ray`` is importable, unless --no-ray): ``ray.put`` of the host tensors
    and a Ray actor on this node copying them into its own (CPU) model instance.

Prints a table, writes JSON (--json) and, with --markdown, appends one row per shape to
docs/benchmarks.md (--tiny never does).

Time: under a minute per shape on one H100 (the Ray path adds its start-up, about 10 s);
--tiny runs on a CPU in about 30 seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping
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

from rlhf.distributed.weight_sync import load_merged_weights, merged_weights, state_bytes  # noqa: E402
from rlhf.models.loading import (  # noqa: E402
    adapter_parameters,
    adapter_state_dict,
    apply_lora,
    load_adapter_state_dict,
    resolve_device,
)
from rlhf.models.shapes import MODEL_SHAPES, random_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"], choices=sorted(MODEL_SHAPES)
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (CI check)")
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cuda, cpu")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed syncs per path (median reported)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray object store path")
    parser.add_argument("--json", type=Path, help="write results here")
    add_table_flag(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.shapes, args.device, args.lora_rank, args.repeats, args.markdown = ["tiny"], "cpu", 4, 2, None
    args.device = str(resolve_device(args.device))
    return args


def median_ms(device: torch.device, repeats: int, work: Callable[[], Any]) -> float:
    work()  # warm-up (allocator, pinned buffers)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def policy(shape: str, args: argparse.Namespace, seed: int) -> Any:
    device = torch.device(args.device)
    model, _ = random_model(
        shape, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32, device=device
    )
    model = apply_lora(model, rank=args.lora_rank, alpha=2 * args.lora_rank)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():  # a trained-looking adapter: merging it changes the weights
        for param in adapter_parameters(model).values():
            param.normal_(std=1e-3, generator=generator)
    return model


def host_adapter_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in adapter_state_dict(model).items()}


class Receiver:
    """The rollout side in a Ray actor: a model of the same shape that loads what it is sent."""

    def __init__(self, shape: str, rank: int) -> None:
        torch.set_num_threads(1)
        self.plain, _ = random_model(shape, dtype=torch.float32, device="cpu")
        adapted, _ = random_model(shape, dtype=torch.float32, device="cpu")
        self.adapted = apply_lora(adapted, rank=rank, alpha=2 * rank)

    def load_adapter(self, state: Mapping[str, torch.Tensor]) -> int:
        load_adapter_state_dict(self.adapted, state)
        return state_bytes(state)

    def load_merged(self, weights: Mapping[str, torch.Tensor]) -> int:
        load_merged_weights(self.plain, {k: v.float() for k, v in weights.items()})
        return state_bytes(weights)


def bench_shape(shape: str, args: argparse.Namespace, ray: Any) -> dict[str, Any]:
    device = torch.device(args.device)
    source = policy(shape, args, seed=0)
    adapter_target = policy(shape, args, seed=1)
    plain_target, _ = random_model(shape, dtype=next(source.parameters()).dtype, device=device)
    adapter_bytes = state_bytes(adapter_state_dict(source))
    merged = merged_weights(source)
    merged_bytes = state_bytes(merged)
    result: dict[str, Any] = {
        "shape": shape,
        "lora_rank": args.lora_rank,
        "adapter_bytes": adapter_bytes,
        "merged_bytes": merged_bytes,
        "bytes_ratio": merged_bytes / adapter_bytes,
        "in_process_ms": {
            "adapter": median_ms(
                device,
                args.repeats,
                lambda: load_adapter_state_dict(adapter_target, host_adapter_state(source)),
            ),
            "merged": median_ms(
                device, args.repeats, lambda: load_merged_weights(plain_target, merged_weights(source))
            ),
        },
    }
    # The synced copies must now compute what the source computes.
    load_adapter_state_dict(adapter_target, host_adapter_state(source))
    load_merged_weights(plain_target, merged_weights(source))
    probe = torch.arange(1, 9, device=device)[None]
    with torch.no_grad():
        reference = source(input_ids=probe).logits.float()
        result["adapter_sync_max_abs_logit_diff"] = float(
            (adapter_target(input_ids=probe).logits.float() - reference).abs().max()
        )
        result["merged_sync_max_abs_logit_diff"] = float(
            (plain_target(input_ids=probe).logits.float() - reference).abs().max()
        )
    if ray is not None:
        receiver = ray.remote(Receiver).options(num_cpus=1).remote(shape, args.lora_rank)
        ray.get(receiver.load_adapter.remote(host_adapter_state(source)))  # actor started and warm
        result["ray_object_store_ms"] = {
            "adapter": median_ms(
                device,
                args.repeats,
                lambda: ray.get(receiver.load_adapter.remote(ray.put(host_adapter_state(source)))),
            ),
            "merged": median_ms(
                device,
                args.repeats,
                lambda: ray.get(receiver.load_merged.remote(ray.put(merged_weights(source)))),
            ),
        }
        ray.kill(receiver)
    result["time_ratio_in_process"] = result["in_process_ms"]["merged"] / result["in_process_ms"]["adapter"]
    return result


def size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def summary(r: dict[str, Any]) -> str:
    text = (
        f"{r['shape']} LoRA r{r['lora_rank']} all-linear: adapter {size(r['adapter_bytes'])} in "
        f"{r['in_process_ms']['adapter']:.1f} ms vs merged weights {size(r['merged_bytes'])} in "
        f"{r['in_process_ms']['merged']:.1f} ms in process ({r['bytes_ratio']:.0f}x the bytes, "
        f"{r['time_ratio_in_process']:.0f}x the time)"
    )
    if "ray_object_store_ms" in r:
        ray_ms = r["ray_object_store_ms"]
        text += f"; Ray object store {ray_ms['adapter']:.1f} vs {ray_ms['merged']:.0f} ms"
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    ray = None
    if not args.no_ray:
        try:
            import ray
        except ImportError as exc:
            print(f"skipping the Ray object store path: {exc}", flush=True)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    results: dict[str, Any] = {
        "machine": machine_description(args.device),
        "command": reproduce_command(),
        "shapes": [],
    }
    try:
        for shape in args.shapes:
            results["shapes"].append(bench_shape(shape, args, ray))
            print(summary(results["shapes"][-1]), flush=True)
    finally:
        if ray is not None:
            ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        for shape in results["shapes"]:
            line = table_row(
                f"weight sync ({shape['shape']})", results["machine"], summary(shape), results["command"]
            )
            append_row(args.markdown, line)
    return results


if __name__ == "__main__":
    main()
