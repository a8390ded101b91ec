"""Per-token statistics read off the output head (the log-prob of the chosen token, the entropy),
a chunk of tokens at a time.

The head turns each hidden state into a row of vocabulary-wide logits: 192 KiB a token in float32
for SmolLM2's 49,152 tokens, and the log-softmax, its exp and their gradients are as large again.
For all the completion tokens of a micro-batch at once that is hundreds of MiB, most of it kept
for the backward pass. With chunks, at most ``chunk`` tokens reach the head at a time:

- without gradients, each chunk's logits are dropped before the next is made;
- with gradients and a frozen head (LoRA leaves it alone), each chunk's gradient with respect to its
  hidden states is taken at once, in the forward pass (the backward matmul the backward pass would
  do anyway), and only those ``tokens x hidden`` gradients are kept: the backward pass scales them
  by the incoming gradient. Nothing vocabulary-wide is kept and nothing is recomputed. For a plain
  float32 head (a CPU's) the stats and gradients are written out by hand into two
  ``[chunk, vocab]`` buffers reused by every chunk, so no vocabulary-wide tensor is allocated per
  chunk either; other heads (soft-capping, a logit scale, autocast) take them by autograd;
- with gradients into the head itself (an adapter on it), each chunk is recomputed in the backward
  pass (activation checkpointing), which costs one more head matmul.

On a CPU the chunk is also capped at :data:`CPU_LOGITS_CHUNK_BYTES` of float32 logits whatever the
caller asks for (``None`` included), so no CPU path builds full-vocabulary logits for every
completion token at once. On a GPU ``chunk_size=None`` still means all at once.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

# 16 MiB of float32 logits a chunk on a CPU: 85 tokens of a 49,152-token vocabulary, 27 of
# Qwen2.5's 151,936. The head was as fast at that size as all 288 completion tokens of a quickstart
# micro-batch at once (0.47 vs 0.52 s forward and backward), and 32 tokens a chunk were slower.
CPU_LOGITS_CHUNK_BYTES = 16 * 2**20


def output_logits(lm: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """float32 logits for [N, H] hidden states, with the post-head transforms some models apply."""
    logits = lm.get_output_embeddings()(hidden).float()
    config = lm.config.get_text_config()
    scale = getattr(config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def token_stats(
    lm: PreTrainedModel, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool
) -> torch.Tensor:
    """[1, N] log-probs of ``targets`` (and [N] entropies stacked under them: [2, N] when asked)."""
    logp = torch.log_softmax(output_logits(lm, hidden) / temperature, dim=-1)
    token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return token_logp.unsqueeze(0)
    probs = logp.exp()
    # A -inf log-prob (probability 0) would make 0 * -inf = NaN, in the backward pass too.
    entropy = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(dim=-1)
    return torch.stack([token_logp, entropy])


def head_chunk_tokens(lm: PreTrainedModel, device: torch.device, chunk_size: int | None) -> int | None:
    """Tokens a chunk: ``chunk_size``, capped on a CPU at :data:`CPU_LOGITS_CHUNK_BYTES` of logits."""
    if device.type != "cpu":
        return chunk_size
    vocab = lm.get_output_embeddings().weight.shape[0]
    cap = max(1, CPU_LOGITS_CHUNK_BYTES // (4 * vocab))
    return cap if chunk_size is None else min(chunk_size, cap)


def _head_is_frozen(lm: PreTrainedModel) -> bool:
    return not any(p.requires_grad for p in lm.get_output_embeddings().parameters())


def _plain_head_weight(lm: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor | None:
    """The head's weight when the head is a bias-free float32 linear map used as is (no logit scale,
    no soft-capping) on float32 hidden states outside autocast, as on a CPU: its stats and their
    gradients are then written out by hand into two reused buffers. None otherwise."""
    head = lm.get_output_embeddings()
    config = lm.config.get_text_config()
    if type(head) is not nn.Linear or head.bias is not None:
        return None
    if getattr(config, "logit_scale", None) is not None or getattr(config, "final_logit_softcapping", None):
        return None
    if head.weight.dtype != torch.float32 or hidden.dtype != torch.float32:
        return None
    return None if torch.is_autocast_enabled(hidden.device.type) else head.weight


def _plain_chunk(
    weight: torch.Tensor,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    grads: tuple[bool, bool],
    buffers: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`token_stats` of a chunk, and the gradients of its log-probs and entropies with respect to
    ``hidden`` as ``grads`` asks, in place in ``buffers`` (two [chunk, vocab] float32 tensors).

    With z the logits over the temperature, p their softmax and y the target: log p(y) = z_y - lse(z),
    its gradient in z is onehot(y) - p; the entropy is lse(z) - sum(p z), its gradient -p (z - sum(p z)).
    No vocabulary-wide tensor is allocated: the step makes the same few passes over one chunk's logits
    however long the completions are.
    """
    rows = hidden.shape[0]
    logits, probs = buffers[0][:rows], buffers[1][:rows]
    torch.mm(hidden, weight.t(), out=logits)
    logits.div_(temperature)
    chosen = logits.gather(1, targets.unsqueeze(1))
    top = logits.amax(1, keepdim=True)
    logits.sub_(top)  # z - max: exp cannot overflow
    torch.exp(logits, out=probs)
    total = probs.sum(1, keepdim=True)
    log_total = total.log()
    stats = [(chosen - top - log_total)[:, 0]]
    mean_logit = None
    if with_entropy:
        # sum(p z) as a batch of dot products: no [chunk, vocab] product is materialised.
        mean_logit = torch.bmm(probs.unsqueeze(1), logits.unsqueeze(2))[:, 0] / total
        stats.append((log_total - mean_logit)[:, 0])
    logp_wanted, entropy_wanted = grads
    if not logp_wanted and not entropy_wanted:
        return torch.stack(stats), None, None
    probs.div_(total)
    entropy_grad = None
    if entropy_wanted and mean_logit is not None:
        logits.sub_(mean_logit).mul_(probs).neg_().div_(temperature)
        entropy_grad = torch.mm(logits, weight)
    probs.neg_().scatter_add_(1, targets.unsqueeze(1), torch.ones_like(chosen)).div_(temperature)
    return torch.stack(stats), torch.mm(probs, weight), entropy_grad


