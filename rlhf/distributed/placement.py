"""Where the policy lives: the worker groups the controller orders around.

- :class:`InProcessPlacement`: one hybrid policy worker in the driver process (no Ray).
- :class:`RayPlacement` ``colocated``: one Ray actor holds the model for generation and learning and
  switches between them (the hybrid engine); the reward workers are Ray actors too.
- :class:`RayPlacement` ``split``: rollout actors and a learner actor hold separate copies; after each
  update the adapter moves by Ray's object store, a torch.distributed broadcast, or as merged weights.

Both implement :class:`Placement`, so :class:`rlhf.training.controller.Controller` never branches on
placement. Both hand each finished completion to ``on_completion`` while the rest still generate:
in process the engine calls it directly; from Ray actors the completions come back through a Ray
streaming generator (:mod:`rlhf.distributed.streamed_generation`).
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from rewards.tasks import Task
from rlhf.algorithms import AlgorithmSpec
from rlhf.config import ExperimentConfig
from rlhf.distributed.streamed_generation import StreamedGeneration, completions_then_rollouts
from rlhf.distributed.weight_sync import SyncReport, layout_of, state_bytes, timed
from rlhf.distributed.worker import PolicyWorker
from rlhf.models.loading import resolve_device
from rlhf.rollout import CompletionCallback, SamplingConfig
from rlhf.rollout.recipe import training_sampling
from rlhf.training.checkpoint import LearnerState
from rlhf.types import Rollouts, TrainBatch


@runtime_checkable
class Placement(Protocol):
    """Where the policy lives: what the controller, the trainer and the warm start ask of it."""

    def start_generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> Any:
        """Start sampling ``tasks`` (training sampling unless given); a handle for ``finish_generate``.

        ``on_completion(i, text)`` hears of each sample of the batch as soon as it is finished (from
        another thread on Ray); all have been heard of when ``finish_generate`` returns.
        """
        ...

    def finish_generate(self, handle: Any) -> Rollouts:
        """The rollouts of a ``start_generate``, waited for."""
        ...

    def generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> Rollouts:
        """Sample ``tasks`` and wait for the rollouts (``on_completion`` as in ``start_generate``)."""
        ...

    def reference_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] log-probs under the reference policy (adapters off), on the learner."""
        ...

    def values(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] critic values (algorithms whose spec needs a critic)."""
        ...

    def train(self, batch: TrainBatch) -> dict[str, float]:
        """One RL step's updates on the learner(s); the step's learner metrics."""
        ...

    def sync(self) -> SyncReport:
        """Bring the rollout side up to the learner's adapter."""
        ...

    def learner_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        """[B, T] log-probs under the learner's current policy."""
        ...

    def rollout_logprobs(self, rollouts: Rollouts) -> list[torch.Tensor]:
        """[B, T] log-probs as each rollout worker's engine scores them (one per worker)."""
        ...

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The learner's policy adapter tensors."""
        ...

    def adapter_config(self) -> dict[str, Any]:
        """The learner's policy adapter's ``adapter_config.json`` content."""
        ...

    def training_state(self) -> LearnerState:
        """The learner's optimiser, scheduler and critic state, for a checkpoint."""
        ...

    def load_training_state(self, adapter: dict[str, torch.Tensor], state: LearnerState) -> None:
        """Set the adapter everywhere and the learner's state (resume, or reset after a warm start)."""
        ...

    def rng_states(self) -> list[dict[str, Any]]:
        """Generator states of the policy actors, for a checkpoint."""
        ...

    def load_rng_states(self, states: list[dict[str, Any]]) -> None:
        """Restore what ``rng_states`` gave."""
        ...

    def close(self) -> None:
        """Release the workers."""
        ...


