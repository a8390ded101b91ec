"""Algorithms are registered specs: the config names one, the trainer resolves it once, and every
stage reads its flags instead of testing algorithm names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlhf.algorithms import ALGORITHMS, UnknownAlgorithmError, dual_clip_ppo_loss, resolve_algorithm
from rlhf.config import AlgorithmConfig, ConfigError, TrainConfig, load_config
from rlhf.learner.updates import Learner, LearnerOptions
from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.training.run_log import read_metrics
from rlhf.training.trainer import train
from rlhf.types import TrainBatch

SMOKE = Path(__file__).resolve().parents[3] / "rlhf" / "recipes" / "smoke.yaml"


@pytest.mark.parametrize(
    ("name", "estimator", "needs_critic", "kl_in_reward", "group_baseline"),
    [
        ("grpo", "grpo", False, False, True),
        ("rloo", "rloo", False, False, True),
        ("reinforce_plus_plus", "reinforce_plus_plus", False, True, False),
        ("reinforce_plus_plus_baseline", "reinforce_plus_plus_baseline", False, True, True),
        ("ppo", "gae", True, True, False),
    ],
)
def test_each_spec_reads_its_flags_from_its_estimator(
    name: str, estimator: str, needs_critic: bool, kl_in_reward: bool, group_baseline: bool
) -> None:
    spec = resolve_algorithm(name)
    assert spec.name == name and spec.estimator == estimator and spec.policy_loss == "ppo_clip"
    assert (spec.needs_critic, spec.kl_in_reward, spec.group_baseline) == (
        needs_critic,
        kl_in_reward,
        group_baseline,
    )


def test_every_registered_algorithm_is_a_spec_of_a_known_estimator() -> None:
    assert set(ALGORITHMS) == {"grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "ppo"}


def test_unknown_algorithm_and_loss_names_are_rejected_with_the_valid_choices() -> None:
    with pytest.raises(ConfigError) as error:
        AlgorithmConfig(name="grop")
    message = str(error.value)
    assert "\n" not in message and "`algorithm.name`" in message
    assert all(name in message for name in ALGORITHMS)
    expected = r"`algorithm.policy_loss` must be one of ppo_clip, dual_clip; got 'dual'; did you mean"
    with pytest.raises(ConfigError, match=expected):
        AlgorithmConfig(policy_loss="dual")
    with pytest.raises(UnknownAlgorithmError, match="did you mean 'grpo'"):
        resolve_algorithm("grop")
    with pytest.raises(UnknownAlgorithmError, match="unknown policy loss"):
        resolve_algorithm("grpo", "dual")


def test_the_policy_loss_setting_replaces_the_algorithms_own() -> None:
    assert resolve_algorithm("grpo").policy_loss == "ppo_clip"
    spec = resolve_algorithm("ppo", AlgorithmConfig(policy_loss="dual_clip").policy_loss)
    assert spec.policy_loss == "dual_clip" and spec.needs_critic


def _learner(policy_loss: str | None) -> Learner:
    model = apply_lora(tiny_model_and_tokenizer(seed=3)[0], rank=4, alpha=8)
    algorithm = AlgorithmConfig(policy_loss=policy_loss, clip_ratio_c=2.0)
    options = LearnerOptions(
        train=TrainConfig(lr=1e-2),
        algorithm=algorithm,
        spec=resolve_algorithm(algorithm.name, algorithm.policy_loss),
        temperature=1.0,
        max_new_tokens=4,
    )
    return Learner(model, list(adapter_parameters(model).values()), options)


def _batch() -> TrainBatch:
    gen = torch.Generator().manual_seed(0)
    return TrainBatch(
        prompt_ids=torch.randint(3, 200, (4, 5), generator=gen),
        prompt_mask=torch.ones(4, 5, dtype=torch.long),
        completion_ids=torch.randint(3, 200, (4, 4), generator=gen),
        completion_mask=torch.ones(4, 4, dtype=torch.long),
        # Old log-probs far below the new ones: ratios far above 1 on negative advantages, where
        # dual clip caps the loss and plain PPO clip does not.
        old_logprobs=torch.full((4, 4), -30.0),
        advantages=torch.tensor([1.0, -1.0, -2.0, 0.5]).unsqueeze(1).expand(4, 4).clone(),
    )


def test_the_learner_uses_the_configured_policy_loss() -> None:
    assert _learner("dual_clip").loss_fn is dual_clip_ppo_loss
    assert _learner("dual_clip").loss_options == {"clip_ratio_c": 2.0}
    dual, plain = _learner("dual_clip").step(_batch()), _learner(None).step(_batch())
    assert dual["loss/dual_clip_frac"] == pytest.approx(0.5)
    assert "loss/dual_clip_frac" not in plain
    assert dual["loss/policy"] != pytest.approx(plain["loss/policy"])


def test_a_run_with_policy_loss_dual_clip_trains_with_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = load_config(
        SMOKE, [f"output_dir={out}", "train.steps=1", "algorithm.policy_loss=dual_clip", "eval_at_end=false"]
    )
    assert train(config) == 0
    [step] = read_metrics(out / "metrics.jsonl")
    assert "loss/dual_clip_frac" in step
