"""Trusted verdicts: turn fork-server reports into :class:`ExecutionResult`.

Runs on the host. The expected values live here only; the candidate's outputs arrive as tagged JSON
and are compared with :func:`sandbox.compare.outputs_match`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandbox import codec
from sandbox.compare import exact_equal, outputs_match
from sandbox.types import Cost, ExecutionResult, FunctionTest, ProgramTest, Status, TestOutcome

# JSON objects in one run's return values (dicts, sets, tuples, big ints and other tagged values).
# The largest of HumanEval+ and MBPP+ hold 108,821 (Mbpp/255); numbers and lists are not counted.
MAX_OBJECTS_PER_RUN = 250_000
_FATAL_STATUS = {
    "syntax": Status.SYNTAX_ERROR,
    "missing_entry_point": Status.RUNTIME_ERROR,
    "memory": Status.MEMORY_EXCEEDED,
    "exception": Status.RUNTIME_ERROR,
}


def cost_of(report: dict[str, Any]) -> Cost | None:
    """The trusted cost in a report, or None if the run did not complete."""
    if "cpu_ns" not in report:
        return None
    return Cost(
        cpu_ns=int(report["cpu_ns"]),
        wall_ns=int(report["wall_ns"]),
        peak_memory_bytes=int(report.get("peak_memory_bytes") or 0),
        instructions=report.get("instructions"),
        python_events=_events(report),
    )


def _events(report: dict[str, Any]) -> int | None:
    done = next((r for r in report.get("records", ()) if r.get("t") == "done"), None)
    value = None if done is None else done.get("events")
    return value if isinstance(value, int) else None


def aggregate_costs(costs: Sequence[Cost], how: str) -> Cost | None:
    """Combine repeated measurements field by field (``min`` or ``median``)."""
    if not costs:
        return None
    pick = min if how == "min" else lambda values: int(statistics.median(values))

    def field(name: str) -> int | None:
        values = [getattr(c, name) for c in costs if getattr(c, name) is not None]
        return pick(values) if values else None

    return Cost(
        cpu_ns=field("cpu_ns") or 0,
        wall_ns=field("wall_ns") or 0,
        peak_memory_bytes=field("peak_memory_bytes") or 0,
        instructions=field("instructions"),
        python_events=field("python_events"),
    )


def _run_failure(report: dict[str, Any]) -> tuple[Status, str, str] | None:
    """Status, error kind and message when the run as a whole did not get to run the tests.

    Records reach here validated by the monitor for the phase they were written in: a set-up error
    or a syntax error can only come from before the candidate's code started (sandbox.records).
    """
    outcome = report.get("outcome")
    records = report.get("records", [])
    if outcome == "sandbox_error":
        return Status.SANDBOX_ERROR, "sandbox", report.get("msg", "sandbox error")
    if outcome == "violation":
        return (
            Status.RUNTIME_ERROR,
            "protocol_violation",
            f"the code interfered with the sandbox's result channel: {report.get('msg')}",
        )
    setup = next((r for r in records if r.get("t") == "setup_error"), None)
    if setup is not None:
        return Status.SANDBOX_ERROR, "sandbox", f"sandbox setup failed: {setup.get('msg')}"
    fatal = next((r for r in records if r.get("t") == "fatal"), None)
    if fatal is not None and fatal.get("kind") in _FATAL_STATUS:
        return _FATAL_STATUS[fatal["kind"]], fatal["kind"], str(fatal.get("msg", ""))
    if outcome == "timeout":
        return Status.TIMEOUT, "timeout", "time limit exceeded"
    if outcome == "output_limit":
        return Status.FAILED, "output_limit", "return values exceed the sandbox's max_result_bytes"
    if outcome == "exited":
        if not any(r.get("t") == "start" for r in records):
            return (
                Status.SANDBOX_ERROR,
                "sandbox",
                f"candidate process ended before starting ({report.get('exit')})",
            )
        return (
            Status.RUNTIME_ERROR,
            "early_exit",
            f"the program ended before finishing its tests ({report.get('exit')})",
        )
    return None


@dataclass(frozen=True)
class _Judged:
    """One run's verdict."""

    status: Status
    kind: str | None
    message: str | None
    outcomes: list[TestOutcome]
    outputs: list[Any]


