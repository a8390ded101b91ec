"""The policy's model as a recipe describes it: the base model with a fresh (seeded) LoRA adapter, its
tokenizer, and the adapter as a PEFT folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file

from rlhf.config import TINY_PREFIX, ExperimentConfig
from rlhf.models.loading import (
    POLICY_ADAPTER,
    apply_lora,
    byte_tokenizer,
    load_adapter_state_dict,
    load_base_model,
    load_tokenizer,
    resolve_device,
    tiny_model_and_tokenizer,
)


def policy_tokenizer(config: ExperimentConfig) -> Any:
    """The tokenizer of the policy, without loading the model (tiny random models use bytes)."""
    name = config.model.name_or_path
    return byte_tokenizer() if name.startswith(TINY_PREFIX) else load_tokenizer(name)


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them."""
    # Newer transformers renamed gradient_checkpointing_enable (the old name warns); older releases
    # only have the old one.
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def load_policy_model(config: ExperimentConfig, *, with_lora: bool = True) -> tuple[Any, Any]:
    """The base model with a fresh (seeded) LoRA adapter, plus its tokenizer.

    ``with_lora=False`` returns the plain base model (a rollout worker fed merged weights).
    """
    model_config, lora = config.model, config.lora
    name = model_config.name_or_path
    dtype = "float32" if model_config.dtype == "auto" and model_config.device == "cpu" else model_config.dtype
    if name.startswith(TINY_PREFIX):
        base, tokenizer = tiny_model_and_tokenizer(
            architecture=name[len(TINY_PREFIX) :] or "llama",
            seed=config.train.seed,
            dtype=dtype if dtype != "auto" else "float32",
            device=resolve_device(model_config.device),
        )
    else:
        tokenizer = load_tokenizer(name)
        attn = None if model_config.attn_implementation == "auto" else model_config.attn_implementation
        base = load_base_model(
            name, dtype=dtype, device=resolve_device(model_config.device), attn_implementation=attn
        )
    if not with_lora:
        return base, tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)  # LoRA initialisation depends on the seed only
        model = apply_lora(
            base,
            rank=lora.rank,
            alpha=lora.alpha,
            dropout=lora.dropout,
            target_modules=lora.target_modules,
            use_rslora=lora.use_rslora,
        )
    if lora.adapter_path:
        load_adapter_state_dict(model, read_adapter_folder(lora.adapter_path))
    if model_config.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model, tokenizer


def adapter_config_of(model: PeftModel, base_model: str) -> dict[str, Any]:
    """The policy adapter's ``adapter_config.json`` content, naming ``base_model`` as its base."""
    data = model.peft_config[POLICY_ADAPTER].to_dict()
    data["base_model_name_or_path"] = base_model
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}


def read_adapter_folder(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a PEFT adapter folder (``adapter_model.safetensors``)."""
    file = Path(path) / "adapter_model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(
            f"lora.adapter_path {path} has no adapter_model.safetensors; point it at a PEFT adapter "
            "folder (e.g. a checkpoint's adapter/ or the output of `effirl export`)"
        )
    return load_file(str(file))
