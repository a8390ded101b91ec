"""The learner never applies a non-finite gradient: one NaN update would ruin every later sample."""

from __future__ import annotations

import math

import torch

from rlhf.algorithms import resolve_algorithm
from rlhf.config import AlgorithmConfig, TrainConfig
from rlhf.learner.updates import Learner, LearnerOptions
from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.types import TrainBatch

torch.set_num_threads(2)


def _learner() -> tuple[Learner, list[torch.nn.Parameter]]:
    model, _ = tiny_model_and_tokenizer(seed=3)
    model = apply_lora(model, rank=4, alpha=8)
    params = list(adapter_parameters(model).values())
    options = LearnerOptions(
        train=TrainConfig(lr=1e-2, warmup_steps=0),
        algorithm=AlgorithmConfig(),
        temperature=1.0,
        max_new_tokens=4,
        spec=resolve_algorithm("grpo"),
        on_policy=True,
    )
    return Learner(model, params, options), params


def _batch(advantage: float) -> TrainBatch:
    gen = torch.Generator().manual_seed(0)
    completion_mask = torch.ones(4, 4, dtype=torch.long)
    return TrainBatch(
        prompt_ids=torch.randint(3, 200, (4, 5), generator=gen),
        prompt_mask=torch.ones(4, 5, dtype=torch.long),
        completion_ids=torch.randint(3, 200, (4, 4), generator=gen),
        completion_mask=completion_mask,
        old_logprobs=torch.zeros(4, 4),
        advantages=torch.tensor([1.0, -1.0, advantage, 0.5]).unsqueeze(1).expand(4, 4).clone(),
    )


def test_a_non_finite_gradient_skips_the_update_and_leaves_the_adapter_as_it_was() -> None:
    learner, params = _learner()
    learner.step(_batch(0.25))  # a normal update first, so the optimizer has state to protect
    before = [p.detach().clone() for p in params]
    state_before = {k: v["exp_avg"].clone() for k, v in learner.optimizer.state.items()}

    metrics = learner.step(_batch(math.nan))

    assert metrics["skipped_nonfinite_updates"] == 1.0 and not math.isfinite(metrics["grad_norm"])
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert all(torch.equal(state_before[k], v["exp_avg"]) for k, v in learner.optimizer.state.items())
    assert all(p.grad is None for p in params)

    healthy = learner.step(_batch(0.25))  # and training goes on from the intact adapter
    assert healthy["skipped_nonfinite_updates"] == 0.0 and math.isfinite(healthy["grad_norm"])
    assert any(not torch.equal(a, b) for a, b in zip(before, params))
    assert all(torch.isfinite(p).all() for p in params)
