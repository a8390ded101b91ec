"""Exact-value tests of the algorithm functions on small hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.algorithms import (
    ADVANTAGE_ESTIMATORS,
    POLICY_LOSSES,
    UnknownAlgorithmError,
    aggregate_loss,
    compute_advantages,
    discounted_returns,
    estimator_inputs,
    estimator_options,
    gae_advantages,
    generalized_advantage_estimation,
    get_advantage_estimator,
    get_policy_loss,
    group_stats,
    grpo_advantages,
    masked_mean,
    masked_var,
    masked_whiten,
    outcome_to_token_rewards,
    register_advantage_estimator,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    rloo_advantages,
    uniform_group_mask,
)

close = lambda actual, expected: torch.testing.assert_close(
    actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-5
)


# --- registry -------------------------------------------------------------------------------------


def test_registry_holds_the_algorithms_by_name() -> None:
    assert set(ADVANTAGE_ESTIMATORS) == {
        "grpo",
        "rloo",
        "reinforce_plus_plus",
        "reinforce_plus_plus_baseline",
        "gae",
    }
    assert {"ppo_clip", "dual_clip"} <= set(POLICY_LOSSES)
    assert get_advantage_estimator("grpo") is grpo_advantages


def test_unknown_name_lists_known_names_and_the_closest() -> None:
    with pytest.raises(UnknownAlgorithmError, match=r"did you mean 'rloo'\?.*'reinforce_plus_plus'") as info:
        get_advantage_estimator("rlo")
    assert isinstance(info.value, KeyError)
    with pytest.raises(KeyError, match="did you mean 'ppo_clip'"):
        get_policy_loss("ppo-clip")


def test_registering_a_new_estimator_makes_it_callable_by_name() -> None:
    @register_advantage_estimator("test_raw_reward")
    def raw_reward(
        rewards: torch.Tensor, mask: torch.Tensor, scale: float = 1.0
    ) -> tuple[torch.Tensor, None]:
        return scale * rewards[:, None] * mask, None

    try:
        advantages, returns = compute_advantages(
            "test_raw_reward", rewards=torch.tensor([2.0]), mask=torch.ones(1, 2), scale=3.0
        )
        close(advantages, [[6.0, 6.0]])
        assert returns is None
        with pytest.raises(ValueError, match="already registered"):
            register_advantage_estimator("test_raw_reward")(lambda rewards, mask: (rewards, None))
    finally:
        del ADVANTAGE_ESTIMATORS["test_raw_reward"]


def test_estimator_inputs_and_options_come_from_the_signature() -> None:
    assert estimator_inputs("gae") == {"rewards", "mask", "values", "kl"}
    assert estimator_inputs("grpo") == {"rewards", "mask", "group_ids"}
    assert estimator_options("grpo") == {"normalize_std": True, "eps": 1e-6}
    assert estimator_options("gae")["lam"] == 0.95


def test_compute_advantages_explains_missing_inputs_and_bad_options() -> None:
    rewards, mask = torch.tensor([1.0, 0.0]), torch.ones(2, 3)
    with pytest.raises(ValueError, match="'gae' needs `values`"):
        compute_advantages("gae", rewards=rewards, mask=mask)
    with pytest.raises(ValueError, match="'grpo' needs `group_ids`"):
        compute_advantages("grpo", rewards=rewards, mask=mask)
    with pytest.raises(ValueError, match="does not fold a KL penalty"):
        compute_advantages("rloo", rewards=rewards, mask=mask, group_ids=torch.tensor([0, 0]), kl=mask)
    with pytest.raises(ValueError, match="did you mean 'normalize_std'"):
        compute_advantages(
            "grpo", rewards=rewards, mask=mask, group_ids=torch.tensor([0, 0]), normalise_std=False
        )


# --- reductions -----------------------------------------------------------------------------------

VALUES = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 100.0, float("inf")]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


def test_masked_mean_ignores_padding_even_nan() -> None:
    close(masked_mean(VALUES, MASK), 7.0 / 3.0)
    close(masked_mean(VALUES, MASK, dim=1), [1.5, 4.0])
    close(masked_mean(torch.ones(2, 2), torch.tensor([[1, 1], [0, 0]]), dim=1), [1.0, 0.0])


def test_masked_var_biased_and_unbiased() -> None:
    # Entries 1, 2, 4: mean 7/3, squared deviations sum to 42/9.
    close(masked_var(VALUES, MASK), 42.0 / 9.0 / 2.0)
    close(masked_var(VALUES, MASK, unbiased=False), 42.0 / 9.0 / 3.0)
    close(masked_var(torch.tensor([[5.0]]), torch.tensor([[1]])), 0.0)


def test_masked_whiten_gives_zero_mean_unit_variance_and_zero_padding() -> None:
    whitened = masked_whiten(VALUES, MASK)
    expected = (torch.tensor([1.0, 2.0, 4.0]) - 7.0 / 3.0) / math.sqrt(7.0 / 3.0)
    close(whitened[MASK.bool()], expected)
    close(masked_mean(whitened, MASK), 0.0)
    close(masked_var(whitened, MASK), 1.0)
    assert whitened[~MASK.bool()].eq(0).all()
    close(masked_mean(masked_whiten(VALUES, MASK, shift_mean=False), MASK), 7.0 / 3.0)


LOSSES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 0.0, 0.0, 0.0]])
LOSS_MASK = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "max_len", "expected"),
    [
        ("token-mean", None, 20.0 / 5.0),
        ("seq-mean-token-mean", None, (2.5 + 10.0) / 2.0),
        ("seq-mean-token-sum", None, (10.0 + 10.0) / 2.0),
        ("seq-mean-token-sum-norm", None, (10.0 / 4.0 + 10.0 / 4.0) / 2.0),
        ("seq-mean-token-sum-norm", 8, (10.0 / 8.0 + 10.0 / 8.0) / 2.0),
    ],
)
def test_aggregation_modes_weigh_unequal_lengths_differently(
    mode: str, max_len: int | None, expected: float
) -> None:
    close(aggregate_loss(LOSSES, LOSS_MASK, mode, max_len), expected)


def test_aggregation_leaves_out_empty_rows_and_rejects_bad_input() -> None:
    losses = torch.cat([LOSSES, torch.full((1, 4), 7.0)])
    mask = torch.cat([LOSS_MASK, torch.zeros(1, 4, dtype=torch.long)])
    close(aggregate_loss(losses, mask, "seq-mean-token-mean"), 6.25)
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'token_mean'"):
        aggregate_loss(LOSSES, LOSS_MASK, "token_mean")
    with pytest.raises(ValueError, match=r"shape \[B, T\]"):
        aggregate_loss(LOSSES[0], LOSS_MASK[0])
    with pytest.raises(ValueError, match="mask has shape"):
        aggregate_loss(LOSSES, LOSS_MASK[:, :2])


# --- groups ---------------------------------------------------------------------------------------


def test_group_stats_with_scattered_ids_and_a_singleton() -> None:
    stats = group_stats(torch.tensor([1.0, 3.0, 5.0, 2.0, 2.0]), torch.tensor([4, 9, 4, 9, 7]))
    close(stats.mean, [3.0, 2.5, 3.0, 2.5, 2.0])
    close(stats.std, [math.sqrt(8.0), math.sqrt(0.5), math.sqrt(8.0), math.sqrt(0.5), 0.0])
    close(stats.size, [2.0, 2.0, 2.0, 2.0, 1.0])


def test_group_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="float tensor"):
        group_stats(torch.tensor([1, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="integer tensor"):
        group_stats(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="one id per sample"):
        group_stats(torch.tensor([1.0, 0.0]), torch.tensor([0]))


def test_uniform_group_mask_keeps_only_groups_whose_rewards_vary() -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 3.0, 0.2, 0.2000001])
    group_ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4, 4])
    keep = uniform_group_mask(rewards, group_ids)
    assert keep.tolist() == [False, False, True, True, False, False, False, True, True]
    assert uniform_group_mask(rewards, group_ids, atol=1e-3).tolist()[-2:] == [False, False]


# --- advantages -----------------------------------------------------------------------------------

GROUP_REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 4.0, 2.0, 2.0])
GROUP_IDS = torch.tensor([0, 0, 0, 0, 1, 2, 2])
GROUP_MASK = torch.tensor([[1, 1, 1]] * 6 + [[1, 0, 0]])


def test_grpo_normalises_by_group_std_and_zeroes_singletons_and_ties() -> None:
    advantages, returns = grpo_advantages(GROUP_REWARDS, GROUP_MASK, GROUP_IDS)
    spread = 0.5 / (math.sqrt(1.0 / 3.0) + 1e-6)  # group 0: mean 0.5, unbiased std sqrt(1/3)
    close(advantages[:, 0], [spread, -spread, -spread, spread, 0.0, 0.0, 0.0])
    close(advantages[6], [0.0, 0.0, 0.0])
    close(advantages[0], [spread] * 3)
    assert returns is None


def test_dr_grpo_drops_the_std_division() -> None:
    advantages, _ = grpo_advantages(GROUP_REWARDS, GROUP_MASK, GROUP_IDS, normalize_std=False)
    close(advantages[:, 0], [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0])


def test_grpo_eps_bounds_a_tiny_std() -> None:
    advantages, _ = grpo_advantages(
        torch.tensor([1e-7, 0.0]), torch.ones(2, 1), torch.tensor([0, 0]), eps=1.0
    )
    std = math.sqrt(0.5e-14)
    close(advantages[:, 0], [0.5e-7 / (std + 1.0), -0.5e-7 / (std + 1.0)])


def test_rloo_uses_the_mean_of_the_others() -> None:
    advantages, returns = rloo_advantages(GROUP_REWARDS, GROUP_MASK, GROUP_IDS)
    close(advantages[:, 0], [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0])
    close(advantages[6], [0.0, 0.0, 0.0])
    assert returns is None


def test_outcome_reward_lands_on_the_last_valid_token_with_kl_on_every_token() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    rewards = torch.tensor([2.0, 3.0, 5.0])
    close(outcome_to_token_rewards(rewards, mask), [[0, 2, 0], [0, 0, 3], [0, 0, 0]])
    kl = torch.tensor([[0.1, 0.2, 9.0], [0.4, 0.0, -0.2], [1.0, 1.0, 1.0]])
    close(
        outcome_to_token_rewards(rewards, mask, kl=kl, kl_coef=0.5),
        [[-0.05, 1.9, 0.0], [-0.2, 0.0, 3.1], [0.0, 0.0, 0.0]],
    )
    with pytest.raises(ValueError, match="no `kl` tensor"):
        outcome_to_token_rewards(rewards, mask, kl_coef=0.1)


def test_discounted_returns_skip_masked_tokens() -> None:
    token_rewards = torch.tensor([[1.0, 7.0, 2.0, 0.0], [0.0, 0.0, 4.0, 9.0]])
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 0]])
    close(discounted_returns(token_rewards, mask, gamma=0.5), [[2.0, 0.0, 2.0, 0.0], [1.0, 2.0, 4.0, 0.0]])


def test_reinforce_plus_plus_whitens_returns_over_the_batch() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    advantages, returns = reinforce_plus_plus_advantages(torch.tensor([1.0, -1.0]), mask)
    close(returns, [[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    # Token returns 1, 1, -1: mean 1/3, unbiased var 4/3.
    std = math.sqrt(4.0 / 3.0)
    close(advantages, [[(2 / 3) / std, (2 / 3) / std, 0.0], [(-4 / 3) / std, 0.0, 0.0]])
    _, discounted = reinforce_plus_plus_advantages(torch.tensor([1.0, -1.0]), mask, gamma=0.5)
    close(discounted, [[0.5, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    kl = torch.tensor([[0.2, 0.4, 0.0], [1.0, 0.0, 0.0]])
    _, penalised = reinforce_plus_plus_advantages(torch.tensor([1.0, -1.0]), mask, kl=kl, kl_coef=0.5)
    close(penalised, [[0.7, 0.8, 0.0], [-1.5, 0.0, 0.0]])


def test_reinforce_plus_plus_baseline_centres_each_group_first() -> None:
    advantages, returns = reinforce_plus_plus_baseline_advantages(
        torch.tensor([1.0, 0.0, 5.0, 5.0]), torch.ones(4, 2), torch.tensor([0, 0, 1, 1])
    )
    close(returns, [[0.5, 0.5], [-0.5, -0.5], [0.0, 0.0], [0.0, 0.0]])
    scale = 1.0 / math.sqrt(1.0 / 7.0)  # token values +-0.5 (x4), 0 (x4): unbiased var 1/7
    close(advantages, [[0.5 * scale] * 2, [-0.5 * scale] * 2, [0.0, 0.0], [0.0, 0.0]])


def test_gae_hand_computed() -> None:
    token_rewards = torch.tensor([[0.0, 1.0]])
    values = torch.tensor([[0.5, 0.8]])
    mask = torch.ones(1, 2)
    advantages, returns = generalized_advantage_estimation(token_rewards, values, mask, gamma=1.0, lam=1.0)
    close(advantages, [[0.5, 0.2]])
    close(returns, [[1.0, 1.0]])
    # delta_1 = 1 - 0.8 = 0.2; delta_0 = 0.9 * 0.8 - 0.5 = 0.22; A_0 = 0.22 + 0.9 * 0.5 * 0.2.
    advantages, returns = generalized_advantage_estimation(token_rewards, values, mask, gamma=0.9, lam=0.5)
    close(advantages, [[0.31, 0.2]])
    close(returns, [[0.81, 1.0]])


def reference_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Textbook GAE over one episode's valid steps."""
    advantages, next_advantage = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[t] = next_advantage
    return advantages


