"""One execution: a sealed candidate process and the trusted side that watches it.

The fork server holds a :class:`Box` per execution: a candidate its template cloned ahead of time
(pid 1 of its own pid namespace, with its own mount namespace, /tmp and /proc; see
:mod:`sandbox.candidate`), whose parent is the fork server, and the pipes to it. Under bubblewrap the
Box starts a fresh boxed interpreter instead. Whoever holds the Box is the *monitor*.

When the job comes, the monitor forwards it, feeds stdin, reads the result records (fd 3; each one
validated by :mod:`sandbox.records`), stdout and stderr with size caps, enforces the wall-clock
deadline, and reads the candidate's CPU clock from the kernel at the two moments the candidate is
blocked waiting for it: after its start record (before any candidate code ran) and after its done
record. A program's end is its exit: the monitor reads the exit status and the CPU time from
``wait4``. Then it kills the candidate, which, as pid 1 of its namespace, takes everything it started
with it. The monitor never runs candidate code, and the candidate can neither see nor signal it.
Standard library only.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from typing import Any

from sandbox import namespaces, readings, records
from sandbox.candidate import Settings
from sandbox.frames import write_frame

_STDIO_CHUNK = 65536
BLOBS = "blobs"  # a report's raw return values (see sandbox.frames.encode_report)


class Box:
    """A sealed candidate process waiting for its job, and the pipes to it."""

    def __init__(
        self,
        settings: Settings,
        proc_fd: int,
        *,
        pid: int | None = None,
        fds: tuple[int, ...] = (),
        work_dir: str = "/tmp",
    ) -> None:
        """Adopt a candidate the template cloned (``pid`` and the monitor's ends of its pipes: result,
        stdout, stderr, job, stdin), or under bubblewrap start one."""
        self.settings = settings
        self.proc_fd = proc_fd
        self.work_dir = work_dir
        self.launcher_pid: int | None = None
        if pid is not None:
            self.pid = pid
            self.result_r, self.out_r, self.err_r, self.job_w, self.stdin_w = fds
        else:
            self.result_r, result_w = os.pipe()
            self.out_r, out_w = os.pipe()
            self.err_r, err_w = os.pipe()
            job_r, self.job_w = os.pipe()
            stdin_r, self.stdin_w = os.pipe()
            child_fds = (stdin_r, out_w, err_w, result_w, job_r)
            self.launcher_pid, self.pid = _spawn_bwrap(settings.bwrap_command, child_fds)
            for fd in child_fds:
                os.close(fd)
        self.reaped = False

    def run(self, frame: bytes) -> dict[str, Any]:
        """Hand the job over and watch it; returns the report (the candidate is then stopped).

        ``frame`` is :func:`sandbox.jobs.encode`'s: the monitor's line, then the candidate's job.
        """
        header, _, job_bytes = frame.partition(b"\n")
        job = json.loads(header)
        try:
            write_frame(self.job_w, job_bytes)
        except BrokenPipeError:
            return {"outcome": "sandbox_error", "msg": "the candidate process died before its job came"}
        return _watch(self, job)

    def reap(self) -> tuple[int, Any]:
        """Kill the candidate and everything it started; its wait status and resource usage."""
        _kill(self.pid)
        self.reaped = True
        if self.launcher_pid is not None:
            return os.waitpid(self.launcher_pid, 0)[1], None
        _, status, usage = os.wait4(self.pid, 0)
        return status, usage

    def close(self) -> None:
        """Stop everything of this execution; a working directory of its own is removed."""
        if not self.reaped:
            try:
                self.reap()
            except ChildProcessError:
                pass
        for fd in (self.result_r, self.out_r, self.err_r, self.job_w, self.stdin_w):
            try:
                os.close(fd)
            except OSError:
                pass
        # Under namespaces and bubblewrap /tmp is a tmpfs of the run's own mount namespace.
        if self.work_dir != "/tmp":
            _wipe(self.work_dir)


def _wipe(path: str) -> None:
    """Remove ``path`` and everything under it, whatever permissions the candidate left on it."""
    import shutil
    import stat

    def unlock(function: Any, target: str, _exc: Any) -> None:
        # A directory the candidate made unreadable or unwritable: its owner (us) may open it again.
        for folder in (os.path.dirname(target), target):
            try:
                if stat.S_ISDIR(os.lstat(folder).st_mode):
                    os.chmod(folder, 0o700)
            except OSError:
                pass
        try:
            if function in (os.open, os.scandir, os.listdir):
                shutil.rmtree(target, ignore_errors=True)
            else:
                function(target)
        except OSError:
            pass

    shutil.rmtree(path, **{"onexc" if sys.version_info >= (3, 12) else "onerror": unlock})


class _Run:
    """What the monitor has learnt about the running candidate: its records and the kernel's readings."""

    def __init__(self, box: Box, job: dict[str, Any], deadline: float) -> None:
        self.box = box
        self.mode = job["mode"]
        self.deadline = deadline
        self.counter = readings.HardwareCounter(box.pid) if job.get("instructions") else None
        self.records: list[dict[str, Any]] = []
        self.marks: dict[str, Any] = {}
        self.started = False
        self.done = False
        self.released = False
        self.values = 0
        self.blobs: list[bytes] = []  # raw return values, decoded by the host (records.output_line)
        self.violation: str | None = None

    def take(self, buffer: bytearray) -> None:
        """Handle the complete records in ``buffer``; sets ``done`` or ``violation`` when one ends the run."""
        while not (self.done and self.mode != "program") and self.violation is None:
            newline = buffer.find(b"\n")
            if newline < 0:
                return
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            if self.done:
                # A program's end is its exit, read from the kernel: records after a done record (the
                # harness's own after a forged one) change nothing.
                continue
            output = records.output_line(line) if self.started and self.mode == "function" else None
            if output is not None:
                self.records.append({"t": "out", "i": output[0], "b": len(self.blobs)})
                self.blobs.append(output[1])
                continue
            self.values += records.value_count(line)
            if self.values > records.MAX_VALUES_PER_RUN:
                self.violation = f"more than {records.MAX_VALUES_PER_RUN:,} values on the result channel"
                return
            try:
                record = records.parse(line, started=self.started, mode=self.mode)
            except records.Violation as exc:
                self.violation = str(exc)
                return
            self._on(record)

    def _on(self, record: dict[str, Any]) -> None:
        box, marks = self.box, self.marks
        kind = record["t"]
        if kind == "start":
            stat = readings.read_when_blocked(box.proc_fd, box.pid, "stat", self.deadline)
            marks["start_cpu"] = readings.cpu_clock_ns(box.pid)
            marks["start_wall"] = time.monotonic_ns()
            marks["start_rss"] = readings.resident_bytes(stat)
            marks["start_instructions"] = self.counter.read() if self.counter is not None else None
            self.started = True
            self.records.append(record)
            os.write(box.job_w, b"a")
            return
        self.records.append(record)
        if kind != "done":
            return
        self.done = True
        if not self.started:
            return  # done before start: the code never compiled; nothing to measure or wait for
        marks["end_wall"] = time.monotonic_ns()
        status = readings.read_when_blocked(box.proc_fd, box.pid, "status", self.deadline)
        marks["end_cpu"] = readings.cpu_clock_ns(box.pid)
        marks["peak"] = readings.peak_resident_bytes(status)
        marks["end_instructions"] = self.counter.read() if self.counter is not None else None

    def release_program(self, buffers: dict[int, bytearray], caps: dict[int, int]) -> None:
        """After a program's done record: note how much it had written, then let it exit."""
        outputs = (self.box.out_r, self.box.err_r)
        for fd in outputs:
            _drain(fd, buffers[fd], caps[fd])
        self.marks["output_at_done"] = sum(len(buffers[fd]) for fd in outputs)
        self.released = True
        try:
            os.write(self.box.job_w, b"a")  # its exit status is read from the kernel
        except OSError:
            pass

    def measured(self, usage: Any) -> dict[str, Any]:
        """The cost fields of the report; empty when the run did not get that far."""
        marks = self.marks
        if not self.started:
            return {}
        if self.mode == "program" and usage is not None and "exit_wall" in marks:
            # A program's work ends when it exits: the kernel's total for the whole process, so that
            # nothing it does after a forged done record escapes the count.
            end_cpu, end_wall = readings.rusage_cpu_ns(usage), marks["exit_wall"]
            peak = usage.ru_maxrss * 1024
        elif "end_cpu" in marks:
            end_cpu, end_wall, peak = marks["end_cpu"], marks["end_wall"], marks.get("peak") or 0
        else:
            return {}
        cost = {
            "cpu_ns": max(0, end_cpu - marks["start_cpu"]),
            "wall_ns": max(0, end_wall - marks["start_wall"]),
            "peak_memory_bytes": max(0, peak - marks["start_rss"]),
        }
        if marks.get("start_instructions") is not None and marks.get("end_instructions") is not None:
            cost["instructions"] = marks["end_instructions"] - marks["start_instructions"]
        return cost


