"""A Llama/Qwen2 decoder forward over a static KV cache, on weights with the LoRA adapter merged in.

The rollout engine does not run the transformers model while it samples. It reads the model's
tensors once into :class:`DecoderWeights`: the attention input projections fused into one ``qkv``
matrix and the MLP's gate and up projections into one ``gate_up`` matrix, each with the policy
adapter's ``B @ A * scaling`` added. These are the engine's own buffers, so the model's weights are
never touched (nothing to unmerge, and training sees exactly the weights it had) and decoding pays
nothing for LoRA. :meth:`DecoderWeights.refresh` rewrites the buffers in place, so CUDA graphs
captured on them stay valid across learner updates. On a CPU the float32 buffers are packed into
oneDNN's layout instead (:func:`pack_for_cpu`), which makes a decode step's small products 1.6x
faster, and every product goes through :func:`linear`.

Two forward functions share the weights:

- :func:`prefill`: a right-padded batch of prompts, causal attention, returning every layer's keys
  and values and the next-token logits of each prompt's last token;
- :func:`decode_step`: one token per cache row at per-row positions, attending to the first
  ``context`` cache positions. It does no host synchronisation and allocates nothing that depends on
  tensor values, so it can be captured in a CUDA graph; its pieces between the cache writes can be
  compiled (:func:`fused_kernels`).

The arithmetic follows transformers' Llama/Qwen2 modules (RMSNorm in float32, rotary tables from the
model's own rotary module, grouped-query attention), so on float32 the logits agree with the model's
forward to rounding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN

from rlhf.distributed.weight_sync import merged_layer_weight
from rlhf.models.logprobs import causal_lm_of

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# Largest difference allowed between a packed product and F.linear's in cpu_packing_works' probe,
# relative to the largest output (oneDNN sums in another order: about 1e-6 in float32).
PACKED_PROBE_TOLERANCE = 1e-4


def unsupported_reason(model: nn.Module, adapter: str | None = None) -> str | None:
    """Why :class:`DecoderWeights` cannot read ``model``, or None when it can."""
    lm = causal_lm_of(model)
    config = lm.config.get_text_config()
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {config.model_type!r} is not one of {list(SUPPORTED_MODEL_TYPES)}"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention layers are not supported"
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "per-layer"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        return f"rotary embedding type {rope_type!r} is not one of {list(SUPPORTED_ROPE_TYPES)}"
    for name, module in lm.named_modules():
        if not hasattr(module, "lora_A"):
            continue
        if not isinstance(getattr(module, "base_layer", None), nn.Linear):
            return f"LoRA on {name} wraps a {type(module.base_layer).__name__}; only Linear layers merge"
        if adapter is not None and module.use_dora.get(adapter, False):
            return f"DoRA adapters are not supported ({name})"
        if adapter is not None and getattr(module, "lora_bias", {}).get(adapter, False):
            return f"LoRA with lora_bias is not supported ({name})"
    return None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, or oneDNN's product for a weight packed by :func:`pack_for_cpu`."""
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def pack_for_cpu(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [out, in] reordered into oneDNN's blocked layout for :func:`linear` (a copy).

    Why: a decode step multiplies a handful of rows by every weight matrix once, and MKL's ``sgemm``
    behind ``F.linear`` repacks the whole weight on each call. On 2 CPU cores (AVX2) a SmolLM2-135M
    decode step's products took 84 ms at 16 rows unpacked and 53 ms packed (4 rows: 73 vs 32 ms),
    its output head 26 vs 12 ms; at 240 rows (a prefill) both took the same time.
    """
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach())


@functools.cache
def cpu_packing_works() -> bool:
    """Whether this torch build packs weights for oneDNN (:func:`pack_for_cpu`) and its products
    agree with ``F.linear`` (checked once on a small product)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(24, 16, generator=generator)
        bias = torch.randn(24, generator=generator)
        x = torch.randn(3, 5, 16, generator=generator)
        expected = F.linear(x, weight, bias)
        got = linear(x, pack_for_cpu(weight), bias)
    except (RuntimeError, AttributeError):
        return False
    scale = float(expected.abs().max())
    return (
        got.shape == expected.shape and float((got - expected).abs().max()) <= PACKED_PROBE_TOLERANCE * scale
    )


def _plain_linear(module: nn.Module) -> nn.Linear:
    return module.base_layer if hasattr(module, "base_layer") else module


def _effective_weight(module: nn.Module, adapter: str | None) -> torch.Tensor:
    """The layer's weight with ``adapter`` merged (bit-identical to peft's merge), not in place."""
    if adapter is None or not hasattr(module, "lora_A") or adapter not in module.lora_A:
        return _plain_linear(module).weight
    return merged_layer_weight(module, [adapter])


def _bias(module: nn.Module) -> torch.Tensor | None:
    return _plain_linear(module).bias


@dataclass
class LayerWeights:
    """One decoder layer's tensors; ``qkv`` and ``gate_up`` are fused copies owned by the engine."""

    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None


class DecoderWeights:
    """The tensors a decode step reads, with the adapter merged into engine-owned buffers.

    Layers whose weights need no merge and no fusion (e.g. ``o_proj`` when only ``q_proj`` and
    ``v_proj`` are adapted, the norms, the embedding) are read from the model without a copy.
    """

    def __init__(self, model: nn.Module, adapter: str | None, *, pack: bool = False) -> None:
        reason = unsupported_reason(model, adapter)
        if reason is not None:
            raise ValueError(
                f"the fast rollout engine cannot run this model: {reason}; use rollout.engine=generate"
            )
        self.model = model
        self.adapter = adapter
        lm: PreTrainedModel = causal_lm_of(model)
        config = lm.config.get_text_config()
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.eps = config.rms_norm_eps
        self.act = ACT2FN[config.hidden_act]
        self.rotary = lm.model.rotary_emb
        decoder = lm.model
        self.embed = decoder.embed_tokens.weight
        self.final_norm = decoder.norm.weight
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        # Packed for oneDNN (pack_for_cpu): float32 weights on a CPU only.
        self.pack = pack and self.device.type == "cpu" and self.dtype == torch.float32 and cpu_packing_works()
        self._lm_head = lm.get_output_embeddings()
        self._layers_src = list(decoder.layers)
        self.layers = [self._allocate(layer) for layer in self._layers_src]
        self.lm_head = self._owned_or_shared(self._lm_head)
        self.refresh()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.shape[0])

    def _merges(self, module: nn.Module) -> bool:
        return self.adapter is not None and hasattr(module, "lora_A") and self.adapter in module.lora_A

    def _owned_or_shared(self, module: nn.Module) -> torch.Tensor:
        weight = _plain_linear(module).weight
        return torch.empty_like(weight) if self._merges(module) else weight

    def _allocate(self, layer: nn.Module) -> LayerWeights:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        gate_up = [mlp.gate_proj, mlp.up_proj]

        def fused(modules: list[nn.Module]) -> torch.Tensor:
            rows = sum(_plain_linear(m).weight.shape[0] for m in modules)
            first = _plain_linear(modules[0]).weight
            return torch.empty((rows, first.shape[1]), dtype=first.dtype, device=first.device)

        def fused_bias(modules: list[nn.Module]) -> torch.Tensor | None:
            biases = [_bias(m) for m in modules]
            if all(b is None for b in biases):
                return None
            # A missing bias among fused projections is a zero bias.
            return torch.cat(
                [b if b is not None else _plain_linear(m).weight.new_zeros(_plain_linear(m).out_features)
                 for m, b in zip(modules, biases)]
            )  # fmt: skip

        return LayerWeights(
            input_norm=layer.input_layernorm.weight,
            post_norm=layer.post_attention_layernorm.weight,
            qkv=fused(qkv),
            qkv_bias=fused_bias(qkv),
            o=self._owned_or_shared(attn.o_proj),
            o_bias=_bias(attn.o_proj),
            gate_up=fused(gate_up),
            gate_up_bias=fused_bias(gate_up),
            down=self._owned_or_shared(mlp.down_proj),
            down_bias=_bias(mlp.down_proj),
        )

    @torch.no_grad()
    def refresh(self) -> None:
        """Rewrite the owned buffers from the model's current base weights and adapter, in place.

        Packed weights cannot be rewritten in place: each layer's are built afresh and packed again,
        one layer at a time (no CUDA graph reads them: packing is for CPUs).
        """
        for index, (layer, weights) in enumerate(zip(self._layers_src, self.layers)):
            if weights.qkv.is_mkldnn:
                weights = self._allocate(layer)
            attn, mlp = layer.self_attn, layer.mlp
            self._fill(weights.qkv, [attn.q_proj, attn.k_proj, attn.v_proj])
            self._fill(weights.gate_up, [mlp.gate_proj, mlp.up_proj])
            if self._merges(attn.o_proj):
                weights.o.copy_(_effective_weight(attn.o_proj, self.adapter))
            if self._merges(mlp.down_proj):
                weights.down.copy_(_effective_weight(mlp.down_proj, self.adapter))
            if self.pack:
                weights = dataclasses.replace(
                    weights,
                    qkv=pack_for_cpu(weights.qkv),
                    o=pack_for_cpu(weights.o),
                    gate_up=pack_for_cpu(weights.gate_up),
                    down=pack_for_cpu(weights.down),
                )
            self.layers[index] = weights
        head = self._owned_or_shared(self._lm_head) if self.lm_head.is_mkldnn else self.lm_head
        if self._merges(self._lm_head):
            head.copy_(_effective_weight(self._lm_head, self.adapter))
        self.lm_head = pack_for_cpu(head) if self.pack else head

    def _fill(self, buffer: torch.Tensor, modules: list[nn.Module]) -> None:
        start = 0
        for module in modules:
            weight = _effective_weight(module, self.adapter)
            buffer[start : start + weight.shape[0]].copy_(weight)
            start += weight.shape[0]

    def owned_bytes(self) -> int:
        """Bytes of the engine's own weight buffers (the price of merging without touching the model)."""
        owned = [t for layer in self.layers for t in (layer.qkv, layer.gate_up)]
        shared = {id(p) for p in self.model.parameters()}
        extra = [t for layer in self.layers for t in (layer.o, layer.down)] + [self.lm_head]
        owned += [t for t in extra if id(t) not in shared]
        return sum(t.numel() * t.element_size() for t in owned)

    def rotary_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[length, head_dim] cos and sin tables from the model's rotary module (same rounding)."""
        positions = torch.arange(length, device=self.device)[None]
        probe = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(probe, positions)
        return cos[0].contiguous(), sin[0].contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama RMSNorm: normalise in float32, round, then scale."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the last dimension (transformers' ``rotate_half`` convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def gated_activation(act: nn.Module, gate_up: torch.Tensor) -> torch.Tensor:
    """``act(gate) * up`` of a fused gate/up projection output."""
    gate, up = gate_up.chunk(2, dim=-1)
    return act(gate) * up


