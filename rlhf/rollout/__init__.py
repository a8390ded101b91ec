"""Rollout: from a TaskBatch of rendered prompts to Rollouts (completions and behaviour log-probs).

``engine`` defines the :class:`RolloutEngine` interface and :class:`SamplingConfig`;
``generate_engine`` implements it on transformers' ``generate``; ``fast_engine`` implements it with a
static KV cache and CUDA graphs for Llama/Qwen2-style models (import it from there: it is not
loaded with this package); ``prompts`` renders tasks into prompt strings.
"""

from rlhf.rollout.engine import (
    CompletionCallback,
    FinishedCallback,
    RolloutEngine,
    SamplingConfig,
    SamplingOptions,
)
from rlhf.rollout.generate_engine import GenerateRolloutEngine
from rlhf.rollout.prompts import PROMPT_STYLES, render_prompt, response_prefix, style_stop_strings
from rlhf.rollout.sampling import logprob_temperature

__all__ = [
    "PROMPT_STYLES",
    "CompletionCallback",
    "FinishedCallback",
    "GenerateRolloutEngine",
    "RolloutEngine",
    "SamplingConfig",
    "SamplingOptions",
    "logprob_temperature",
    "render_prompt",
    "response_prefix",
    "style_stop_strings",
]