def judge_function(
    reports: Sequence[dict[str, Any]],
    tests: Sequence[FunctionTest],
    *,
    atol: float | None,
    want_outputs: bool,
    cost_aggregate: str,
) -> ExecutionResult:
    """Verdict for a function-call job.

    Every run is judged the same way: a repeat whose cost counts must pass as the first did, and a
    reference run (``want_outputs``) must return the same outputs every time. The first run that
    fails decides the verdict.
    """
    runs = [_judge_function_run(r, tests, atol, want_outputs) for r in reports]
    verdict = runs[0]
    for number, run in enumerate(runs[1:], start=2):
        if verdict.status is not Status.PASSED:
            break
        if run.status is not Status.PASSED:
            message = f"run {number} of {len(runs)}: {run.message}"
            verdict = _Judged(run.status, run.kind, message, run.outcomes, run.outputs)
        elif want_outputs and not all(exact_equal(a, b) for a, b in zip(run.outputs, verdict.outputs)):
            message = f"run {number} of {len(runs)} returned other values than the first"
            outcomes = [TestOutcome(False, "outputs differ between runs")] * len(tests)
            verdict = _Judged(Status.FAILED, "inconsistent_runs", message, outcomes, verdict.outputs)
    passed = sum(o.passed for o in verdict.outcomes)
    return _result(
        reports,
        verdict.status,
        passed,
        len(tests),
        verdict.outcomes,
        verdict.kind,
        verdict.message,
        cost_aggregate,
        verdict.outputs if want_outputs else None,
    )


def _judge_function_run(
    report: dict[str, Any], tests: Sequence[FunctionTest], atol: float | None, want_outputs: bool
) -> _Judged:
    total = len(tests)
    by_index: dict[int, dict[str, Any]] = {}
    for record in report.get("records", []):
        index = record.get("i")
        if record.get("t") in ("out", "exc") and isinstance(index, int) and 0 <= index < total:
            by_index.setdefault(index, record)
    outcomes: list[TestOutcome] = []
    outputs: list[Any] = []
    saw_memory = saw_exception = too_many_objects = False
    # JSON objects (dicts and tagged values) are what makes return values slow to decode: about 2 us
    # each against a fraction of that for a number, so within max_result_bytes alone one run could
    # cost the host 20 s (32 MiB of "{},"). They are counted before anything is decoded.
    objects_left = MAX_OBJECTS_PER_RUN
    for index, test in enumerate(tests):
        record = by_index.get(index)
        if record is None:
            outcomes.append(TestOutcome(False, "no result"))
            outputs.append(None)
            continue
        if record["t"] == "exc":
            saw_memory |= record.get("kind") == "memory"
            saw_exception |= record.get("kind") == "exception"
            outcomes.append(TestOutcome(False, str(record.get("msg", "error"))))
            outputs.append(None)
            continue
        blob = record.get("b")
        if isinstance(blob, int):
            objects_left -= report["blobs"][blob].count(b"{")  # C speed, before any decoding
            if objects_left < 0:
                too_many_objects = True
                outcomes.append(TestOutcome(False, "return values over the object limit (not decoded)"))
                outputs.append(None)
                continue
        try:
            if isinstance(blob, int):
                value = codec.loads(report["blobs"][blob])  # the raw value the candidate wrote
            else:
                value = codec.from_jsonable(record.get("v"))
        except codec.DecodeError as exc:
            outcomes.append(TestOutcome(False, f"malformed output: {exc}"))
            outputs.append(None)
            continue
        outputs.append(value)
        if want_outputs or outputs_match(value, test.expected, atol):
            outcomes.append(TestOutcome(True))
        else:
            outcomes.append(TestOutcome(False, "wrong output"))
    passed = sum(o.passed for o in outcomes)
    failure = _run_failure(report)
    if failure is not None:
        status, kind, message = failure
    elif too_many_objects:
        status, kind, message = (
            Status.FAILED,
            "output_limit",
            f"return values hold more than {MAX_OBJECTS_PER_RUN:,} JSON objects in all",
        )
    elif saw_memory:
        status, kind, message = Status.MEMORY_EXCEEDED, "memory", "MemoryError in a test"
    elif passed == total:
        status, kind, message = Status.PASSED, None, None
    elif saw_exception:
        status, kind, message = (
            Status.RUNTIME_ERROR,
            "exception",
            next(o.error for o in outcomes if not o.passed),
        )
    else:
        status, kind, message = Status.FAILED, "wrong_output", f"{total - passed} of {total} tests failed"
    return _Judged(status, kind, message, outcomes, outputs)


