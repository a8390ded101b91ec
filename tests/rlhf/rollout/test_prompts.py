"""Rendering tasks into prompts: chat, chat with a prefilled code stub, and raw completion."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest

from rewards.tasks import Task
from rlhf.models.loading import byte_tokenizer
from rlhf.rollout.prompts import (
    CODE_FENCE,
    PROMPT_STYLES,
    code_stub,
    function_header,
    render_prompt,
    response_prefix,
    style_stop_strings,
    user_message,
)

DATA = Path(__file__).parents[3] / ".." / "shared" / "data"

HUMANEVAL_LIKE = Task(
    id="he/0",
    prompt='from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n',
    entry_point="total",
)
MBPP_LIKE = Task(
    id="mbpp/1",
    prompt='"""\nWrite a function to add two numbers.\nassert add(1, 2) == 3\n"""\n',
    entry_point="add",
    references=("import math\n\ndef add(a,\n        b: int = 0) -> int:\n  return a + b\n",),
)
PROGRAM = Task(id="cf/2", prompt="Read n and print n squared.")


def test_chat_prefill_opens_a_fence_with_imports_and_signature() -> None:
    tok = byte_tokenizer()
    text = render_prompt(tok, HUMANEVAL_LIKE, "chat_prefill")
    assert text.startswith("<|im_start|>user\nComplete the following Python function.")
    # The user turn shows the whole stub, docstring included; the prefill stops after the signature.
    assert CODE_FENCE + HUMANEVAL_LIKE.prompt + "```" in text
    stub = "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n"
    assert text.endswith("<|im_start|>assistant\n" + CODE_FENCE + stub)
    assert "efficient" in text
    plain = render_prompt(tok, HUMANEVAL_LIKE, "chat")
    assert plain.endswith("<|im_start|>assistant\n")
    assert text == plain + response_prefix(HUMANEVAL_LIKE, "chat_prefill")


def test_chat_fence_opens_an_empty_fence() -> None:
    tok = byte_tokenizer()
    text = render_prompt(tok, MBPP_LIKE, "chat_fence")
    assert text == render_prompt(tok, MBPP_LIKE, "chat") + CODE_FENCE
    assert response_prefix(MBPP_LIKE, "chat_fence") == CODE_FENCE
    assert render_prompt(tok, MBPP_LIKE) == text  # the default style


def test_signature_comes_from_the_reference_when_the_prompt_is_prose() -> None:
    assert code_stub(MBPP_LIKE) == "def add(a, b: int=0) -> int:\n"
    text = render_prompt(byte_tokenizer(), MBPP_LIKE, "chat_prefill")
    assert text.endswith(CODE_FENCE + "def add(a, b: int=0) -> int:\n")
    assert "Define a Python function named `add`." in text
    assert "return a + b" not in text  # the reference's body never leaks into the prompt


def test_whole_answer_is_prefix_plus_completion() -> None:
    body = "    return sum(xs)\n```"
    answer = response_prefix(HUMANEVAL_LIKE, "chat_prefill") + body
    code = answer.removeprefix(CODE_FENCE).removesuffix("```")
    namespace: dict = {}
    exec(compile(code, "<answer>", "exec"), namespace)
    assert namespace["total"]([1, 2, 3]) == 6


def test_raw_style_is_code_a_base_model_continues() -> None:
    tok = byte_tokenizer()
    assert render_prompt(tok, HUMANEVAL_LIKE, "raw") == HUMANEVAL_LIKE.prompt
    raw = render_prompt(tok, MBPP_LIKE, "raw")
    assert raw == MBPP_LIKE.prompt.strip() + "\ndef add(a, b: int=0) -> int:\n"
    ast.parse(raw + "    pass\n")
    prose = Task(
        id="x", prompt='Add """two""" numbers.', entry_point="add", references=("def add(a, b): pass",)
    )
    ast.parse(render_prompt(tok, prose, "raw") + "    pass\n")
    assert response_prefix(MBPP_LIKE, "raw") == raw


def test_program_tasks_and_system_prompts() -> None:
    tok = byte_tokenizer()
    text = render_prompt(tok, PROGRAM, "chat_prefill", system_prompt="Be terse.", instruction="Be fast.")
    assert text.startswith("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nRead n and print")
    assert "reads standard input" in text and "Be fast." in text
    assert text.endswith("<|im_start|>assistant\n" + CODE_FENCE)


def test_bad_styles_and_missing_templates_are_named() -> None:
    tok = byte_tokenizer()
    with pytest.raises(ValueError, match="unknown prompt style 'chatml'"):
        render_prompt(tok, HUMANEVAL_LIKE, "chatml")
    tok.chat_template = None
    with pytest.raises(ValueError, match="use prompt_style='raw'"):
        render_prompt(tok, HUMANEVAL_LIKE, "chat")
    assert render_prompt(tok, HUMANEVAL_LIKE, "raw") == HUMANEVAL_LIKE.prompt


def test_multi_line_signatures_and_uncuttable_prompts() -> None:
    multi = Task(id="m", prompt='import re\n\ndef f(a,\n      b):\n    """Doc."""\n', entry_point="f")
    assert code_stub(multi) == "import re\n\ndef f(a,\n      b):\n"
    broken = Task(id="b", prompt="def f(a):\n", entry_point="f")  # no body: not valid Python
    assert code_stub(broken) == "def f(a):\n"


def test_prose_that_shows_the_function_is_not_a_stub_to_complete() -> None:
    # An optimisation task quotes its slow solution in a fence; the prompt is prose, not code.
    prose = Task(
        id="o",
        prompt="Sum 1..n.\n\nThis version is correct but slow:\n"
        "```python\ndef f(n):\n    return sum(range(n + 1))\n```\nWrite a faster `f`.",
        entry_point="f",
        references=("def f(n):\n    return n * (n + 1) // 2\n",),
    )
    message = user_message(prose)
    assert message.startswith("Sum 1..n.") and "Complete the following" not in message
    assert "Define a Python function named `f`." in message
    assert response_prefix(prose, "chat_prefill") == CODE_FENCE + "def f(n):\n"


def test_function_header_handles_odd_sources() -> None:
    assert function_header("def f(x): return x", "f") == "def f(x):\n"
    assert function_header("async def g(*a, **k):\n    pass", "g") == "async def g(*a, **k):\n"
    assert function_header("def f(:", "f") is None
    assert function_header("def other(): pass", "f") is None


def _dataset_tasks(name: str, file: str) -> list[Task]:
    path = DATA / name / file
    if not path.is_file():
        pytest.skip(f"shared dataset {path} is not present")
    with gzip.open(path, "rt") as lines:
        rows = [json.loads(line) for line in lines]
    return [
        Task(
            id=r["task_id"],
            prompt=r["prompt"],
            entry_point=r["entry_point"],
            references=(r["canonical_solution"],),
        )
        for r in rows
    ]


@pytest.mark.parametrize(
    ("name", "file"), [("humanevalplus", "HumanEvalPlus.jsonl.gz"), ("mbppplus", "MbppPlus.jsonl.gz")]
)
def test_every_dataset_stub_is_valid_python(name: str, file: str) -> None:
    tok = byte_tokenizer()
    for task in _dataset_tasks(name, file):
        stub = code_stub(task)
        assert f"def {task.entry_point}(" in stub, task.id
        ast.parse(stub + "    pass\n")
        for style in PROMPT_STYLES:
            assert task.entry_point in render_prompt(tok, task, style), (task.id, style)


def test_fenced_styles_stop_at_the_closing_fence_in_training_and_evaluation() -> None:
    from rlhf.config import load_config
    from rlhf.evaluation.generation import GenerationOptions
    from rlhf.rollout.recipe import evaluation_sampling, training_sampling

    assert style_stop_strings("chat_fence") == style_stop_strings("chat_prefill") == ("```",)
    assert style_stop_strings("chat") == style_stop_strings("raw") == ()
    fenced = load_config(None, ["data.prompt_style=chat_fence", 'rollout.stop=["\\n\\n\\n", "```"]'])
    assert training_sampling(fenced).stop == ("\n\n\n", "```")  # the user's own stops, no duplicate
    assert evaluation_sampling(fenced).stop == ("\n\n\n", "```")
    assert training_sampling(load_config(None, ["data.prompt_style=chat"])).stop == ()
    assert GenerationOptions(prompt_style="chat_prefill").sampling().stop == ("```",)
    with pytest.raises(ValueError, match="unknown prompt style"):
        style_stop_strings("fenced")
