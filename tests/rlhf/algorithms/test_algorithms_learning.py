"""Each registered estimator, with a registered policy loss, makes a tiny LM earn more reward.

The reward is the fraction of a completion's token budget spent on one target token, so its optimum
(always emit the target, never stop early) is known. A random one-layer Llama starts near 1/vocab;
a few dozen policy-gradient steps must lift the mean reward clearly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from rlhf.algorithms import (
    ADVANTAGE_ESTIMATORS,
    AGGREGATION_MODES,
    POLICY_LOSSES,
    aggregate_loss,
    compute_advantages,
    estimator_inputs,
    get_policy_loss,
    kl_penalty,
    value_loss,
)
from tests.rlhf.tiny_policy import (
    build_tiny_lm,
    completion_logprobs,
    exact_kl,
    random_prompts,
    sample_completions,
    target_token_reward,
)

VOCAB = 16
TARGET = 7
PROMPT_LEN = 3
MAX_NEW_TOKENS = 5
N_PROMPTS = 8
N_SAMPLES = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Run:
    rewards: list[float] = field(default_factory=list)
    value_losses: list[float] = field(default_factory=list)
    kl_to_reference: float = 0.0


def train(
    estimator: str,
    *,
    steps: int,
    loss: str = "ppo_clip",
    loss_options: dict[str, Any] | None = None,
    estimator_options: dict[str, Any] | None = None,
    kl_loss_coef: float = 0.0,
    kl_reward_coef: float = 0.0,
    lr: float = 3e-3,
    epochs: int = 2,
    seed: int = 0,
) -> Run:
    """On-policy training: sample, score, estimate advantages, ``epochs`` updates on the batch."""
    policy = build_tiny_lm(seed, VOCAB)
    reference = copy.deepcopy(policy).eval()
    needs_values = "values" in estimator_inputs(estimator)
    value_head = torch.nn.Linear(policy.config.hidden_size, 1) if needs_values else None
    parameters = list(policy.parameters()) + (list(value_head.parameters()) if value_head else [])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    run = Run()
    for _ in range(steps):
        prompts = random_prompts(N_PROMPTS, PROMPT_LEN, VOCAB, generator)
        samples = sample_completions(policy, prompts, N_SAMPLES, MAX_NEW_TOKENS, generator)
        mask = samples.completion_mask
        rewards = target_token_reward(samples, TARGET)
        run.rewards.append(float(rewards.mean()))
        with torch.no_grad():
            old_logprobs, _, hidden = completion_logprobs(policy, samples)
            ref_logprobs, _, _ = completion_logprobs(reference, samples)
            old_values = value_head(hidden).squeeze(-1) if value_head else None
        kl = kl_penalty(old_logprobs, ref_logprobs, "k1") if kl_reward_coef else None
        options = dict(estimator_options or {})
        if kl_reward_coef:
            options["kl_coef"] = kl_reward_coef
        advantages, returns = compute_advantages(
            estimator,
            rewards=rewards,
            mask=mask,
            group_ids=samples.group_ids,
            values=old_values,
            kl=kl,
            **options,
        )
        for _ in range(epochs):
            logprobs, _, hidden = completion_logprobs(policy, samples)
            total, _ = get_policy_loss(loss)(logprobs, old_logprobs, advantages, mask, **(loss_options or {}))
            if kl_loss_coef:
                total = total + kl_loss_coef * aggregate_loss(kl_penalty(logprobs, ref_logprobs, "k3"), mask)
            if value_head is not None:
                values = value_head(hidden).squeeze(-1)
                critic_loss, _ = value_loss(values, old_values, returns, mask, clip_range=0.5)
                total = total + critic_loss
                run.value_losses.append(float(critic_loss.detach()))
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
    probe = sample_completions(
        policy, random_prompts(16, PROMPT_LEN, VOCAB, generator), 2, MAX_NEW_TOKENS, generator
    )
    run.kl_to_reference = exact_kl(policy, reference, probe)
    return run


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("estimator", sorted(ADVANTAGE_ESTIMATORS))
def test_every_estimator_raises_the_reward_with_ppo_clip(estimator: str) -> None:
    run = train(estimator, steps=25)
    first, last = mean(run.rewards[:5]), mean(run.rewards[-5:])
    assert last > first + 0.5, f"{estimator}: reward went from {first:.3f} to {last:.3f}"
    if run.value_losses:
        assert mean(run.value_losses[-10:]) < mean(run.value_losses[:10])


@pytest.mark.parametrize("loss", sorted(POLICY_LOSSES))
def test_every_policy_loss_raises_the_reward_with_grpo(loss: str) -> None:
    run = train("grpo", steps=25, loss=loss)
    first, last = mean(run.rewards[:5]), mean(run.rewards[-5:])
    assert last > first + 0.5, f"{loss}: reward went from {first:.3f} to {last:.3f}"


@pytest.mark.parametrize("aggregation", AGGREGATION_MODES)
def test_dapo_and_dr_grpo_settings_raise_the_reward(aggregation: str) -> None:
    # DAPO: clip-higher with token-mean. Dr.GRPO: no std division with the constant-length sum.
    run = train(
        "grpo",
        steps=25,
        estimator_options={"normalize_std": aggregation != "seq-mean-token-sum-norm"},
        loss_options={"clip_low": 0.2, "clip_high": 0.28, "aggregation": aggregation},
    )
    first, last = mean(run.rewards[:5]), mean(run.rewards[-5:])
    assert last > first + 0.5, f"{aggregation}: reward went from {first:.3f} to {last:.3f}"


def test_k3_kl_loss_keeps_the_policy_near_the_reference() -> None:
    free = train("grpo", steps=20)
    anchored = train("grpo", steps=20, kl_loss_coef=1.0)
    assert anchored.kl_to_reference < 0.5 * free.kl_to_reference, (
        anchored.kl_to_reference,
        free.kl_to_reference,
    )


def test_kl_in_the_reward_keeps_the_policy_near_the_reference() -> None:
    free = train("reinforce_plus_plus", steps=20)
    anchored = train("reinforce_plus_plus", steps=20, kl_reward_coef=1.0)
    assert anchored.kl_to_reference < 0.5 * free.kl_to_reference, (
        anchored.kl_to_reference,
        free.kl_to_reference,
    )
