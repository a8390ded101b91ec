"""`effirl export`: PEFT adapter folders and merged models that reproduce the checkpoint's policy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.cli import main
from rlhf.config import dump_config, load_config
from rlhf.models.loading import adapter_parameters, adapter_state_dict
from rlhf.models.logprobs import completion_logprobs
from rlhf.models.policy_model import adapter_config_of, load_policy_model
from rlhf.training.checkpoint import TrainerState, save_checkpoint
from rlhf.training.export import ExportError, export_checkpoint

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "rlhf" / "recipes" / "smoke.yaml")
PROMPT = "def add(a, b):\n"
COMPLETION = "    return a + b\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run folder whose checkpoint holds a non-trivial adapter (random A and B, so merging matters)."""
    torch.set_num_threads(2)
    run_dir = tmp_path_factory.mktemp("run")
    config = load_config(SMOKE, [f"output_dir={run_dir}", "train.seed=5"])
    model, tokenizer = load_policy_model(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    state = TrainerState(
        step=7,
        data_position={},
        base_model="tiny:llama",
        metrics={"pass_rate": 0.25, "reward": 0.125},
        extra={"run_name": "smoke", "algorithm": "grpo", "final": True},
    )
    path = save_checkpoint(
        run_dir,
        state,
        adapter=adapter_state_dict(model),
        adapter_config=adapter_config_of(model, "tiny:llama"),
    )
    (run_dir / "config.yaml").write_text(dump_config(config))
    (run_dir / "eval.jsonl").write_text(json.dumps({"step": 7, "pass_rate": 0.5, "speedup_mean": 1.5}) + "\n")
    return {"run": run_dir, "checkpoint": path, "config": config, "model": model, "tokenizer": tokenizer}


def logprobs(model: Any, tokenizer: Any) -> torch.Tensor:
    prompt = torch.tensor([tokenizer(PROMPT).input_ids])
    completion = torch.tensor([tokenizer(COMPLETION).input_ids])
    model.eval()
    with torch.no_grad():
        return completion_logprobs(
            model, prompt, torch.ones_like(prompt), completion, torch.ones_like(completion), temperature=1.0
        )


def logits(model: Any, tokenizer: Any) -> torch.Tensor:
    ids = torch.tensor([tokenizer(PROMPT + COMPLETION).input_ids])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_export_reloads_with_peft_and_reproduces_logprobs(trained_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    assert export_checkpoint(trained_run["checkpoint"], out=out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and config["modules_to_save"] is None
    assert config["target_modules"] == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    keys = load_file(str(out / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.model.layers.") for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) and ".policy." not in k for k in keys)

    base, _ = load_policy_model(trained_run["config"], with_lora=False)
    reloaded = PeftModel.from_pretrained(base, str(out))
    expected = logprobs(trained_run["model"], trained_run["tokenizer"])
    assert torch.allclose(logprobs(reloaded, trained_run["tokenizer"]), expected, atol=1e-6)
    plain, _ = load_policy_model(trained_run["config"], with_lora=False)
    assert not torch.allclose(
        logprobs(plain, trained_run["tokenizer"]), expected, atol=1e-3
    )  # the adapter matters

    card = (out / "README.md").read_text()
    assert "base_model: tiny:llama" in card and "| training steps | 7 |" in card
    assert (
        "| pass_rate | 0.25 |" in card and "evaluation at step 7" in card and "| speedup_mean | 1.5 |" in card
    )


def test_merged_model_logits_equal_base_plus_adapter(trained_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    assert (
        export_checkpoint(trained_run["run"], out=out, merge=True) == 0
    )  # a run folder: its newest checkpoint
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and tokenizer.eos_token == trained_run["tokenizer"].eos_token
    expected = logits(trained_run["model"], trained_run["tokenizer"])
    assert torch.allclose(logits(merged, tokenizer), expected, atol=1e-5)
    assert "library_name: transformers" in (out / "README.md").read_text()


def test_dtype_is_applied(trained_run: dict, tmp_path: Path) -> None:
    assert (
        main(["export", str(trained_run["checkpoint"]), "--out", str(tmp_path / "a"), "--dtype", "bf16"]) == 0
    )
    assert {t.dtype for t in load_file(str(tmp_path / "a" / "adapter_model.safetensors")).values()} == {
        torch.bfloat16
    }
    export_checkpoint(trained_run["checkpoint"], out=tmp_path / "m", merge=True, dtype="float16")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m").dtype == torch.float16


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_mismatched_base_is_refused_without_output(trained_run: dict, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="trained on base model 'tiny:llama', not 'tiny:qwen2'"):
        export_checkpoint(trained_run["checkpoint"], out=out, base="tiny:qwen2")
    assert main(["export", str(trained_run["checkpoint"]), "--out", str(out), "--base", "tiny:qwen2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert leftovers(tmp_path) == []


def test_run_config_naming_another_base_is_refused(trained_run: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    step = run / "checkpoints" / "step-7"
    step.mkdir(parents=True)
    for file in trained_run["checkpoint"].rglob("*"):
        target = step / file.relative_to(trained_run["checkpoint"])
        target.parent.mkdir(exist_ok=True)
        if file.is_file():
            target.write_bytes(file.read_bytes())
    config = load_config(SMOKE, ["model.name_or_path=tiny:qwen2"])
    (run / "config.yaml").write_text(dump_config(config))
    with pytest.raises(ExportError, match=re.escape("config.yaml names 'tiny:qwen2'")):
        export_checkpoint(step, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_files_and_busy_output_are_refused(trained_run: dict, tmp_path: Path) -> None:
    broken = tmp_path / "run" / "checkpoints" / "step-1"
    (broken / "adapter").mkdir(parents=True)
    (broken / "trainer_state.json").write_text((trained_run["checkpoint"] / "trainer_state.json").read_text())
    with pytest.raises(
        ExportError, match=re.escape("missing adapter/adapter_config.json, adapter/adapter_model.safetensors")
    ):
        export_checkpoint(broken, out=tmp_path / "out")
    with pytest.raises(ExportError, match="does not exist"):
        export_checkpoint(tmp_path / "nowhere", out=tmp_path / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_checkpoint(trained_run["checkpoint"], out=busy)
    assert leftovers(tmp_path) == ["busy", "run"] and leftovers(busy) == ["keep.txt"]
