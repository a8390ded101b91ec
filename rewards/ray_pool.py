"""`RayRewardPool`: reward scoring spread over Ray actors, each with its own sandbox and scorer.

For training runs whose rollouts outgrow one machine's sandbox: every actor owns a
:class:`sandbox.Sandbox` (``workers_per_actor`` fork servers) and a :class:`RewardScorer` with its own
cache. A batch is split by group so that the samples of one prompt land on one actor (group-relative
efficiency compares them with each other), groups balanced by size. Ray is imported only here, when
a pool is built.

A batch still being generated can be handed over sample by sample (:meth:`RayRewardPool.open_stream`,
:class:`PoolStream`): each sample starts running on its group's actor as soon as it arrives, and the
groups are shaped once all are in.

    ray.init()
    pool = RayRewardPool(settings, actors=4, workers_per_actor=8)
    rewards = pool.score(tasks, completions, group_ids)
    pool.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import uuid
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rewards.settings import RewardSettings
from rewards.shaping import Reward
from rewards.tasks import Task

if TYPE_CHECKING:
    from rewards.scorer import ScoringStream


class RewardActor:
    """What runs inside each Ray actor: a sandbox and a scorer (plain class; the pool wraps it)."""

    def __init__(self, settings: dict[str, Any], sandbox_overrides: dict[str, Any], cache_size: int) -> None:
        from rewards.scorer import RewardScorer
        from sandbox import Sandbox

        reward_settings = RewardSettings.from_mapping(settings)
        self.sandbox = Sandbox(reward_settings.sandbox_config(**sandbox_overrides))
        self.scorer = RewardScorer(self.sandbox, reward_settings, cache_size=cache_size)
        self.streams: dict[str, tuple[ScoringStream, dict[Hashable, Task]]] = {}

    def score(
        self,
        tasks: list[Task],
        completions: list[str],
        group_ids: list[Hashable],
        extract: bool,
        shaping: dict[str, Any] | None = None,
    ) -> list[Reward]:
        return self.scorer.score(tasks, completions, group_ids, extract=extract, shaping=shaping)

    def stream_add(
        self,
        stream: str,
        index: int,
        completion: str,
        group: Hashable,
        task: Task | None,
        extract: bool,
        shaping: dict[str, Any] | None,
    ) -> None:
        """Start sample ``index`` of ``stream`` (see :class:`PoolStream`); ``task`` comes with the
        first sample of each group only, and is kept for the rest of the group."""
        if stream not in self.streams:
            self.streams[stream] = (self.scorer.open_stream(extract=extract, shaping=shaping), {})
        scoring, tasks = self.streams[stream]
        if task is not None:
            tasks[group] = task
        scoring.add(index, tasks[group], completion, group)

    def stream_rewards(self, stream: str) -> dict[int, tuple[Reward, float | None]]:
        """Rewards of ``stream``'s samples here, with the wall-clock time each run finished; the
        stream is forgotten after."""
        scoring, _ = self.streams.pop(stream)
        rewards = scoring.rewards()
        return {index: (reward, scoring.finished_at.get(index)) for index, reward in rewards.items()}

    def stream_drop(self, stream: str) -> None:
        entry = self.streams.pop(stream, None)
        if entry is not None:
            entry[0].close()

    def info(self) -> dict[str, Any]:
        import os

        return {"pid": os.getpid(), **self.sandbox.info, **self.scorer.stats}

    def close(self) -> None:
        self.sandbox.close()


def shard_by_group(group_ids: Sequence[Hashable], shards: int) -> list[list[int]]:
    """Sample indices per shard: whole groups, largest first onto the least loaded shard."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(group_ids):
        members[group].append(index)
    load = [(0, shard) for shard in range(shards)]
    out: list[list[int]] = [[] for _ in range(shards)]
    for indices in sorted(members.values(), key=len, reverse=True):
        size, shard = heapq.heappop(load)
        out[shard].extend(indices)
        heapq.heappush(load, (size + len(indices), shard))
    return [sorted(indices) for indices in out]


