"""Per-token log-probs (and entropies) of completions under a causal LM.

The sequence a model sees is ``[prompt (left-padded) | completion (right-padded)]``. Position ids
count only real tokens (``cumsum(mask) - 1``), so a left-padded prompt gives the same numbers as the
same prompt unpadded. Logits are divided by the sampling temperature before the softmax, which is how
the sampler applied it; the result is what the learner's ratios and KL terms need.

With ``share_prompts`` the samples of one prompt (a GRPO group) share one forward pass of that
prompt: the prompt runs once per distinct prompt with a KV cache, the cache is indexed out to every
row, and the completions run on top of it. Attention sees exactly the keys and values of the full
pass, and gradients flow back through the cache into the single prompt pass, so log-probs and
gradients equal the full pass's up to float rounding (tests/rlhf/learner/test_shared_prompts.py); a group
of n samples with prompt length P and completion length T costs ``P + n*T`` tokens instead of
``n*(P + T)``.

Only completion tokens reach the output head, and with ``chunk_size`` they do so ``chunk_size``
tokens at a time, so peak memory holds ``chunk_size x vocab`` logits rather than ``B x T x vocab``;
on a CPU always (:mod:`rlhf.models.output_head` says how, with gradients too).
"""

from __future__ import annotations

import inspect

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel

from rlhf.models.loading import adapters_disabled
from rlhf.models.output_head import completion_token_stats


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: 0 at the first unmasked token of each row."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def causal_lm_of(model: nn.Module) -> PreTrainedModel:
    """The transformers causal LM inside ``model`` (a PeftModel's base model, or ``model`` itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def completion_hidden_states(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """[B, T, H] final hidden states at the positions that predict each completion token.

    The hidden state at sequence position ``P - 1 + t`` predicts completion token ``t``. Whichever
    LoRA adapter is active on ``model`` takes part (its layers are inside the decoder).
    """
    _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    decoder = causal_lm_of(model).get_decoder()
    out = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    prompt_len, completion_len = prompt_ids.shape[1], completion_ids.shape[1]
    return out.last_hidden_state[:, prompt_len - 1 : prompt_len - 1 + completion_len]


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows holding each distinct prompt once, and for every row the index of its distinct prompt.

    Prompts are equal when their real tokens and padding are: left padding to the same width
    makes equal prompts equal rows.
    """
    keyed = prompt_ids.masked_fill(~prompt_mask.bool(), -1)
    distinct, inverse = torch.unique(keyed, dim=0, return_inverse=True)
    first = torch.full((distinct.shape[0],), keyed.shape[0], dtype=torch.long, device=keyed.device)
    first = first.scatter_reduce(0, inverse, torch.arange(keyed.shape[0], device=keyed.device), "amin")
    return first, inverse


