"""The fork server: a small warm Python that runs each job in a freshly forked, sealed box.

Started once per worker by :mod:`sandbox.worker` as ``python -s -P -S`` with an explicit environment.
It imports what candidates commonly use (so their imports cost nothing, and the same for everyone),
enters its jail, then serves jobs read from stdin as length-prefixed JSON, answering each with one
length-prefixed JSON report on stdout.

The server itself reads every job and report, so no candidate may ever be forked from it: its heap
holds earlier jobs' code, inputs and outputs, and freed memory is not zeroed. Right after set-up,
before any job exists, it forks a *template* that only ever receives one-byte commands. Each
execution is a monitor forked from that template (see :mod:`sandbox.monitor`), which forks its
candidate before it receives its job: a candidate's address space is a copy of a process that never
held another job's data.

To keep set-up off the critical path, the server always holds one *spare*: a monitor that has already
made the next run's namespaces and forked a sealed candidate waiting for its job. A job goes straight
to the spare; a new spare is made right after the report has been sent. Standard library only.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import time
import traceback
from typing import Any

from sandbox import harness, monitor, namespaces, seccomp
from sandbox.frames import read_all, read_frame, write_frame

CANDIDATE_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONUTF8": "1",
}


class Template:
    """The process every execution's monitor is forked from; it never holds a job's data.

    It serves one command on a Unix socket: for each byte received it forks a monitor and passes
    back that monitor's job pipe (write end) and report pipe (read end). In the worker scope it is
    pid 1 of the worker's pid namespace and reaps whatever is left there.
    """

    def __init__(self, settings: monitor.Settings, *, drop_to_uid: int | None, worker_pid_namespace: bool):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:
            ours.close()
            _template_main(settings, theirs, drop_to_uid, worker_pid_namespace)
        theirs.close()
        self.sock = ours
        ready = self.sock.recv(4096)
        if ready != b"ready":
            raise RuntimeError(ready.decode("utf-8", "replace") or "the template process died during set-up")

    def fork_monitor(self) -> tuple[int, int]:
        """A new monitor waiting for its job: (job pipe write end, report pipe read end)."""
        self.sock.sendall(b"m")
        _, fds, _, _ = socket.recv_fds(self.sock, 16, 2)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise RuntimeError("the template process did not fork a monitor")
        return fds[0], fds[1]


def _template_main(
    settings: monitor.Settings, sock: socket.socket, drop_to_uid: int | None, worker_pid_namespace: bool
) -> None:
    try:
        namespaces.die_with_parent()
        proc_fd = namespaces.mount_hidden_worker_proc() if worker_pid_namespace else None
        if drop_to_uid is not None:
            namespaces.become_unprivileged(drop_to_uid)
            if worker_pid_namespace:
                # As root no user namespace was needed to build the jail; candidates still get one.
                namespaces.enter_user_namespace(proc_fd)
        # Not dumpable: no process of the same uid may read or write this memory through /proc.
        namespaces.set_dumpable(False)
    except BaseException as exc:
        sock.sendall(f"template set-up failed: {_describe(exc)}".encode())
        os._exit(1)
    sock.sendall(b"ready")
    while True:
        try:
            command = sock.recv(1)
        except OSError:
            command = b""
        if not command:
            os._exit(0)
        _reap_finished()
        job_r, job_w = os.pipe()
        report_r, report_w = os.pipe()
        if os.fork() == 0:
            sock.close()
            os.close(job_w)
            os.close(report_r)
            monitor.serve_one(settings, job_r, report_w, proc_fd)  # never returns
        os.close(job_r)
        os.close(report_w)
        try:
            socket.send_fds(sock, [b"m"], [job_w, report_r])
        finally:
            os.close(job_w)
            os.close(report_r)


def _reap_finished() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Spare:
    """The next execution, set up ahead of time: a monitor with a sealed candidate waiting.

    Under bubblewrap the candidate is a fresh interpreter (it starts from an exec, not a fork), so
    the server holds its :class:`monitor.Box` itself.
    """

    def __init__(self, server: Server) -> None:
        self.box: monitor.Box | None = None
        if server.template is None:
            self.box = monitor.Box(server.settings, server.proc_fd)
            return
        self.job_w, self.report_r = server.template.fork_monitor()

    def run(self, job: bytes) -> bytes:
        """The JSON report of the job, or b"" if the monitor died before answering."""
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
        return read_frame(self.report_r) or b""

    def close(self) -> None:
        """Wait until the execution is torn down (its monitor closes the report pipe as it exits)."""
        if self.box is not None:
            self.box.close()
            return
        try:
            os.close(self.job_w)
        except OSError:
            pass
        read_all(self.report_r)
        os.close(self.report_r)


class Server:
    """One fork server: its isolation level, its seccomp filter, its template and its spare."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.level: str = options["isolation"]
        self.template: Template | None = None

    def prepare(self) -> dict[str, Any]:
        harness.preload()
        options = self.options
        real_root = namespaces.running_as_real_root()
        scope = options.get("namespace_scope", "worker")
        uid = int(options["uid"])
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
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        self.settings = monitor.Settings(
            level=self.level,
            scope=scope if self.level == "namespaces" else "worker",
            seccomp_filter=seccomp_filter,
            baseline_vm_bytes=_vm_size_bytes(),
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
        drop_to_uid = uid if real_root and self.level == "namespaces" else None
        if self.level != "bwrap":
            # Forked before any job exists, and (as root) before this server drops its privileges:
            # in the worker scope the template mounts the worker's /proc as pid 1 of its namespace.
            self.template = Template(
                self.settings,
                drop_to_uid=drop_to_uid,
                worker_pid_namespace=self.settings.scope == "worker" and self.level == "namespaces",
            )
        if drop_to_uid is not None:
            namespaces.become_unprivileged(drop_to_uid)
        return {
            "t": "ready",
            "level": self.level,
            "scope": self.settings.scope,
            "notes": notes,
            "uid": os.getuid(),
            "pid": os.getpid(),
        }

    def serve(self) -> None:
        spare = Spare(self)
        while True:
            job = read_frame(0)
            if job is None:
                spare.close()
                return
            started = time.monotonic()
            report = spare.run(job)
            if not report:  # the monitor died before or during the job: once more with a fresh one
                spare.close()
                spare = Spare(self)
                report = spare.run(job)
                if not report:
                    elapsed = time.monotonic() - started
                    failure = {"outcome": "sandbox_error", "msg": f"monitor died after {elapsed:.3f}s"}
                    report = json.dumps(failure).encode()
            write_frame(1, report)
            spare.close()  # after answering: the run's teardown is off the critical path
            spare = Spare(self)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


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
        hello = {"t": "error", "msg": _describe(exc)}
        write_frame(1, json.dumps(hello).encode())
        return
    write_frame(1, json.dumps(hello).encode())
    server.serve()


if __name__ == "__main__":
    main()
