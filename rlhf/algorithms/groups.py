"""Per-group statistics of outcome rewards, where a group is the set of samples answering one prompt.

``group_ids [B]`` (long) says which prompt each sample answers (``Rollouts.group_ids``). Ids need not
be contiguous or sorted: samples of a group may sit anywhere in the batch, and groups may differ in
size (e.g. after filtering).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupStats:
    """Each sample's group statistics, broadcast back to the sample ([B] each).

    mean: mean reward of the sample's group. std: its standard deviation (unbiased, 0 for a group of
    one). size: number of samples in the group (float, same dtype as the rewards).
    """

    mean: torch.Tensor
    std: torch.Tensor
    size: torch.Tensor


def check_group_inputs(rewards: torch.Tensor, group_ids: torch.Tensor) -> None:
    """Raise a ValueError naming the problem when rewards/group_ids are not two aligned vectors."""
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must be one value per sample, shape [B]; got {tuple(rewards.shape)}. "
            "Per-token rewards go through outcome_to_token_rewards / the token-level estimators instead"
        )
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float tensor, got {rewards.dtype}; call .float() first")
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_ids must have one id per sample like rewards {tuple(rewards.shape)}, "
            f"got {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor (torch.long), got {group_ids.dtype}")


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> GroupStats:
    """Mean, unbiased std and size of each sample's group, vectorised over the batch."""
    check_group_inputs(rewards, group_ids)
    _, index = torch.unique(group_ids, return_inverse=True)
    n_groups = int(index.max().item()) + 1 if index.numel() else 0
    zeros = torch.zeros(n_groups, dtype=rewards.dtype, device=rewards.device)
    size = zeros.index_add(0, index, torch.ones_like(rewards))
    mean = zeros.index_add(0, index, rewards) / size
    # Two-pass variance (centre first) to stay exact when rewards are large and nearly equal.
    centred = rewards - mean[index]
    squares = zeros.index_add(0, index, centred * centred)
    var = squares / (size - 1.0).clamp(min=1.0)
    return GroupStats(mean=mean[index], std=var.sqrt()[index], size=size[index])


def uniform_group_mask(rewards: torch.Tensor, group_ids: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
    """DAPO dynamic sampling: a bool mask [B] that keeps samples of groups whose rewards vary.

    True marks a sample to KEEP: its group has at least two rewards that differ by more than
    ``atol``. Groups where every sample got the same reward (all solved, all failed, or a group of
    one) give every group-relative estimator a zero advantage, so they only dilute the batch; DAPO
    drops them and samples more prompts. Use with ``Rollouts.select(mask)``.
    """
    check_group_inputs(rewards, group_ids)
    _, index = torch.unique(group_ids, return_inverse=True)
    n_groups = int(index.max().item()) + 1 if index.numel() else 0
    highest = torch.full((n_groups,), -torch.inf, dtype=rewards.dtype, device=rewards.device)
    lowest = torch.full((n_groups,), torch.inf, dtype=rewards.dtype, device=rewards.device)
    highest = highest.scatter_reduce(0, index, rewards, reduce="amax")
    lowest = lowest.scatter_reduce(0, index, rewards, reduce="amin")
    return (highest - lowest)[index] > atol
