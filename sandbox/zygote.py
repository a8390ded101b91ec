"""The fork server: a small warm Python that forks one boxed child per execution.

Started once per worker by :mod:`sandbox.worker` as ``python -s -P -S`` with an explicit environment. It
imports what candidates commonly use (so their imports cost nothing, and the same for everyone),
enters its jail, then serves jobs read from stdin as length-prefixed JSON, answering each with one
length-prefixed JSON report on stdout.

To keep set-up off the critical path, the server always holds one *spare*: a monitor process that has
already made the next run's namespaces and forked a sealed candidate process waiting for its job
(see :mod:`sandbox.monitor`). A job goes straight to the spare; a new spare is forked right after the
report has been sent. Standard library only.
"""

from __future__ import annotations

import gc
import json
import os
import struct
import sys
import time
import traceback
from typing import Any

from sandbox import harness, monitor, namespaces, seccomp

HEADER = struct.Struct(">I")
CANDIDATE_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONUTF8": "1",
}


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int) -> bytes | None:
    header = read_exact(fd, HEADER.size)
    if header is None:
        return None
    return read_exact(fd, HEADER.unpack(header)[0])


def read_exact(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class Spare:
    """The next execution, set up ahead of time.

    Worker scope: a sealed candidate process forked straight from this server, which monitors it.
    Run scope: a monitor process that has made fresh namespaces and forked the candidate inside them.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.box: monitor.Box | None = None
        self.pid = None
        if server.settings.scope == "worker":
            self.box = monitor.Box(server.settings, server.proc_fd)
            return
        job_r, self.job_w = os.pipe()
        self.report_r, report_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.job_w)
            os.close(self.report_r)
            monitor.serve_one(server.settings, job_r, report_w)  # never returns
        os.close(job_r)
        os.close(report_w)

    def run(self, job: bytes) -> bytes:
        """The JSON report of the job, or b"" if the spare died before answering."""
        if self.box is not None:
            try:
                report = self.box.run(job)
            except Exception as exc:
                report = {"outcome": "sandbox_error", "msg": f"monitor failed: {exc!r}"}
            return json.dumps(report, separators=(",", ":")).encode()
        try:
            write_frame(self.job_w, job)
        except BrokenPipeError:
            return b""
        finally:
            os.close(self.job_w)
        return read_all(self.report_r)

    def close(self) -> str:
        """Stop and reap everything of this execution; returns how the monitor ended."""
        if self.box is not None:
            self.box.close()
            self.server.kill_leftovers()
            return "closed"
        os.close(self.report_r)
        try:
            os.close(self.job_w)
        except OSError:
            pass
        _, status = os.waitpid(self.pid, 0)
        return monitor.describe_status(status)


class Server:
    """One fork server: its isolation level, its seccomp filter, and its spare execution."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.level: str = options["isolation"]
        self.reaper: tuple[int, int, int] | None = None

    def prepare(self) -> dict[str, Any]:
        harness.preload()
        options = self.options
        real_root = namespaces.running_as_real_root()
        scope = options.get("namespace_scope", "worker")
        uid = int(options.get("uid", namespaces.SANDBOX_UID_BASE))
        work_dir_bytes = int(options.get("work_dir_bytes", 16 << 20))
        notes: list[str] = []
        seccomp_filter = None
        if self.level in ("namespaces", "process"):
            seccomp_filter = seccomp.build_filter(allow_subprocesses=options.get("allow_subprocesses", False))
            seccomp_filter.prepare()
        if self.level == "namespaces":
            notes += namespaces.enter_jail(
                options["jail_root"],
                options.get("extra_paths", ()),
                worker_namespaces=scope == "worker",
                work_dir_bytes=work_dir_bytes,
            )
        # The host's view of /proc, kept open: the reaper is about to mount the worker's own over it.
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        baseline_vm_bytes = _vm_size_bytes()
        if self.level == "namespaces" and scope == "worker":
            self.reaper = namespaces.start_reaper(uid if real_root else None)
        if self.level == "namespaces" and real_root:
            namespaces.become_unprivileged(uid)
            if scope == "worker":
                # As root no user namespace was needed to build the jail; candidates still get one.
                namespaces.enter_user_namespace(self.proc_fd)
        self.settings = monitor.Settings(
            level=self.level,
            scope=scope if self.level == "namespaces" else "worker",
            seccomp_filter=seccomp_filter,
            baseline_vm_bytes=baseline_vm_bytes,
            work_dir_bytes=work_dir_bytes,
            uid=uid if real_root else None,
            bwrap_command=tuple(options.get("bwrap_command", ())),
        )
        os.environ.clear()
        os.environ.update(CANDIDATE_ENV)
        # Objects that exist now are never collected: keeping the collector off them means a forked
        # child does not write to (and so copy) every page of the interpreter's heap when gc runs.
        gc.collect()
        gc.freeze()
        return {
            "t": "ready",
            "level": self.level,
            "scope": self.settings.scope,
            "notes": notes,
            "uid": os.getuid(),
            "pid": os.getpid(),
        }

    def kill_leftovers(self) -> None:
        """Have the reaper kill anything a candidate left in the worker's pid namespace."""
        if self.reaper is None:
            return
        _, command_w, ack_r = self.reaper
        os.write(command_w, b"k")
        if not os.read(ack_r, 1):
            raise RuntimeError("the pid namespace's reaper died")

    def serve(self) -> None:
        spare = Spare(self)
        while True:
            job = read_frame(0)
            if job is None:
                spare.close()
                return
            started = time.monotonic()
            report = spare.run(job)
            if not report:  # the spare died before or during the job: once more with a fresh one
                ended = spare.close()
                spare = Spare(self)
                report = spare.run(job)
                if not report:
                    elapsed = time.monotonic() - started
                    failure = {
                        "outcome": "sandbox_error",
                        "msg": f"monitor died ({ended}) after {elapsed:.3f}s",
                    }
                    report = json.dumps(failure).encode()
            write_frame(1, report)
            spare.close()  # after answering: tearing the run down is off the critical path
            spare = Spare(self)


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    server = Server(json.loads(sys.argv[1]))
    try:
        hello = server.prepare()
    except BaseException as exc:
        hello = {"t": "error", "msg": "".join(traceback.format_exception_only(type(exc), exc)).strip()}
        write_frame(1, json.dumps(hello).encode())
        return
    write_frame(1, json.dumps(hello).encode())
    server.serve()


if __name__ == "__main__":
    main()
