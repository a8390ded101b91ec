"""`ExecutionCache`: run each distinct (task, code) pair once, bounded by an LRU.

Entries are futures, so a pair that is already running is shared rather than run twice, and both the
threaded and the asyncio callers wait on the same execution. Verdicts the sandbox could not reach
(``sandbox_error``) are dropped when they arrive: they say nothing about the code and are worth
retrying.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import marshal
import pickle
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from rewards.tasks import Task
from sandbox.types import ExecutionResult, Status

ResultFuture = concurrent.futures.Future[ExecutionResult]


def code_digest(code: str) -> str:
    """A cache key for ``code`` that ignores comments, blank lines, layout and trailing whitespace.

    Code that parses is compiled (parsed to a syntax tree and compiled, never run) and the code
    object is hashed without its line and column tables, so only what the code does counts (code
    that reads its own line numbers is the one thing this conflates). That is about four times
    cheaper than unparsing the tree. Code that does not parse is hashed as its text with trailing
    whitespace and blank lines removed: it fails the same way whatever its comments say.
    """
    try:
        compiled = compile(code, "<candidate>", "exec", dont_inherit=True)
        # marshal format 2 writes no back-references, whose placement depends on reference counts.
        payload = b"c" + marshal.dumps(_without_positions(compiled), 2)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        lines = (line.rstrip() for line in code.replace("\r\n", "\n").split("\n"))
        payload = b"t" + "\n".join(line for line in lines if line).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _without_positions(code: types.CodeType) -> types.CodeType:
    consts = tuple(_without_positions(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_linetable=b"", co_firstlineno=1, co_consts=consts)


def task_fingerprint(task: Task) -> str:
    """A digest of everything about ``task`` that decides a verdict (id, entry point, tests, perf tests,
    tolerance).

    Two tasks with one id but different tests (two datasets, two HTTP clients) never share results.
    """
    payload = pickle.dumps(
        (
            task.id,
            task.entry_point,
            task.function_tests,
            task.program_tests,
            task.test_script,
            task.atol,
            task.perf_tests,
        ),
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ExecutionCache:
    """A thread-safe LRU of result futures keyed by anything hashable (see :func:`task_fingerprint`)."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0 (0 disables caching), got {max_entries}")
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._entries: OrderedDict[Hashable, ResultFuture] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_submit(self, key: Hashable, submit: Callable[[], ResultFuture]) -> tuple[ResultFuture, bool]:
        """The cached future for ``key`` (hit) or a new one from ``submit()`` (miss)."""
        with self._lock:
            future = self._entries.get(key)
            if future is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return future, True
            self.stats.misses += 1
        future = submit()
        if self.max_entries == 0:
            return future, False
        with self._lock:
            # Another thread may have submitted the same key meanwhile; keep the first, run both.
            self._entries.setdefault(key, future)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.stats.evictions += 1
        future.add_done_callback(lambda done: self._forget_failures(key, done))
        return future, False

    def _forget_failures(self, key: Hashable, future: ResultFuture) -> None:
        failed = future.cancelled() or future.exception() is not None
        if failed or future.result().status is Status.SANDBOX_ERROR:
            with self._lock:
                if self._entries.get(key) is future:
                    del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
