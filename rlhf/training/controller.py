"""The single controller: the one place that knows the order of a step's arrows.

    TaskBatch --rollout--> Rollouts --rewards--> Scored --algorithm--> TrainBatch --learner--> Update
       ^                                                                                          |
       +------------------------------ weight sync (adapter tensors only) <-----------------------+

With ``rollout.stream_rewards`` each completion goes to the reward stage as soon as the engine has
finished it (:class:`rlhf.scoring.reward_stream.RewardStream`), so scoring runs while the rest of
the batch decodes; the step's ``time_reward_exposed_s`` is the reward time left after generation.

With ``placement.async_rollout`` the rollout of step t+1 is started before step t trains, so
generation and learning overlap; those rollouts come from the policy one update behind, which the
importance ratio (old log-probs = the behaviour log-probs) corrects for. A checkpoint written while
one is in flight keeps it, so a resumed run trains on the same samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from rewards.tasks import Task
from rlhf.algorithms import AlgorithmSpec
from rlhf.algorithms.advantage_step import make_train_batch, reward_spread_metrics
from rlhf.config import ExperimentConfig
from rlhf.distributed.placement import Placement
from rlhf.rollout import CompletionCallback
from rlhf.rollout.recipe import evaluation_sampling
from rlhf.rollout.task_sampler import TaskSampler
from rlhf.scoring.reward_stage import RewardStage, reward_metrics
from rlhf.scoring.reward_stream import RewardStream
from rlhf.types import Rollouts

# The streaming metrics of a step scored after generation (stream off, or a rollout a checkpoint kept).
NOT_STREAMED = {"reward_stream/streamed_fraction": 0.0, "reward_stream/scored_during_generation": 0.0}


class Controller:
    """Drives the placement's worker groups and the reward workers through RL steps."""

    def __init__(
        self,
        config: ExperimentConfig,
        spec: AlgorithmSpec,
        placement: Placement,
        rewards: RewardStage,
        sampler: TaskSampler,
    ) -> None:
        self.config = config
        self.spec = spec
        self.placement = placement
        self.rewards = rewards
        self.sampler = sampler
        self.asynchronous = config.placement.async_rollout
        # A reward stage that only scores whole batches (``score(rollouts)``, e.g. a benchmark's
        # Python reward) has no ``open_stream``: its batches are scored after generation.
        self.streaming = config.rollout.stream_rewards and hasattr(rewards, "open_stream")
        self._pending: Any = None  # the handle of a rollout in flight (async)
        self._ready: Rollouts | None = None  # a finished rollout not trained on yet (async, or resumed)
        self._pending_stream: RewardStream | None = None  # where that rollout's completions went
        self.steps_done = 0

    def step(self, *, last: bool = False) -> dict[str, float]:
        """One RL step; returns its metrics (the keys of metrics.jsonl)."""
        config = self.config
        started = time.perf_counter()
        sync_before = None
        if self._pending is not None or self._ready is not None:
            rollouts, stream = self.pending_rollouts(), self._pending_stream
            self._ready, self._pending_stream = None, None
            sync_before = self.placement.sync()  # rollout workers are idle now: give them the newest policy
        else:
            tasks = self.sampler.next_batch()
            stream = self._open_stream(tasks, config.rollout.n_samples)
            rollouts = self.placement.generate(tasks, on_completion=_handing_to(stream))
        if self.asynchronous and not last:
            tasks = self.sampler.next_batch()
            self._pending_stream = self._open_stream(tasks, config.rollout.n_samples)
            self._pending = self.placement.start_generate(
                tasks, on_completion=_handing_to(self._pending_stream)
            )
        time_generate = time.perf_counter() - started

        started = time.perf_counter()
        scored = self.rewards.score(rollouts) if stream is None else self.rewards.score(rollouts, stream)
        # Exposed: what the step waited for after generation. The whole reward time adds the time
        # completions handed over early were being scored while generation went on.
        time_reward_exposed = time.perf_counter() - started
        time_reward = time_reward_exposed + (stream.hidden_s if stream is not None else 0.0)

        started = time.perf_counter()
        self.steps_done += 1
        measure_kl = (
            config.algorithm.kl_coef > 0 or (self.steps_done - 1) % config.algorithm.kl_metric_every == 0
        )
        ref = self.placement.reference_logprobs(rollouts) if measure_kl else None
        values = self.placement.values(rollouts) if self.spec.needs_critic else None
        batch = make_train_batch(
            scored,
            config.algorithm,
            self.spec,
            max_new_tokens=config.rollout.max_new_tokens,
            ref_logprobs=ref,
            values=values,
        )
        update = self.placement.train(batch) if batch is not None else {"skipped": 1.0}
        time_train = time.perf_counter() - started

        sync = sync_before if self.asynchronous else self.placement.sync()
        tokens = float(rollouts.completion_mask.sum())
        total = time_generate + time_reward_exposed + time_train + (0.0 if sync is None else sync.ms / 1e3)
        learned = batch.metrics if batch is not None else {}
        metrics = {
            **scored.metrics,
            **reward_spread_metrics(scored, config.algorithm, config.rollout.max_new_tokens),
            **completion_metrics(rollouts),
            "time_generate_s": time_generate,
            "time_reward_s": time_reward,
            "time_reward_exposed_s": time_reward_exposed,
            **(stream.metrics if stream is not None else NOT_STREAMED),
            "time_train_s": time_train,
            "time_sync_s": 0.0 if sync is None else sync.ms / 1e3,
            "sync_bytes": 0 if sync is None else sync.bytes,
            "tokens_per_s": tokens / max(total, 1e-9),
            **{k: v for k, v in learned.items() if k != "kl"},
            **{k: v for k, v in update.items() if k not in ("kl", "entropy")},
            **rollouts.metrics,
        }
        # Logged only when measured (KL every algorithm.kl_metric_every steps; neither when filtering
        # left nothing to train on): a step without them has no such key rather than a NaN.
        kl = update.get("kl", learned.get("kl"))
        if kl is not None and math.isfinite(kl):
            metrics["kl"] = float(kl)
        if "entropy" in update:
            metrics["entropy"] = float(update["entropy"])
        return metrics

    def data_position(self) -> dict[str, Any]:
        """Where the data stands for a checkpoint: after the tasks of :meth:`pending_rollouts`."""
        return self.sampler.state_dict()

    def pending_rollouts(self) -> Rollouts | None:
        """The rollout generated ahead for the next step (async), waited for; None when there is none.

        A checkpoint keeps it: regenerated on resume it would come from the newer policy (and the
        rollout workers' generators), and the run would no longer be the one that was interrupted.
        """
        if self._pending is not None:
            self._ready = self.placement.finish_generate(self._pending)
            self._pending = None
        return self._ready

    def restore_pending(self, rollouts: Rollouts | None) -> None:
        """Resume with the rollout a checkpoint kept (see :meth:`pending_rollouts`); it is scored
        after the fact, as nothing of it was streamed in this process."""
        if self._pending_stream is not None:
            self._pending_stream.close()
        self._pending, self._ready, self._pending_stream = None, rollouts, None

    def _open_stream(self, tasks: Sequence[Task], n_samples: int) -> RewardStream | None:
        return self.rewards.open_stream(tasks, n_samples) if self.streaming else None

    def evaluate(self, tasks: Sequence[Task], *, label: str = "eval") -> dict[str, float]:
        """Pass rate, mean speedup and reward of the current policy on ``tasks`` (eval sampling).

        The tasks are generated and scored in chunks of one training step's completions, so a
        progress bar (``label``) can follow them and no batch is larger than training's.
        """
        from tqdm.auto import tqdm

        if self.config.placement.mode == "split":
            self.placement.sync()
        started = time.perf_counter()
        sampling = evaluation_sampling(self.config)
        rollout = self.config.rollout
        chunk = max(1, self.config.data.prompts_per_step * rollout.n_samples // max(sampling.n_samples, 1))
        rewards, lengths = [], []
        with tqdm(total=len(tasks), desc=label, unit="task", leave=False, dynamic_ncols=True) as bar:
            for first in range(0, len(tasks), chunk):
                part = tasks[first : first + chunk]
                stream = self._open_stream(part, sampling.n_samples)
                rollouts = self.placement.generate(part, sampling, on_completion=_handing_to(stream))
                rewards += (
                    self.rewards.rewards_of(rollouts)
                    if stream is None
                    else self.rewards.rewards_of(rollouts, stream)
                )
                lengths += rollouts.completion_lengths.tolist()
                bar.update(len(part))
        metrics = reward_metrics(rewards)
        metrics["completions/mean_length"] = sum(lengths) / max(len(lengths), 1)
        metrics["time_eval_s"] = time.perf_counter() - started
        metrics["tasks"] = float(len(tasks))
        return metrics


def _handing_to(stream: RewardStream | None) -> CompletionCallback | None:
    return None if stream is None else stream.add


def completion_metrics(rollouts: Rollouts) -> dict[str, float]:
    """Completion lengths in tokens, and the share cut off at max_new_tokens (TRL's names)."""
    lengths = rollouts.completion_lengths.float()
    return {
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(rollouts.truncated.float().mean()),
    }
