"""`ExecutionCache`: run each distinct (task, code) pair once, bounded by an LRU in entries and bytes.

Entries are futures, so a pair that is already running is shared rather than run twice, and both the
threaded and the asyncio callers wait on the same execution. Verdicts the sandbox could not reach
(``sandbox_error``) are dropped when they arrive: they say nothing about the code and are worth
retrying.

What a candidate prints is its own to choose, so the cache keeps only what scoring needs: a finished
result is replaced by a copy whose stdout, stderr and error messages are cut to a few hundred bytes
(:func:`slim`), and the cache holds at most ``max_bytes`` of results by :func:`footprint`, evicting the
least recently used beyond it. Without that, 50 submissions printing 1 MB each grew a service by 50 MiB
for good.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import marshal
import pickle
import sys
import threading
import tokenize
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from rewards.tasks import Task
from sandbox.types import ExecutionResult, Status, TestOutcome

ResultFuture = concurrent.futures.Future[ExecutionResult]


# Compiling is the cheapest exact normalisation for ordinary code, but its cost grows with the square
# of how deeply scopes nest (a chain of 1,000 lambdas, 8 KB, took 0.3 s; 128 KB of them stalled a
# service for seconds). Code with more scope keywords than this, or longer than this, is normalised by
# its tokens instead: linear in its length, and pure Python, so other threads keep running meanwhile.
COMPILE_MAX_SCOPES = 128
COMPILE_MAX_BYTES = 64 * 1024


def code_digest(code: str) -> str:
    """A cache key for ``code`` that ignores comments, blank lines, layout and trailing whitespace.

    Ordinary code is compiled (parsed to a syntax tree and compiled, never run) and the code object is
    hashed without its line and column tables, so only what the code does counts (code that reads
    its own line numbers is the one thing this conflates). Code that could make compiling slow (see
    COMPILE_MAX_SCOPES) is hashed as its tokens without comments and blank lines, and code that does
    not tokenize as its text with trailing whitespace and blank lines removed: it fails the same way
    whatever its comments say. Every path takes time linear in the code's length, or close to it.
    """
    payload = None
    if len(code) <= COMPILE_MAX_BYTES and _scope_keywords(code) <= COMPILE_MAX_SCOPES:
        try:
            compiled = compile(code, "<candidate>", "exec", dont_inherit=True)
            # marshal format 2 writes no back-references, whose placement depends on reference counts.
            payload = b"c" + marshal.dumps(_without_positions(compiled), 2)
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
            payload = None
    if payload is None:
        payload = _token_payload(code)
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _scope_keywords(code: str) -> int:
    return sum(code.count(word) for word in ("lambda", "def", "class", "for"))


def _token_payload(code: str) -> bytes:
    parts = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type not in (tokenize.COMMENT, tokenize.NL):
                parts.append(f"{token.type}\x00{token.string}")
        return b"k" + "\x01".join(parts).encode("utf-8", "surrogatepass")
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError, MemoryError):
        lines = (line.rstrip() for line in code.replace("\r\n", "\n").split("\n"))
        return b"t" + "\n".join(line for line in lines if line).encode("utf-8", "surrogatepass")


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


# What a cached result keeps of the text a candidate controls.
KEPT_OUTPUT_CHARS = 512
KEPT_MESSAGE_CHARS = 300
DEFAULT_MAX_BYTES = 256 << 20


def slim(result: ExecutionResult) -> ExecutionResult:
    """``result`` with stdout, stderr and error messages cut to what a verdict needs (for the cache)."""
    return dataclasses.replace(
        result,
        stdout=_cut(result.stdout, KEPT_OUTPUT_CHARS),
        stderr=_cut(result.stderr, KEPT_OUTPUT_CHARS),
        error=None if result.error is None else _cut(result.error, KEPT_MESSAGE_CHARS),
        tests=[
            t
            if t.error is None or len(t.error) <= KEPT_MESSAGE_CHARS
            else TestOutcome(t.passed, _cut(t.error, KEPT_MESSAGE_CHARS))
            for t in result.tests
        ],
    )


def _cut(text: str, limit: int) -> str:
    # The slack keeps a text that was cut already as it is: slim(slim(r)) == slim(r).
    if len(text) <= limit + 48:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters]"


def footprint(result: ExecutionResult) -> int:
    """About how many bytes ``result`` holds (its texts, test outcomes, costs and decoded outputs)."""
    size = 512 + len(result.stdout) + len(result.stderr) + len(result.error or "")
    size += sum(64 + len(t.error or "") for t in result.tests) + 96 * len(result.costs)
    if result.outputs is not None:
        size += _object_bytes(result.outputs)
    return size


def _object_bytes(value: Any) -> int:
    """The size of a decoded value and everything in it (iterative: outputs may be deep)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return total


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ExecutionCache:
    """A thread-safe LRU of result futures keyed by anything hashable (see :func:`task_fingerprint`).

    At most ``max_entries`` entries and ``max_bytes`` of finished results (by :func:`footprint`, after
    :func:`slim`); running entries count once they finish.
    """

    def __init__(self, max_entries: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0 (0 disables caching), got {max_entries}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self.bytes = 0
        self._entries: OrderedDict[Hashable, ResultFuture] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
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
            self._evict(lambda: len(self._entries) > self.max_entries)
        future.add_done_callback(lambda done: self._settle(key, done))
        return future, False

    def _settle(self, key: Hashable, future: ResultFuture) -> None:
        """Keep a finished result in its slim form and count its bytes; drop failures."""
        failed = future.cancelled() or future.exception() is not None
        if failed or future.result().status is Status.SANDBOX_ERROR:
            with self._lock:
                if self._entries.get(key) is future:
                    del self._entries[key]
            return
        kept: ResultFuture = concurrent.futures.Future()
        kept.set_result(slim(future.result()))
        size = footprint(kept.result())
        with self._lock:
            if self._entries.get(key) is not future:
                return  # evicted meanwhile
            self._entries[key] = kept
            self._sizes[key] = size
            self.bytes += size
            self._evict(lambda: self.bytes > self.max_bytes)

    def _evict(self, too_much: Callable[[], bool]) -> None:
        """Drop least recently used entries while ``too_much()``; the caller holds the lock."""
        while self._entries and too_much():
            key, _ = self._entries.popitem(last=False)
            self.bytes -= self._sizes.pop(key, 0)
            self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.bytes = 0