def test_gae_matches_a_reference_loop_on_padded_and_holed_masks() -> None:
    generator = torch.Generator().manual_seed(0)
    token_rewards = torch.randn(4, 6, generator=generator)
    values = torch.randn(4, 6, generator=generator)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool
    )
    advantages, returns = generalized_advantage_estimation(token_rewards, values, mask, gamma=0.95, lam=0.9)
    for row in range(4):
        steps = mask[row].nonzero().flatten().tolist()
        expected = reference_gae(token_rewards[row, steps].tolist(), values[row, steps].tolist(), 0.95, 0.9)
        close(advantages[row, steps], expected)
        close(returns[row, steps], torch.tensor(expected) + values[row, steps])
        assert advantages[row][~mask[row]].eq(0).all() and returns[row][~mask[row]].eq(0).all()


def test_gae_estimator_places_the_outcome_and_whitens_on_request() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    rewards = torch.tensor([1.0, -1.0])
    raw, returns = gae_advantages(rewards, mask, values, gamma=0.9, lam=0.8, whiten=False)
    expected_raw, expected_returns = generalized_advantage_estimation(
        outcome_to_token_rewards(rewards, mask), values, mask, gamma=0.9, lam=0.8
    )
    close(raw, expected_raw)
    close(returns, expected_returns)
    whitened, whitened_returns = gae_advantages(rewards, mask, values, gamma=0.9, lam=0.8)
    close(whitened, masked_whiten(raw, mask))
    close(whitened_returns, returns)


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_every_estimator_zeroes_padding_and_carries_no_gradient(name: str) -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]])
    values = torch.randn(4, 4, requires_grad=True)
    advantages, returns = compute_advantages(
        name,
        rewards=torch.tensor([1.0, 0.0, 0.5, 2.0]),
        mask=mask,
        group_ids=torch.tensor([0, 0, 1, 1]),
        values=values,
    )
    assert advantages.shape == mask.shape and not advantages.requires_grad
    assert advantages[~mask.bool()].eq(0).all()
    if returns is not None:
        assert returns[~mask.bool()].eq(0).all() and not returns.requires_grad


def test_estimators_reject_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="rewards must be"):
        grpo_advantages(torch.tensor([1.0, 0.0]), torch.ones(3, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="values must be per completion token"):
        gae_advantages(torch.tensor([1.0]), torch.ones(1, 3), torch.zeros(1, 2))
