"""What every rollout engine offers, and the sampling settings it takes.

An engine turns a :class:`~rlhf.types.TaskBatch` (tasks plus rendered prompt strings) into
:class:`~rlhf.types.Rollouts`. Between phases the controller asks it to free its generation memory
(the colocated "hybrid engine": the learner and the generator share one GPU in turns), and after each
learner update the weight-sync layer hands it the new policy adapter with ``set_adapter_state``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from rlhf.types import Rollouts, TaskBatch

#: ``on_finished(sample, token_ids)``: an engine calls it once per sample, as soon as that sample is
#: finished, with its completion's token ids cut where the completion ends (EOS or stop string kept,
#: as in :class:`~rlhf.types.Rollouts`), so later stages can start on it while the rest decode.
FinishedCallback = Callable[[int, list[int]], None]
#: ``on_completion(sample, text)``: the same, one stage later, with the completion's text (what
#: ``Rollouts.texts`` holds); what a policy worker or a placement hands the reward stage.
CompletionCallback = Callable[[int, str], None]


class SamplingOptions(Protocol):
    """Any object with these attributes configures sampling (e.g. :class:`SamplingConfig`, or the
    recipe's rollout section)."""

    n_samples: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    stop: tuple[str, ...] | list[str]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample completions.

    n_samples: completions per prompt (a GRPO group); sample ``i`` answers prompt ``i // n_samples``.
    temperature: logits are divided by it before sampling; 0 means greedy decoding (behaviour
        log-probs are then taken at temperature 1).
    top_p: nucleus sampling mass in (0, 1]; 1 samples from the whole distribution. Behaviour
        log-probs are those of the temperature-scaled distribution, before the nucleus cut.
    top_k: sample among the k most likely tokens only (before the nucleus cut); 0 keeps all.
        Behaviour log-probs are taken before this cut too.
    max_new_tokens: generation budget per completion; a completion that uses it all without EOS or
        a stop string is ``truncated``.
    stop: strings that end a completion; it is cut right after the first one, which it keeps.
    """

    n_samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()


def check_sampling(config: SamplingOptions) -> None:
    """Raise a ValueError that names the bad setting, if any."""
    if int(config.n_samples) < 1:
        raise ValueError(f"rollout.n_samples must be >= 1, got {config.n_samples}")
    if config.temperature < 0:
        raise ValueError(f"rollout.temperature must be >= 0 (0 = greedy), got {config.temperature}")
    if not 0.0 < config.top_p <= 1.0:
        raise ValueError(f"rollout.top_p must be in (0, 1], got {config.top_p}")
    if int(config.top_k) < 0:
        raise ValueError(f"rollout.top_k must be >= 0 (0 keeps every token), got {config.top_k}")
    if int(config.max_new_tokens) < 1:
        raise ValueError(f"rollout.max_new_tokens must be >= 1, got {config.max_new_tokens}")
    if isinstance(config.stop, str):
        raise ValueError(f"rollout.stop must be a list of strings, got the string {config.stop!r}")
    if any(not isinstance(s, str) or not s for s in config.stop):
        raise ValueError(f"rollout.stop must hold non-empty strings, got {list(config.stop)!r}")


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples completions for a batch of prompts with the current policy."""

    def generate(
        self, batch: TaskBatch, config: SamplingOptions, *, on_finished: FinishedCallback | None = None
    ) -> Rollouts:
        """``config.n_samples`` completions per prompt of ``batch``, with behaviour log-probs.

        ``on_finished`` is called once per sample (index in the Rollouts, cut token ids) as soon as
        the engine knows that sample is finished, on the calling thread; it should return quickly.
        """
        ...

    def set_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the policy adapter's tensors (keys as :func:`rlhf.models.loading.adapter_state_dict`)."""
        ...

    def release_memory(self) -> None:
        """Free generation-time memory (KV cache, allocator blocks) before another phase runs."""
        ...
