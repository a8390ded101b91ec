"""`Admission`: the bounded queue of the reward service, counted in submissions.

A request reserves one slot per submission before any work starts and is refused whole when the
slots are not there (the caller gets 503 with Retry-After). Each slot is freed when its submission's
execution finishes, not when the response is sent, so work left running by a request that timed out
still counts against the bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

RATE_WINDOW_S = 10.0


class Admission:
    """A thread-safe counter of submissions accepted and not yet executed."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.in_flight = 0
        self.accepted = 0
        self.completed = 0
        self._lock = threading.Lock()
        self._finished_at: deque[float] = deque(maxlen=65536)

    def try_acquire(self, n: int) -> bool:
        with self._lock:
            if self.in_flight + n > self.capacity:
                return False
            self.in_flight += n
            self.accepted += n
            return True

    def release(self, n: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            if n > self.in_flight:
                raise RuntimeError(f"released {n} slots but only {self.in_flight} are held")
            self.in_flight -= n
            self.completed += n
            self._finished_at.extend([now] * min(n, self._finished_at.maxlen or n))

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely drained enough to take new work (1 to 60).

        Estimated from the completions of the last ``RATE_WINDOW_S`` seconds.
        """
        now = time.monotonic()
        with self._lock:
            while self._finished_at and self._finished_at[0] < now - RATE_WINDOW_S:
                self._finished_at.popleft()
            if not self._finished_at:
                return 1 if self.in_flight == 0 else 5
            span = min(RATE_WINDOW_S, max(now - self._finished_at[0], 0.1))
            rate = len(self._finished_at) / span
            return int(min(60, max(1, math.ceil(self.in_flight / rate))))
