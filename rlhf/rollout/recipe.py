"""The rollout side of a recipe: its sampling settings (training and evaluation) and its engine."""

from __future__ import annotations

import dataclasses
from typing import Any

from peft import PeftModel

from rlhf.config import ExperimentConfig
from rlhf.models.loading import use_bf16
from rlhf.rollout.engine import RolloutEngine, SamplingConfig
from rlhf.rollout.generate_engine import GenerateRolloutEngine
from rlhf.rollout.prompts import style_stop_strings


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
                fuse_kernels=config.rollout.compile_kernels,
                steps_per_sync=config.rollout.steps_per_sync if on_gpu else 1,
                logprob_tokens=config.train.micro_batch_tokens,
                logprob_autocast=use_bf16(config.train.bf16, "cuda" if on_gpu else "cpu"),
            )
    return GenerateRolloutEngine(
        model,
        tokenizer,
        generation_batch_size=config.rollout.batch_size,
        logprob_batch_size=config.rollout.batch_size,
    )
