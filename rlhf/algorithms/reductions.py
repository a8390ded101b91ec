"""Reductions over completion tokens: masked statistics, whitening and loss aggregation.

Every function takes a ``mask`` of the same shape as its values (``[B, T]`` for per-token tensors):
1 (or True) on completion tokens that count, 0 on padding. Padding never contributes to a statistic,
whatever value it holds.
"""

from __future__ import annotations

import torch

AGGREGATION_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


def _check_same_shape(values: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    if values.shape != mask.shape:
        raise ValueError(
            f"{what}: values have shape {tuple(values.shape)} but mask has shape {tuple(mask.shape)}; "
            "pass a mask of the same shape (one entry per completion token)"
        )


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is set, over ``dim`` (all dims when None)."""
    _check_same_shape(values, mask, "masked_sum")
    # where() rather than multiply so that inf/nan in padding cannot leak into the sum.
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is set, over ``dim`` (all dims when None).

    An empty mask (along ``dim``) gives 0 rather than NaN, so a batch row without tokens cannot poison
    a loss.
    """
    total = masked_sum(values, mask, dim)
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim=dim)
    return total / count.clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries of ``values`` (a scalar).

    ``unbiased`` applies Bessel's correction (divide by n - 1). With fewer than two entries the
    variance is 0, not NaN.
    """
    mean = masked_mean(values, mask)
    squares = masked_sum((values - mean) ** 2, mask)
    count = mask.to(values.dtype).sum()
    denominator = (count - 1.0) if unbiased else count
    return squares / denominator.clamp(min=1.0)


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``values`` to unit variance (and zero mean when ``shift_mean``) over masked entries.

    The statistics come from masked entries only (unbiased variance); padded entries of the result
    are 0. ``shift_mean=False`` keeps the mean (only rescales), as for rewards whose sign matters.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    scaled = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        scaled = scaled + mean
    return torch.where(mask.bool(), scaled, torch.zeros_like(scaled))


def aggregate_loss(
    token_losses: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce per-token losses ``[B, T]`` to one scalar.

    Modes (they differ only when completions have unequal lengths):

    - ``"token-mean"``: every token weighs the same, sum over all tokens / number of tokens
      (DAPO's token-level loss; long completions are not diluted).
    - ``"seq-mean-token-mean"``: mean over each sequence's tokens, then mean over sequences
      (the original GRPO; a token of a short completion weighs more than one of a long completion).
    - ``"seq-mean-token-sum"``: sum over each sequence's tokens, then mean over sequences.
    - ``"seq-mean-token-sum-norm"``: sum over each sequence's tokens divided by the constant
      ``max_len``, then mean over sequences (Dr.GRPO; removes the length bias of per-sequence means).
      ``max_len`` defaults to ``T``; pass the generation budget (``max_new_tokens``) so the scale does
      not depend on how the batch happened to be padded.

    Sequences without any masked token are left out of the sequence means.
    """
    if token_losses.dim() != 2:
        raise ValueError(
            f"aggregate_loss expects per-token losses of shape [B, T], got {tuple(token_losses.shape)}"
        )
    _check_same_shape(token_losses, mask, "aggregate_loss")
    if mode == "token-mean":
        return masked_mean(token_losses, mask)
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; choose one of {list(AGGREGATION_MODES)}")
    if mode == "seq-mean-token-mean":
        per_sequence = masked_mean(token_losses, mask, dim=1)
    elif mode == "seq-mean-token-sum":
        per_sequence = masked_sum(token_losses, mask, dim=1)
    else:
        length = token_losses.shape[1] if max_len is None else max_len
        if length <= 0:
            raise ValueError(f"max_len must be a positive number of tokens, got {max_len}")
        per_sequence = masked_sum(token_losses, mask, dim=1) / float(length)
    has_tokens = mask.bool().any(dim=1)
    return masked_mean(per_sequence, has_tokens)