def normalise_stdout(text: str) -> str:
    """Online-judge normalisation: trailing spaces per line and trailing blank lines do not count."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").rstrip().split("\n"))


def judge_program(
    runs: Sequence[Sequence[dict[str, Any]]], tests: Sequence[ProgramTest], *, cost_aggregate: str
) -> ExecutionResult:
    """``runs[r][k]`` is repeat ``r`` of test ``k``; every repeat is judged like the first.

    A test passes when the program exits with status 0, as the kernel reports it, and its stdout
    matches. ``exit_code`` is the status of the first test that failed (0 when all passed).
    """
    judged = [[_judge_program_run(report, test) for test, report in zip(tests, run)] for run in runs]
    verdict = judged[0]
    for number, run in enumerate(judged[1:], start=2):
        if any(status is not Status.PASSED for status, *_ in verdict):
            break
        verdict = [
            (status, TestOutcome(False, f"run {number}: {outcome.error}"), code)
            if status is not Status.PASSED
            else (status, outcome, code)
            for status, outcome, code in run
        ]
    outcomes = [outcome for _, outcome, _ in verdict]
    statuses = [status for status, _, _ in verdict]
    status = _worst(statuses) if statuses else Status.PASSED
    failing = next((item for item in verdict if item[0] is not Status.PASSED), None)
    first = runs[0]
    costs = [_sum_costs(run) for run in runs]
    result = ExecutionResult(
        status=status,
        passed=sum(o.passed for o in outcomes),
        total=len(tests),
        tests=outcomes,
        costs=[c for c in costs if c is not None],
        stdout=first[0].get("stdout", "") if first else "",
        stderr=first[0].get("stderr", "") if first else "",
        error=None if failing is None else failing[1].error,
        error_kind=None if status is Status.PASSED else _kind_for(status),
        exit_code=(failing[2] if failing is not None else 0) if first else None,
    )
    if status is not Status.PASSED and failing is not None:
        result.error_kind = _kind_of(first, failing)
    result.cost = aggregate_costs(result.costs, cost_aggregate)
    return result


def _kind_of(first: Sequence[dict[str, Any]], failing: tuple[Status, TestOutcome, int | None]) -> str:
    status, outcome, _ = failing
    if outcome.error and "output limit" in outcome.error:
        return "output_limit"
    if outcome.error and "result channel" in outcome.error:
        return "protocol_violation"
    return _kind_for(status)


def _judge_program_run(report: dict[str, Any], test: ProgramTest) -> tuple[Status, TestOutcome, int | None]:
    """One program run on one test: its status, outcome and exit status (None if it never exited)."""
    code = report.get("exit_code")
    records = report.get("records", [])
    ran = report.get("outcome") == "exited" and any(r.get("t") == "start" for r in records)
    if not ran:
        failure = _run_failure(report)
        if failure is None:  # cannot happen for a program; judged as the sandbox's failure to say why
            failure = (Status.SANDBOX_ERROR, "sandbox", f"program run ended as {report.get('outcome')!r}")
        return failure[0], TestOutcome(False, failure[2]), code
    if code != 0:
        memory = any(r.get("t") == "fatal" and r.get("kind") == "memory" for r in records)
        if memory:
            return Status.MEMORY_EXCEEDED, TestOutcome(False, "MemoryError"), code
        return Status.RUNTIME_ERROR, TestOutcome(False, f"the program ended with {report.get('exit')}"), code
    if report.get("stdout_overflow"):
        return Status.FAILED, TestOutcome(False, "output limit exceeded"), code
    if normalise_stdout(report.get("stdout", "")) == normalise_stdout(test.expected_stdout):
        return Status.PASSED, TestOutcome(True), code
    return Status.FAILED, TestOutcome(False, "wrong output"), code


def judge_script(reports: Sequence[dict[str, Any]], *, cost_aggregate: str) -> ExecutionResult:
    report = reports[0]
    verdict = next((r for r in report.get("records", []) if r.get("t") == "script"), None)
    failure = _run_failure(report)
    if failure is not None:
        status, kind, message = failure
    elif verdict is None:
        status, kind, message = Status.SANDBOX_ERROR, "sandbox", "the test script gave no verdict"
    elif verdict.get("ok"):
        status, kind, message = Status.PASSED, None, None
    elif verdict.get("kind") == "memory":
        status, kind, message = Status.MEMORY_EXCEEDED, "memory", verdict.get("msg")
    elif verdict.get("kind") == "assertion":
        status, kind, message = Status.FAILED, "assertion", verdict.get("msg")
    else:
        status, kind, message = Status.RUNTIME_ERROR, "exception", verdict.get("msg")
    passed = int(status is Status.PASSED)
    outcome = TestOutcome(bool(passed), None if passed else message)
    return _result(reports, status, passed, 1, [outcome], kind, message, cost_aggregate, None)


_SEVERITY = [
    Status.SANDBOX_ERROR,
    Status.SYNTAX_ERROR,
    Status.TIMEOUT,
    Status.MEMORY_EXCEEDED,
    Status.RUNTIME_ERROR,
    Status.FAILED,
    Status.PASSED,
]


def _worst(statuses: Sequence[Status]) -> Status:
    return min(statuses, key=_SEVERITY.index)


def _kind_for(status: Status) -> str:
    return {
        Status.SYNTAX_ERROR: "syntax",
        Status.TIMEOUT: "timeout",
        Status.MEMORY_EXCEEDED: "memory",
        Status.RUNTIME_ERROR: "exception",
        Status.SANDBOX_ERROR: "sandbox",
    }.get(status, "wrong_output")


def _sum_costs(reports: Sequence[dict[str, Any]]) -> Cost | None:
    costs = [cost_of(r) for r in reports]
    if not costs or any(c is None for c in costs):
        return None
    return Cost(
        cpu_ns=sum(c.cpu_ns for c in costs),
        wall_ns=sum(c.wall_ns for c in costs),
        peak_memory_bytes=max(c.peak_memory_bytes for c in costs),
        instructions=None
        if any(c.instructions is None for c in costs)
        else sum(c.instructions for c in costs),
        python_events=None
        if any(c.python_events is None for c in costs)
        else sum(c.python_events for c in costs),
    )


def _result(
    reports: Sequence[dict[str, Any]],
    status: Status,
    passed: int,
    total: int,
    outcomes: list[TestOutcome],
    kind: str | None,
    message: str | None,
    cost_aggregate: str,
    outputs: list[Any] | None,
) -> ExecutionResult:
    costs = [c for c in (cost_of(r) for r in reports) if c is not None]
    return ExecutionResult(
        status=status,
        passed=passed,
        total=total,
        tests=outcomes,
        cost=aggregate_costs(costs, cost_aggregate),
        costs=costs,
        stdout=reports[0].get("stdout", ""),
        stderr=reports[0].get("stderr", ""),
        error=message,
        error_kind=kind,
        outputs=outputs,
    )
