"""The data the sandbox takes and returns.

Everything here is plain, picklable and JSON-friendly so results can cross process, Ray and HTTP
boundaries unchanged. Expected outputs live only in these host-side objects: the sandboxed child
receives test *inputs*, never expectations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Verdict of one execution. The string values are part of the HTTP API."""

    PASSED = "passed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"
    RUNTIME_ERROR = "runtime_error"
    SYNTAX_ERROR = "syntax_error"
    SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True)
class FunctionTest:
    """Call the entry point with ``args`` (and ``kwargs``); the result must equal ``expected``."""

    args: tuple[Any, ...] | list[Any]
    expected: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgramTest:
    """Run the whole program with ``stdin``; its stdout must equal ``expected_stdout``.

    Comparison ignores trailing whitespace on each line and trailing blank lines, as online judges do.
    """

    stdin: str
    expected_stdout: str


@dataclass(frozen=True)
class TestOutcome:
    """What happened on one test. ``error`` is a short message; expected values are never echoed."""

    passed: bool
    error: str | None = None


@dataclass(frozen=True)
class Cost:
    """What the candidate's own work cost, measured by the trusted side.

    cpu_ns: CPU time (user + system, all threads) from the first line of candidate code until the
        last test returned, interpreter and harness start-up excluded.
    wall_ns: wall-clock time over the same span.
    peak_memory_bytes: peak resident memory the run added over the warm interpreter it forked from.
    instructions: hardware instructions retired (perf_event_open), None where the kernel forbids it.
    python_events: deterministic count of Python line events, None unless requested.
    """

    cpu_ns: int
    wall_ns: int
    peak_memory_bytes: int
    instructions: int | None = None
    python_events: int | None = None

    @property
    def cpu_s(self) -> float:
        return self.cpu_ns / 1e9


@dataclass
class ExecutionResult:
    """The verdict of one submission and the evidence behind it.

    ``outputs`` holds the decoded return values of each test call, only when the caller asked for
    them (``Sandbox.call_function``), e.g. to turn a reference solution into expected outputs.
    ``costs`` lists every repeat's cost; ``cost`` is their aggregate (min by default).
    ``error_kind`` names what went wrong in a machine-readable way: ``syntax``, ``missing_entry_point``,
    ``exception``, ``memory``, ``timeout``, ``early_exit``, ``output_limit``, ``wrong_output``,
    ``assertion``, ``protocol_violation`` (the code wrote something on the sandbox's result channel
    that the harness never writes), ``inconsistent_runs`` (repeats of a reference returned different
    values) or ``sandbox``. ``exit_code`` is a program's exit status as the kernel reported it
    (minus the signal number if a signal ended it); None for function and script jobs.
    """

    status: Status
    passed: int = 0
    total: int = 0
    tests: list[TestOutcome] = field(default_factory=list)
    cost: Cost | None = None
    costs: list[Cost] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    error_kind: str | None = None
    outputs: list[Any] | None = None
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.PASSED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (outputs are left out: they may not be JSON-representable)."""
        return {
            "status": self.status.value,
            "passed": self.passed,
            "total": self.total,
            "tests": [{"passed": t.passed, "error": t.error} for t in self.tests],
            "cost": None if self.cost is None else _cost_dict(self.cost),
            "costs": [_cost_dict(c) for c in self.costs],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
            "error_kind": self.error_kind,
            "exit_code": self.exit_code,
        }


def _cost_dict(cost: Cost) -> dict[str, Any]:
    return {
        "cpu_ns": cost.cpu_ns,
        "wall_ns": cost.wall_ns,
        "peak_memory_bytes": cost.peak_memory_bytes,
        "instructions": cost.instructions,
        "python_events": cost.python_events,
    }
