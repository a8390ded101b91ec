"""Reward streaming: a batch's completions scored while the batch is still being generated.

A rollout engine finishes samples one at a time (EOS, a stop string, the budget) while the others
still decode. A :class:`RewardStream` takes each finished completion as it comes
(:meth:`RewardStream.add`, the placement's ``on_completion``) and starts the expensive part of its
scoring at once on the reward backend: its sandbox run (local sandbox, or the group's Ray reward
actor), or, for a reward service, which shapes the groups of each request itself, the request of
its task as soon as all of that task's samples are in. When generation returns,
:meth:`RewardStream.rewards` hands over whatever did not arrive early, waits for the rest and
shapes the rewards. Group-relative steps (group efficiency baselines; later, GRPO advantages) see
whole groups, so the rewards equal those of :meth:`RewardStage.score` without a stream, sample for
sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch

from rewards.shaping import Reward
from rewards.tasks import Task
from rlhf.types import Rollouts

#: ``score(tasks, completions, group_ids)``: rewards of one call, shaped over the groups it holds.
ScoreCall = Callable[[list[Task], list[str], list[Hashable]], list[Reward]]


class BackendStream(Protocol):
    """What a reward backend offers a stream (:class:`rewards.scorer.ScoringStream`,
    :class:`rewards.ray_pool.PoolStream`, :class:`PerTaskRequests`)."""

    #: wall-clock time each sample's scoring finished (``time.time()``: comparable across processes)
    finished_at: dict[int, float]

    def add(self, index: int, task: Task, completion: str, group: Hashable) -> None: ...

    def rewards(self) -> dict[int, Reward]: ...

    def close(self) -> None: ...


class PerTaskRequests:
    """A backend stream over a scorer that shapes only what one call gives it (the reward service's
    ``/v1/score``).

    The samples of a task go out in one call, on a thread of this stream, as soon as the last of them
    is in. A call then holds whole groups, and every copy of a completion that the batch holds for
    that task, which the service runs once, as it would in one call for the whole batch.
    samples_per_task: how many samples of each task id the batch holds.
    """

    def __init__(self, score: ScoreCall, samples_per_task: Mapping[str, int], *, requests: int = 4) -> None:
        self._score = score
        self._expected = dict(samples_per_task)
        self._members: dict[str, dict[int, tuple[Task, str, Hashable]]] = {}
        self._calls: dict[str, tuple[list[int], Future[list[Reward]]]] = {}
        self._stale: set[str] = set()
        self._requests = ThreadPoolExecutor(requests, thread_name_prefix="reward-requests")
        self.finished_at: dict[int, float] = {}

    def add(self, index: int, task: Task, completion: str, group: Hashable) -> None:
        members = self._members.setdefault(task.id, {})
        members[index] = (task, completion, group)
        if task.id in self._calls:
            self._stale.add(task.id)  # a sample replaced after its task went out: sent again at the end
        elif len(members) == self._expected.get(task.id):
            self._send(task.id)

    def _send(self, task_id: str) -> None:
        members = self._members[task_id]
        indices = sorted(members)
        rows = [members[i] for i in indices]
        call = self._requests.submit(
            self._score, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        )
        self._calls[task_id] = (indices, call)

        def finished(_: Future[list[Reward]]) -> None:
            if self._calls[task_id][1] is call:
                stamp = time.time()
                for index in indices:
                    self.finished_at[index] = stamp

        call.add_done_callback(finished)

    def rewards(self) -> dict[int, Reward]:
        for task_id in self._members:
            if task_id not in self._calls or task_id in self._stale:
                self._send(task_id)
        self._stale.clear()
        out: dict[int, Reward] = {}
        for indices, call in self._calls.values():
            out.update(zip(indices, call.result()))
        return out

    def close(self) -> None:
        self._requests.shutdown(wait=False, cancel_futures=True)


class RewardStream:
    """One batch's completions on their way to the reward backend while the batch generates.

    backend: the reward backend's stream (:meth:`rlhf.scoring.reward_stage.RewardStage.open_stream`
        picks it).
    tasks / n_samples: the batch as the placement will generate it: sample ``i`` answers
        ``tasks[i // n_samples]`` and is in group ``i // n_samples``, the layout of
        :class:`~rlhf.types.Rollouts`.
    answer: a completion's text as it is scored (with the prompt's prefill in front).
    """

    def __init__(
        self,
        backend: BackendStream,
        tasks: Sequence[Task],
        n_samples: int,
        answer: Callable[[Task, str], str],
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.backend = backend
        self.tasks = list(tasks)
        self.n_samples = n_samples
        self._answer = answer
        self._texts: dict[int, str] = {}
        self._handing: list[Future[None]] = []
        # One thread: the caller of `add` (a decode loop) returns at once, and the backend hears of
        # samples in the order they finished (a Ray actor keeps one caller's calls in order).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="reward-stream")
        self.handed_at: dict[int, float] = {}
        self.generation_end: float | None = None
        #: seconds before the end of generation during which some sample handed over early was
        #: being scored: reward work generation hid (set by :meth:`rewards`)
        self.hidden_s = 0.0
        self.metrics: dict[str, float] = {}
        self.closed = False

    def add(self, sample: int, text: str) -> None:
        """Sample ``sample`` finished with ``text`` (what ``Rollouts.texts`` will hold): start scoring
        it. Returns at once; callable from any thread. Once the stream is closed, it does nothing:
        a generation that outlives its stream must not fail for it."""
        if self.closed:
            return
        self.handed_at[sample] = time.time()
        try:
            self._handing.append(self._executor.submit(self._hand_over, sample, text))
        except RuntimeError:  # closed meanwhile, by another thread
            pass

    def _hand_over(self, sample: int, text: str) -> None:
        group = sample // self.n_samples
        task = self.tasks[group]
        self.backend.add(sample, task, self._answer(task, text), group)
        self._texts[sample] = text

    def rewards(self, rollouts: Rollouts) -> list[Reward]:
        """The rewards of ``rollouts`` (the batch the stream was opened for) in order, as scoring them
        without a stream gives them; blocks until all are scored.

        A sample that was not handed over, or whose text is not the one it was handed over with,
        is handed over now, so the rewards are always those of ``rollouts``.
        """
        if self.closed:
            raise RuntimeError("this reward stream is closed; open a new one for each batch")
        self.generation_end = time.time()
        self._check_layout(rollouts)
        for handing in self._handing:
            handing.result()  # the early hand-overs are done, and any error they met is raised here
        late = [i for i, text in enumerate(rollouts.texts) if self._texts.get(i) != text]
        for sample in late:
            self._executor.submit(self._hand_over, sample, rollouts.texts[sample]).result()
        by_index = self.backend.rewards()
        count = len(rollouts)
        early = set(range(count)).difference(late)
        end = self.generation_end
        finished = {i: self.backend.finished_at.get(i, math.inf) for i in early}
        done_early = [i for i in early if finished[i] <= end]
        self.hidden_s = busy_time([(self.handed_at[i], min(finished[i], end)) for i in early])
        self.metrics = {
            "reward_stream/streamed_fraction": len(early) / max(count, 1),
            "reward_stream/scored_during_generation": len(done_early) / max(count, 1),
        }
        self.close()
        return [by_index[i] for i in range(count)]

    def _check_layout(self, rollouts: Rollouts) -> None:
        expected = torch.arange(len(self.tasks)).repeat_interleave(self.n_samples)
        same_tasks = [t.id for t in rollouts.tasks] == [t.id for t in self.tasks]
        if not same_tasks or not torch.equal(rollouts.group_ids.cpu(), expected):
            raise ValueError(
                "these rollouts are not the batch the reward stream was opened for (other tasks, or "
                "not n_samples per task in order); open the stream with the tasks and n_samples the "
                "placement generates"
            )

    def close(self) -> None:
        """Stop taking completions; what was handed over but not collected is dropped."""
        if self.closed:
            return
        self.closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.backend.close()


def busy_time(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: the time at least one of them was open."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total
