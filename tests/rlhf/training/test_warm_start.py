"""The warm start: supervised steps on references through the RL learner, then RL from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rewards.datasets import save_tasks
from rewards.synthetic import HELDOUT_FAMILIES, family_names, synthetic_tasks
from rlhf.algorithms import resolve_algorithm
from rlhf.config import AlgorithmConfig, ConfigError, TrainConfig, load_config
from rlhf.learner.updates import Learner, LearnerOptions
from rlhf.models.loading import adapter_parameters, apply_lora, byte_tokenizer, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs
from rlhf.training.checkpoint import list_checkpoints
from rlhf.training.run_log import read_metrics
from rlhf.training.sft import sft_examples
from rlhf.training.trainer import load_run_tasks, task_sources, train
from rlhf.training.warm_start import reference_rollouts, run_warm_start, supervised_batch
from tests.rlhf.training.test_trainer import REPO, SMOKE

torch.set_num_threads(2)
EXAMPLES = [
    {"prompt": "<|im_start|>user\nadd<|im_end|>\n", "completion": "def add(a, b):\n    return a + b\n```"},
    {"prompt": "<|im_start|>user\nneg please<|im_end|>\n", "completion": "def neg(x):\n    return -x\n```"},
]


def test_a_learner_step_on_references_follows_the_gradient_of_their_nll() -> None:
    model, _ = tiny_model_and_tokenizer(seed=5)
    model = apply_lora(model, rank=4, alpha=8)
    params = list(adapter_parameters(model).values())
    with torch.no_grad():  # move lora_B off zero so every adapter tensor has a gradient
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    options = LearnerOptions(
        train=TrainConfig(lr=1e-3, max_grad_norm=None),
        algorithm=AlgorithmConfig(),
        temperature=1.0,
        max_new_tokens=64,
        spec=resolve_algorithm("grpo"),
        on_policy=True,
    )
    rollouts = reference_rollouts(EXAMPLES, [None, None], byte_tokenizer(), max_new_tokens=64)  # type: ignore[list-item]
    assert rollouts.prompt_mask[0, 0] == 0 or rollouts.prompt_mask[1, 0] == 0  # left-padded prompts
    before = [p.detach().clone() for p in params]
    Learner(model, params, options).step(
        supervised_batch(rollouts, torch.zeros_like(rollouts.behaviour_logprobs))
    )
    learner_grads = [p.grad.clone() for p in params]

    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
            p.grad = None
    model.train()
    logprobs = completion_logprobs(
        model, rollouts.prompt_ids, rollouts.prompt_mask, rollouts.completion_ids, rollouts.completion_mask
    )
    mask = rollouts.completion_mask.float()
    (-(logprobs * mask).sum() / mask.sum()).backward()
    for got, want in zip(learner_grads, (p.grad for p in params)):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().max()) > 0 for g in learner_grads)


def test_train_warm_starts_then_runs_rl_from_the_warm_adapter(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = load_config(
        SMOKE,
        [
            f"output_dir={out}", "warm_start.sft_steps=4", "warm_start.examples=2", "warm_start.batch_size=2",
            "train.lr=5e-3", "train.steps=1", "eval_at_end=false",
        ],
    )  # fmt: skip
    assert train(config) == 0
    summary = json.loads((out / "warm_start" / "summary.json").read_text())
    assert summary["examples"] == 2 and summary["steps"] == 4
    # The same two references every step: their NLL must fall.
    assert summary["nll_last_batch"] < summary["nll_first_batch"]
    assert list_checkpoints(out) and read_metrics(out / "metrics.jsonl")[0]["step"] == 1
    # The resolved config keeps the warm start and reloads.
    assert load_config(out / "config.yaml").warm_start.sft_steps == 4


def test_the_warm_start_sees_only_training_families_and_training_refuses_held_out_tasks(
    tmp_path: Path,
) -> None:
    recipe = REPO / "rlhf" / "recipes" / "quickstart_gpu.yaml"  # the recipe with a warm start
    config = load_config(recipe, [f"output_dir={tmp_path / 'run'}"])
    assert config.warm_start.sft_steps > 0
    train_tasks, _ = load_run_tasks(config)  # what train() hands the warm start
    families = {t.metadata["family"] for t in train_tasks}
    assert families == set(family_names("train")) and not families & HELDOUT_FAMILIES
    examples = sft_examples(train_tasks[:30], byte_tokenizer(), config.data.prompt_style)
    assert len(examples) == 30  # the warm start's examples: references of these training tasks
    # Held-out splits, named or saved to a task file, never become training tasks.
    heldout_file = tmp_path / "unseen.jsonl"
    save_tasks(synthetic_tasks("heldout_families", n=4), heldout_file)
    for override in ("data.split=heldout_families", "data.split=heldout", f"data.dataset={heldout_file}"):
        with pytest.raises(ConfigError, match=r"held.out"):
            load_run_tasks(load_config(recipe, [f"output_dir={tmp_path / 'run'}", override]))
    with pytest.raises(ValueError, match="held-out split 'heldout_families'"):
        run_warm_start(config, None, None, synthetic_tasks("heldout_families", n=2), byte_tokenizer())
    # ... while evaluating on them is what they are for.
    config = load_config(recipe, [f"output_dir={tmp_path / 'run'}", "data.eval_split=heldout_families"])
    assert task_sources(config)[1] == ("synthetic_optimise", "heldout_families")
