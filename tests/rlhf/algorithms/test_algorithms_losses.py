"""Exact-value tests of the policy/value losses, KL estimators, entropy and DAPO's length penalty."""

from __future__ import annotations

import math
import re

import pytest
import torch

from rlhf.algorithms import (
    AGGREGATION_MODES,
    aggregate_loss,
    dual_clip_ppo_loss,
    entropy_bonus,
    entropy_from_logits,
    get_policy_loss,
    kl_penalty,
    overlong_penalty,
    ppo_clip_loss,
    token_logprobs,
    value_loss,
)

close = lambda actual, expected: torch.testing.assert_close(
    actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=1e-5, atol=1e-5
)

# One row of tokens, each a case of the clipped surrogate with clip_low=0.2, clip_high=0.28.
RATIOS = torch.tensor([[1.5, 0.5, 1.1, 0.9, 1.25, 1.5]])
ADVANTAGES = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
# max(-A r, -A clip(r)): 1.5 clipped to 1.28; 0.5 clipped to 0.8; inside; inside; 1.25 inside the
# higher bound; 1.5 with A < 0 is the pessimistic unclipped term.
EXPECTED_TOKEN_LOSSES = [-1.28, 0.8, -1.1, 0.9, -1.25, 1.5]


def ppo_inputs(ratios: torch.Tensor = RATIOS) -> tuple[torch.Tensor, torch.Tensor]:
    old = torch.full_like(ratios, -1.0)
    logprobs = (old + ratios.log()).requires_grad_(True)
    return logprobs, old


def test_ppo_clip_with_clip_higher_hits_each_bound() -> None:
    logprobs, old = ppo_inputs()
    mask = torch.ones_like(RATIOS)
    loss, metrics = ppo_clip_loss(logprobs, old, ADVANTAGES, mask, clip_low=0.2, clip_high=0.28)
    close(loss, sum(EXPECTED_TOKEN_LOSSES) / 6)
    close(metrics["clip_frac"], 2 / 6)
    close(metrics["clip_frac_high"], 1 / 6)
    close(metrics["clip_frac_low"], 1 / 6)
    close(metrics["ratio_mean"], RATIOS.mean())
    close(metrics["ratio_max"], 1.5)
    loss.backward()
    # Clipped tokens get no gradient; the others get d(-A r)/d(logp) = -A r.
    close(logprobs.grad, torch.tensor([[0.0, 0.0, -1.1, 0.9, -1.25, 1.5]]) / 6)


def test_symmetric_clip_clips_what_clip_higher_lets_through() -> None:
    logprobs, old = ppo_inputs(torch.tensor([[1.25]]))
    mask = torch.ones(1, 1)
    symmetric, metrics = ppo_clip_loss(logprobs, old, torch.ones(1, 1), mask)
    close(symmetric, -1.2)
    close(metrics["clip_frac_high"], 1.0)
    asymmetric, metrics = ppo_clip_loss(logprobs, old, torch.ones(1, 1), mask, clip_high=0.28)
    close(asymmetric, -1.25)
    close(metrics["clip_frac"], 0.0)


def test_ppo_clip_aggregation_modes_differ_on_unequal_lengths() -> None:
    logprobs, old = ppo_inputs(torch.ones(2, 3))
    advantages = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    results = {
        mode: float(ppo_clip_loss(logprobs, old, advantages, mask, aggregation=mode, max_len=6)[0].detach())
        for mode in AGGREGATION_MODES
    }
    assert results == pytest.approx(
        {
            "token-mean": -7 / 4,
            "seq-mean-token-mean": -(1 + 4) / 2,
            "seq-mean-token-sum": -(3 + 4) / 2,
            "seq-mean-token-sum-norm": -(3 / 6 + 4 / 6) / 2,
        }
    )


