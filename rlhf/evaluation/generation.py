"""The evaluated policy: a base model, optionally with a trained adapter, and batched sampling from it.

The base is built exactly as the trainer builds it (:func:`rlhf.models.policy_model.load_policy_model`,
with the run's config.yaml when there is one, so a ``tiny:`` base gets the run's seed). A fresh LoRA adapter
has ``B = 0`` and leaves the base unchanged, so one loaded model serves the base (step 0) and every
checkpoint of a run: only adapter tensors are swapped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rewards.tasks import Task
from rlhf.config import ConfigError, ExperimentConfig, load_config
from rlhf.rollout import (
    GenerateRolloutEngine,
    RolloutEngine,
    SamplingConfig,
    render_prompt,
    style_stop_strings,
)
from rlhf.types import TaskBatch


class EvaluationInputError(ConfigError):
    """Input the user can fix (bad path, mismatched base model, ...); the message says how.

    A ConfigError, so the CLI reports it on one line with exit status 2.
    """


@dataclasses.dataclass
class EvaluatedPolicy:
    """A loaded model and tokenizer; ``has_adapter`` when it carries a LoRA adapter to swap."""

    model: Any
    tokenizer: Any
    config: ExperimentConfig
    has_adapter: bool

    def set_adapter(self, state: Mapping[str, torch.Tensor]) -> None:
        from rlhf.models.loading import load_adapter_state_dict

        if not self.has_adapter:
            raise RuntimeError("this policy was loaded without an adapter")
        try:
            load_adapter_state_dict(self.model, state)
        except (KeyError, ValueError) as exc:
            raise EvaluationInputError(
                f"the adapter does not fit base model {self.base_model!r}: {exc}"
            ) from None

    @property
    def base_model(self) -> str:
        return self.config.model.name_or_path


def run_config(run_dir: Path | None, model: str, device: str) -> ExperimentConfig:
    """The config a policy is rebuilt with: the run's config.yaml (checked against ``model``) or
    the defaults for ``model``."""
    config_file = None if run_dir is None else run_dir / "config.yaml"
    if config_file is not None and config_file.is_file():
        config = load_config(config_file)
        if config.model.name_or_path != model:
            raise EvaluationInputError(
                f"--model {model!r} is not the base model of run {run_dir} ({config.model.name_or_path!r}); "
                "evaluate a checkpoint with the base it was trained on (or leave --model out)"
            )
    else:
        config = load_config(None, [f"model.name_or_path={model}"])
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, device=device, gradient_checkpointing=False)
    )


def with_adapter_shape(config: ExperimentConfig, adapter_config: Mapping[str, Any]) -> ExperimentConfig:
    """``config`` whose LoRA section has the rank, alpha and targets of a saved adapter."""
    lora = dataclasses.replace(
        config.lora,
        rank=int(adapter_config.get("r", config.lora.rank)),
        alpha=float(adapter_config.get("lora_alpha", config.lora.alpha)),
        target_modules=adapter_config.get("target_modules") or config.lora.target_modules,
        use_rslora=bool(adapter_config.get("use_rslora", False)),
        dropout=0.0,
        adapter_path=None,
    )
    return dataclasses.replace(config, lora=lora)


def read_adapter_config(folder: Path) -> dict[str, Any]:
    file = folder / "adapter_config.json"
    if not file.is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise EvaluationInputError(
            f"--adapter {folder} is not a PEFT adapter folder (needs adapter_config.json and "
            "adapter_model.safetensors); point at `effirl export` output or a checkpoint's adapter/ folder"
        )
    return json.loads(file.read_text(encoding="utf-8"))


def load_policy(config: ExperimentConfig, adapter_config: Mapping[str, Any] | None) -> EvaluatedPolicy:
    """The base of ``config``; with ``adapter_config``, wrapped in a (zero) LoRA adapter of that shape."""
    from rlhf.models.policy_model import load_policy_model

    if adapter_config is not None:
        config = with_adapter_shape(config, adapter_config)
    try:
        model, tokenizer = load_policy_model(config, with_lora=adapter_config is not None)
    except (OSError, ValueError, ModuleNotFoundError) as exc:
        raise EvaluationInputError(f"cannot load base model {config.model.name_or_path!r}: {exc}") from None
    return EvaluatedPolicy(model, tokenizer, config, has_adapter=adapter_config is not None)


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """How completions are sampled.

    n_samples: completions per task. temperature: 0 is greedy (then n_samples must be 1).
    batch_size: prompts per engine call (each with its n_samples completions); None is 8 with
    transformers' ``generate`` and 64 with the fast engine, which gains from wide batches.
    engine: ``generate``, ``fast`` (effirl's decoder, docs/performance.md) or ``auto`` (the fast
    engine on a GPU when it supports the model, else ``generate``), as ``rollout.engine`` in training.
    """

    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    batch_size: int | None = None
    prompt_style: str = "chat_fence"
    seed: int = 0
    engine: str = "auto"

    def prompts_per_call(self, engine: RolloutEngine) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 8 if isinstance(engine, GenerateRolloutEngine) else 64

    def sampling(self) -> SamplingConfig:
        stop = style_stop_strings(self.prompt_style)
        return SamplingConfig(
            n_samples=self.n_samples,
            temperature=self.temperature,
            top_p=self.top_p if self.temperature > 0 else 1.0,
            max_new_tokens=self.max_new_tokens,
            stop=stop,
        )


def evaluation_engine(policy: EvaluatedPolicy, options: GenerationOptions) -> RolloutEngine:
    """The engine ``options.engine`` names, over the policy's current weights (adapter included)."""
    from rlhf.rollout.recipe import make_engine

    config = dataclasses.replace(
        policy.config, rollout=dataclasses.replace(policy.config.rollout, engine=options.engine)
    )
    try:
        return make_engine(config, policy.model, policy.tokenizer)
    except ValueError as exc:  # the fast engine named explicitly for a model it cannot run
        raise EvaluationInputError(f"--engine {options.engine}: {exc}") from None


def generate_completions(
    policy: EvaluatedPolicy, tasks: Sequence[Task], options: GenerationOptions
) -> list[list[str]]:
    """``options.n_samples`` completions per task, in task order, with a progress bar."""
    from tqdm.auto import tqdm

    engine = evaluation_engine(policy, options)
    per_call = options.prompts_per_call(engine)
    sampling = options.sampling()
    torch.manual_seed(options.seed)
    completions: list[list[str]] = []
    bar = tqdm(total=len(tasks), desc="generate", unit="task", dynamic_ncols=True, leave=False)
    for start in range(0, len(tasks), per_call):
        chunk = list(tasks[start : start + per_call])
        prompts = [render_prompt(policy.tokenizer, task, options.prompt_style) for task in chunk]
        rollouts = engine.generate(TaskBatch(tasks=chunk, prompts=prompts), sampling)
        n = options.n_samples
        completions.extend(rollouts.texts[i * n : (i + 1) * n] for i in range(len(chunk)))
        bar.update(len(chunk))
    bar.close()
    engine.release_memory()
    return completions
