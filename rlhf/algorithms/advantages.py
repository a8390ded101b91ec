"""Advantage estimators: outcome rewards (and critic values) in, per-token advantages out.

Conventions (see ``rlhf/types.py``): ``rewards [B]`` float, one outcome reward per sample;
``group_ids [B]`` long, the prompt each sample answers; ``mask [B, T]`` over completion tokens;
``values [B, T]`` the critic's value of the state before each completion token; ``kl [B, T]`` a
per-token KL penalty (e.g. ``kl_penalty(old_logprobs, ref_logprobs, "k1")``) that the
REINFORCE-style estimators subtract from the reward.

Every registered estimator returns ``(advantages [B, T], returns [B, T] or None)`` with zeros on
padded tokens; ``returns`` are the value targets for a critic (PPO) or the discounted returns before
whitening (REINFORCE++), and None for the group-relative methods.

Time steps are the masked tokens only: a masked-out token in the middle of a completion (say, tool
output) is skipped, not treated as the end of the episode.
"""

from __future__ import annotations

import torch

from rlhf.algorithms.groups import check_group_inputs, group_stats
from rlhf.algorithms.reductions import masked_whiten
from rlhf.algorithms.registry import register_advantage_estimator, register_algorithm


def _check_token_inputs(rewards: torch.Tensor, mask: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T] over completion tokens, got shape {tuple(mask.shape)}")
    if rewards.dim() != 1 or rewards.shape[0] != mask.shape[0]:
        raise ValueError(
            f"rewards must be [B] with B = mask.shape[0] = {mask.shape[0]}, got {tuple(rewards.shape)}"
        )
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float tensor, got {rewards.dtype}; call .float() first")


def _check_per_token(tensor: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    if tensor.shape != mask.shape:
        raise ValueError(
            f"{name} must be per completion token like mask {tuple(mask.shape)}, got {tuple(tensor.shape)}"
        )


def _broadcast(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One value per sequence spread over its completion tokens, 0 on padding."""
    return torch.where(mask.bool(), scores[:, None].expand(mask.shape), torch.zeros((), dtype=scores.dtype))


def outcome_to_token_rewards(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Per-token rewards ``[B, T]``: the outcome reward on each sequence's last masked token.

    With ``kl`` and ``kl_coef``, every masked token also gets ``-kl_coef * kl`` (the KL-in-reward
    penalty of InstructGPT-style PPO and REINFORCE++). Padding is 0. A sequence without masked tokens
    receives nothing.
    """
    _check_token_inputs(rewards, mask)
    rewards = rewards.detach()
    present = mask.bool()
    token_rewards = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
    if kl_coef != 0.0:
        if kl is None:
            raise ValueError("kl_coef is set but no `kl` tensor was given; pass kl=[B, T] or kl_coef=0")
        _check_per_token(kl, mask, "kl")
        token_rewards = torch.where(present, -kl_coef * kl.detach().to(rewards.dtype), token_rewards)
    positions = torch.arange(mask.shape[1], device=mask.device).expand(mask.shape)
    last = torch.where(present, positions, torch.full_like(positions, -1)).max(dim=1).values
    rows = (last >= 0).nonzero().flatten()
    token_rewards[rows, last[rows]] += rewards[rows]
    return token_rewards


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_t = r_t + gamma * G_{t+1}`` over masked tokens; 0 on padding."""
    _check_per_token(token_rewards, mask, "token_rewards")
    present = mask.bool()
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        running = torch.where(present[:, t], token_rewards[:, t] + gamma * running, running)
        returns[:, t] = torch.where(present[:, t], running, torch.zeros_like(running))
    return returns


def generalized_advantage_estimation(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016): ``(advantages, returns)``, unwhitened, 0 on padding.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}`` with
    ``V`` after the last token taken as 0 (the episode ends with the completion); ``returns = A + V``
    are the critic's targets.
    """
    _check_per_token(token_rewards, mask, "token_rewards")
    _check_per_token(values, mask, "values")
    present = mask.bool()
    values = values.detach()
    advantages = torch.zeros_like(token_rewards)
    next_value = torch.zeros_like(token_rewards[:, 0])
    next_advantage = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        next_value = torch.where(present[:, t], values[:, t], next_value)
        next_advantage = torch.where(present[:, t], advantage, next_advantage)
        advantages[:, t] = torch.where(present[:, t], advantage, torch.zeros_like(advantage))
    returns = torch.where(present, advantages + values, torch.zeros_like(values))
    return advantages, returns


@register_advantage_estimator("grpo")
def grpo_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, None]:
    """GRPO (DeepSeekMath): each reward minus its group's mean, over the group's std.

    Args:
        normalize_std: divide by the group's (unbiased) reward std. False gives Dr.GRPO, which drops
            the division because it over-weights prompts that are nearly always solved or failed.
        eps: added to the std so an all-equal group divides 0 by ``eps``, not by 0.

    A group of one sample has no baseline and gets advantage 0.
    """
    _check_token_inputs(rewards, mask)
    stats = group_stats(rewards, group_ids)
    scores = rewards - stats.mean
    if normalize_std:
        scores = scores / (stats.std + eps)
    scores = torch.where(stats.size > 1, scores, torch.zeros_like(scores))
    return _broadcast(scores, mask), None


@register_advantage_estimator("rloo")
def rloo_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor
) -> tuple[torch.Tensor, None]:
    """RLOO (Ahmadian et al. 2024): each reward minus the mean reward of the other samples of its group.

    Equals ``n / (n - 1) * (r - group_mean)`` for a group of ``n``. A group of one gets 0.
    """
    _check_token_inputs(rewards, mask)
    stats = group_stats(rewards, group_ids)
    others = stats.size - 1.0
    baseline = (stats.mean * stats.size - rewards) / others.clamp(min=1.0)
    scores = torch.where(others > 0, rewards - baseline, torch.zeros_like(rewards))
    return _broadcast(scores, mask), None