class RayRewardPool:
    """A pool of Ray reward actors with the :class:`RewardScorer` scoring API.

    settings: reward settings every actor scores with.
    actors: number of actors. workers_per_actor: sandbox fork servers per actor (and the CPUs each
        actor asks Ray for, unless ``actor_options`` says otherwise).
    actor_options: passed to ``.options()`` of each actor (resources, scheduling strategy, ...).
    sandbox_overrides: further :class:`SandboxConfig` fields for each actor's sandbox.
    """

    def __init__(
        self,
        settings: RewardSettings | None = None,
        *,
        actors: int = 2,
        workers_per_actor: int = 1,
        actor_options: dict[str, Any] | None = None,
        sandbox_overrides: dict[str, Any] | None = None,
        cache_size: int = 4096,
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency, but may be left out
            raise ImportError("RayRewardPool needs Ray: pip install 'ray[default]'") from exc
        if actors < 1 or workers_per_actor < 1:
            raise ValueError(
                f"actors and workers_per_actor must be >= 1, got {actors} and {workers_per_actor}"
            )
        self.settings = settings or RewardSettings()
        options = {"num_cpus": workers_per_actor, **(actor_options or {})}
        remote = ray.remote(RewardActor).options(**options)
        overrides = {"workers": workers_per_actor, **(sandbox_overrides or {})}
        self._ray = ray
        self.actors = [
            remote.remote(dataclasses.asdict(self.settings), overrides, cache_size) for _ in range(actors)
        ]
        # Fail here, with the actor's own error, if a sandbox cannot start on the cluster.
        ray.get([actor.info.remote() for actor in self.actors])

    def _submit(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        group_ids: Sequence[Hashable] | None,
        extract: bool,
        shaping: Mapping[str, Any] | None,
    ) -> tuple[list[list[int]], list[Any]]:
        if len(tasks) != len(completions):
            raise ValueError(f"got {len(tasks)} tasks but {len(completions)} completions; pass one task each")
        groups = list(group_ids) if group_ids is not None else [task.id for task in tasks]
        shards = [s for s in shard_by_group(groups, len(self.actors)) if s]
        refs = [
            actor.score.remote(
                [tasks[i] for i in shard],
                [completions[i] for i in shard],
                [groups[i] for i in shard],
                extract,
                dict(shaping) if shaping else None,
            )
            for actor, shard in zip(self.actors, shards)
        ]
        return shards, refs

    @staticmethod
    def _merge(count: int, shards: list[list[int]], parts: list[list[Reward]]) -> list[Reward]:
        out: list[Reward | None] = [None] * count
        for shard, rewards in zip(shards, parts):
            for index, reward in zip(shard, rewards):
                out[index] = reward
        return out  # type: ignore[return-value]

    def score(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
        *,
        extract: bool = True,
        shaping: Mapping[str, Any] | None = None,
    ) -> list[Reward]:
        """Rewards in order, as :meth:`RewardScorer.score` gives them; blocks until all actors answer.

        ``shaping`` overrides shaping-only settings for this call, as in :meth:`RewardScorer.score`.
        """
        shards, refs = self._submit(tasks, completions, group_ids, extract, shaping)
        return self._merge(len(tasks), shards, self._ray.get(refs))

    async def ascore(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
        *,
        extract: bool = True,
        shaping: Mapping[str, Any] | None = None,
    ) -> list[Reward]:
        shards, refs = self._submit(tasks, completions, group_ids, extract, shaping)
        parts = await asyncio.gather(*refs)
        return self._merge(len(tasks), shards, list(parts))

    def open_stream(self, *, extract: bool = True, shaping: Mapping[str, Any] | None = None) -> PoolStream:
        """A :class:`PoolStream`: samples handed over one at a time, each run started at once."""
        return PoolStream(self, extract=extract, shaping=shaping)

    def info(self) -> list[dict[str, Any]]:
        """Per actor: its pid, sandbox state and cache counters."""
        return self._ray.get([actor.info.remote() for actor in self.actors])

    def close(self) -> None:
        """Stop every actor's sandbox and the actors."""
        if not self.actors:
            return
        try:
            self._ray.get([actor.close.remote() for actor in self.actors], timeout=60)
        finally:
            for actor in self.actors:
                self._ray.kill(actor)
            self.actors = []

    def __enter__(self) -> RayRewardPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PoolStream:
    """One batch's samples handed to the pool as they arrive (the pool's
    :class:`~rewards.scorer.ScoringStream`).

    Every sample of a group goes to one actor (groups dealt round-robin in order of appearance),
    which starts its run at once and shapes its groups when :meth:`rewards` asks, so group-relative
    efficiency sees whole groups. A task travels once per group, not with every sample. One thread
    adds (Ray keeps one caller's calls to an actor in order), then one collects.
    """

    def __init__(
        self, pool: RayRewardPool, *, extract: bool = True, shaping: Mapping[str, Any] | None = None
    ) -> None:
        self.pool = pool
        self.extract = extract
        self.shaping = dict(shaping) if shaping else None
        self.id = uuid.uuid4().hex
        self.finished_at: dict[int, float] = {}
        self._actor_of: dict[Hashable, Any] = {}
        self._added: list[Any] = []

    def add(self, index: int, task: Task, completion: str, group: Hashable) -> None:
        """Sample ``index`` (``completion`` answering ``task``, in ``group``); its run starts now."""
        actor = self._actor_of.get(group)
        first = actor is None
        if actor is None:
            actors = self.pool.actors
            actor = self._actor_of[group] = actors[len(self._actor_of) % len(actors)]
        self._added.append(
            actor.stream_add.remote(
                self.id, index, completion, group, task if first else None, self.extract, self.shaping
            )
        )

    def rewards(self) -> dict[int, Reward]:
        """Every sample's reward by index, once all have run (blocks until then)."""
        ray = self.pool._ray
        ray.get(self._added)  # every sample has reached its actor (and an actor's error surfaces here)
        actors = list({id(a): a for a in self._actor_of.values()}.values())
        out: dict[int, Reward] = {}
        for part in ray.get([actor.stream_rewards.remote(self.id) for actor in actors]):
            for index, (reward, finished_at) in part.items():
                out[index] = reward
                if finished_at is not None:
                    self.finished_at[index] = finished_at
        self._actor_of.clear()
        return out

    def close(self) -> None:
        """Let the actors forget this stream (after :meth:`rewards` they already have)."""
        for actor in {id(a): a for a in self._actor_of.values()}.values():
            actor.stream_drop.remote(self.id)
        self._actor_of.clear()
