"""Quantities read off a causal LM's logits: log-probs of chosen tokens and the entropy per position."""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs ``[B, T]`` of ``token_ids [B, T]`` under ``logits [B, T, V]`` at ``temperature``.

    ``logits[:, t]`` must be the distribution that produced ``token_ids[:, t]`` (i.e. already shifted
    by one relative to the model's inputs). Computed in float32 as ``logit - logsumexp(logits)``,
    which avoids materialising a full log-softmax of size ``B * T * V``. Use the temperature the
    tokens were sampled at so the result matches ``Rollouts.behaviour_logprobs``.
    """
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be [*token_ids.shape, vocab]; token_ids are "
            f"{tuple(token_ids.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = logits.float() / temperature
    chosen = scaled.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(scaled, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the categorical distribution at each position: ``[..., V] -> [...]``.

    ``H = logsumexp(z) - sum(softmax(z) * z)``, which stays finite for large or ``-inf`` logits where
    ``-sum(p * log p)`` would hit ``0 * -inf``.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    # A -inf logit has probability 0; keep 0 * -inf from turning into NaN.
    weighted = torch.where(probs > 0, probs * logits, torch.zeros_like(logits))
    return torch.logsumexp(logits, dim=-1) - weighted.sum(dim=-1)
