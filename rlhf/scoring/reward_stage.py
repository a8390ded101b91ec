"""The rewards arrow: Rollouts -> Scored, through the rewards layer's public API.

Three backends with one interface: local sandbox workers in this process (default), a pool of Ray
reward actors (``placement.mode`` colocated/split), or a running reward service
(``reward.service_url``). All three score with the recipe's ``reward`` settings: the service gets them
with every request and refuses what it cannot honour, so a backend never changes a reward.

Each backend also takes a batch while it is still being generated (:meth:`RewardStage.open_stream`,
:mod:`rlhf.scoring.reward_stream`); the rewards are the same either way.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from rewards.settings import RewardSettings
from rewards.shaping import Reward
from rewards.tasks import Task
from rlhf.config import ExperimentConfig
from rlhf.rollout import response_prefix
from rlhf.scoring.reward_stream import BackendStream, PerTaskRequests, RewardStream
from rlhf.types import Rollouts, Scored

PART_NAMES = ("correctness", "efficiency", "format", "penalty")


def reward_settings(config: ExperimentConfig) -> RewardSettings:
    """The recipe's ``reward`` section (a RewardSettings subclass) as the rewards layer's own class."""
    return RewardSettings.from_mapping(config.reward.to_dict())


class RewardStage:
    """Scores rollouts; ``backend`` is ``local``, ``ray`` or ``http`` (``auto`` picks from the config)."""

    def __init__(self, config: ExperimentConfig, *, backend: str = "auto", ray_actors: int = 2) -> None:
        self.config = config
        self.settings = reward_settings(config)
        if backend == "auto":
            if self.settings.service_url:
                backend = "http"
            elif config.placement.mode != "in_process":
                backend = "ray"
            else:
                backend = "local"
        self.backend = backend
        self._sandbox = None
        self._sources: dict[str, tuple[str, str | None]] = {}
        self._streams: weakref.WeakSet[RewardStream] = weakref.WeakSet()
        if backend == "http":
            from rewards.client import RewardClient

            self._scorer: Any = RewardClient(self.settings.service_url)
        elif backend == "ray":
            from rewards.ray_pool import RayRewardPool

            workers = max(1, (self.settings.workers or 2) // ray_actors)
            self._scorer = RayRewardPool(self.settings, actors=ray_actors, workers_per_actor=workers)
        elif backend == "local":
            from rewards.scorer import RewardScorer
            from sandbox import Sandbox

            self._sandbox = Sandbox(self.settings.sandbox_config())
            self._scorer = RewardScorer(self._sandbox, self.settings)
        else:
            raise ValueError(f"unknown reward backend {backend!r}; use local, ray, http or auto")

    def register_tasks(self, tasks: Sequence[Task], dataset: str, split: str | None) -> None:
        """Say which dataset and split tasks come from: a reward service looks tasks up by id in them."""
        for task in tasks:
            self._sources[task.id] = (dataset, split)

    def score_texts(
        self, tasks: Sequence[Task], texts: Sequence[str], group_ids: Sequence[int]
    ) -> list[Reward]:
        """Rewards for completions given as text (the prompt's prefill is prepended here)."""
        answers = [self.answer(task, text) for task, text in zip(tasks, texts)]
        if self.backend == "http":
            return self._score_remotely(tasks, answers, list(group_ids))
        return self._scorer.score(tasks, answers, list(group_ids))

    def answer(self, task: Task, text: str) -> str:
        """A completion's text as it is scored: the prompt's prefill (a code fence the prompt
        opened) in front of what the model wrote."""
        return response_prefix(task, self.config.data.prompt_style) + text

    def open_stream(self, tasks: Sequence[Task], n_samples: int) -> RewardStream:
        """A stream for the batch about to be generated: ``n_samples`` samples of each of ``tasks``,
        in order. Hand it finished completions (:meth:`RewardStream.add`) while the batch generates,
        then pass it to :meth:`score` with the rollouts."""
        backend: BackendStream
        if self.backend == "http":
            per_task = Counter(task.id for task in tasks)
            backend = PerTaskRequests(
                self._score_remotely, {task_id: count * n_samples for task_id, count in per_task.items()}
            )
        else:
            backend = self._scorer.open_stream()
        stream = RewardStream(backend, tasks, n_samples, self.answer)
        self._streams.add(stream)
        return stream

    def _score_remotely(
        self, tasks: Sequence[Task], answers: list[str], group_ids: list[int]
    ) -> list[Reward]:
        from rewards.client import RemoteScorer

        by_source: dict[tuple[str, str | None], list[int]] = {}
        for index, task in enumerate(tasks):
            if task.id not in self._sources:
                raise ValueError(f"task {task.id} was not registered with RewardStage.register_tasks")
            by_source.setdefault(self._sources[task.id], []).append(index)
        rewards: list[Reward | None] = [None] * len(tasks)
        for (dataset, split), rows in by_source.items():
            scorer = RemoteScorer(self._scorer, dataset, split=split, settings=self.settings)
            scored = scorer.score(
                [tasks[i] for i in rows], [answers[i] for i in rows], [group_ids[i] for i in rows]
            )
            for i, reward in zip(rows, scored):
                rewards[i] = reward
        return rewards  # type: ignore[return-value]

    def score(self, rollouts: Rollouts, stream: RewardStream | None = None) -> Scored:
        """``rollouts`` scored; with the ``stream`` they were generated into, the samples it already
        holds are not handed over again (the result is the same)."""
        return to_scored(rollouts, self.rewards_of(rollouts, stream))

    def rewards_of(self, rollouts: Rollouts, stream: RewardStream | None = None) -> list[Reward]:
        """One reward per sample of ``rollouts`` (see :meth:`score`)."""
        if stream is not None:
            return stream.rewards(rollouts)
        tasks = [rollouts.task_of(i) for i in range(len(rollouts))]
        return self.score_texts(tasks, rollouts.texts, rollouts.group_ids.tolist())

    def close(self) -> None:
        for stream in list(self._streams):
            stream.close()
        closer = getattr(self._scorer, "close", None)
        if callable(closer):
            closer()
        if self._sandbox is not None:
            self._sandbox.close()


def to_scored(rollouts: Rollouts, rewards: Sequence[Reward]) -> Scored:
    evidence = [r.evidence.to_dict() for r in rewards]
    values = torch.tensor([r.value for r in rewards], dtype=torch.float32)
    parts = {
        name: torch.tensor([getattr(r, name) for r in rewards], dtype=torch.float32) for name in PART_NAMES
    }
    return Scored(
        rollouts=rollouts, rewards=values, parts=parts, evidence=evidence, metrics=reward_metrics(rewards)
    )


def reward_metrics(rewards: Sequence[Reward]) -> dict[str, float]:
    """``reward`` (the mean; TRL's name), pass_rate, speedup_mean and speedup_geomean (over passing
    samples with a reference), the mean of each reward part and the share of each verdict."""
    n = max(len(rewards), 1)
    passed = [r for r in rewards if r.evidence.status == "passed"]
    speedups = [r.evidence.speedup for r in passed if r.evidence.speedup is not None]
    metrics = {
        "reward": sum(r.value for r in rewards) / n,
        "pass_rate": len(passed) / n,
        "speedup_mean": sum(speedups) / len(speedups) if speedups else float("nan"),
        "speedup_geomean": _geomean(speedups),
    }
    for name in PART_NAMES:
        metrics[f"reward/{name}"] = sum(getattr(r, name) for r in rewards) / n
    statuses: dict[str, int] = {}
    for r in rewards:
        statuses[r.evidence.status] = statuses.get(r.evidence.status, 0) + 1
    for status, count in statuses.items():
        metrics[f"status/{status}"] = count / n
    return metrics


def _geomean(values: Sequence[float]) -> float:
    import math

    positive = [v for v in values if v and v > 0]
    if not positive:
        return float("nan")
    return math.exp(sum(math.log(v) for v in positive) / len(positive))