class InProcessPlacement:
    """Everything in this process: generation and learning share one model, sync is in place."""

    def __init__(self, config: ExperimentConfig, spec: AlgorithmSpec) -> None:
        if config.placement.async_rollout:
            raise ValueError(
                "placement.async_rollout needs rollout and learner in separate processes: set "
                "placement.mode=split"
            )
        if config.placement.sync != "inplace":
            raise ValueError("placement.mode in_process shares one model; set placement.sync=inplace")
        self.config = config
        self.worker = PolicyWorker(config, spec, role="hybrid")

    def start_generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> Rollouts:
        return self.worker.generate(tasks, sampling, on_completion)

    def finish_generate(self, handle: Rollouts) -> Rollouts:
        return handle

    def generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> Rollouts:
        return self.worker.generate(tasks, sampling, on_completion)

    def reference_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        return self.worker.reference_logprobs(rollouts)

    def values(self, rollouts: Rollouts) -> torch.Tensor:
        return self.worker.values(rollouts)

    def train(self, batch: TrainBatch) -> dict[str, float]:
        return self.worker.train(batch)

    def sync(self) -> SyncReport:
        return SyncReport(mode="inplace", bytes=0, ms=0.0)

    def learner_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        return self.worker.policy_logprobs(rollouts)

    def rollout_logprobs(self, rollouts: Rollouts) -> list[torch.Tensor]:
        return [self.worker.engine_logprobs(rollouts)]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return self.worker.adapter_state()

    def adapter_config(self) -> dict[str, Any]:
        return self.worker.adapter_config()

    def training_state(self) -> LearnerState:
        return self.worker.training_state()

    def load_training_state(self, adapter: dict[str, torch.Tensor], state: LearnerState) -> None:
        self.worker.load_training_state(adapter, state)

    def rng_states(self) -> list[dict[str, Any]]:
        """Generator states of the actors; none here (the checkpoint saves this process's own)."""
        return []

    def load_rng_states(self, states: list[dict[str, Any]]) -> None:
        """Nothing to restore: a run resumed in another placement continues, though not bit for bit."""

    def close(self) -> None:
        pass


class PolicyActor(PolicyWorker):
    """A PolicyWorker inside a Ray actor (its methods are the actor's), plus the collective side of
    weight sync."""

    def __init__(self, config: ExperimentConfig, spec: AlgorithmSpec, role: str, threads: int) -> None:
        torch.set_num_threads(threads)
        super().__init__(config, spec, role=role)
        self.device = next(self.model.parameters()).device

    def generate_streamed(
        self, tasks: Sequence[Task], sampling: SamplingConfig | None = None
    ) -> Iterator[tuple[int, str] | Rollouts]:
        """``generate`` as a Ray streaming generator: ``(sample, text)`` for each sample as soon as
        it is finished, then the Rollouts."""
        yield from completions_then_rollouts(lambda report: self.generate(tasks, sampling, report))

    def address(self) -> tuple[str, int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return "127.0.0.1", probe.getsockname()[1]

    def join_group(
        self, address: str, port: int, rank: int, world: int, learners: list[int], sync: list[int]
    ) -> None:
        """Join the run's process group; make the learner replicas' group and the sync group.

        ``new_group`` is collective, so every rank creates both groups, members or not.
        """
        import torch.distributed as dist

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world)
        learner_group = dist.new_group(learners)
        self.sync_group = dist.new_group(sync) if len(sync) > 1 else None
        if rank in learners and len(learners) > 1:
            self.learner.group = learner_group  # type: ignore[union-attr]
            self.learner.replicas = len(learners)  # type: ignore[union-attr]

    def broadcast_adapter(self, layout: list[tuple[str, tuple[int, ...], str]]) -> int:
        from rlhf.distributed.weight_sync import broadcast_state

        source = self.adapter_state() if self.role == "learner" else None
        state = broadcast_state(source, layout, self.device, group=self.sync_group)
        if source is None:
            self.set_adapter_state(state)
        return state_bytes(state)

    def merged_weights(self) -> dict[str, torch.Tensor]:
        from rlhf.distributed.weight_sync import merged_weights

        return merged_weights(self.model)

    def load_merged_weights(self, weights: dict[str, torch.Tensor]) -> None:
        from rlhf.distributed.weight_sync import load_merged_weights

        load_merged_weights(self.model, weights)


