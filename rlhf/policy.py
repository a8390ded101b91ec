"""The policy worker: one model that generates, scores its own log-probs, and learns.

It is the unit the placements arrange. ``role="hybrid"`` holds the model for both phases (the
colocated "hybrid engine": generation memory is released before training); ``role="rollout"`` only
generates (its adapter arrives by weight sync); ``role="learner"`` only learns. The same class runs
in the driver process (``placement.mode: in_process``) or inside a Ray actor.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file

from rewards.tasks import Task
from rlhf.algorithms import AlgorithmSpec
from rlhf.checkpoint import LearnerState, capture_rng, restore_rng
from rlhf.config import TINY_PREFIX, ExperimentConfig
from rlhf.learner import Learner, LearnerOptions
from rlhf.logprobs import completion_logprobs, reference_logprobs
from rlhf.models import (
    POLICY_ADAPTER,
    adapter_state_dict,
    apply_lora,
    byte_tokenizer,
    load_adapter_state_dict,
    load_base_model,
    load_tokenizer,
    resolve_device,
    tiny_model_and_tokenizer,
    use_bf16,
)
from rlhf.rollout import (
    GenerateRolloutEngine,
    RolloutEngine,
    SamplingConfig,
    logprob_temperature,
    render_prompt,
    style_stop_strings,
)
from rlhf.types import Rollouts, TaskBatch, TrainBatch

ROLES = ("hybrid", "rollout", "learner")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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


class PolicyWorker:
    """Model, tokenizer, rollout engine and (unless it only generates) learner of one policy."""

    def __init__(self, config: ExperimentConfig, spec: AlgorithmSpec, *, role: str = "hybrid") -> None:
        if role not in ROLES:
            raise ValueError(f"unknown policy worker role {role!r}; use one of {ROLES}")
        self.config = config
        self.spec = spec
        self.role = role
        torch.set_num_threads(max(1, torch.get_num_threads()))
        seed_everything(config.train.seed)
        # A rollout worker fed merged weights holds the plain base model (no adapter to apply).
        self.merged = role == "rollout" and config.placement.sync == "merged"
        self.model, self.tokenizer = load_policy_model(config, with_lora=not self.merged)
        self.with_critic = spec.needs_critic and role != "rollout"
        if self.with_critic:
            from rlhf.critic import add_critic

            lora = config.lora
            add_critic(
                self.model,
                rank=lora.rank,
                alpha=lora.alpha,
                dropout=lora.dropout,
                target_modules=lora.target_modules,
                use_rslora=lora.use_rslora,
                seed=config.train.seed + 1,
            )
        self.engine: RolloutEngine | None = None
        if role != "learner":
            self.engine = make_engine(config, self.model, self.tokenizer)
            if role == "hybrid" and is_on_policy(config, spec) and hasattr(self.engine, "behaviour_logprobs"):
                self.engine.behaviour_logprobs = False
        self.learner: Learner | None = None
        if role != "rollout":
            from rlhf.critic import critic_parameters

            options = LearnerOptions(
                train=config.train,
                algorithm=config.algorithm,
                temperature=logprob_temperature(config.rollout.temperature),
                max_new_tokens=config.rollout.max_new_tokens,
                spec=spec,
                on_policy=is_on_policy(config, spec),
            )
            policy_params = [p for p in _adapter_params(self.model)]
            self.learner = Learner(
                self.model,
                policy_params,
                options,
                critic_parameters=critic_parameters(self.model) if self.with_critic else None,
            )

    # ------------------------------------------------------------------------------------ rollout

    def render(self, tasks: Sequence[Task]) -> TaskBatch:
        style = self.config.data.prompt_style
        return TaskBatch(tasks=list(tasks), prompts=[render_prompt(self.tokenizer, t, style) for t in tasks])

    def generate(self, tasks: Sequence[Task], sampling: SamplingConfig | None = None) -> Rollouts:
        """Sample completions for ``tasks`` (training sampling settings unless given)."""
        if self.engine is None:
            raise RuntimeError("a learner-only policy worker cannot generate")
        return self.engine.generate(self.render(tasks), sampling or training_sampling(self.config))

    def release_memory(self) -> None:
        if self.engine is not None:
            self.engine.release_memory()

    def engine_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] log-probs of the rollouts' tokens as this worker's rollout engine scores them."""
        if self.engine is None:
            raise RuntimeError("a learner-only policy worker has no rollout engine")
        return self.engine.logprobs(
            rollouts.prompt_ids,
            rollouts.prompt_mask,
            rollouts.completion_ids,
            rollouts.completion_mask,
            logprob_temperature(self.config.rollout.temperature),
        )

    # ------------------------------------------------------------------------------- log-probs

    def policy_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] log-probs of the rollouts' tokens under this worker's current policy (no grad)."""
        return self._per_micro_batch(
            rollouts, lambda *args: completion_logprobs(self.model, *args, **self._lp_kwargs())
        )

    def reference_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] log-probs under the reference policy (the base with adapters disabled)."""
        return self._per_micro_batch(
            rollouts, lambda *args: reference_logprobs(self.model, *args, **self._lp_kwargs())
        )

    def values(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] critic values for PPO."""
        from rlhf.critic import completion_values

        return self._per_micro_batch(rollouts, lambda *args: completion_values(self.model, *args))

    def _lp_kwargs(self) -> dict[str, Any]:
        # Chunk the output head so vocabulary x tokens logits never exist at once.
        return {"temperature": logprob_temperature(self.config.rollout.temperature), "chunk_size": 1024}

    def _per_micro_batch(self, rollouts: Rollouts, function: Any) -> torch.Tensor:
        """Run a no-grad [B, T] computation in row groups that fit the learner's token budget."""
        device = next(self.model.parameters()).device
        width = rollouts.prompt_ids.shape[1] + rollouts.completion_ids.shape[1]
        rows = max(1, self.config.train.micro_batch_tokens // max(width, 1))
        bf16 = use_bf16(self.config.train.bf16, device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        self.model.eval()
        parts = []
        with torch.no_grad(), autocast:
            for start in range(0, len(rollouts), rows):
                picked = [
                    t[start : start + rows].to(device)
                    for t in (
                        rollouts.prompt_ids,
                        rollouts.prompt_mask,
                        rollouts.completion_ids,
                        rollouts.completion_mask,
                    )
                ]
                parts.append(function(*picked).float().cpu())
        return torch.cat(parts)

    # ----------------------------------------------------------------------------------- learning

    def train(self, batch: TrainBatch) -> dict[str, float]:
        if self.learner is None:
            raise RuntimeError("a rollout-only policy worker cannot train")
        self.release_memory()
        return self.learner.step(batch)

    # ------------------------------------------------------------------------------- weight sync

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in adapter_state_dict(self.model, POLICY_ADAPTER).items()}

    def set_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        load_adapter_state_dict(self.model, state, POLICY_ADAPTER)

    def adapter_config(self) -> dict[str, Any]:
        return adapter_config_of(self.model, self.config.model.name_or_path)

    # -------------------------------------------------------------------------------- checkpoints

    def rng_state(self) -> dict[str, Any]:
        """This process's generator states (sampling draws from them), for a checkpoint."""
        return capture_rng()

    def set_rng_state(self, state: dict[str, Any]) -> None:
        restore_rng(state)

    def training_state(self) -> LearnerState:
        """Optimiser, scheduler and critic state for a checkpoint."""
        if self.learner is None:
            return LearnerState()
        state = LearnerState(
            optimizer=self.learner.optimizer.state_dict(),
            scheduler=self.learner.scheduler.state_dict(),
        )
        if self.with_critic:
            from rlhf.critic import critic_state_dict

            state.critic = {k: v.cpu() for k, v in critic_state_dict(self.model).items()}
            state.critic_optimizer = self.learner.critic_optimizer.state_dict()
        return state

    def load_training_state(self, adapter: Mapping[str, torch.Tensor], state: LearnerState) -> None:
        self.set_adapter_state(adapter)
        if self.learner is None:
            return
        if state.optimizer is not None:
            self.learner.optimizer.load_state_dict(state.optimizer)
        if state.scheduler is not None:
            self.learner.scheduler.load_state_dict(state.scheduler)
        if state.critic is not None and self.with_critic:
            from rlhf.critic import load_critic_state_dict

            load_critic_state_dict(self.model, state.critic)
            if state.critic_optimizer is not None:
                self.learner.critic_optimizer.load_state_dict(state.critic_optimizer)


def _adapter_params(model: PeftModel) -> list[torch.nn.Parameter]:
    from rlhf.models import adapter_parameters

    return list(adapter_parameters(model, POLICY_ADAPTER).values())


def is_on_policy(config: ExperimentConfig, spec: AlgorithmSpec) -> bool:
    """One update per rollout batch from the policy that sampled it, so the learner's own first pass
    gives the old log-probs (no extra pass). Not with async rollout, several epochs or mini-batches,
    or a KL penalty folded into the reward (which needs the behaviour log-probs)."""
    algorithm = config.algorithm
    return (
        config.placement.mode == "in_process"
        and not config.placement.async_rollout
        and algorithm.ppo_epochs == 1
        and config.train.mini_batches == 1
        and not (spec.kl_in_reward and algorithm.kl_coef)
    )


def training_sampling(config: ExperimentConfig) -> SamplingConfig:
    rollout = config.rollout
    return SamplingConfig(
        n_samples=rollout.n_samples,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        max_new_tokens=rollout.max_new_tokens,
        stop=tuple(dict.fromkeys([*rollout.stop, *style_stop_strings(config.data.prompt_style)])),
    )


def evaluation_sampling(config: ExperimentConfig) -> SamplingConfig:
    rollout = config.rollout
    return dataclasses.replace(
        training_sampling(config), n_samples=rollout.eval_n_samples, temperature=rollout.eval_temperature
    )


def make_engine(config: ExperimentConfig, model: PeftModel, tokenizer: Any) -> RolloutEngine:
    """The rollout engine the recipe asks for (``auto``: the fast engine on a GPU, else generate)."""
    engine = config.rollout.engine
    on_gpu = next(model.parameters()).device.type == "cuda"
    if engine == "fast" or (engine == "auto" and on_gpu):
        from rlhf.rollout.fast_engine import FastRolloutEngine

        if engine == "fast" or FastRolloutEngine.supports(model):
            return FastRolloutEngine(
                model,
                tokenizer,
                batch_size=config.rollout.batch_size,
                logprob_tokens=config.train.micro_batch_tokens,
                logprob_autocast=use_bf16(config.train.bf16, "cuda" if on_gpu else "cpu"),
            )
    return GenerateRolloutEngine(
        model,
        tokenizer,
        generation_batch_size=config.rollout.batch_size,
        logprob_batch_size=config.rollout.batch_size,
    )
