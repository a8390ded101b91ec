"""`effirl sft`: an optional supervised warm start on the tasks' reference solutions, with TRL.

TRL's SFTTrainer does the training; effirl supplies the policy (base + the same LoRA adapter the RL
run will train), prompts rendered exactly as RL renders them, and completions taken from the
reference solutions, so that the loss falls on the answer only. The adapter is written as a PEFT
folder; start RL from it with ``lora.adapter_path=<output_dir>/sft/adapter``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from rewards.console import notice
from rewards.tasks import Task
from rlhf.config import ExperimentConfig
from rlhf.models.loading import resolve_device, use_bf16
from rlhf.models.policy_model import adapter_config_of, load_policy_model
from rlhf.rollout import render_prompt, response_prefix
from rlhf.rollout.prompts import CODE_FENCE

log = logging.getLogger(__name__)

CLOSE_FENCE = "\n```"


def sft_examples(tasks: list[Task], tokenizer, style: str) -> list[dict[str, str]]:
    """Prompt/completion pairs: the RL prompt, and the reference solution as the model would write it.

    With a prefilled prompt the completion is what follows the prefill: the reference after its
    function header. Tasks whose reference does not contain that header, or that have none, are skipped.
    """
    examples = []
    for task in tasks:
        if not task.reference:
            continue
        code = task.reference.rstrip() + "\n"
        if style == "chat":
            # Nothing is prefilled: the answer opens its own code fence, as RL rewards it for.
            body = CODE_FENCE + code
        else:
            # The prompt already ends with the prefill (the fence, maybe the signature): the
            # completion is what follows it, or the model learns to open a second fence.
            stub = response_prefix(task, style).removeprefix(CODE_FENCE)
            at = code.find(stub) if stub else 0
            if at < 0:
                continue
            body = code[at + len(stub) :]
        completion = body + (CLOSE_FENCE if style != "raw" else "")
        examples.append({"prompt": render_prompt(tokenizer, task, style), "completion": completion})
    return examples


def sft(config: ExperimentConfig) -> int:
    """Fine-tune the policy adapter on reference solutions; writes ``<output_dir>/sft/adapter``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from rlhf.training.trainer import check_model_source, load_source_tasks, refuse_heldout_tasks

    data = config.data
    check_model_source(config)
    refuse_heldout_tasks((), data.dataset, data.split)
    tasks = load_source_tasks("data.dataset", data.dataset, data.split, data.limit, data.columns)
    refuse_heldout_tasks(tasks)
    model, tokenizer = load_policy_model(config)
    examples = sft_examples(tasks, tokenizer, config.data.prompt_style)
    if not examples:
        raise ValueError(
            f"no SFT examples: the tasks of {config.data.dataset!r} ({config.data.split}) have no usable "
            "reference solutions"
        )
    out = Path(config.output_dir) / "sft"
    device = str(resolve_device(config.model.device))
    # Newer transformers renamed `gradient_checkpointing` (the old name warns); older releases only
    # have the old one.
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    )
    args = SFTConfig(
        output_dir=str(out / "trainer"),
        max_steps=config.train.steps,
        learning_rate=config.train.lr,
        lr_scheduler_type=config.train.lr_schedule if config.train.lr_schedule != "constant" else "constant",
        warmup_steps=config.train.warmup_steps,
        weight_decay=config.train.weight_decay,
        max_grad_norm=config.train.max_grad_norm or 0.0,
        per_device_train_batch_size=config.data.prompts_per_step,
        seed=config.train.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=device == "cpu",
        bf16=use_bf16(config.train.bf16, device),
        completion_only_loss=True,
        # TRL turns checkpointing on by default; follow the recipe's choice, as the RL learner does.
        dataset_num_proc=None,
        **{checkpointing: config.model.gradient_checkpointing},
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer
    )
    result = trainer.train()
    adapter_dir = out / "adapter"
    write_adapter_folder(model, config, adapter_dir)
    summary = {"examples": len(examples), "steps": config.train.steps, "train_loss": result.training_loss}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    notice(
        log, "SFT on %d examples, loss %.4f; adapter in %s", len(examples), result.training_loss, adapter_dir
    )
    return 0


def write_adapter_folder(model: torch.nn.Module, config: ExperimentConfig, directory: Path) -> None:
    """The policy adapter as a standard PEFT folder (adapter_config.json + adapter_model.safetensors)."""
    from safetensors.torch import save_file

    from rlhf.models.loading import POLICY_ADAPTER, adapter_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in adapter_state_dict(model, POLICY_ADAPTER).items()}
    save_file(state, str(directory / "adapter_model.safetensors"))
    config_json = adapter_config_of(model, config.model.name_or_path)
    (directory / "adapter_config.json").write_text(json.dumps(config_json, indent=2, default=str))
