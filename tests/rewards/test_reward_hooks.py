"""Reward functions other trainers name by path: TRL's ``--reward_funcs effirl.trl.efficiency_reward``
(one real GRPOTrainer step on a tiny model, conversational rows) and verl's ``compute_score``, both
configured by the environment and scoring in a real sandbox."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import rewards.trl
from rewards.datasets import save_tasks
from rewards.hook import HookConfig, reset_shared_hook, shared_hook
from rewards.tasks import Task
from rewards.trl import trl_rows
from rewards.user_error import UserError
from sandbox.types import FunctionTest

# The reference adds |x| to itself |x| times: 200,000 additions take milliseconds, far above noise.
SLOW_SQUARE = (
    "def square(x):\n    total = 0\n    for _ in range(abs(x)):\n        total += abs(x)\n    return total\n"
)
SQUARE = Task(
    id="toy/square",
    prompt="Write square(x).",
    entry_point="square",
    function_tests=(FunctionTest((3,), 9), FunctionTest((-2,), 4), FunctionTest((200_000,), 40_000_000_000)),
    references=(SLOW_SQUARE,),
)
FAST = "```python\ndef square(x):\n    return x * x\n```"
WRONG = "```python\ndef square(x):\n    return x\n```"
INLINE = {
    "entry_point": "add",
    "tests": [{"input": [1, 2], "expected": 3}, {"input": [5, 5], "expected": 10}],
    "reference": "def add(a, b):\n    return a + b\n",
}


@pytest.fixture
def hook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A task file and a hook config naming it; the process's hook is rebuilt from them."""
    tasks = save_tasks([SQUARE], tmp_path / "tasks.jsonl")
    config = tmp_path / "effirl_reward.yaml"
    config.write_text(f"dataset: {tasks}\nreward:\n  efficiency_weight: 1.0\n  workers: 1\n")
    for name in ("EFFIRL_REWARD_DATASET", "EFFIRL_REWARD_SPLIT", "EFFIRL_REWARD_SERVICE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EFFIRL_REWARD_CONFIG", str(config))
    monkeypatch.setattr(rewards.trl, "_reward", None)
    reset_shared_hook()
    yield tasks
    reset_shared_hook()


def test_config_comes_from_the_file_and_the_environment_wins(hook_env: Path, monkeypatch) -> None:
    config = HookConfig.from_environment()
    assert config.dataset == str(hook_env) and config.reward.efficiency_weight == 1.0
    monkeypatch.setenv("EFFIRL_REWARD_EFFICIENCY_WEIGHT", "0.25")
    monkeypatch.setenv("EFFIRL_REWARD_DATASET", "synthetic")
    config = HookConfig.from_environment()
    assert (config.dataset, config.reward.efficiency_weight, config.reward.workers) == ("synthetic", 0.25, 1)
    bad = hook_env.parent / "bad.yaml"
    bad.write_text("reward:\n  efficency_weight: 1.0\n")
    monkeypatch.setenv("EFFIRL_REWARD_CONFIG", str(bad))
    with pytest.raises(UserError, match="did you mean `efficiency_weight`"):
        HookConfig.from_environment()


def test_trl_reward_named_by_path_in_one_grpo_step(hook_env: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhf.models.loading import tiny_model_and_tokenizer

    # What `trl grpo --reward_funcs effirl.trl.efficiency_reward` does with the name.
    module, name = "effirl.trl.efficiency_reward".rsplit(".", 1)
    reward_function = getattr(importlib.import_module(module), name)
    seen: list[dict] = []

    def recording(prompts, completions, **kwargs):
        seen.append({"prompts": prompts, "completions": completions, **kwargs})
        return reward_function(prompts, completions, **kwargs)

    recording.__name__ = reward_function.__name__
    torch.set_num_threads(1)
    model, tokenizer = tiny_model_and_tokenizer(
        hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32
    )
    rows = trl_rows([SQUARE, SQUARE], conversational=True, system_prompt="Answer with code.")
    assert rows[0]["prompt"] == [
        {"role": "system", "content": "Answer with code."},
        {"role": "user", "content": "Write square(x)."},
    ]
    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        beta=0.0,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[recording],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 1 and len(seen) == 1
    call = seen[0]
    # Conversational rows: TRL applied the chat template and hands back messages.
    assert all(isinstance(p, list) and p[-1]["role"] == "user" for p in call["prompts"])
    assert all(isinstance(c, list) and c[-1]["role"] == "assistant" for c in call["completions"])
    assert call["task_id"] == ["toy/square"] * 4
    logged = trainer.state.log_history[0]
    assert "rewards/efficiency_reward/mean" in logged and "effirl/correctness" in logged
    # The same function on known answers, outside the trainer: a fast correct answer beats the slow
    # reference (efficiency_weight 1 from the config file), a wrong one earns nothing.
    messages = [[{"role": "assistant", "content": text}] for text in (FAST, WRONG)]
    fast, wrong = reward_function(["p", "p"], messages, task_id=[SQUARE.id] * 2)
    assert fast > 1.0 and wrong == 0.0


def test_verl_compute_score_one_sample_and_a_batch(hook_env: Path) -> None:
    from effirl.verl import compute_score

    one = compute_score("anything", FAST, SQUARE.id, None)
    assert one["passed"] == 1.0 and one["correctness"] == 1.0 and one["efficiency"] > 0
    assert one["score"] == pytest.approx(1.0 + one["efficiency"])
    assert compute_score("anything", WRONG, SQUARE.id)["score"] == 0.0
    inline = compute_score("mine", "def add(a, b):\n    return a + b\n", json.dumps(INLINE))
    assert inline["passed"] == 1.0
    batch = compute_score(
        data_sources=["x", "x", "y"],
        solution_strs=[FAST, WRONG, "def add(a, b):\n    return a - b\n"],
        ground_truths=[SQUARE.id, SQUARE.id, INLINE],
        extra_infos=[None, None, None],
    )
    assert [r["passed"] for r in batch] == [1.0, 0.0, 0.0]
    # reward_kwargs change shaping for the call: no efficiency term, so a pass is worth exactly 1.
    assert compute_score("x", FAST, SQUARE.id, efficiency_weight=0.0)["score"] == 1.0
    with pytest.raises(UserError, match="not a task id"):
        compute_score("x", FAST, "toy/nothing")
    with pytest.raises(UserError, match="may only change"):
        compute_score("x", FAST, SQUARE.id, workers=3)
    assert shared_hook().config.reward.workers == 1


def test_without_a_dataset_rows_must_carry_their_tests(hook_env: Path, monkeypatch) -> None:
    monkeypatch.delenv("EFFIRL_REWARD_CONFIG")
    reset_shared_hook()
    from effirl.verl import compute_score

    assert compute_score("mine", "def add(a, b):\n    return a + b\n", INLINE)["passed"] == 1.0
    with pytest.raises(UserError, match="EFFIRL_REWARD_DATASET"):
        compute_score(None, FAST, SQUARE.id)
