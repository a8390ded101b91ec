"""SFT examples: the prompt as RL renders it plus the reference, continuing exactly after the prefill."""

from __future__ import annotations

import dataclasses

import pytest

from rewards.synthetic.optimisation import optimisation_tasks
from rlhf.models.loading import byte_tokenizer
from rlhf.rollout.prompts import CODE_FENCE, render_prompt, response_prefix
from rlhf.training.sft import CLOSE_FENCE, sft_examples


@pytest.mark.parametrize("style", ["chat", "chat_fence", "chat_prefill"])
def test_prefill_and_completion_make_one_fenced_reference(style: str) -> None:
    tok = byte_tokenizer()
    tasks = optimisation_tasks("train", n=3)
    examples = sft_examples(tasks, tok, style)
    assert len(examples) == len(tasks)
    for task, example in zip(tasks, examples):
        assert example["prompt"] == render_prompt(tok, task, style)
        answer = response_prefix(task, style) + example["completion"]
        # Exactly what the model should write after the assistant marker: one fence around the code.
        assert answer == CODE_FENCE + task.reference.rstrip() + "\n" + CLOSE_FENCE
        if style != "chat":  # the fence is already in the prompt
            assert not example["completion"].startswith("```")


def test_tasks_without_a_usable_reference_are_skipped() -> None:
    tok = byte_tokenizer()
    task = optimisation_tasks("train", n=1)[0]
    bare = dataclasses.replace(task, references=())
    assert sft_examples([bare], tok, "chat_fence") == []
