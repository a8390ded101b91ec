"""Finished completions out of a Ray policy actor while it still generates.

Inside the actor, :func:`completions_then_rollouts` runs the worker's ``generate`` on a thread of its
own and yields each completion as the engine reports it finished, then the rollouts. The actor's
method that yields them is a Ray streaming generator, so each item reaches the driver as soon as it
is yielded, while the actor goes on generating. On the driver, :class:`StreamedGeneration` drains each
actor's generator on a thread and hands every completion to ``on_completion`` under its index in the
whole batch, so the reward side (in the driver, or its Ray reward actors) starts on it at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rlhf.rollout import CompletionCallback
from rlhf.types import Rollouts


def completions_then_rollouts(
    generate: Callable[[CompletionCallback], Rollouts],
) -> Iterator[tuple[int, str] | Rollouts]:
    """``(sample, text)`` for each sample as ``generate(on_completion)`` finishes it, then its Rollouts.

    ``generate`` runs on another thread, so the items come out while it still runs; its error, if
    any, is raised here after the completions it reported.
    """
    finished: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["rollouts"] = generate(lambda sample, text: finished.put((sample, text)))
        except BaseException as exc:  # handed to the consumer below, in its thread
            outcome["error"] = exc
        finally:
            finished.put(None)

    thread = threading.Thread(target=run, name="generate", daemon=True)
    thread.start()
    while (item := finished.get()) is not None:
        yield item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["rollouts"]


class StreamedGeneration:
    """Generation on Ray policy actors whose finished completions reach ``on_completion`` early.

    streams: per actor, the generator its streaming method returned and the index, in the whole
        batch, of its first sample (its shard's samples follow in order).
    :meth:`wait` gives each actor's Rollouts once every completion has been handed on.
    """

    def __init__(
        self, ray: Any, streams: Sequence[tuple[Any, int]], on_completion: CompletionCallback
    ) -> None:
        self._ray = ray
        self._on_completion = on_completion
        self._parts: list[Rollouts | None] = [None] * len(streams)
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(
                target=self._drain,
                args=(part, generator, first),
                name=f"generation-stream-{part}",
                daemon=True,
            )
            for part, (generator, first) in enumerate(streams)
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, part: int, generator: Any, first: int) -> None:
        try:
            for ref in generator:
                item = self._ray.get(ref)
                if isinstance(item, Rollouts):
                    self._parts[part] = item
                else:
                    sample, text = item
                    self._on_completion(first + sample, text)
        except BaseException as exc:  # raised again by wait(), in the caller's thread
            self._errors.append(exc)

    def wait(self) -> list[Rollouts]:
        """Each actor's Rollouts, in order; raises the first error an actor met."""
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]
        missing = [part for part, rollouts in enumerate(self._parts) if rollouts is None]
        if missing:
            raise RuntimeError(f"policy actors {missing} ended their generation stream without rollouts")
        return [rollouts for rollouts in self._parts if rollouts is not None]
