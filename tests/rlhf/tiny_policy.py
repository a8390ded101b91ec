"""A tiny randomly initialised causal LM and a plain sampling loop, for tests that train a policy.

Everything runs on CPU in milliseconds: one Llama layer, a vocabulary of a few tokens, prompts and
completions a handful of tokens long. Token 0 is padding, token 1 ends a completion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.algorithms import token_logprobs

PAD_ID = 0
EOS_ID = 1


def build_tiny_lm(seed: int, vocab_size: int = 16, hidden_size: int = 32) -> LlamaForCausalLM:
    """A one-layer Llama with random weights drawn from ``seed``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=EOS_ID,
    )
    return LlamaForCausalLM(config)


@dataclass
class Samples:
    """Completions of ``n_samples`` per prompt; sample ``i`` answers prompt ``group_ids[i]``.

    completion_mask covers generated tokens up to and including EOS; completion_ids hold PAD after.
    """

    prompt_ids: torch.Tensor
    group_ids: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def random_prompts(
    n_prompts: int, prompt_len: int, vocab_size: int, generator: torch.Generator
) -> torch.Tensor:
    """Prompts of ordinary tokens (neither PAD nor EOS)."""
    return torch.randint(2, vocab_size, (n_prompts, prompt_len), generator=generator)


@torch.no_grad()
def sample_completions(
    model: LlamaForCausalLM,
    prompts: torch.Tensor,
    n_samples: int,
    max_new_tokens: int,
    generator: torch.Generator,
) -> Samples:
    """Sample ``n_samples`` completions per prompt at temperature 1, token by token."""
    prompt_ids = prompts.repeat_interleave(n_samples, dim=0)
    group_ids = torch.arange(prompts.shape[0]).repeat_interleave(n_samples)
    sequences = prompt_ids
    finished = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    tokens, alive = [], []
    for _ in range(max_new_tokens):
        logits = model(input_ids=sequences).logits[:, -1].float()
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
        token = torch.where(finished, torch.full_like(token, PAD_ID), token)
        alive.append(~finished)
        tokens.append(token)
        finished = finished | (token == EOS_ID)
        sequences = torch.cat([sequences, token[:, None]], dim=1)
    return Samples(
        prompt_ids=prompt_ids,
        group_ids=group_ids,
        completion_ids=torch.stack(tokens, dim=1),
        completion_mask=torch.stack(alive, dim=1),
    )


def completion_logprobs(
    model: LlamaForCausalLM, samples: Samples
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logprobs [B, T], logits [B, T, V], hidden [B, T, H])`` at the completion tokens.

    Position ``t`` holds the distribution (and last hidden state) that produced completion token
    ``t``: the state before the token, which is also where a value head reads its value.
    """
    inputs = torch.cat([samples.prompt_ids, samples.completion_ids], dim=1)
    out = model(input_ids=inputs, output_hidden_states=True)
    start = samples.prompt_ids.shape[1] - 1
    logits = out.logits[:, start:-1]
    hidden = out.hidden_states[-1][:, start:-1]
    return token_logprobs(logits, samples.completion_ids), logits, hidden


def target_token_reward(samples: Samples, target_id: int) -> torch.Tensor:
    """Fraction of the token budget spent on ``target_id``: 1 only for a completion of all targets."""
    hits = (samples.completion_ids == target_id) & samples.completion_mask
    return hits.float().sum(dim=1) / samples.completion_ids.shape[1]


def exact_kl(policy: LlamaForCausalLM, reference: LlamaForCausalLM, samples: Samples) -> float:
    """Mean over completion tokens of the full-vocabulary KL(policy || reference) at each position."""
    with torch.no_grad():
        _, policy_logits, _ = completion_logprobs(policy, samples)
        _, reference_logits, _ = completion_logprobs(reference, samples)
        log_p = torch.log_softmax(policy_logits.float(), dim=-1)
        log_q = torch.log_softmax(reference_logits.float(), dim=-1)
        per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
        mask = samples.completion_mask
        return float(per_token[mask].mean())