def attention_inputs(
    x: torch.Tensor,
    input_norm: torch.Tensor,
    qkv: torch.Tensor,
    qkv_bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    heads: int,
    kv_heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First half of a decode layer for ``x`` [S, hidden]: RMSNorm, the fused q/k/v projection and
    rotary. Returns the queries [S, kv_heads, group, dim] (the ``group`` query heads that share a
    key head become its query rows, all at the same position: grouped-query attention without
    copies) and the new keys followed by the new values, [2 * S * kv_heads, dim], for one cache
    write."""
    rows = x.shape[0]
    dim = qkv.shape[0] // (heads + 2 * kv_heads)
    h = rms_norm(x, input_norm, eps)
    projected = linear(h, qkv, qkv_bias).view(rows, heads + 2 * kv_heads, dim)
    qk = apply_rotary(projected[:, : heads + kv_heads], cos, sin)
    q = qk[:, :heads].reshape(rows, kv_heads, heads // kv_heads, dim)
    new_kv = torch.cat((qk[:, heads:], projected[:, heads + kv_heads :])).reshape(-1, dim)
    return q, new_kv


def decode_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor
) -> torch.Tensor:
    """Attention of one query position per row: q [S, kv_heads, group, dim] over keys and values
    [S, kv_heads, context, dim] where ``visible`` [S, 1, 1, context]; softmax in float32, as
    transformers' eager attention. Written out rather than through a fused attention kernel: with
    a handful of query rows per head those kernels spend most of their time on tiles of padding
    (they were a quarter of a step), while these few small batched products are compiled with
    the rest of the layer."""
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    weights = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1).to(values.dtype)
    return torch.matmul(weights, values)


def attention_output_and_mlp(
    x: torch.Tensor,
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    visible: torch.Tensor,
    o: torch.Tensor,
    o_bias: torch.Tensor | None,
    post_norm: torch.Tensor,
    gate_up: torch.Tensor,
    gate_up_bias: torch.Tensor | None,
    down: torch.Tensor,
    down_bias: torch.Tensor | None,
    eps: float,
    act: nn.Module,
) -> torch.Tensor:
    """Second half of a decode layer: attention over the cache (keys and values already written),
    the output projection and residual, then the MLP block."""
    attn = decode_attention(q, keys, values, visible)
    x = x + linear(attn.reshape(x.shape[0], -1), o, o_bias)
    h = rms_norm(x, post_norm, eps)
    gated = gated_activation(act, linear(h, gate_up, gate_up_bias))
    return x + linear(gated, down, down_bias)


@dataclass(frozen=True)
class Kernels:
    """The pieces of a decode layer around its KV-cache write: the eager functions, or
    :func:`fused_kernels`' compiled ones."""

    attention_inputs: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    attention_output_and_mlp: Callable[..., torch.Tensor]


EAGER_KERNELS = Kernels(attention_inputs, attention_output_and_mlp)


@functools.cache
def fused_kernels() -> Kernels:
    """The layer halves compiled by ``torch.compile`` (CUDA), shared by every engine of the process.

    Eagerly a decode layer is over 40 kernels (RMSNorm alone is eight, rotary five), each a few
    microseconds of GPU time at decode batch sizes whatever its size, so a small model's step is
    bound by their count more than by the bytes it reads. Compiled, each half is its matrix
    products plus a few fused elementwise kernels. Every layer calls the same two compiled
    functions (the weights are arguments), so they compile once per model shape, on the first
    batch, and again once the number of rows or the context changes (then for any). The cache
    writes stay outside: compiled code would copy the whole cache to mutate a view of it. The
    sampler stays eager: inside the decode graphs its draws come from the default generator, whose
    state CUDA graphs advance on every replay (tested).
    """
    compile_ = lambda fn: torch.compile(fn, fullgraph=True)
    return Kernels(compile_(attention_inputs), compile_(attention_output_and_mlp))


def new_cache(
    w: DecoderWeights, rows: int, context: int, *, device: torch.device | None = None
) -> torch.Tensor:
    """A zeroed KV cache [layers, 2, rows, kv_heads, context, head_dim] in the weights' dtype.

    Zeroed, not merely allocated: attention multiplies masked positions' values by a zero weight,
    and recycled memory may hold inf or NaN, which would turn that product into NaN.
    """
    shape = (w.num_layers, 2, rows, w.num_kv_heads, context, w.head_dim)
    return torch.zeros(shape, dtype=w.dtype, device=device or w.device)


@torch.no_grad()
def prefill(
    w: DecoderWeights,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run right-padded prompts ``ids`` [N, P] (real lengths ``lengths`` [N]) through the decoder.

    Returns the keys and values [layers, 2, N, kv_heads, P, head_dim] (positions past a prompt's
    length hold padding and must not be attended to) and float32 logits [N, vocab] of the token
    after each prompt. ``cos``/``sin`` are rotary tables with at least P rows.
    """
    n, length = ids.shape
    heads, kv_heads, dim = w.num_heads, w.num_kv_heads, w.head_dim
    group = heads // kv_heads
    cos, sin = cos[:length], sin[:length]
    kv = torch.empty((w.num_layers, 2, n, kv_heads, length, dim), dtype=w.dtype, device=ids.device)
    x = F.embedding(ids, w.embed)
    for index, layer in enumerate(w.layers):
        h = rms_norm(x, layer.input_norm, w.eps)
        qkv = linear(h, layer.qkv, layer.qkv_bias).view(n, length, heads + 2 * kv_heads, dim).transpose(1, 2)
        q = apply_rotary(qkv[:, :heads], cos, sin)
        k = apply_rotary(qkv[:, heads : heads + kv_heads], cos, sin)
        v = qkv[:, heads + kv_heads :]
        kv[index, 0] = k
        kv[index, 1] = v
        if group > 1:
            k = k[:, :, None].expand(n, kv_heads, group, length, dim).reshape(n, heads, length, dim)
            v = v[:, :, None].expand(n, kv_heads, group, length, dim).reshape(n, heads, length, dim)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=dim**-0.5)
        x = x + linear(attn.transpose(1, 2).reshape(n, length, heads * dim), layer.o, layer.o_bias)
        h = rms_norm(x, layer.post_norm, w.eps)
        gated = gated_activation(w.act, linear(h, layer.gate_up, layer.gate_up_bias))
        x = x + linear(gated, layer.down, layer.down_bias)
    last = x[torch.arange(n, device=ids.device), lengths - 1]
    logits = linear(rms_norm(last, w.final_norm, w.eps), w.lm_head).float()
    return kv, logits


def decode_step(
    w: DecoderWeights,
    cache: torch.Tensor,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    context: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    head_rows: torch.Tensor,
    context_index: torch.Tensor,
    kernels: Kernels = EAGER_KERNELS,
) -> torch.Tensor:
    """One decoding step for cache rows ``0 .. S-1``: logits [S, vocab] in the weights' dtype.

    tokens / positions: [S] the token each row feeds and its position; its key and value are written
        there, and the row attends to cache positions ``0 .. position``.
    context: how many cache positions the attention reads (every position must be < context).
    head_rows: ``arange(rows * kv_heads) * cache_context``, the flat offset of each (row, head).
    context_index: ``arange(cache_context)``.
    kernels: the layer halves (eager, or compiled by :func:`fused_kernels`).
    """
    rows = tokens.shape[0]
    heads, kv_heads, dim = w.num_heads, w.num_kv_heads, w.head_dim
    cos_t, sin_t = cos[positions][:, None], sin[positions][:, None]
    visible = (context_index[:context][None, :] <= positions[:, None])[:, None, None, :]
    # Flat rows of the new keys, then of the new values, in one layer's [2, rows, kv_heads,
    # context, dim] cache viewed as [-1, dim].
    keys_flat = head_rows[: rows * kv_heads] + positions[:, None].expand(rows, kv_heads).reshape(-1)
    flat = torch.cat((keys_flat, keys_flat + cache[0, 0].numel() // dim))
    x = F.embedding(tokens, w.embed)
    for index, layer in enumerate(w.layers):
        q, new_kv = kernels.attention_inputs(
            x, layer.input_norm, layer.qkv, layer.qkv_bias, cos_t, sin_t, w.eps, heads, kv_heads
        )
        cache[index].view(-1, dim).index_copy_(0, flat, new_kv)
        x = kernels.attention_output_and_mlp(
            x,
            q,
            cache[index, 0, :rows, :, :context],
            cache[index, 1, :rows, :, :context],
            visible,
            layer.o,
            layer.o_bias,
            layer.post_norm,
            layer.gate_up,
            layer.gate_up_bias,
            layer.down,
            layer.down_bias,
            w.eps,
            w.act,
        )
    return linear(rms_norm(x, w.final_norm, w.eps), w.lm_head)
