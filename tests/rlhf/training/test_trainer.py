"""The RL loop end to end on CPU with a tiny random model: outputs, checkpoints, exact resume, PPO, SFT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.cli import main
from rlhf.config import load_config
from rlhf.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from rlhf.training.run_log import read_metrics
from rlhf.training.trainer import train

REPO = Path(__file__).resolve().parents[3]
SMOKE = REPO / "rlhf" / "recipes" / "smoke.yaml"
REQUIRED_METRICS = {
    "step", "reward", "reward_std", "frac_reward_zero_std", "pass_rate", "speedup_mean", "entropy",
    "completions/mean_length", "completions/min_length", "completions/max_length",
    "completions/clipped_ratio", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
    "learning_rate", "grad_norm", "time_generate_s", "time_reward_s", "time_train_s", "time_sync_s",
    "sync_bytes", "tokens_per_s",
}  # fmt: skip
# TRL's names replaced these; none of them may come back as a second name of the same quantity.
RETIRED_METRICS = {
    "reward_mean", "reward_with_penalties_mean", "response_len_mean", "truncated_frac", "lr",
    "loss/clip_frac", "loss/clip_frac_low", "loss/clip_frac_high", "rollout/completion_len_mean",
    "rollout/completion_len_max", "rollout/truncated_frac",
}  # fmt: skip
# Rewards of a tiny random model are flat, so an entropy bonus and a KL term give the adapter a
# real, RNG-dependent gradient at every step: enough to tell an exact resume from an inexact one.
MOVING = ["algorithm.entropy_coef=0.05", "algorithm.kl_coef=0.1", "train.lr=1e-3", "eval_at_end=false"]


def smoke_config(output_dir: Path, *overrides: str):
    return load_config(SMOKE, [f"output_dir={output_dir}", *overrides])


def adapter_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))


def test_smoke_recipe_through_the_cli_writes_a_complete_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(SMOKE), f"output_dir={out}", "log_tensorboard=true"]) == 0
    assert (out / "config.yaml").is_file()
    assert load_config(out / "config.yaml").output_dir == str(out)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(set(r) >= REQUIRED_METRICS for r in rows), REQUIRED_METRICS - set(rows[0])
    assert not any(set(r) & RETIRED_METRICS for r in rows)
    assert all(r["completions/mean_length"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    # KL is measured every algorithm.kl_metric_every steps: a step without it has no `kl` (never null).
    assert isinstance(rows[0]["kl"], float) and "kl" not in rows[1]
    evals = read_metrics(out / "eval.jsonl")
    assert evals and evals[-1]["step"] == 2 and 0.0 <= evals[-1]["pass_rate"] <= 1.0
    assert {"reward", "completions/mean_length"} <= set(evals[-1]) and not set(evals[-1]) & RETIRED_METRICS
    assert list(out.glob("tensorboard/events.out.tfevents.*"))
    (checkpoint,) = list_checkpoints(out)
    loaded = load_checkpoint(checkpoint, expected_base_model="tiny:llama")
    assert loaded.state.step == 2 and loaded.learner.optimizer is not None and loaded.rng is not None
    assert json.loads((checkpoint / "adapter" / "adapter_config.json").read_text())["r"] == 4


def straight_and_resumed(tmp_path: Path, *overrides: str, config=smoke_config) -> tuple[Path, Path, Path]:
    """Four steps straight, and two + resume + two: (straight step-4, resumed step-4, step-2)."""
    straight = tmp_path / "straight"
    train(config(straight, "train.steps=4", *overrides))
    split = tmp_path / "split"
    train(config(split, "train.steps=4", "save_every=2", *overrides, "keep_checkpoints=null"))
    # Pretend the run died after step 2: drop everything written later, then resume.
    for checkpoint in list_checkpoints(split):
        if checkpoint.name != "step-2":
            shutil.rmtree(checkpoint)
    assert [p.name for p in list_checkpoints(split)] == ["step-2"]
    train(config(split, "train.steps=4", "save_every=2", *overrides, "resume=auto"))
    assert [r["step"] for r in read_metrics(split / "metrics.jsonl")] == [1, 2, 3, 4]
    checkpoints = straight / "checkpoints", split / "checkpoints"
    return checkpoints[0] / "step-4", checkpoints[1] / "step-4", checkpoints[1] / "step-2"


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start, what: str) -> None:
    """``a`` equals ``b`` to 1e-6, and moved away from ``start`` by far more than that."""
    assert a.keys() == b.keys() == start.keys(), what
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-4, f"the {what} did not move; equality would prove nothing"
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, f"the resumed {what} differs by {worst}"


def test_resume_continues_exactly(tmp_path):
    straight, resumed, start = straight_and_resumed(tmp_path, *MOVING)
    assert_same_tensors(adapter_of(straight), adapter_of(resumed), adapter_of(start), "adapter")


def optimizer_moments(checkpoint: Path, part: str) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint / "optimizer.pt", weights_only=False)[part]["state"]
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")}


def test_ppo_resume_continues_exactly_with_its_critic_and_critic_optimizer(tmp_path):
    straight, resumed, start = straight_and_resumed(
        tmp_path, "algorithm.name=ppo", "algorithm.critic_lr=1e-2", *MOVING
    )
    assert_same_tensors(adapter_of(straight), adapter_of(resumed), adapter_of(start), "adapter")
    critic = lambda checkpoint: load_file(str(checkpoint / "critic.safetensors"))
    assert any(k.startswith("value_head.") for k in critic(start))
    assert any(not k.startswith("value_head.") for k in critic(start))  # the critic's LoRA adapter
    assert_same_tensors(critic(straight), critic(resumed), critic(start), "critic")
    for part in ("policy", "critic"):
        moments = [optimizer_moments(c, part) for c in (straight, resumed, start)]
        assert_same_tensors(*moments, f"{part} optimizer state")


def test_resume_refuses_another_base_model(tmp_path):
    out = tmp_path / "run"
    train(smoke_config(out, "train.steps=1", "eval_at_end=false"))
    with pytest.raises(CheckpointError, match="base model"):
        train(smoke_config(out, "train.steps=2", "resume=auto", "model.name_or_path=tiny:qwen2"))


def test_ppo_trains_a_critic_on_the_shared_base(tmp_path):
    out = tmp_path / "ppo"
    train(smoke_config(out, "algorithm.name=ppo", "rollout.n_samples=2", "eval_at_end=false"))
    rows = read_metrics(out / "metrics.jsonl")
    assert all("loss/value" in r for r in rows)
    checkpoint = load_checkpoint(list_checkpoints(out)[-1])
    critic = checkpoint.learner.critic
    assert critic is not None and any(k.startswith("value_head.") for k in critic)
    assert checkpoint.learner.critic_optimizer is not None


@pytest.mark.parametrize("algorithm", ["rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"])
def test_other_algorithms_run_through_the_loop(tmp_path, algorithm):
    out = tmp_path / algorithm
    overrides = [
        f"algorithm.name={algorithm}",
        "train.steps=1",
        "eval_at_end=false",
        "algorithm.kl_coef=0.05",
    ]
    train(smoke_config(out, *overrides))
    assert read_metrics(out / "metrics.jsonl")[0]["step"] == 1


def test_a_warm_start_and_a_saved_adapter_cannot_both_be_the_start(tmp_path):
    with pytest.raises(ValueError, match=r"warm_start\.sft_steps"):
        smoke_config(tmp_path, "warm_start.sft_steps=2", f"lora.adapter_path={tmp_path}")


def test_sft_warm_start_writes_a_peft_adapter_the_rl_run_can_start_from(tmp_path):
    out = tmp_path / "sft"
    assert main(["sft", str(SMOKE), f"output_dir={out}", "train.steps=2", "data.prompt_style=chat"]) == 0
    adapter = out / "sft" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    summary = json.loads((out / "sft" / "summary.json").read_text())
    assert summary["examples"] > 0 and summary["train_loss"] > 0
    rl = tmp_path / "rl"
    train(smoke_config(rl, f"lora.adapter_path={adapter}", "train.steps=1", "eval_at_end=false"))
    assert list_checkpoints(rl)