def _watch(box: Box, job: dict[str, Any]) -> dict[str, Any]:
    """Follow the candidate until it is done, exits, overflows, misbehaves or runs out of time."""
    limits = job["limits"]
    run = _Run(box, job, time.monotonic() + limits["wall_s"])
    stdin = memoryview((job.get("stdin") or "").encode())
    caps = {
        box.out_r: limits["max_stdout_bytes"],
        box.err_r: limits["max_stderr_bytes"],
        box.result_r: limits["max_result_bytes"],
    }
    buffers: dict[int, bytearray] = {fd: bytearray() for fd in caps}
    overflow: set[int] = set()
    selector = _Poller()
    for fd in caps:
        os.set_blocking(fd, False)
        selector.register(fd, select.POLLIN)
    # stdin is fed from the same loop, so a candidate that writes before it has read all its input
    # cannot deadlock against us.
    os.set_blocking(box.stdin_w, False)
    selector.register(box.stdin_w, select.POLLOUT)
    exit_fd = _pidfd(box.pid)
    if exit_fd is not None:
        selector.register(exit_fd, select.POLLIN)
    outcome = None
    exited = False
    while outcome is None:
        timeout = run.deadline - time.monotonic()
        if timeout <= 0:
            outcome = "timeout"
            break
        for fd in selector.select(min(timeout, 0.005) if exit_fd is None else timeout):
            if fd == box.stdin_w:
                stdin = _feed(selector, fd, stdin)
            elif fd == exit_fd:
                exited = True
            elif _read_into(selector, fd, buffers[fd], caps[fd]):
                overflow.add(fd)
                if fd == box.result_r:
                    outcome = "output_limit"
            elif fd == box.result_r:
                run.take(buffers[fd])
        if run.done and run.mode == "program" and run.started and not run.released:
            run.release_program(buffers, caps)
        if exit_fd is None and not exited:
            exited = _has_exited(box)
        if exited:
            run.marks.setdefault("exit_wall", time.monotonic_ns())
            # Collect what it wrote before it died, then judge that.
            if box.result_r not in overflow:
                _drain(box.result_r, buffers[box.result_r], caps[box.result_r])
                run.take(buffers[box.result_r])
            outcome = outcome or "exited"
        if run.violation is not None:
            outcome = "violation"
        elif run.done and (run.mode != "program" or not run.started) and outcome is None:
            outcome = "done"  # a program that never started (it did not compile) ends here too
        elif exit_fd is None and outcome is None and not any(fd in selector for fd in caps):
            outcome = "exited"  # no exit notification here; every pipe closed: it is gone or going
    if exit_fd is not None:
        os.close(exit_fd)
    status = usage = None
    if outcome != "done":
        status, usage = box.reap()
    for fd in (box.out_r, box.err_r):
        if fd not in overflow:
            _drain(fd, buffers[fd], caps[fd])
    written = len(buffers[box.out_r]) + len(buffers[box.err_r])
    if box.launcher_pid is not None and run.released and written > run.marks["output_at_done"]:
        # Under bubblewrap a program's cost ends at its done record (it is not our child, so the CPU
        # total of its exit cannot be read): output after that record would be work left uncounted.
        outcome = "violation"
        run.violation = "the program wrote output after it reported done"
    report: dict[str, Any] = {
        "outcome": outcome,
        "records": run.records,
        BLOBS: run.blobs,
        "stdout": buffers[box.out_r].decode("utf-8", "replace"),
        "stderr": buffers[box.err_r].decode("utf-8", "replace"),
        "stdout_overflow": box.out_r in overflow,
    }
    if outcome == "violation":
        report["msg"] = run.violation
    if outcome in ("done", "exited"):
        report.update(run.measured(usage if outcome == "exited" else None))
    if status is not None:
        report["exit"] = readings.describe_status(status)
        report["exit_code"] = readings.exit_code(status)
        if outcome == "exited" and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            report["outcome"] = "timeout"
    return report


