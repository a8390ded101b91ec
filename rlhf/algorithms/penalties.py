"""Reward shaping on tensors that depends on the sampled sequences rather than on the sandbox."""

from __future__ import annotations

import torch


def overlong_penalty(
    lengths: torch.Tensor, max_new_tokens: int, buffer_len: int, penalty_factor: float = 1.0
) -> torch.Tensor:
    """DAPO's soft overlong punishment, a value ``[B]`` to add to the rewards.

    0 while a completion has at most ``max_new_tokens - buffer_len`` tokens, then falling linearly to
    ``-penalty_factor`` at ``max_new_tokens`` (and staying there beyond). Truncated completions are
    thus punished gradually instead of by a cliff, which DAPO found reduces reward noise.

    Args:
        lengths: completion lengths in tokens, e.g. ``Rollouts.completion_lengths``.
        max_new_tokens: the generation budget.
        buffer_len: width of the linear zone in tokens, 1..max_new_tokens.
        penalty_factor: the penalty at (and beyond) the budget, as a positive number.
    """
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not 1 <= buffer_len <= max_new_tokens:
        raise ValueError(f"buffer_len must lie in 1..max_new_tokens={max_new_tokens}, got {buffer_len}")
    if penalty_factor < 0:
        raise ValueError(f"penalty_factor is the size of the penalty and must be >= 0, got {penalty_factor}")
    excess = lengths.float() - float(max_new_tokens - buffer_len)
    return -penalty_factor * (excess / buffer_len).clamp(min=0.0, max=1.0)
