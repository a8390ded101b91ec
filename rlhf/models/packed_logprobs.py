"""Padding-free micro-batches for the learner: many samples in one row, each attending to itself.

A padded micro-batch is a rectangle ``[prompt (left-padded) | completion (right-padded)]``: with one
long-prompt/short-answer sample and one short-prompt/long-answer sample, every row pays for the
longest prompt plus the longest answer. Packing concatenates each sample's real tokens into one
sequence with position ids restarting at 0 per sample. Given those positions and no attention
mask, transformers builds a block-diagonal causal mask (SDPA and eager attention) or uses
variable-length kernels (flash-attention 2), so no token attends across samples and no padding is
computed. The log-probs come back in the padded ``[B, T]`` layout, so loss functions are unchanged.

With SDPA the block-diagonal mask is materialised as ``tokens x tokens`` booleans, so keep packed
micro-batches to a few thousand tokens there; flash-attention 2 needs no mask.

:func:`pack_by_tokens` groups samples under a token budget counted without padding, the packed
counterpart of :func:`rlhf.learner.updates.pack_micro_batches`.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhf.models.logprobs import _check_shapes, causal_lm_of, check_logprob_options
from rlhf.models.output_head import completion_token_stats


def pack_by_tokens(lengths: list[int], budget: int) -> list[list[int]]:
    """Sample indices grouped into micro-batches of at most ``budget`` real tokens.

    First-fit decreasing: samples are taken longest first and each goes into the first micro-batch
    with room; a sample longer than the budget gets a micro-batch of its own.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1 token, got {budget}")
    batches: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        target = next((b for b, free in enumerate(room) if free >= lengths[index]), None)
        if target is None:
            batches.append([index])
            room.append(budget - lengths[index])
        else:
            batches[target].append(index)
            room[target] -= lengths[index]
    return batches


def packed_completion_logprobs_and_entropy(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] log-probs and entropies as :func:`rlhf.models.logprobs.completion_logprobs_and_entropy`
    returns them, computed on one packed sequence without padding.

    Inputs are the padded layout (prompts left-padded, completions right-padded). Gradients flow
    when grad is enabled; ``chunk_size`` chunks the output head (recomputed in the backward pass).
    """
    _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask)
    check_logprob_options(temperature, chunk_size)
    device = prompt_ids.device
    prompt_lengths = prompt_mask.sum(1).tolist()
    completion_lengths = completion_mask.sum(1).tolist()
    width = prompt_ids.shape[1]
    tokens, positions, predictors = [], [], []
    offset = 0
    for row, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        tokens += [prompt_ids[row, width - p :], completion_ids[row, :c]]
        positions.append(torch.arange(p + c, device=device))
        # The hidden state at a sample's position p - 1 + t predicts its completion token t.
        predictors.append(torch.arange(offset + p - 1, offset + p - 1 + c, device=device))
        offset += p + c
    decoder = causal_lm_of(model).get_decoder()
    hidden = decoder(
        input_ids=torch.cat(tokens)[None],
        position_ids=torch.cat(positions)[None],
        attention_mask=None,
        use_cache=False,
    ).last_hidden_state[0]
    keep = completion_mask.bool()
    out = completion_token_stats(
        causal_lm_of(model),
        hidden[torch.cat(predictors)],
        completion_ids,
        keep,
        temperature,
        chunk_size,
        True,
    )
    return out[0], out[1]
