"""Policy and value losses on per-token tensors; each returns ``(loss, metrics)``.

Policy losses are registered by name and share one signature (see ``registry.py``). ``metrics``
values are detached 0-dim tensors so that computing them never forces a device sync; call
``float()`` when logging.
"""

from __future__ import annotations

import torch

from rlhf.algorithms.kl import kl_penalty
from rlhf.algorithms.reductions import aggregate_loss, masked_mean, masked_var
from rlhf.algorithms.registry import register_policy_loss

# A ratio of exp(20) is already clipped or absurd; the cap keeps exp() finite in low precision.
_MAX_LOG_RATIO = 20.0


def _check_per_token(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T] over completion tokens, got shape {tuple(mask.shape)}")
    for name, tensor in tensors.items():
        if tensor.shape != mask.shape:
            raise ValueError(
                f"{name} must be per completion token like mask {tuple(mask.shape)}, "
                f"got {tuple(tensor.shape)}"
            )


def _ppo_token_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    _check_per_token(mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must lie in [0, 1) so that 1 - clip_low > 0, got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    advantages = advantages.detach()
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    token_losses = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        # Tokens whose gradient the clip removed: pushed past the bound in the advantage's direction.
        clipped_high = (ratio > 1.0 + clip_high) & (advantages > 0)
        clipped_low = (ratio < 1.0 - clip_low) & (advantages < 0)
        metrics = {
            "clip_frac": masked_mean((clipped_high | clipped_low).float(), mask),
            "clip_frac_high": masked_mean(clipped_high.float(), mask),
            "clip_frac_low": masked_mean(clipped_low.float(), mask),
            "approx_kl": masked_mean(kl_penalty(old_logprobs, logprobs, "k3", clamp=None), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_max": torch.where(mask.bool(), ratio, torch.zeros_like(ratio)).max(),
        }
    return token_losses, metrics


@register_policy_loss("ppo_clip")
def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token-mean",
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017), the loss of GRPO, RLOO, REINFORCE++ and PPO.

    Per token: ``max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))`` with
    ``r = exp(logprobs - old_logprobs)``, then reduced by :func:`aggregate_loss`.

    Args:
        logprobs: log-probs of the sampled tokens under the policy being trained (with gradient).
        old_logprobs: the same under the policy that sampled them (no gradient).
        advantages: per-token advantages from an estimator (no gradient).
        mask: completion mask.
        clip_low: how far the ratio may fall below 1 before the clip stops the gradient.
        clip_high: how far it may rise above 1. ``clip_high > clip_low`` is DAPO's clip-higher, which
            lets unlikely tokens with positive advantage grow faster and so keeps entropy up.
        aggregation: see :func:`aggregate_loss` (``"token-mean"``, ``"seq-mean-token-mean"``, ...).
        max_len: the constant length of ``"seq-mean-token-sum-norm"``.

    Metrics: ``clip_frac`` (and its ``_low``/``_high`` parts), ``approx_kl`` (k3 estimate of
    KL(old || new)), ``ratio_mean``, ``ratio_max``.
    """
    token_losses, metrics = _ppo_token_losses(logprobs, old_logprobs, advantages, mask, clip_low, clip_high)
    return aggregate_loss(token_losses, mask, aggregation, max_len), metrics


@register_policy_loss("dual_clip")
def dual_clip_ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    aggregation: str = "token-mean",
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dual-clip PPO (Ye et al. 2020): PPO clip plus a bound ``-A * clip_ratio_c`` when ``A < 0``.

    With a negative advantage the plain surrogate grows without bound in the ratio, so one stale
    token the new policy likes far more than the old one could dominate the batch; dual clip caps
    that loss at ``clip_ratio_c`` times the advantage. Other arguments as for :func:`ppo_clip_loss`.
    Adds the metric ``dual_clip_frac``.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 (typically 3), got {clip_ratio_c}")
    token_losses, metrics = _ppo_token_losses(logprobs, old_logprobs, advantages, mask, clip_low, clip_high)
    advantages = advantages.detach()
    bound = -advantages * clip_ratio_c
    capped = (advantages < 0) & (token_losses > bound)
    token_losses = torch.where(capped, bound, token_losses)
    metrics["dual_clip_frac"] = masked_mean(capped.float(), mask).detach()
    return aggregate_loss(token_losses, mask, aggregation, max_len), metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None = 0.2,
    aggregation: str = "token-mean",
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss: ``0.5 * max((V - R)^2, (V_clip - R)^2)`` per token, aggregated.

    Args:
        values: the critic's current predictions (with gradient).
        old_values: its predictions when the batch was collected (the ``values`` given to GAE).
        returns: regression targets (the ``returns`` of GAE).
        mask: completion mask.
        clip_range: ``V_clip = old_values + clip(V - old_values, -clip_range, clip_range)``, which stops
            the critic moving far in one batch; None gives the plain squared error.
        aggregation / max_len: see :func:`aggregate_loss`.

    Metrics: ``value_clip_frac`` (tokens where the clipped term was the larger), ``value_mean``,
    ``explained_variance`` (1 - Var(R - V) / Var(R); 1 is a perfect critic).
    """
    _check_per_token(mask, values=values, old_values=old_values, returns=returns)
    returns = returns.detach()
    old_values = old_values.detach()
    unclipped = (values - returns) ** 2
    if clip_range is None:
        token_losses = 0.5 * unclipped
        clip_active = torch.zeros_like(unclipped, dtype=torch.bool)
    else:
        if clip_range <= 0:
            raise ValueError(f"clip_range must be > 0 (or None for no clipping), got {clip_range}")
        clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
        clipped = (clipped_values - returns) ** 2
        token_losses = 0.5 * torch.maximum(unclipped, clipped)
        clip_active = clipped > unclipped
    with torch.no_grad():
        residual_var = masked_var(returns - values, mask)
        returns_var = masked_var(returns, mask)
        metrics = {
            "value_clip_frac": masked_mean(clip_active.float(), mask),
            "value_mean": masked_mean(values, mask),
            "explained_variance": 1.0 - residual_var / returns_var.clamp(min=1e-8),
        }
    return aggregate_loss(token_losses, mask, aggregation, max_len), metrics


def entropy_bonus(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    aggregation: str = "token-mean",
    max_len: int | None = None,
) -> torch.Tensor:
    """The loss term ``-coef * aggregate(entropy)`` to add to a policy loss.

    Minimising it raises the entropy (from :func:`entropy_from_logits`), which slows the collapse of
    exploration. ``coef`` 0 returns a zero that still carries the graph, so callers need no branch.
    """
    _check_per_token(mask, entropy=entropy)
    return -coef * aggregate_loss(entropy, mask, aggregation, max_len)
