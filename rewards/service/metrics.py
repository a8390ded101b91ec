"""Prometheus text-format metrics of the reward service (no client library needed)."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Mapping

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Cumulative-bucket histogram as Prometheus exposes it."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        wrapped = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{wrapped} {self.sum!r}")
        out.append(f"{name}_count{wrapped} {self.count}")
        return out


class Metrics:
    """Counters and histograms the service updates; :meth:`render` writes the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.verdicts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, Histogram()).observe(seconds)

    def count_verdict(self, status: str, n: int = 1) -> None:
        with self._lock:
            self.verdicts[status] += n

    def count_rejection(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def render(
        self, gauges: Mapping[str, tuple[str, float]], counters: Mapping[str, tuple[str, float]]
    ) -> str:
        """The exposition text; ``gauges``/``counters`` map a metric name to (help, value)."""
        lines: list[str] = []
        with self._lock:
            lines += _header("effirl_requests_total", "counter", "HTTP requests by route and status code.")
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'effirl_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += _header(
                "effirl_request_duration_seconds", "histogram", "Time from request received to response."
            )
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("effirl_request_duration_seconds", f'route="{route}"')
            lines += _header("effirl_submissions_total", "counter", "Submissions answered, by verdict.")
            for status, n in sorted(self.verdicts.items()):
                lines.append(f'effirl_submissions_total{{status="{status}"}} {n}')
            lines += _header("effirl_rejected_total", "counter", "Requests refused, by reason.")
            for reason, n in sorted(self.rejected.items()):
                lines.append(f'effirl_rejected_total{{reason="{reason}"}} {n}')
        for name, (help_text, value) in counters.items():
            lines += [*_header(name, "counter", help_text), f"{name} {value!r}"]
        for name, (help_text, value) in gauges.items():
            lines += [*_header(name, "gauge", help_text), f"{name} {value!r}"]
        return "\n".join(lines) + "\n"


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
