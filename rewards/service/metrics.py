"""Prometheus metrics of the reward service, through ``prometheus_client``.

Each service has a registry of its own (several services may share a process, as tests do), with
the process's own metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open
file descriptors, ...), the interpreter's (``python_info``, ``python_gc_*``) and the service's
(``effirl_*``, docs/reward_service.md). Counters the service keeps elsewhere (the sandbox's
executions, the cache's hits) and gauges (queue depth) are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# name -> (help, value), read at scrape time; see :meth:`Metrics.read_at_scrape`.
Readings = tuple[Mapping[str, tuple[str, float]], Mapping[str, tuple[str, float]]]


class _ScrapeTimeReadings(Collector):
    """Gauges and counters whose values live elsewhere, read when the registry is scraped."""

    def __init__(self, read: Callable[[], Readings]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        gauges, counters = self.read()
        for name, (help_text, value) in gauges.items():
            yield GaugeMetricFamily(name, help_text, value=value)
        for name, (help_text, value) in counters.items():
            yield CounterMetricFamily(name.removesuffix("_total"), help_text, value=value)


class Metrics:
    """The service's metrics; :meth:`render` is the body of ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "effirl_requests",
            "HTTP requests by route and status code.",
            ("route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "effirl_request_duration_seconds",
            "Time from request received to response.",
            ("route",),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.verdicts = Counter(
            "effirl_submissions", "Submissions answered, by verdict.", ("status",), registry=self.registry
        )
        self.rejected = Counter(
            "effirl_rejected", "Requests refused, by reason.", ("reason",), registry=self.registry
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def read_at_scrape(self, read: Callable[[], Readings]) -> None:
        """Expose the (gauges, counters) ``read`` returns, each ``name -> (help, value)``, read at
        every scrape."""
        self.registry.register(_ScrapeTimeReadings(read))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def count_verdict(self, status: str, n: int = 1) -> None:
        self.verdicts.labels(status=status).inc(n)

    def count_rejection(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    def render(self) -> bytes:
        """The exposition text (Prometheus text format; its content type is :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
