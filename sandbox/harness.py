"""What runs inside the candidate process (pid 1 of its run's namespaces), after the box is sealed.

It loads the candidate's code, calls the entry point on each test input, and writes one JSON record
per line to the result channel (fd 3):

    {"t": "start"}                                        written before any candidate code runs; the
                                                          process then blocks until the monitor has
                                                          read its CPU clock
    {"t": "fatal", "kind": "syntax" | "missing_entry_point" | "exception" | "memory", "msg": str}
    {"t": "out", "i": k, "v": <tagged JSON>}              test k returned v
    {"t": "exc", "i": k, "kind": "exception" | "memory" | "unserialisable", "msg": str}
    {"t": "script", "ok": bool, "kind": ..., "msg": str}  assertion-script verdict
    {"t": "done", "events": int | null}                   then blocks until killed (a program exits)

The candidate shares this process, so everything it can reach it can forge; the design makes that
useless: expected values never enter this process (the trusted side compares), the start record is
written before candidate code exists, every record is checked by the monitor for the phase of the
run (sandbox.records), costs are read by the trusted side from the kernel, and a program's exit
status is the one the kernel reports. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

from sandbox import codec

RESULT_FD = 3
_MESSAGE_LIMIT = 2000
# Imported before any candidate runs, so that importing them costs a candidate nothing (and the same
# for every candidate): a solution is not slower because it happened to import `collections`.
PRELOADED = (
    "abc array bisect cmath collections collections.abc contextlib copy dataclasses datetime decimal enum "
    "fractions functools hashlib heapq io itertools json math numbers operator random re statistics string "
    "struct textwrap time types typing unicodedata"
).split()


def preload() -> None:
    for name in PRELOADED:
        __import__(name)


_WARM_UP_JOB = json.dumps(
    {
        "mode": "function",
        "code": "def f(a, b=0):\n    if a == 3:\n        raise ValueError(a)\n"
        "    return [a, b, (a,), {'k': b}]\n",
        "entry_point": "f",
        "inputs": [[[n], {"b": n / 2}] for n in range(4)] + [[[{"__tuple__": [1]}, {"__set__": [2]}], {}]],
        "limits": {"max_result_bytes": 1 << 20},
    }
).encode()


def warm_up(rounds: int = 40) -> None:
    """Run the harness's own code on a made-up job, in the fork server, before the template exists.

    CPython specialises bytecode in place as it runs (3.11+) and caches method lookups in a table of
    its own, so the first runs of the harness write to its code objects and to that table. A candidate
    is a copy-on-write clone of the template, and each page it writes costs a copy (about 2 us on a VM).
    Run here, before the template is forked, those writes happen once in the server: candidates start
    with the harness already specialised. The job is made up; no job's data is in the server yet.
    """
    from sandbox.frames import read_frame, write_frame

    read_end, write_end = os.pipe()
    for _ in range(rounds):
        write_frame(write_end, _WARM_UP_JOB)
        job = json.loads(read_frame(read_end) or b"{}")
        channel = _Channel(lambda fd, data: len(data), job["limits"]["max_result_bytes"])
        inputs = [(codec.from_jsonable(args), codec.from_jsonable(kwargs)) for args, kwargs in job["inputs"]]
        code = compile(job["code"], "<candidate>", "exec", dont_inherit=True)
        channel.record(_start_record())
        _run_function(channel, code, {"__name__": "candidate"}, job["entry_point"], inputs)
        channel.record({"t": "done", "events": None})
    os.close(read_end)
    os.close(write_end)


def run(job: dict[str, Any], max_record_bytes: int) -> None:
    """Execute ``job`` and report through fd 3. Never returns normally: the trusted side stops us."""
    write = os.write  # bound before the candidate can rebind os.write
    channel = _Channel(write, max_record_bytes)
    mode = job["mode"]
    inputs = [
        (codec.from_jsonable(args), codec.from_jsonable(kwargs)) for args, kwargs in job.get("inputs", [])
    ]
    try:
        code = compile(job["code"], "<candidate>", "exec", dont_inherit=True)
        script = (
            compile(job["test_script"], "<test>", "exec", dont_inherit=True) if mode == "script" else None
        )
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        channel.record({"t": "fatal", "kind": "syntax", "msg": _describe(exc)})
        _finish(channel, None)
    namespace: dict[str, Any] = {"__name__": "__main__" if mode == "program" else "candidate"}
    counter = _EventCounter() if job.get("count_events") else None
    channel.record(_start_record())
    # Block until the trusted side has read our CPU clock (and counters): the kernel brings a
    # process's CPU time up to date when it blocks, so the reading is exact, not tick-granular.
    os.read(4, 1)
    if counter is not None:
        counter.start()
    if mode == "function":
        _run_function(channel, code, namespace, job["entry_point"], inputs)
    elif mode == "program":
        _finish_program(channel, _run_program(channel, code, namespace), counter)
    else:
        _run_script(channel, code, script, namespace, job.get("entry_point"))
    _finish(channel, counter)


def _start_record() -> dict[str, Any]:
    return {"t": "start"}


def _run_function(channel: _Channel, code: Any, namespace: dict, entry_point: str, inputs: list) -> None:
    if not _exec_module(channel, code, namespace):
        return
    function = namespace.get(entry_point)
    if not callable(function):
        channel.record(
            {"t": "fatal", "kind": "missing_entry_point", "msg": f"`{entry_point}` is not defined"}
        )
        return
    for index, (args, kwargs) in enumerate(inputs):
        try:
            value = function(*args, **kwargs)
        except MemoryError:
            channel.record({"t": "exc", "i": index, "kind": "memory", "msg": "MemoryError"})
            continue
        except (Exception, SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            # SystemExit is caught too: a candidate calling sys.exit() in a test fails that test.
            channel.record({"t": "exc", "i": index, "kind": "exception", "msg": _describe(exc)})
            continue
        try:
            encoded = codec.to_jsonable(value)
        except (codec.EncodeError, RecursionError, ValueError, MemoryError) as exc:
            channel.record(
                {"t": "exc", "i": index, "kind": "unserialisable", "msg": str(exc)[:_MESSAGE_LIMIT]}
            )
            continue
        channel.record({"t": "out", "i": index, "v": encoded})


def _run_program(channel: _Channel, code: Any, namespace: dict) -> int:
    """Run ``code`` as ``__main__``; the exit status Python itself would end with."""
    try:
        exec(code, namespace)
        _join_threads()
    except SystemExit as exc:
        return _exit_status(exc.code)
    except MemoryError:
        channel.record({"t": "fatal", "kind": "memory", "msg": "MemoryError"})
        return 1
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:  # a candidate may have replaced or closed stderr
            pass
        return 1
    return 0


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _join_threads() -> None:
    # As the interpreter does at exit: a program's non-daemon threads finish its work. Only threads of
    # the `threading` module are joined, so a program that never imported it has none to wait for
    # (importing it here cost every program about a millisecond, inside its measured cost).
    threading = sys.modules.get("threading")
    if threading is None:
        return
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def _finish_program(channel: _Channel, status: int, counter: _EventCounter | None) -> None:
    """Report done, wait for the monitor's reading, then exit with ``status`` for the kernel to tell."""
    events = counter.stop() if counter is not None else None
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        channel.record({"t": "done", "events": events})
        os.read(4, 1)
    finally:
        os._exit(status)


