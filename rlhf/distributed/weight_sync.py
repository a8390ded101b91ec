"""Moving the learner's policy to the generators ("resharding") after each update.

With LoRA only the adapter's tensors change, so only they move:

- ``inplace``: the generator *is* the learner's model (colocated hybrid engine): nothing moves;
- ``object_store``: the learner's adapter tensors are put into Ray's object store once and every
  rollout worker copies them into its own adapter;
- ``broadcast``: a torch.distributed group spans the learner (rank 0) and the rollout workers; the
  adapter tensors are broadcast from rank 0 (gloo on CPU, NCCL on GPUs);
- ``merged``: for engines that cannot apply LoRA, the adapter is merged into the base weights on the
  learner and the merged weights of every adapted layer are pushed instead (far more bytes).

Each sync reports bytes moved and milliseconds taken; both are step metrics.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel

SYNC_MODES = ("inplace", "object_store", "broadcast", "merged")


@dataclass(frozen=True)
class SyncReport:
    mode: str
    bytes: int
    ms: float


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def timed(mode: str, work: callable) -> SyncReport:  # type: ignore[valid-type]
    start = time.perf_counter()
    moved = work()
    return SyncReport(mode=mode, bytes=int(moved), ms=(time.perf_counter() - start) * 1e3)


def merged_layer_weight(module: torch.nn.Module, adapters: Sequence[str]) -> torch.Tensor:
    """A LoRA layer's base weight with ``adapters`` merged in, computed out of place.

    The arithmetic is peft's unsafe merge (``W += delta`` per adapter, rounding to the weight's dtype
    each time), so the result is bit-identical to ``merge_adapter``'s, but the layer is not touched:
    peft's merge-then-unmerge round trip does not restore bfloat16 weights exactly.
    """
    weight = module.base_layer.weight.detach()
    for adapter in adapters:
        if adapter in getattr(module, "lora_A", {}):
            weight = (weight + module.get_delta_weight(adapter)).to(module.base_layer.weight.dtype)
    return weight


def merged_weights(model: PeftModel) -> dict[str, torch.Tensor]:
    """Base weights with the active adapter merged in, for every adapted layer, keyed as the plain
    (adapter-free) model names them, on the CPU. The model's own weights are left exactly as they are."""
    merged = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            base_layer = getattr(module, "base_layer", None)
            if base_layer is None or not hasattr(base_layer, "weight"):
                continue
            plain = name.removeprefix("base_model.model.")
            weight = merged_layer_weight(module, list(getattr(module, "active_adapters", [])))
            merged[f"{plain}.weight"] = weight.to("cpu", copy=True)
    return merged


def load_merged_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy merged weights (from :func:`merged_weights`) into a plain model, in place."""
    params = dict(model.named_parameters())
    missing = [key for key in weights if key not in params]
    if missing:
        raise KeyError(f"merged weights do not fit this model: e.g. {missing[:2]} are unknown")
    with torch.no_grad():
        for key, tensor in weights.items():
            params[key].copy_(tensor)


def broadcast_state(
    state: Mapping[str, torch.Tensor] | None,
    layout: list[tuple[str, tuple[int, ...], str]],
    device: torch.device,
    group: object = None,
) -> dict[str, torch.Tensor]:
    """Broadcast tensors from rank 0 in ``layout`` order (name, shape, dtype); every rank returns them.

    Rank 0 passes its ``state``; the others pass None and receive into fresh buffers. ``group``: the
    process group to broadcast in (default: the whole world).
    """
    import torch.distributed as dist

    out: dict[str, torch.Tensor] = {}
    for name, shape, dtype in layout:
        if state is not None:
            tensor = state[name].detach().to(device).contiguous()
        else:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        dist.broadcast(tensor, src=0, group=group)
        out[name] = tensor
    return out


def layout_of(state: Mapping[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of each tensor, in a fixed order every rank agrees on."""
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sorted(state.items())]
