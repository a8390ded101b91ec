"""TrlReward: the signature TRL's GRPOTrainer calls, and one real GRPO step on a tiny model (CPU)."""

from __future__ import annotations

import pytest

from rewards.scorer import RewardScorer
from rewards.settings import RewardSettings
from rewards.tasks import Task
from rewards.trl import TrlReward, completion_text, group_ids, task_from_columns, trl_rows
from sandbox.types import FunctionTest

SQUARE = Task(
    id="toy/square",
    prompt="Write square(x).",
    entry_point="square",
    function_tests=(FunctionTest((3,), 9), FunctionTest((-2,), 4)),
    references=("def square(x):\n    return x * x\n",),
)
DOUBLE = Task(
    id="toy/double",
    prompt="Write double(x).",
    entry_point="double",
    function_tests=(FunctionTest((3,), 6),),
)
GOOD = "def square(x):\n    return x ** 2\n"
BAD = "def square(x):\n    return x\n"


class Recorder:
    """Collects what TRL's log_metric / log_extra receive."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.extra: dict[str, list] = {}

    def metric(self, name: str, value: float) -> None:
        self.metrics[name] = value

    def column(self, name: str, values: list) -> None:
        self.extra[name] = values


def test_rows_by_task_id(box) -> None:
    reward = TrlReward(RewardScorer(box, RewardSettings(efficiency_mode="none")), [SQUARE, DOUBLE])
    recorder = Recorder()
    prompts = ["p1", "p1", "p2"]
    completions = [
        f"```python\n{GOOD}```",
        [{"role": "assistant", "content": f"```python\n{BAD}```"}],
        "```python\ndef double(x):\n    return 2 * x\n```",
    ]
    values = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1], [2], [3]],
        task_id=["toy/square", "toy/square", "toy/double"],
        trainer_state=None,
        log_metric=recorder.metric,
        log_extra=recorder.column,
    )
    assert values == [1.0, 0.0, 1.0] and all(type(v) is float for v in values)
    assert recorder.extra["effirl_status"] == ["passed", "failed", "passed"]
    assert recorder.metrics["effirl/correctness"] == pytest.approx(2 / 3)
    assert recorder.metrics["effirl/pass_rate"] == pytest.approx(2 / 3)


def test_rows_with_inline_tasks(box) -> None:
    reward = TrlReward(RewardScorer(box, RewardSettings()))
    row_tests = (
        '[{"input": [3], "expected": 9}, {"input": [{"__tuple__": [1]}], "expected": {"__tuple__": [1]}}]'
    )
    code = "def f(x):\n    return x * x if isinstance(x, int) else x\n"
    values = reward(
        prompts=["p"], completions=[f"```python\n{code}```"], entry_point=["f"], tests=[row_tests]
    )
    assert values == [1.0]
    task = task_from_columns({"entry_point": "f", "tests": [{"input": [1], "expected": 1}], "atol": 0.1})
    assert task.function_tests == (FunctionTest((1,), 1),) and task.atol == 0.1


def test_errors_name_the_fix(box) -> None:
    reward = TrlReward(RewardScorer(box, RewardSettings()), [SQUARE])
    with pytest.raises(KeyError, match="not among the 1 tasks"):
        reward(prompts=["p"], completions=["x"], task_id=["toy/unknown"])
    with pytest.raises(KeyError, match="need a `task_id` column"):
        reward(prompts=["p"], completions=["x"], answer=["4"])
    with pytest.raises(TypeError, match="text or a list of messages"):
        completion_text(42)


def test_groups_follow_prompt_and_task() -> None:
    assert group_ids(["a", "a", "b", "a"], [SQUARE, SQUARE, SQUARE, DOUBLE]) == [0, 0, 1, 2]
    assert trl_rows([SQUARE]) == [{"prompt": "Write square(x).", "task_id": "toy/square"}]


def test_one_grpo_step_with_trl(box, tmp_path) -> None:
    pytest.importorskip("trl")
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhf.models.loading import tiny_model_and_tokenizer

    torch.set_num_threads(1)
    model, tokenizer = tiny_model_and_tokenizer(
        hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32
    )
    calls: list[dict] = []

    class Recording(TrlReward):
        def __call__(self, prompts, completions, completion_ids=None, **kwargs):
            calls.append({"prompts": prompts, "completions": completions, "ids": completion_ids, **kwargs})
            return super().__call__(prompts, completions, completion_ids, **kwargs)

    reward = Recording(RewardScorer(box, RewardSettings()), [SQUARE])
    dataset = Dataset.from_list(trl_rows([SQUARE, SQUARE], prompt=lambda t: "```python\ndef square(x):"))
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        learning_rate=1e-2,
        beta=0.0,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert len(calls) == 1
    call = calls[0]
    assert len(call["prompts"]) == len(call["completions"]) == len(call["ids"]) == 4
    assert call["task_id"] == ["toy/square"] * 4
    assert all(isinstance(c, str) for c in call["completions"])
    assert {"trainer_state", "log_metric", "log_extra"} <= set(call)
    assert len(reward.last_rewards) == 4
    assert all(isinstance(r.value, float) for r in reward.last_rewards)
    logged = trainer.state.log_history[0]
    assert "rewards/effirl_reward/mean" in logged and "effirl/correctness" in logged