class RayPlacement:
    """Policy workers as Ray actors (``colocated`` or ``split``)."""

    def __init__(self, config: ExperimentConfig, spec: AlgorithmSpec) -> None:
        import ray

        placement = config.placement
        if not ray.is_initialized():
            if placement.ray_address:
                ray.init(address=placement.ray_address, ignore_reinit_error=True)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, ignore_reinit_error=True)
        self.ray = ray
        self.config = config
        self.mode = placement.mode
        on_gpu = resolve_device(config.model.device).type == "cuda"
        gpus = (
            placement.num_gpus_per_worker
            if placement.num_gpus_per_worker is not None
            else (1 if on_gpu else 0)
        )
        actor = ray.remote(PolicyActor).options(num_cpus=0, num_gpus=gpus)
        threads = max(1, (os.cpu_count() or 1) // (1 + placement.rollout_workers))
        if self.mode == "colocated":
            if placement.async_rollout:
                raise ValueError(
                    "placement.async_rollout needs placement.mode=split (colocated shares one model)"
                )
            self.learner = actor.remote(config, spec, "hybrid", threads)
            self.learners = [self.learner]
            self.rollouts = [self.learner]
        else:
            self.learners = [
                actor.remote(config, spec, "learner", threads) for _ in range(placement.learner_workers)
            ]
            self.learner = self.learners[0]
            self.rollouts = [
                actor.remote(config, spec, "rollout", threads) for _ in range(placement.rollout_workers)
            ]
            broadcast = placement.sync == "broadcast"
            if broadcast or len(self.learners) > 1:
                members = [*self.learners, *(self.rollouts if broadcast else [])]
                learner_ranks = list(range(len(self.learners)))
                sync_ranks = [0, *range(len(self.learners), len(members))] if broadcast else []
                address, port = ray.get(self.learner.address.remote())
                ray.get([
                    member.join_group.remote(address, port, rank, len(members), learner_ranks, sync_ranks)
                    for rank, member in enumerate(members)
                ])  # fmt: skip
            self.sync()  # the rollout workers start from the learner's (seeded) adapter

    # -------------------------------------------------------------------------------- generation

    def start_generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> list[Any] | StreamedGeneration:
        shards = _shard(list(tasks), len(self.rollouts))
        work = [(worker, shard) for worker, shard in zip(self.rollouts, shards) if shard]
        if on_completion is None:
            return [worker.generate.remote(shard, sampling) for worker, shard in work]
        n_samples = (sampling or training_sampling(self.config)).n_samples
        streams, first = [], 0
        for worker, shard in work:
            streams.append((worker.generate_streamed.remote(shard, sampling), first))
            first += len(shard) * n_samples
        return StreamedGeneration(self.ray, streams, on_completion)

    def finish_generate(self, handle: list[Any] | StreamedGeneration) -> Rollouts:
        if isinstance(handle, StreamedGeneration):
            return concat_rollouts(handle.wait())
        return concat_rollouts(self.ray.get(handle))

    def generate(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig | None = None,
        on_completion: CompletionCallback | None = None,
    ) -> Rollouts:
        return self.finish_generate(self.start_generate(tasks, sampling, on_completion))

    def reference_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        return self.ray.get(self.learner.reference_logprobs.remote(rollouts))

    def values(self, rollouts: Rollouts) -> torch.Tensor:
        return self.ray.get(self.learner.values.remote(rollouts))

    def train(self, batch: TrainBatch) -> dict[str, float]:
        """Each learner replica trains on its shard; gradients meet in an all-reduce (rank 0's metrics)."""
        count = len(self.learners)
        shards = [batch.shard(i, count) for i in range(count)] if count > 1 else [batch]
        results = self.ray.get([w.train.remote(shard) for w, shard in zip(self.learners, shards)])
        return results[0]

    # ------------------------------------------------------------------------------- weight sync

    def sync(self) -> SyncReport:
        mode = self.config.placement.sync
        ray = self.ray
        if self.mode == "colocated":
            return SyncReport(mode="inplace", bytes=0, ms=0.0)
        if mode == "object_store":

            def push() -> int:
                state = ray.get(self.learner.adapter_state.remote())
                reference = ray.put(state)
                ray.get([w.set_adapter_state.remote(reference) for w in self.rollouts])
                return state_bytes(state) * len(self.rollouts)

            return timed(mode, push)
        if mode == "broadcast":

            def broadcast() -> int:
                layout = layout_of(ray.get(self.learner.adapter_state.remote()))
                moved = ray.get([m.broadcast_adapter.remote(layout) for m in [self.learner, *self.rollouts]])
                return int(sum(moved[1:]))

            return timed(mode, broadcast)

        def push_merged() -> int:
            weights = ray.get(self.learner.merged_weights.remote())
            reference = ray.put(weights)
            ray.get([w.load_merged_weights.remote(reference) for w in self.rollouts])
            return state_bytes(weights) * len(self.rollouts)

        return timed(mode, push_merged)

    def learner_logprobs(self, rollouts: Rollouts) -> torch.Tensor:
        return self.ray.get(self.learner.policy_logprobs.remote(rollouts))

    def rollout_logprobs(self, rollouts: Rollouts) -> list[torch.Tensor]:
        return self.ray.get([w.engine_logprobs.remote(rollouts) for w in self.rollouts])

    # ------------------------------------------------------------------------------- checkpoints

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return self.ray.get(self.learner.adapter_state.remote())

    def adapter_config(self) -> dict[str, Any]:
        return self.ray.get(self.learner.adapter_config.remote())

    def training_state(self) -> LearnerState:
        return self.ray.get(self.learner.training_state.remote())

    def load_training_state(self, adapter: dict[str, torch.Tensor], state: LearnerState) -> None:
        self.ray.get([w.load_training_state.remote(adapter, state) for w in self.learners])
        if self.mode == "split":
            self.sync()

    def rng_states(self) -> list[dict[str, Any]]:
        """Generator states of every policy actor (learners, then rollout workers): sampling in an
        actor draws from its own process's generators, which a resumed run must continue."""
        return self.ray.get([actor.rng_state.remote() for actor in self._actors()])

    def load_rng_states(self, states: list[dict[str, Any]]) -> None:
        actors = self._actors()
        if len(states) != len(actors):
            # Another layout (or a checkpoint of an in-process run) resumes, but not bit for bit.
            warnings.warn(
                f"the checkpoint holds the generators of {len(states)} policy actors, this placement has "
                f"{len(actors)}: sampling will not continue exactly as the interrupted run would have",
                stacklevel=2,
            )
            return
        self.ray.get([a.set_rng_state.remote(s) for a, s in zip(actors, states)])

    def _actors(self) -> list[Any]:
        """Each policy actor once (colocated, the learner is the rollout worker)."""
        return list({id(a): a for a in [*self.learners, *self.rollouts]}.values())

    def close(self) -> None:
        for actor in self._actors():
            self.ray.kill(actor)


def make_placement(config: ExperimentConfig, spec: AlgorithmSpec) -> Placement:
    if config.placement.mode == "in_process":
        return InProcessPlacement(config, spec)
    return RayPlacement(config, spec)


def _shard(items: list[Task], parts: int) -> list[list[Task]]:
    size = -(-len(items) // parts)
    return [items[i * size : (i + 1) * size] for i in range(parts)]


def concat_rollouts(parts: Sequence[Rollouts]) -> Rollouts:
    """One Rollouts from several workers' (prompt groups renumbered, paddings widened)."""
    if len(parts) == 1:
        return parts[0]
    width_p = max(p.prompt_ids.shape[1] for p in parts)
    width_c = max(p.completion_ids.shape[1] for p in parts)

    def left(t: torch.Tensor, width: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (width - t.shape[1], 0))

    def right(t: torch.Tensor, width: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    offsets, total = [], 0
    for part in parts:
        offsets.append(total)
        total += len(part.tasks)
    metrics: dict[str, float] = {}
    for part in parts:
        for key, value in part.metrics.items():
            metrics[key] = max(metrics.get(key, value), value) if key.endswith("_s") else value
    return Rollouts(
        tasks=[t for p in parts for t in p.tasks],
        group_ids=torch.cat([p.group_ids + off for p, off in zip(parts, offsets)]),
        prompt_ids=torch.cat([left(p.prompt_ids, width_p) for p in parts]),
        prompt_mask=torch.cat([left(p.prompt_mask, width_p) for p in parts]),
        completion_ids=torch.cat([right(p.completion_ids, width_c) for p in parts]),
        completion_mask=torch.cat([right(p.completion_mask, width_c) for p in parts]),
        behaviour_logprobs=torch.cat([right(p.behaviour_logprobs, width_c) for p in parts]),
        texts=[t for p in parts for t in p.texts],
        truncated=torch.cat([p.truncated for p in parts]),
        metrics=metrics,
    )
