"""The data that flows along one RL step (see docs/architecture.md).

    TaskBatch --rollout--> Rollouts --rewards--> Scored --algorithm--> TrainBatch --learner--> Update

Each stage reads the previous stage's dataclass and returns its own; none reaches back. Tensors are
batch-first. ``B`` is the number of samples (prompts x n_samples), ``P`` the padded prompt length,
``T`` the padded completion length.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from rewards.tasks import Task


@dataclass
class TaskBatch:
    """Tasks drawn from a dataset for one step; ``prompts`` are the rendered model inputs."""

    tasks: list[Task]
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass
class Rollouts:
    """Sampled completions. Sample ``i`` answers prompt ``group_ids[i]`` of its TaskBatch.

    prompt_ids / prompt_mask: [B, P], left-padded.
    completion_ids / completion_mask: [B, T], right-padded; the mask covers generated tokens up to and
        including EOS or the stop string.
    behaviour_logprobs: [B, T], log-probs of the sampled tokens under the policy that sampled them
        (temperature applied), 0 where masked.
    truncated: [B] bool, True when generation hit max_new_tokens without finishing.
    """

    tasks: list[Task]
    group_ids: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    behaviour_logprobs: torch.Tensor
    texts: list[str]
    truncated: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)

    def task_of(self, sample: int) -> Task:
        return self.tasks[int(self.group_ids[sample])]

    def select(self, index: torch.Tensor) -> Rollouts:
        """The samples at ``index`` (a bool mask or integer index), e.g. after group filtering."""
        pick = lambda t: t[index]
        idx = index.nonzero().flatten().tolist() if index.dtype == torch.bool else index.tolist()
        return replace(
            self,
            group_ids=pick(self.group_ids),
            prompt_ids=pick(self.prompt_ids),
            prompt_mask=pick(self.prompt_mask),
            completion_ids=pick(self.completion_ids),
            completion_mask=pick(self.completion_mask),
            behaviour_logprobs=pick(self.behaviour_logprobs),
            texts=[self.texts[i] for i in idx],
            truncated=pick(self.truncated),
        )


@dataclass
class Scored:
    """One reward per sample, its named parts, and the sandbox's evidence.

    rewards: [B] float. parts: name -> [B] float (correctness, efficiency, format, penalty, ...).
    evidence: one dict per sample (status, passed, total, cost, reference_cost, speedup).
    """

    rollouts: Rollouts
    rewards: torch.Tensor
    parts: dict[str, torch.Tensor]
    evidence: list[dict[str, Any]]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainBatch:
    """Everything the loss functions need, aligned on completion tokens ([B, T] unless noted).

    advantages: per-token advantages (outcome methods broadcast one value over the sequence).
    returns / old_values: PPO only (None otherwise).
    ref_logprobs: log-probs under the reference policy when a KL term is used, else None.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.completion_ids.shape[0])

    def shard(self, index: int, count: int) -> TrainBatch:
        """The ``index``-th of ``count`` contiguous row shards (for data-parallel learners)."""
        size = len(self)
        start, end = size * index // count, size * (index + 1) // count
        pick = lambda t: None if t is None else t[start:end]
        return replace(
            self,
            prompt_ids=pick(self.prompt_ids),
            prompt_mask=pick(self.prompt_mask),
            completion_ids=pick(self.completion_ids),
            completion_mask=pick(self.completion_mask),
            old_logprobs=pick(self.old_logprobs),
            advantages=pick(self.advantages),
            returns=pick(self.returns),
            old_values=pick(self.old_values),
            ref_logprobs=pick(self.ref_logprobs),
        )


@dataclass
class Update:
    """The outcome of one learner step: metrics only; the adapter itself changed in place."""

    metrics: dict[str, float]
