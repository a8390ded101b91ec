"""The three kinds of work a sandbox accepts, and how each becomes fork-server executions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandbox import codec
from sandbox.types import FunctionTest, ProgramTest


class JobError(ValueError):
    """A job that cannot be run as given (bad types, unencodable inputs, too large)."""


@dataclass(frozen=True)
class FunctionJob:
    """Load ``code``, call ``entry_point`` on each test's arguments, compare with the expectations.

    With ``want_outputs`` the decoded return values come back in ``ExecutionResult.outputs`` (how a
    reference solution turns test inputs into expected outputs); expectations are then optional.
    """

    code: str
    entry_point: str
    tests: Sequence[FunctionTest]
    atol: float | None = None
    timeout_s: float | None = None
    repeats: int | None = None
    want_outputs: bool = False


@dataclass(frozen=True)
class ProgramJob:
    """Run ``code`` as a program once per test with the test's stdin; compare stdout."""

    code: str
    tests: Sequence[ProgramTest]
    timeout_s: float | None = None
    repeats: int | None = None


@dataclass(frozen=True)
class ScriptJob:
    """Run ``code`` then ``test_script`` in one namespace (e.g. HumanEval's ``check(candidate)``).

    A weaker trust level: the test shares a process with the candidate, which can subvert it. Use
    function tests where the verdict matters (rewards).
    """

    code: str
    test_script: str
    entry_point: str | None = None
    timeout_s: float | None = None


Job = FunctionJob | ProgramJob | ScriptJob


def function_payload(job: FunctionJob) -> dict[str, Any]:
    _check_text(job.code, "code")
    if not isinstance(job.entry_point, str) or not job.entry_point.isidentifier():
        raise JobError(f"entry_point must be a Python identifier, got {job.entry_point!r}")
    inputs = []
    for index, test in enumerate(job.tests):
        if not isinstance(test, FunctionTest):
            raise JobError(f"test {index} must be a FunctionTest, got {type(test).__name__}")
        if not isinstance(test.args, (list, tuple)):
            raise JobError(
                f"test {index}: args must be a list or tuple of arguments, got {type(test.args).__name__}"
            )
        try:
            inputs.append([codec.to_jsonable(list(test.args)), codec.to_jsonable(dict(test.kwargs))])
        except codec.EncodeError as exc:
            raise JobError(f"test {index}: arguments cannot be sent to the sandbox: {exc}") from None
    return {"mode": "function", "code": job.code, "entry_point": job.entry_point, "inputs": inputs}


def program_payload(code: str, stdin: str) -> dict[str, Any]:
    _check_text(code, "code")
    _check_text(stdin, "stdin")
    return {"mode": "program", "code": code, "stdin": stdin}


def script_payload(job: ScriptJob) -> dict[str, Any]:
    _check_text(job.code, "code")
    _check_text(job.test_script, "test_script")
    return {
        "mode": "script",
        "code": job.code,
        "test_script": job.test_script,
        "entry_point": job.entry_point,
    }


def encode(
    payload: dict[str, Any], limits: dict[str, Any], *, count_events: bool, instructions: bool
) -> bytes:
    """One execution as the fork server takes it: a line for the monitor, then the candidate's job.

    The monitor reads the first line only (the mode, limits, stdin and whether to count
    instructions) and forwards the rest untouched, so it never parses the code or the test inputs;
    stdin goes to the monitor alone, which feeds it to the program. JSON text holds no raw newline.
    """
    job = {key: value for key, value in payload.items() if key != "stdin"}
    job.update(limits=limits, count_events=count_events)
    monitor = {"mode": payload["mode"], "limits": limits, "instructions": instructions}
    if payload.get("stdin"):
        monitor["stdin"] = payload["stdin"]
    compact = {"separators": (",", ":")}
    return json.dumps(monitor, **compact).encode() + b"\n" + json.dumps(job, **compact).encode()


def _check_text(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise JobError(f"{name} must be a string, got {type(value).__name__}")
