"""The algorithm arrow: Scored -> TrainBatch (pure; no model, no I/O)."""

from __future__ import annotations

import torch

from rlhf.algorithms import (
    AlgorithmSpec,
    compute_advantages,
    estimator_options,
    kl_penalty,
    overlong_penalty,
    uniform_group_mask,
)
from rlhf.config import AlgorithmConfig
from rlhf.types import Scored, TrainBatch


def final_rewards(scored: Scored, algorithm: AlgorithmConfig, max_new_tokens: int) -> torch.Tensor:
    """Scored rewards plus DAPO's soft overlong penalty when ``algorithm.overlong_buffer`` is set."""
    rewards = scored.rewards.float()
    if algorithm.overlong_buffer > 0:
        lengths = scored.rollouts.completion_lengths
        rewards = rewards + overlong_penalty(
            lengths, max_new_tokens, algorithm.overlong_buffer, algorithm.overlong_penalty
        )
    return rewards


def reward_spread_metrics(
    scored: Scored, algorithm: AlgorithmConfig, max_new_tokens: int
) -> dict[str, float]:
    """How the rewards the advantages are computed from spread, under TRL's names.

    ``reward_std``: their standard deviation over the batch. ``frac_reward_zero_std``: the share of
    samples whose group (one prompt's samples) got the same reward throughout, so a group-relative
    advantage of zero. ``kept_fraction``: the share ``algorithm.filter_uniform_groups`` keeps (1
    without it). With DAPO's overlong penalty on, ``reward/overlong_penalty`` is its mean, and the
    rewards here include it.
    """
    rewards = final_rewards(scored, algorithm, max_new_tokens)
    varied = uniform_group_mask(rewards, scored.rollouts.group_ids)
    metrics = {
        "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "frac_reward_zero_std": 1.0 - float(varied.float().mean()),
        "kept_fraction": float(varied.float().mean()) if algorithm.filter_uniform_groups else 1.0,
    }
    if algorithm.overlong_buffer > 0:
        metrics["reward/overlong_penalty"] = float((rewards - scored.rewards.float()).mean())
    return metrics


def make_train_batch(
    scored: Scored,
    algorithm: AlgorithmConfig,
    spec: AlgorithmSpec,
    *,
    max_new_tokens: int,
    ref_logprobs: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
) -> TrainBatch | None:
    """Advantages (and returns) for the scored samples; None when filtering leaves nothing to learn.

    ``spec`` is the run's algorithm (``resolve_algorithm``): its estimator computes the advantages,
    and where its KL penalty goes decides whether the reference log-probs fold into the reward here
    or travel on to the learner's loss.

    The behaviour log-probs become the old log-probs of the importance ratio, which keeps the ratio
    right when rollouts were generated one step off-policy.
    """
    rollouts = scored.rollouts
    rewards = final_rewards(scored, algorithm, max_new_tokens)
    mask = rollouts.completion_mask
    keep = torch.ones(len(rollouts), dtype=torch.bool)
    if algorithm.filter_uniform_groups:
        keep = uniform_group_mask(rewards, rollouts.group_ids)
    metrics: dict[str, float] = {}
    if not bool(keep.any()):
        return None
    if not bool(keep.all()):
        index = keep.nonzero().flatten()
        rollouts = rollouts.select(index)
        rewards, mask = rewards[index], rollouts.completion_mask
        ref_logprobs = None if ref_logprobs is None else ref_logprobs[index]
        values = None if values is None else values[index]
    name = spec.estimator
    known = estimator_options(name)
    options = {
        key: getattr(algorithm, key) for key in ("normalize_std", "gamma", "lam", "kl_coef") if key in known
    }
    kl = None
    kl_in_reward = spec.kl_in_reward and bool(algorithm.kl_coef)
    if kl_in_reward and ref_logprobs is not None:
        kl = kl_penalty(rollouts.behaviour_logprobs, ref_logprobs, kind="k1") * mask
        metrics["kl"] = float((kl.sum(1)).mean())
    advantages, returns = compute_advantages(
        name, rewards=rewards, mask=mask, group_ids=rollouts.group_ids, values=values, kl=kl, **options
    )
    valid = mask.bool()
    metrics["advantage_abs_mean"] = float(advantages[valid].abs().mean()) if valid.any() else 0.0
    return TrainBatch(
        prompt_ids=rollouts.prompt_ids,
        prompt_mask=rollouts.prompt_mask,
        completion_ids=rollouts.completion_ids,
        completion_mask=mask,
        old_logprobs=rollouts.behaviour_logprobs,
        advantages=advantages.float(),
        returns=None if returns is None else returns.float(),
        old_values=values,
        ref_logprobs=None if kl_in_reward else ref_logprobs,
        metrics=metrics,
    )