def _autograd_chunk(
    lm: PreTrainedModel,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`_plain_chunk` for any frozen head (logit scale, soft-capping, autocast), by autograd."""
    h = hidden.detach().requires_grad_(True)
    with torch.enable_grad():
        part = token_stats(lm, h, targets, temperature, with_entropy)
        wanted = entropy_grad and with_entropy
        (logp_grad,) = torch.autograd.grad(part[0].sum(), h, retain_graph=wanted)
        entropy = torch.autograd.grad(part[1].sum(), h)[0] if wanted else None
    return part.detach(), logp_grad, entropy


class _FrozenHeadStats(torch.autograd.Function):
    """Token stats whose input gradients are taken chunk by chunk in the forward pass.

    Each token's stats depend on its own hidden state only, so the gradient of a chunk's summed
    log-probs with respect to its hidden states is, row by row, each token's own gradient; the
    backward pass multiplies those rows by the incoming per-token gradients.
    """

    @staticmethod
    def forward(ctx, hidden, targets, lm, temperature, with_entropy, entropy_grad, chunk):
        weight = _plain_head_weight(lm, hidden)
        buffers = _buffers(hidden, weight, chunk)
        stats, logp_grads, entropy_grads = [], [], []
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start : start + chunk].detach(), targets[start : start + chunk]
            if weight is not None:
                part, logp_grad, entropy = _plain_chunk(
                    weight, h, y, temperature, with_entropy, (True, entropy_grad), buffers
                )
            else:
                part, logp_grad, entropy = _autograd_chunk(lm, h, y, temperature, with_entropy, entropy_grad)
            stats.append(part)
            logp_grads.append(logp_grad)
            if entropy is not None:
                entropy_grads.append(entropy)
        ctx.save_for_backward(torch.cat(logp_grads), *([torch.cat(entropy_grads)] if entropy_grads else []))
        return torch.cat(stats, dim=1)

    @staticmethod
    def backward(ctx, grad_stats):
        logp_grad, *entropy_grad = ctx.saved_tensors
        grad = grad_stats[0].unsqueeze(-1) * logp_grad
        if entropy_grad:
            grad = grad + grad_stats[1].unsqueeze(-1) * entropy_grad[0]
        return grad.to(logp_grad.dtype), None, None, None, None, None, None


def _buffers(hidden: torch.Tensor, weight: torch.Tensor | None, chunk: int) -> tuple[torch.Tensor, ...]:
    """The two [chunk, vocab] buffers of :func:`_plain_chunk`, once a call (empty without a plain head)."""
    rows = min(chunk, hidden.shape[0]) if weight is not None else 0
    vocab = weight.shape[0] if weight is not None else 0
    return tuple(hidden.new_empty((rows, vocab), dtype=torch.float32) for _ in range(2))


def completion_token_stats(
    lm: PreTrainedModel,
    hidden: torch.Tensor,
    completion_ids: torch.Tensor,
    keep: torch.Tensor,
    temperature: float,
    chunk_size: int | None,
    with_entropy: bool,
    entropy_grad: bool = True,
) -> torch.Tensor:
    """[1 or 2, B, T] float32 log-probs (and entropies) of the completion tokens ``keep`` marks.

    ``hidden`` [N, H] holds the states that predict them, in ``completion_ids[keep]`` order; masked
    positions cost no head matmul and come out as exact zeros. At most ``chunk_size`` tokens reach
    the head at a time (on a CPU at most :data:`CPU_LOGITS_CHUNK_BYTES` of logits; module doc).
    ``entropy_grad=False`` returns the entropies without a gradient (a metric only), which spares
    the frozen-head path one matmul a chunk.
    """
    targets = completion_ids[keep]
    n = targets.shape[0]
    chunk = head_chunk_tokens(lm, hidden.device, chunk_size)
    rows = 2 if with_entropy else 1
    out = hidden.new_zeros((rows, *completion_ids.shape), dtype=torch.float32)
    if n == 0:
        return out
    step = n if chunk is None else chunk
    grad = torch.is_grad_enabled() and hidden.requires_grad
    weight = _plain_head_weight(lm, hidden) if chunk is not None else None
    if grad and chunk is not None and _head_is_frozen(lm):
        stats = _FrozenHeadStats.apply(hidden, targets, lm, temperature, with_entropy, entropy_grad, step)
    else:
        pieces = []
        buffers = _buffers(hidden, weight, step) if not grad else None
        for start in range(0, n, step):
            h, y = hidden[start : start + step], targets[start : start + step]
            if grad and chunk is not None:
                args = (lm, h, y, temperature, with_entropy)
                pieces.append(checkpoint(token_stats, *args, use_reentrant=False))
            elif buffers is not None and weight is not None:
                no_grads = (False, False)
                pieces.append(_plain_chunk(weight, h, y, temperature, with_entropy, no_grads, buffers)[0])
            else:
                pieces.append(token_stats(lm, h, y, temperature, with_entropy))
        stats = torch.cat(pieces, dim=1)
        if with_entropy and not entropy_grad:
            stats = torch.stack([stats[0], stats[1].detach()])
    out[:, keep] = stats
    return out
