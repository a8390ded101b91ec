"""Draws the tasks of each step, reproducibly, with a position that checkpoints can save."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from rewards.tasks import Task


class TaskSampler:
    """Epochs over ``tasks`` in a seeded order (a fresh permutation per epoch when ``shuffle``).

    ``state_dict()`` is the data position of a checkpoint: restoring it continues with exactly the
    tasks the uninterrupted run would have drawn next.
    """

    def __init__(self, tasks: Sequence[Task], per_step: int, *, seed: int = 0, shuffle: bool = True) -> None:
        if not tasks:
            raise ValueError("the dataset has no tasks; check data.dataset, data.split and data.limit")
        if per_step < 1:
            raise ValueError(f"prompts per step must be >= 1, got {per_step}")
        self.tasks = list(tasks)
        self.per_step = per_step
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.index = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.tasks)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self) -> list[Task]:
        batch: list[Task] = []
        while len(batch) < self.per_step:
            if self.index >= len(self._order):
                self.epoch += 1
                self.index = 0
                self._order = self._permutation(self.epoch)
            batch.append(self.tasks[self._order[self.index]])
            self.index += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "size": len(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("size") != len(self.tasks) or state.get("seed") != self.seed:
            raise ValueError(
                f"the checkpoint's data position is for {state.get('size')} tasks with seed "
                f"{state.get('seed')}, "
                f"but this run has {len(self.tasks)} tasks with seed {self.seed}; resume with the same data"
            )
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        self._order = self._permutation(self.epoch)
