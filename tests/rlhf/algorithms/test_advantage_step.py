"""The algorithm arrow, Scored -> TrainBatch (rlhf/algorithms/advantage_step.py), against hand-derived
numbers."""

from __future__ import annotations

import math

import pytest
import torch

from rewards.tasks import Task
from rlhf.algorithms import resolve_algorithm
from rlhf.algorithms.advantage_step import final_rewards, make_train_batch, reward_spread_metrics
from rlhf.config import AlgorithmConfig
from rlhf.types import Rollouts, Scored


def train_batch(scored: Scored, algorithm: AlgorithmConfig, **kwargs):
    """make_train_batch with the spec the trainer would resolve for ``algorithm``."""
    return make_train_batch(scored, algorithm, resolve_algorithm(algorithm.name), **kwargs)


def scored(rewards: list[float], lengths: list[int], *, per_group: int = 2, width: int = 8) -> Scored:
    """Rows of ``per_group`` samples per prompt; row ``i``'s ids and behaviour log-probs encode ``i``."""
    rows = len(rewards)
    completion_mask = torch.zeros(rows, width, dtype=torch.long)
    for row, length in enumerate(lengths):
        completion_mask[row, :length] = 1
    index = torch.arange(rows, dtype=torch.float32)[:, None]
    rollouts = Rollouts(
        tasks=[Task(id=f"toy/{g}", prompt="p") for g in range(rows // per_group)],
        group_ids=torch.arange(rows) // per_group,
        prompt_ids=torch.arange(rows)[:, None].repeat(1, 3) + 10,
        prompt_mask=torch.ones(rows, 3, dtype=torch.long),
        completion_ids=(torch.arange(rows)[:, None] + 20) * completion_mask,
        completion_mask=completion_mask,
        behaviour_logprobs=-(index + 1) / 10 * completion_mask,
        texts=[f"sample {i}" for i in range(rows)],
        truncated=torch.tensor([n == width for n in lengths]),
    )
    return Scored(rollouts=rollouts, rewards=torch.tensor(rewards), parts={}, evidence=[{}] * rows)


def per_row(values: list[float], mask: torch.Tensor) -> torch.Tensor:
    """One value per row spread over its completion tokens (what an outcome estimator returns)."""
    return torch.tensor(values)[:, None] * mask


def close(actual: torch.Tensor, expected: torch.Tensor | list) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-5)


# --- uniform-group filtering (DAPO's dynamic sampling) -------------------------------------------


def test_uniform_groups_are_dropped_and_the_rest_keep_their_rows_and_grpo_advantages() -> None:
    # Groups: {1, 0} varies, {1, 1} all solved, {0.5, 0.5} tied, {0, 1} varies.
    batch_in = scored([1.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.0, 1.0], [3, 5, 2, 2, 4, 4, 6, 1])
    ref = -torch.arange(8, dtype=torch.float32)[:, None].repeat(1, 8) * batch_in.rollouts.completion_mask
    algorithm = AlgorithmConfig(name="grpo", filter_uniform_groups=True, kl_coef=0.1)

    batch = train_batch(batch_in, algorithm, max_new_tokens=8, ref_logprobs=ref)

    assert batch is not None and len(batch) == 4
    kept = [0, 1, 6, 7]
    source = batch_in.rollouts
    for name in ("prompt_ids", "completion_ids", "completion_mask"):
        assert torch.equal(getattr(batch, name), getattr(source, name)[kept]), name
    assert torch.equal(batch.old_logprobs, source.behaviour_logprobs[kept])
    assert torch.equal(batch.ref_logprobs, ref[kept])  # GRPO keeps the KL in the loss
    # Each kept group: mean 0.5, unbiased std sqrt(0.5); advantage +-0.5 / sqrt(0.5) = +-1/sqrt(2).
    a = 1 / math.sqrt(2)
    close(batch.advantages, per_row([a, -a, -a, a], batch.completion_mask))
    assert batch.returns is None and batch.old_values is None
    spread = reward_spread_metrics(batch_in, algorithm, max_new_tokens=8)
    assert spread["kept_fraction"] == 0.5 and spread["frac_reward_zero_std"] == 0.5


def test_without_the_filter_uniform_groups_stay_with_zero_advantage() -> None:
    batch_in = scored([1.0, 0.0, 1.0, 1.0], [3, 5, 2, 2])
    batch = train_batch(batch_in, AlgorithmConfig(name="grpo"), max_new_tokens=8)
    a = 1 / math.sqrt(2)
    close(batch.advantages, per_row([a, -a, 0.0, 0.0], batch.completion_mask))
    spread = reward_spread_metrics(batch_in, AlgorithmConfig(name="grpo"), max_new_tokens=8)
    # TRL's names: half the samples are in a group whose rewards are all equal; std over the batch.
    assert spread["kept_fraction"] == 1.0 and spread["frac_reward_zero_std"] == 0.5
    assert spread["reward_std"] == pytest.approx(float(torch.tensor([1.0, 0.0, 1.0, 1.0]).std()))


def test_a_batch_of_uniform_groups_leaves_nothing_to_learn() -> None:
    batch_in = scored([1.0, 1.0, 0.0, 0.0], [3, 5, 2, 2])
    assert train_batch(batch_in, AlgorithmConfig(filter_uniform_groups=True), max_new_tokens=8) is None


# --- the soft overlong penalty -------------------------------------------------------------------


def test_overlong_penalty_is_added_to_the_rewards_before_the_advantages() -> None:
    # Budget 8, buffer 4, penalty 0.5: free up to 4 tokens, then -0.5 * (length - 4) / 4, capped.
    batch_in = scored([1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [2, 4, 5, 6, 8, 8])
    algorithm = AlgorithmConfig(name="rloo", overlong_buffer=4, overlong_penalty=0.5)

    rewards = final_rewards(batch_in, algorithm, max_new_tokens=8)
    close(rewards, [1.0, 1.0, 0.875, 0.75, 0.5, -0.5])

    batch = train_batch(batch_in, algorithm, max_new_tokens=8)
    # RLOO: reward minus the other sample's reward in each pair.
    close(batch.advantages, per_row([0.0, 0.0, 0.125, -0.125, 1.0, -1.0], batch.completion_mask))
    spread = reward_spread_metrics(batch_in, algorithm, max_new_tokens=8)
    assert spread["reward/overlong_penalty"] == pytest.approx((3.625 - 5.0) / 6)
    # Off, the rewards are the scored ones.
    assert torch.equal(final_rewards(batch_in, AlgorithmConfig(), max_new_tokens=8), batch_in.rewards)


# --- KL to the reference folded into the reward ---------------------------------------------------

# Two samples of one prompt, 2 and 3 tokens; behaviour minus reference log-probs (k1) per token:
K1 = [[0.2, -0.4, 0.0], [0.0, 0.6, 0.2]]
# Rewards 1 and 0 and kl_coef 0.5 give token rewards [-0.1, -(-0.2) + 1] and [0, -0.3, -0.1]:
RETURNS = [[1.1, 1.2, 0.0], [-0.4, -0.4, -0.1]]  # reward-to-go, gamma = 1


def kl_batch() -> tuple[Scored, torch.Tensor]:
    batch_in = scored([1.0, 0.0], [2, 3], width=3)
    ref = batch_in.rollouts.behaviour_logprobs - torch.tensor(K1)
    return batch_in, ref * batch_in.rollouts.completion_mask


def whitened(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) + 1e-8)
    return [(v - mean) / std for v in values]


def test_reinforce_plus_plus_folds_k1_into_the_token_rewards() -> None:
    batch_in, ref = kl_batch()
    algorithm = AlgorithmConfig(name="reinforce_plus_plus", kl_coef=0.5)

    batch = train_batch(batch_in, algorithm, max_new_tokens=3, ref_logprobs=ref)

    close(batch.returns, RETURNS)
    flat = whitened([1.1, 1.2, -0.4, -0.4, -0.1])  # whitened over the batch's 5 tokens
    close(batch.advantages, [[flat[0], flat[1], 0.0], flat[2:]])
    assert batch.ref_logprobs is None  # the KL is in the reward, not in the loss
    assert batch.metrics["kl"] == pytest.approx((0.2 - 0.4 + 0.0 + 0.6 + 0.2) / 2)  # summed per sample


def test_ppo_folds_k1_into_the_rewards_of_gae() -> None:
    batch_in, ref = kl_batch()
    values = torch.tensor([[0.5, 0.2, 0.0], [0.1, 0.0, -0.2]])
    algorithm = AlgorithmConfig(name="ppo", kl_coef=0.5, gamma=1.0, lam=1.0)

    batch = train_batch(batch_in, algorithm, max_new_tokens=3, ref_logprobs=ref, values=values)

    # lam = gamma = 1: the returns are the rewards-to-go and the advantages returns minus values.
    close(batch.returns, RETURNS)
    flat = whitened([1.1 - 0.5, 1.2 - 0.2, -0.4 - 0.1, -0.4 - 0.0, -0.1 + 0.2])
    close(batch.advantages, [[flat[0], flat[1], 0.0], flat[2:]])
    assert torch.equal(batch.old_values, values)
    assert batch.ref_logprobs is None


def test_without_kl_coef_nothing_is_folded_and_grpo_keeps_the_kl_for_its_loss() -> None:
    batch_in, ref = kl_batch()
    plain = train_batch(
        batch_in, AlgorithmConfig(name="reinforce_plus_plus"), max_new_tokens=3, ref_logprobs=ref
    )
    close(plain.returns, [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert "kl" not in plain.metrics
    grpo = train_batch(
        batch_in, AlgorithmConfig(name="grpo", kl_coef=0.5), max_new_tokens=3, ref_logprobs=ref
    )
    assert torch.equal(grpo.ref_logprobs, ref)
    a = 1 / math.sqrt(2)
    close(grpo.advantages, per_row([a, -a], grpo.completion_mask))