def shared_prompt_hidden_states(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """:func:`completion_hidden_states` with one prompt pass per distinct prompt (module docstring).

    Falls back to the full pass when no two rows share a prompt, and under activation checkpointing
    (transformers turns the KV cache off there, and without it the completions cannot see the prompt).
    """
    _check_shapes(prompt_ids, prompt_mask, completion_ids, completion_mask)
    lm = causal_lm_of(model)
    first, inverse = prompt_groups(prompt_ids, prompt_mask)
    checkpointing = lm.training and any(getattr(m, "gradient_checkpointing", False) for m in lm.modules())
    if first.shape[0] == prompt_ids.shape[0] or checkpointing:
        return completion_hidden_states(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    decoder = lm.get_decoder()
    distinct_mask = prompt_mask[first]
    prompt_out = decoder(
        input_ids=prompt_ids[first],
        attention_mask=distinct_mask,
        position_ids=position_ids_from_mask(distinct_mask),
        use_cache=True,
    )
    # Newer transformers returns the cache as `cache` and warns on `past_key_values`.
    cache = prompt_out.cache if "cache" in prompt_out else prompt_out.past_key_values
    cache.reorder_cache(inverse)  # index_select: every row gets its prompt's keys and values
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    completion_out = decoder(
        input_ids=completion_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask)[:, prompt_ids.shape[1] :],
        use_cache=True,
        **{_cache_argument(decoder): cache},
    )
    # The prompt's last position predicts completion token 0; completion position t predicts t + 1.
    last_prompt = prompt_out.last_hidden_state[inverse, -1:]
    return torch.cat([last_prompt, completion_out.last_hidden_state[:, :-1]], dim=1)


def _cache_argument(decoder: nn.Module) -> str:
    """The name a decoder's forward takes its KV cache by (``cache`` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _check_shapes(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> None:
    if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != completion_mask.shape:
        raise ValueError(
            f"ids and masks must have equal shapes: prompt {tuple(prompt_ids.shape)} vs "
            f"{tuple(prompt_mask.shape)}, completion {tuple(completion_ids.shape)} vs "
            f"{tuple(completion_mask.shape)}"
        )
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(f"prompt batch {prompt_ids.shape[0]} != completion batch {completion_ids.shape[0]}")
    if prompt_ids.shape[1] < 1:
        raise ValueError(
            "prompts must hold at least one token: the first completion token is predicted from it"
        )
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded (the last prompt column must be all real tokens)")


def check_logprob_options(temperature: float, chunk_size: int | None) -> None:
    """ValueError for a temperature log-probs cannot be taken at, or a chunk size below 1."""
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 for log-probs, got {temperature} (greedy samples use "
            "rlhf.rollout.logprob_temperature: 1.0)"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")


def _completion_stats(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float,
    chunk_size: int | None,
    with_entropy: bool,
    share_prompts: bool = False,
    entropy_grad: bool = True,
) -> torch.Tensor:
    check_logprob_options(temperature, chunk_size)
    hidden_states = shared_prompt_hidden_states if share_prompts else completion_hidden_states
    hidden = hidden_states(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    keep = completion_mask.bool()
    lm = causal_lm_of(model)
    return completion_token_stats(
        lm, hidden[keep], completion_ids, keep, temperature, chunk_size, with_entropy, entropy_grad
    )


def completion_logprobs(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """[B, T] float32 log-probs of ``completion_ids`` given ``prompt_ids``; 0 where masked.

    prompt_ids / prompt_mask: [B, P], left-padded. completion_ids / completion_mask: [B, T],
    right-padded. temperature: logits are divided by it before the softmax, as in sampling.
    chunk_size: completion tokens per output-head chunk (None: all at once; on a CPU never more
        than :data:`rlhf.models.output_head.CPU_LOGITS_CHUNK_BYTES` of logits).
    Gradients flow when called with grad enabled; wrap in ``torch.no_grad()`` for old log-probs.
    """
    stats = _completion_stats(
        model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, chunk_size, False
    )
    return stats[0]


def completion_logprobs_and_entropy(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    share_prompts: bool = False,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] log-probs as :func:`completion_logprobs`, and [B, T] entropies of the same
    temperature-scaled next-token distributions (0 where masked). ``share_prompts``: one prompt
    pass per distinct prompt (module docstring). ``entropy_grad=False``: the entropies carry no
    gradient (a metric only; the output head then does less work)."""
    stats = _completion_stats(
        model,
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        temperature,
        chunk_size,
        True,
        share_prompts,
        entropy_grad,
    )
    return stats[0], stats[1]


def reference_logprobs(
    model: PeftModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """[B, T] log-probs under the reference policy: the same model with every adapter disabled.

    No gradients; the base weights are shared with the policy, so no second copy exists.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"reference_logprobs needs a PeftModel (the reference is the base with adapters off), got "
            f"{type(model).__name__}; for a plain model call completion_logprobs"
        )
    with torch.no_grad(), adapters_disabled(model):
        return completion_logprobs(
            model,
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            temperature=temperature,
            chunk_size=chunk_size,
        )
