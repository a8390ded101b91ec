"""What this machine's kernel allows: each isolation level and measurement counter, tried for real."""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.config import ISOLATION_LEVELS, WEAK_LEVELS, SandboxConfig
from sandbox.pool import Sandbox
from sandbox.types import FunctionTest, Status
from sandbox.worker import SandboxUnavailable

# The candidate's pid and uid as it sees them (a worker-scope candidate has no /proc to read its uid
# map from; its uid outside is read by the host, see docs/sandbox.md).
_PROBE = "import os\ndef probe():\n    return [os.getpid(), os.getuid()]\n"


@dataclass(frozen=True)
class LayerReport:
    name: str
    available: bool
    detail: str
    level: str | None = None  # the isolation level (None: a counter)


def working_levels(reports: list[LayerReport]) -> list[str]:
    """The isolation levels that started and ran the probe (namespaces: in its default, worker scope)."""
    levels: dict[str, bool] = {}
    for report in reports:
        if report.level is not None:
            levels.setdefault(report.level, report.available)
    return [level for level, ok in levels.items() if ok]


def probe_isolation(levels: tuple[str, ...] = ISOLATION_LEVELS) -> list[LayerReport]:
    """Start a one-worker sandbox per level, run a probe inside, and report what worked.

    The reports come in the order of ``levels`` (namespaces in both scopes), then the instruction
    counter; ``LayerReport.level`` names the isolation level a report is about.
    """
    reports: list[LayerReport] = []
    for level in levels:
        scopes = ("worker", "run") if level == "namespaces" else ("worker",)
        for scope in scopes:
            name = f"{level} ({scope} scope)" if level == "namespaces" else level
            config = SandboxConfig(
                workers=1, isolation=level, namespace_scope=scope, allow_weak_isolation=level in WEAK_LEVELS
            )
            try:
                with Sandbox(config) as box:
                    result = box.call_function(_PROBE, "probe", [()])
            except SandboxUnavailable as exc:
                reports.append(LayerReport(name, False, str(exc), level))
                continue
            if result.status is not Status.PASSED:
                reports.append(LayerReport(name, False, f"probe failed: {result.error}", level))
                continue
            pid, uid = result.outputs[0]
            weak = " (weak: does not contain untrusted code)" if level in WEAK_LEVELS else ""
            detail = f"candidate pid {pid}, uid {uid} inside its box{weak}"
            reports.append(LayerReport(name, True, detail, level))
    reports.append(_counter_report())
    return reports


def _counter_report() -> LayerReport:
    try:
        with Sandbox(SandboxConfig(workers=1, count_instructions=True)) as box:
            result = box.run_function_tests("def f():\n    return 1\n", "f", [FunctionTest((), 1)])
    except SandboxUnavailable as exc:
        return LayerReport("hardware instruction counter", False, str(exc))
    if result.cost is not None and result.cost.instructions is not None:
        return LayerReport("hardware instruction counter", True, f"{result.cost.instructions} instructions")
    return LayerReport(
        "hardware instruction counter",
        False,
        "perf_event_open refused here; costs use CPU time (the default)",
    )