def test_ppo_clip_at_ratio_one_is_minus_the_mean_advantage_with_zero_kl() -> None:
    logprobs, old = ppo_inputs(torch.ones(2, 2))
    advantages = torch.tensor([[0.5, -1.5], [2.0, 7.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = get_policy_loss("ppo_clip")(logprobs, old, advantages, mask)
    close(loss, -(0.5 - 1.5 + 2.0) / 3)
    close(metrics["approx_kl"], 0.0)
    close(metrics["clip_frac"], 0.0)


def test_ppo_clip_rejects_bad_bounds_and_shapes() -> None:
    logprobs, old = ppo_inputs()
    with pytest.raises(ValueError, match="clip_low must lie in"):
        ppo_clip_loss(logprobs, old, ADVANTAGES, torch.ones_like(RATIOS), clip_low=1.0)
    with pytest.raises(ValueError, match="advantages must be per completion token"):
        ppo_clip_loss(logprobs, old, ADVANTAGES[:, :2], torch.ones_like(RATIOS))


def test_dual_clip_caps_the_loss_of_negative_advantages() -> None:
    logprobs, old = ppo_inputs(torch.tensor([[5.0, 5.0, 2.0]]))
    advantages = torch.tensor([[-1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3)
    loss, metrics = dual_clip_ppo_loss(logprobs, old, advantages, mask, clip_ratio_c=3.0)
    # A<0, r=5: PPO gives 5, capped at 3. A>0, r=5: clipped to -1.2. A<0, r=2: 2, under the cap.
    close(loss, (3.0 - 1.2 + 2.0) / 3)
    close(metrics["dual_clip_frac"], 1 / 3)
    plain, _ = ppo_clip_loss(logprobs, old, advantages, mask)
    close(plain, (5.0 - 1.2 + 2.0) / 3)
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        dual_clip_ppo_loss(logprobs, old, advantages, mask, clip_ratio_c=0.5)


def test_value_loss_takes_the_larger_of_clipped_and_unclipped() -> None:
    values = torch.tensor([[1.0, 2.0, 50.0]], requires_grad=True)
    old_values = torch.tensor([[0.5, 0.5, 0.0]])
    returns = torch.tensor([[0.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = value_loss(values, old_values, returns, mask, clip_range=0.2)
    # Token 0: unclipped 1, clipped (0.7 - 0)^2 -> 0.5 * 1. Token 1: unclipped 1, clipped (0.7 - 3)^2.
    close(loss, (0.5 * 1.0 + 0.5 * 2.3**2) / 2)
    close(metrics["value_clip_frac"], 0.5)
    close(metrics["value_mean"], 1.5)
    unclipped, _ = value_loss(values, old_values, returns, mask, clip_range=None)
    close(unclipped, 0.5)
    loss.backward()
    close(values.grad, [[0.5, 0.0, 0.0]])  # the clipped term of token 1 carries no gradient


def test_value_loss_explained_variance_is_one_for_a_perfect_critic() -> None:
    returns = torch.tensor([[1.0, 2.0, 4.0]])
    _, metrics = value_loss(returns.clone(), returns, returns, torch.ones(1, 3))
    close(metrics["explained_variance"], 1.0)
    _, metrics = value_loss(torch.zeros(1, 3), torch.zeros(1, 3), returns, torch.ones(1, 3), clip_range=None)
    close(metrics["explained_variance"], 0.0)


def test_kl_estimators_on_a_known_pair() -> None:
    logprobs = torch.tensor([math.log(0.5)])
    ref_logprobs = torch.tensor([math.log(0.25)])
    close(kl_penalty(logprobs, ref_logprobs, "k1"), [math.log(2.0)])
    close(kl_penalty(logprobs, ref_logprobs, "k2"), [0.5 * math.log(2.0) ** 2])
    close(kl_penalty(logprobs, ref_logprobs, "k3"), [0.5 - 1.0 + math.log(2.0)])


def test_kl_estimators_are_zero_for_equal_policies_and_k3_never_negative() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(64, generator=generator) * 5
    for kind in ("k1", "k2", "k3"):
        close(kl_penalty(logprobs, logprobs, kind), torch.zeros(64))
    ref_logprobs = -torch.rand(64, generator=generator) * 5
    assert (kl_penalty(logprobs, ref_logprobs, "k3") >= 0).all()
    assert (kl_penalty(logprobs, ref_logprobs, "k1") < 0).any()


def test_k1_and_k3_are_unbiased_estimates_of_the_true_kl() -> None:
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    true_kl = float((p * (p / q).log()).sum())
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    for kind in ("k1", "k3"):
        estimate = float(kl_penalty(p.log()[samples], q.log()[samples], kind).mean())
        assert estimate == pytest.approx(true_kl, abs=0.01), kind


def test_k3_clamp_caps_extreme_tokens() -> None:
    logprobs, ref_logprobs = torch.tensor([-1.0]), torch.tensor([-30.0])
    assert torch.isfinite(kl_penalty(ref_logprobs, logprobs, "k3", clamp=None)).all()
    close(kl_penalty(ref_logprobs, logprobs, "k3"), [10.0])
    with pytest.raises(ValueError, match="unknown KL estimator kind 'k4'"):
        kl_penalty(logprobs, ref_logprobs, "k4")


def test_entropy_from_logits_is_stable_and_exact() -> None:
    close(entropy_from_logits(torch.zeros(2, 8)), [math.log(8)] * 2)
    close(entropy_from_logits(torch.tensor([0.0, float("-inf"), float("-inf")])), 0.0)
    close(entropy_from_logits(torch.tensor([1000.0, 0.0])), 0.0)
    logits = torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, dim=-1)
    close(entropy_from_logits(logits), -(probs * probs.log()).sum(dim=-1))


def test_token_logprobs_match_log_softmax_at_temperature() -> None:
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    token_ids = torch.tensor([[0, 4, 2], [1, 1, 3]])
    expected = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, token_ids[..., None]).squeeze(-1)
    close(token_logprobs(logits, token_ids, temperature=0.7), expected)
    with pytest.raises(ValueError, match=re.escape("must be [*token_ids.shape, vocab]")):
        token_logprobs(logits, token_ids[:, :2])


def test_entropy_bonus_is_a_loss_whose_minimisation_raises_entropy() -> None:
    logits = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    mask = torch.tensor([[1, 0]])
    entropy = entropy_from_logits(logits)
    bonus = entropy_bonus(entropy, mask, coef=0.1)
    close(bonus, -0.1 * entropy[0, 0].detach())
    bonus.backward()
    stepped = logits.detach() - 1.0 * logits.grad
    assert entropy_from_logits(stepped)[0, 0] > entropy[0, 0]
    close(aggregate_loss(entropy, mask), entropy[0, 0].detach())


@pytest.mark.parametrize(
    ("length", "expected"),
    [(0, 0.0), (6, 0.0), (7, -0.25), (8, -0.5), (9, -0.75), (10, -1.0), (12, -1.0)],
)
def test_overlong_penalty_is_a_linear_ramp_over_the_buffer(length: int, expected: float) -> None:
    close(overlong_penalty(torch.tensor([length]), max_new_tokens=10, buffer_len=4), [expected])
    close(
        overlong_penalty(torch.tensor([length]), max_new_tokens=10, buffer_len=4, penalty_factor=0.5),
        [expected / 2],
    )


def test_overlong_penalty_rejects_a_buffer_outside_the_budget() -> None:
    with pytest.raises(ValueError, match=re.escape("buffer_len must lie in 1..max_new_tokens=10")):
        overlong_penalty(torch.tensor([3]), max_new_tokens=10, buffer_len=11)
    with pytest.raises(ValueError, match="penalty_factor"):
        overlong_penalty(torch.tensor([3]), max_new_tokens=10, buffer_len=2, penalty_factor=-1.0)
