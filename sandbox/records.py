"""What a candidate process may write on its result channel, checked by the trusted monitor.

The harness writes one JSON record per line on fd 3 (see :mod:`sandbox.harness`). Until the *start*
record only the harness has run (set-up, compiling the code); after it, candidate code runs in the
same process and can write anything on that descriptor. So the monitor keeps a record only if it has
exactly the shape the harness writes *for the phase the run is in*:

    before start   note, setup_error, fatal (syntax), done (the code never compiled), start
    after start    function jobs: out, exc, fatal (missing_entry_point, exception, memory), done
                   script jobs: fatal, script, done
                   programs: fatal (memory, exception), done; then the program exits and its
                   status and CPU time are read from the kernel (wait4)

Anything else (a line that is not JSON, too deep, a wrong-typed field, an unknown kind, or a
set-up or syntax error written once candidate code runs) is a :class:`Violation`: the candidate's
failure, never a verdict of the sandbox. Standard library only: this runs inside the monitor.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sandbox.codec import MAX_DEPTH

# A tagged value nests two JSON levels per Python level ({"__tuple__": [...]}), plus the record itself.
MAX_JSON_DEPTH = 2 * (MAX_DEPTH + 1) + 4
MAX_MESSAGE_CHARS = 2000
# Values one run may put on its result channel (counted before decoding, from the separators). A wide
# record such as 32 MiB of `[{},{},...]` took the monitor seconds and gigabytes to decode, past the
# host's deadline, and so became `sandbox_error`; now it is the candidate's failure at once. A list of
# a few hundred thousand numbers stays well inside.
MAX_VALUES_PER_RUN = 1_000_000
EXCEPTION_KINDS = frozenset({"exception", "memory", "unserialisable", "too_large"})
FATAL_KINDS_BEFORE_START = frozenset({"syntax"})
FATAL_KINDS_AFTER_START = frozenset({"missing_entry_point", "exception", "memory"})
SCRIPT_KINDS = frozenset({"assertion", "memory", "exception"})


class Violation(ValueError):
    """A record the harness would never write at this point of the run."""


# How the harness writes a return value. Such a line's value is not decoded here at all: it travels to
# the host as raw bytes beside the report and is decoded there (with limits, in linear time, outside
# any run's deadline), so a large but valid output (a reference's expected values) costs the monitor
# nothing, and a hostile one is the candidate's failure when the host decodes it.
_OUTPUT_LINE = re.compile(rb'\{"t":"out","i":(0|[1-9][0-9]{0,8}),"v":')


def output_line(line: bytes) -> tuple[int, bytes] | None:
    """(test index, the value's raw JSON) for a line in the harness's own output format, else None."""
    match = _OUTPUT_LINE.match(line)
    if match is None or not line.endswith(b"}"):
        return None
    return int(match.group(1)), line[match.end() : -1]


def value_count(line: bytes) -> int:
    """An upper bound of the JSON values on ``line``, found without decoding it (C-speed counts)."""
    return line.count(b",") + line.count(b"[") + line.count(b"{") + 1


def parse(line: bytes, *, started: bool, mode: str) -> dict[str, Any]:
    """The validated record on ``line`` for a job of ``mode``; raises :class:`Violation` otherwise."""
    try:
        record = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError, MemoryError):
        raise Violation("a line on the result channel is not a JSON record") from None
    if not isinstance(record, dict):
        raise Violation("a line on the result channel is not a JSON object")
    kind = record.get("t")
    checks = _AFTER_START[mode] if started else _BEFORE_START
    check = checks.get(kind) if isinstance(kind, str) else None
    if check is None:
        phase = "after the candidate's code started" if started else "before the candidate's code started"
        raise Violation(f"a record of kind {str(kind)[:40]!r} {phase}")
    return check(record)


def _no_constant(name: str) -> Any:
    raise ValueError(f"bare {name}: the harness tags non-finite floats")


def _fields(record: dict[str, Any], allowed: set[str]) -> None:
    extra = set(record) - allowed
    if extra:
        raise Violation(f"unexpected fields {sorted(extra)[:5]} in a {record['t']!r} record")


def _message(record: dict[str, Any], required: bool = True) -> str | None:
    message = record.get("msg")
    if message is None and not required:
        return None
    if not isinstance(message, str):
        raise Violation(f"a {record['t']!r} record's message is not a string")
    return message[:MAX_MESSAGE_CHARS]


def _index(record: dict[str, Any]) -> int:
    index = record.get("i")
    if type(index) is not int or index < 0:
        raise Violation(f"a {record['t']!r} record's test index is not a non-negative integer")
    return index


def _one_of(record: dict[str, Any], kinds: frozenset[str]) -> str:
    kind = record.get("kind")
    if kind not in kinds:
        raise Violation(f"a {record['t']!r} record has kind {str(kind)[:40]!r}")
    return kind


def _note(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "msg"})
    return {"t": "note", "msg": _message(record)}


def _setup_error(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "msg"})
    return {"t": "setup_error", "msg": _message(record)}


def _start(record: dict[str, Any]) -> dict[str, Any]:
    return {"t": "start"}  # the monitor takes its own readings; nothing in the record is needed


def _fatal(kinds: frozenset[str]) -> Any:
    def check(record: dict[str, Any]) -> dict[str, Any]:
        _fields(record, {"t", "kind", "msg"})
        return {"t": "fatal", "kind": _one_of(record, kinds), "msg": _message(record)}

    return check


def _done_before_start(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "events"})
    if record.get("events") is not None:
        raise Violation("a 'done' record before the start counts events")
    return {"t": "done", "events": None}


def _done(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "events"})
    events = record.get("events")
    if events is not None and (type(events) is not int or events < 0):
        raise Violation("a 'done' record's event count is not a non-negative integer")
    return {"t": "done", "events": events}


def _out(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "i", "v"})
    if "v" not in record:
        raise Violation("an 'out' record has no value")
    if isinstance(record["v"], (list, dict)) and json_depth(record["v"]) > MAX_JSON_DEPTH:
        raise Violation(f"an output is nested deeper than {MAX_DEPTH} levels")
    return {"t": "out", "i": _index(record), "v": record["v"]}


def _exc(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "i", "kind", "msg"})
    kind = _one_of(record, EXCEPTION_KINDS)
    return {"t": "exc", "i": _index(record), "kind": kind, "msg": _message(record)}


def _script(record: dict[str, Any]) -> dict[str, Any]:
    _fields(record, {"t", "ok", "kind", "msg"})
    ok = record.get("ok")
    if type(ok) is not bool:
        raise Violation("a 'script' record's verdict is not a boolean")
    if ok:
        return {"t": "script", "ok": True}
    return {"t": "script", "ok": False, "kind": _one_of(record, SCRIPT_KINDS), "msg": _message(record)}


_BEFORE_START = {
    "note": _note,
    "setup_error": _setup_error,
    "fatal": _fatal(FATAL_KINDS_BEFORE_START),
    "done": _done_before_start,
    "start": _start,
}
_AFTER_START = {
    "function": {"out": _out, "exc": _exc, "fatal": _fatal(FATAL_KINDS_AFTER_START), "done": _done},
    "script": {"fatal": _fatal(FATAL_KINDS_AFTER_START), "script": _script, "done": _done},
    "program": {"fatal": _fatal(frozenset({"memory", "exception"})), "done": _done},
}


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile value may be very deep)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in item)
    return deepest
