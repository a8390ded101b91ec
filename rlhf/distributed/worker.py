"""The policy worker: one model that generates, scores its own log-probs, and learns.

It is the unit the placements arrange. ``role="hybrid"`` holds the model for both phases (the
colocated "hybrid engine": generation memory is released before training); ``role="rollout"`` only
generates (its adapter arrives by weight sync); ``role="learner"`` only learns. The same class runs
in the driver process (``placement.mode: in_process``) or inside a Ray actor.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from peft import PeftModel

from rewards.tasks import Task
from rlhf.algorithms import AlgorithmSpec
from rlhf.config import ExperimentConfig
from rlhf.learner.host_heap import HEAP
from rlhf.learner.updates import Learner, LearnerOptions, is_on_policy
from rlhf.models.loading import (
    POLICY_ADAPTER,
    adapter_state_dict,
    load_adapter_state_dict,
    use_bf16,
)
from rlhf.models.logprobs import completion_logprobs, reference_logprobs
from rlhf.models.policy_model import adapter_config_of, load_policy_model
from rlhf.rollout import (
    CompletionCallback,
    RolloutEngine,
    SamplingConfig,
    logprob_temperature,
    render_prompt,
)
from rlhf.rollout.generate_engine import completion_text
from rlhf.rollout.recipe import make_engine, training_sampling
from rlhf.training.checkpoint import LearnerState, capture_rng, restore_rng
from rlhf.types import Rollouts, TaskBatch, TrainBatch

ROLES = ("hybrid", "rollout", "learner")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


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
            from rlhf.models.critic import add_critic

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
            from rlhf.models.critic import critic_parameters

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

    def generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> Rollouts:
        """Sample completions for ``tasks`` (training sampling settings unless given).

        ``on_completion(i, text)`` hears of each sample as soon as the engine has finished it, with
        the text ``Rollouts.texts[i]`` will hold.
        """
        if self.engine is None:
            raise RuntimeError("a learner-only policy worker cannot generate")
        sampling = sampling or training_sampling(self.config)
        on_finished = None
        if on_completion is not None:
            stop, tokenizer = tuple(sampling.stop), self.tokenizer

            def on_finished(sample: int, tokens: list[int]) -> None:
                on_completion(sample, completion_text(tokens, stop, tokenizer))

        return self.engine.generate(self.render(tasks), sampling, on_finished=on_finished)

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
        from rlhf.models.critic import completion_values

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
        # On a CPU freed heap memory stays resident (rlhf/learner/host_heap.py): give back what
        # generation freed before the learner's passes, and what they freed before the next
        # generation allocates its buffers, so that neither phase's peak stacks on the other's.
        on_cpu = self.learner.device.type == "cpu"
        if on_cpu:
            HEAP.trim()
        metrics = self.learner.step(batch)
        if on_cpu:
            HEAP.trim()
        return metrics

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
            from rlhf.models.critic import critic_state_dict

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
            from rlhf.models.critic import load_critic_state_dict

            load_critic_state_dict(self.model, state.critic)
            if state.critic_optimizer is not None:
                self.learner.critic_optimizer.load_state_dict(state.critic_optimizer)


def _adapter_params(model: PeftModel) -> list[torch.nn.Parameter]:
    from rlhf.models.loading import adapter_parameters

    return list(adapter_parameters(model, POLICY_ADAPTER).values())