def _whitened_returns(
    rewards: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None, kl_coef: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    returns = discounted_returns(outcome_to_token_rewards(rewards, mask, kl, kl_coef), mask, gamma)
    return masked_whiten(returns, mask), returns


@register_advantage_estimator("reinforce_plus_plus")
def reinforce_plus_plus_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025): discounted token returns, whitened over all tokens of the batch.

    The outcome reward sits on the last token, ``-kl_coef * kl`` on every token; the returns of the
    whole batch are normalised together (no per-prompt baseline, so it needs no groups).

    Args:
        kl_coef: weight of the per-token KL penalty ``kl`` folded into the reward (0 disables it).
        gamma: discount over tokens (1.0: every token gets the full outcome reward).
    """
    _check_token_inputs(rewards, mask)
    return _whitened_returns(rewards, mask, kl, kl_coef, gamma)


@register_advantage_estimator("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline: subtract the group mean reward, then proceed as REINFORCE++.

    The group mean removes per-prompt difficulty; global whitening (rather than GRPO's per-group
    std) keeps the scale stable when a group's rewards barely vary. Options as for REINFORCE++.
    """
    _check_token_inputs(rewards, mask)
    check_group_inputs(rewards, group_ids)
    centred = rewards - group_stats(rewards, group_ids).mean
    return _whitened_returns(centred, mask, kl, kl_coef, gamma)


@register_advantage_estimator("gae")
def gae_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's GAE on the outcome reward (last token) minus an optional per-token KL penalty.

    Args:
        kl_coef: weight of the per-token KL penalty ``kl`` folded into the reward (0 disables it).
        gamma: discount over tokens.
        lam: GAE's bias/variance trade-off (1: Monte-Carlo returns minus values, 0: one-step TD).
        whiten: normalise the advantages over the batch's masked tokens; returns stay unwhitened
            since they are the critic's regression targets.
    """
    _check_token_inputs(rewards, mask)
    token_rewards = outcome_to_token_rewards(rewards, mask, kl, kl_coef)
    advantages, returns = generalized_advantage_estimation(token_rewards, values, mask, gamma, lam)
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns


# The algorithms `algorithm.name` selects: an estimator above and a policy loss (losses.py). Their
# flags (critic, KL in the reward, group baseline) come from the estimator's signature.
register_algorithm("grpo")
register_algorithm("rloo")
register_algorithm("reinforce_plus_plus")
register_algorithm("reinforce_plus_plus_baseline")
register_algorithm("ppo", estimator="gae")