class _Poller:
    """poll(2) over the few descriptors of one run: no descriptor of its own to make and close."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: set[int] = set()

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)
        self._fds.add(fd)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)
        self._fds.discard(fd)

    def __contains__(self, fd: int) -> bool:
        return fd in self._fds

    def select(self, timeout_s: float) -> list[int]:
        """The descriptors that are ready (or in error: the next read or write tells) within the timeout."""
        return [fd for fd, _ in self._poll.poll(timeout_s * 1000)]


def _read_into(selector: _Poller, fd: int, buffer: bytearray, cap: int) -> bool:
    """Read what is there; True when the candidate wrote more than ``cap`` (the pipe is then closed)."""
    try:
        chunk = os.read(fd, _STDIO_CHUNK)
    except BlockingIOError:
        return False
    if not chunk:
        selector.unregister(fd)
        return False
    room = cap - len(buffer)
    buffer += chunk[:room]
    if len(chunk) <= room:
        return False
    selector.unregister(fd)
    os.close(fd)  # the candidate's next write fails with a broken pipe
    return True


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux >= 5.3); None where unavailable."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(box: Box) -> bool:
    if box.launcher_pid is not None:
        return False  # not our child; the pipes tell
    try:
        return os.waitid(os.P_PID, box.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _feed(selector: _Poller, fd: int, data: memoryview) -> memoryview:
    """Write what the pipe takes now; close stdin when all is written or the reader is gone."""
    try:
        data = data[os.write(fd, data[:_STDIO_CHUNK]) :] if data else data
    except BlockingIOError:
        return data
    except OSError:
        data = data[:0]
    if not data:
        selector.unregister(fd)
        os.close(fd)
    return data


def _drain(fd: int, buffer: bytearray, cap: int) -> None:
    """Collect what is in a pipe now (the candidate may still hold its end open)."""
    try:
        while len(buffer) < cap and (chunk := os.read(fd, _STDIO_CHUNK)):
            buffer += chunk[: cap - len(buffer)]
    except OSError:
        pass


def _kill(pid: int) -> None:
    # In the namespace box the candidate is pid 1 of its namespace: killing it kills the whole run.
    # Elsewhere it leads its own session, so its process group holds whatever it started.
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _spawn_bwrap(command: tuple[str, ...], fds: tuple[int, ...]) -> tuple[int, int]:
    """Start a fresh boxed interpreter with ``fds`` as its 0-4; returns (bwrap pid, candidate pid).

    ``--as-pid-1`` makes the interpreter itself pid 1 of its namespace, and ``--info-fd`` tells us
    its pid as we see it, so its CPU clock can be read exactly as for a forked candidate.
    """
    info_r, info_w = os.pipe()
    launcher = os.fork()
    if launcher == 0:
        try:
            namespaces.die_with_parent()
            copies = [os.dup(fd) for fd in (*fds, info_w)]
            for target, fd in enumerate(copies):
                os.dup2(fd, target)
            os.closerange(6, 1 << 16)
            os.execv(command[0], [command[0], "--info-fd", "5", *command[1:]])
        finally:
            os._exit(127)
    os.close(info_w)
    info = b""
    while b"}" not in info and (chunk := os.read(info_r, 4096)):
        info += chunk
    os.close(info_r)
    try:
        return launcher, int(json.loads(info)["child-pid"])
    except (ValueError, KeyError) as exc:
        os.waitpid(launcher, 0)
        raise RuntimeError(f"bubblewrap did not start the candidate: {info[:200]!r}") from exc