def _run_script(channel: _Channel, code: Any, script: Any, namespace: dict, entry_point: str | None) -> None:
    if not _exec_module(channel, code, namespace):
        return
    try:
        exec(script, namespace)
        if entry_point is not None and callable(namespace.get("check")):
            if entry_point not in namespace:
                channel.record(
                    {"t": "fatal", "kind": "missing_entry_point", "msg": f"`{entry_point}` is not defined"}
                )
                return
            namespace["check"](namespace[entry_point])
    except AssertionError as exc:
        channel.record({"t": "script", "ok": False, "kind": "assertion", "msg": _describe(exc)})
        return
    except MemoryError:
        channel.record({"t": "script", "ok": False, "kind": "memory", "msg": "MemoryError"})
        return
    except BaseException as exc:
        channel.record({"t": "script", "ok": False, "kind": "exception", "msg": _describe(exc)})
        return
    channel.record({"t": "script", "ok": True})


def _exec_module(channel: _Channel, code: Any, namespace: dict) -> bool:
    try:
        exec(code, namespace)
        return True
    except MemoryError:
        channel.record({"t": "fatal", "kind": "memory", "msg": "MemoryError while loading the code"})
    except BaseException as exc:
        channel.record({"t": "fatal", "kind": "exception", "msg": _describe(exc)})
    return False


def _finish(channel: _Channel, counter: _EventCounter | None) -> None:
    events = counter.stop() if counter is not None else None
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # a candidate may have closed or replaced them
            pass
    channel.record({"t": "done", "events": events})
    # Wait to be killed: the trusted side reads our CPU clock and memory high-water mark first.
    while True:
        try:
            os.read(4, 1)
        except BaseException:
            pass
        time.sleep(3600)


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:_MESSAGE_LIMIT]


class _Channel:
    """Newline-delimited JSON records on fd 3, each capped in size."""

    def __init__(self, write: Any, max_record_bytes: int) -> None:
        self._write = write
        self._limit = max_record_bytes

    def record(self, record: dict[str, Any]) -> None:
        try:
            data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
        except (ValueError, TypeError, RecursionError) as exc:
            data = json.dumps(
                {"t": "exc", "i": record.get("i"), "kind": "unserialisable", "msg": str(exc)}
            ).encode()
        if len(data) > self._limit:
            data = json.dumps(
                {"t": "exc", "i": record.get("i"), "kind": "too_large", "msg": f"{len(data)} bytes"}
            ).encode()
        view = memoryview(data + b"\n")
        while view:
            written = self._write(RESULT_FD, view)
            view = view[written:]


class _EventCounter:
    """Counts Python line events: deterministic, but blind to work inside C builtins (e.g. ``x in list``)."""

    def __init__(self) -> None:
        self.count = 0

    def start(self) -> None:
        monitoring = getattr(sys, "monitoring", None)
        if monitoring is not None:
            self._monitoring = monitoring
            monitoring.use_tool_id(monitoring.PROFILER_ID, "effirl")
            monitoring.register_callback(monitoring.PROFILER_ID, monitoring.events.LINE, self._on_line)
            monitoring.set_events(monitoring.PROFILER_ID, monitoring.events.LINE)
        else:
            self._monitoring = None
            sys.settrace(self._trace)

    def _on_line(self, code: Any, line: int) -> None:
        self.count += 1

    def _trace(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.count += 1
        return self._trace

    def stop(self) -> int:
        if self._monitoring is not None:
            self._monitoring.set_events(self._monitoring.PROFILER_ID, 0)
        else:
            sys.settrace(None)
        return self.count
