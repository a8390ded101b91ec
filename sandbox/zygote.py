"""The fork server: a small warm Python that runs each job in a freshly cloned, sealed box.

Started once per worker by :mod:`sandbox.worker` as ``python -s -P -S`` with an explicit environment.
It imports what candidates commonly use (so their imports cost nothing, and the same for everyone),
enters its jail, then serves jobs read from stdin as length-prefixed JSON, answering each with one
length-prefixed JSON report on stdout.

The server reads every job and every report, so no candidate may ever be a copy of it: its heap holds
earlier jobs' code, inputs and outputs, and freed memory is not zeroed. Right after set-up, before any
job exists, it forks a *template* that only ever receives one-byte commands. For each, the template
clones a candidate with CLONE_PARENT, straight into new namespaces (:mod:`sandbox.candidate`): a copy
of a process that never held another job's data, yet a child of the server, which watches it and
reads its exit status (:mod:`sandbox.monitor`). The candidate sees neither of them.

To keep set-up off the critical path, the server always holds one *spare*: a candidate cloned and
sealed ahead of time, waiting for its job. A job goes straight to it; a new spare is made right after
the report has been sent. Standard library only.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import struct
import sys
import tempfile
import traceback
from typing import Any

from sandbox import candidate, harness, monitor, namespaces, seccomp
from sandbox.frames import encode_report, read_frame, write_frame

CANDIDATE_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONUTF8": "1",
}
_PID = struct.Struct("=i")


class Template:
    """The process every candidate is cloned from; it never holds a job's data.

    It serves one command on a Unix socket: for each request (carrying only the path of a working
    directory, for the weak ``process`` level) it clones a sealed candidate whose parent is the fork
    server, and passes back its pid and the server's ends of its five pipes.
    """

    def __init__(self, settings: candidate.Settings, *, drop_to_uid: int | None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                ours.close()
                _detach_from_host()
                _template_main(settings, theirs, drop_to_uid)
            finally:
                # Whatever happens, the template never returns into the server's code: once the server
                # dies, an exception here would otherwise end in main(), which answers the host.
                os._exit(1)
        theirs.close()
        self.sock = ours
        ready = self.sock.recv(4096)
        if ready != b"ready":
            raise RuntimeError(ready.decode("utf-8", "replace") or "the template process died during set-up")

    def clone_candidate(self, work_dir: str) -> tuple[int, tuple[int, ...]]:
        """A new sealed candidate waiting for its job: its pid and (result, stdout, stderr, job, stdin)."""
        request = work_dir.encode()
        self.sock.sendall(struct.pack("=H", len(request)) + request)
        data, fds, _, _ = socket.recv_fds(self.sock, 64, candidate.FD_COUNT)
        if len(fds) != candidate.FD_COUNT or len(data) < _PID.size:
            for fd in fds:
                os.close(fd)
            reason = data.decode("utf-8", "replace") if data else "it closed its socket"
            raise RuntimeError(f"the template process did not clone a candidate: {reason}")
        return _PID.unpack(data[: _PID.size])[0], tuple(fds)


def _detach_from_host() -> None:
    """Point the template's stdin and stdout at /dev/null: they are the server's pipes to the host.

    Held by the template, the host would not see the server's end of file when it dies, and a line
    written there would read as a report.
    """
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def _template_main(settings: candidate.Settings, sock: socket.socket, drop_to_uid: int | None) -> None:
    try:
        namespaces.die_with_parent()
        if drop_to_uid is not None:
            namespaces.become_unprivileged(drop_to_uid)
            if settings.level == "namespaces":
                # As root no user namespace was needed to build the jail; candidates still get one.
                namespaces.enter_user_namespace()
        if settings.level == "namespaces":
            # Inherited by every candidate (of the worker scope; see drop_bounding_set).
            namespaces.drop_bounding_set()
        # Not dumpable: no process of the same uid may read or write this memory through /proc.
        namespaces.set_dumpable(False)
        outside_ids = (os.geteuid(), os.getegid())
    except BaseException as exc:
        sock.sendall(f"template set-up failed: {_describe(exc)}".encode())
        os._exit(1)
    sock.sendall(b"ready")
    while True:
        header = _recv_exact(sock, 2)
        if header is None:
            os._exit(0)
        work_dir = (_recv_exact(sock, struct.unpack("=H", header)[0]) or b"").decode()
        pipes = [os.pipe() for _ in range(candidate.FD_COUNT)]
        # The candidate's ends, as its 0 stdin, 1 stdout, 2 stderr, 3 results, 4 job.
        theirs = (pipes[4][0], pipes[1][1], pipes[2][1], pipes[0][1], pipes[3][0])
        # The server's ends: result, stdout, stderr, job, stdin.
        ours = (pipes[0][0], pipes[1][0], pipes[2][0], pipes[3][1], pipes[4][1])
        try:
            pid = namespaces.clone_sibling(settings.clone_flags)
        except namespaces.IsolationError as exc:
            sock.sendall(str(exc).encode())
            for fd in (*theirs, *ours):
                os.close(fd)
            continue
        if pid == 0:
            try:
                sock.close()
                for fd in ours:
                    os.close(fd)
                candidate.seal_and_run(settings, theirs, work_dir, outside_ids)
            finally:
                os._exit(70)
        for fd in theirs:
            os.close(fd)
        try:
            socket.send_fds(sock, [_PID.pack(pid)], list(ours))
        finally:
            for fd in ours:
                os.close(fd)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


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
            )
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        self.settings = candidate.Settings(
            level=self.level,
            scope=scope if self.level == "namespaces" else "worker",
            seccomp_filter=seccomp_filter,
            baseline_vm_bytes=candidate.vm_size_bytes(),
            work_dir_bytes=work_dir_bytes,
            uid=uid if real_root else None,
            bwrap_command=tuple(options.get("bwrap_command", ())),
        )
        os.environ.clear()
        os.environ.update(CANDIDATE_ENV)
        if self.level != "bwrap":
            harness.warm_up()  # before the template exists, so candidates start warm
        # Objects that exist now are never collected: keeping the collector off them means a cloned
        # candidate does not write to (and so copy) every page of the interpreter's heap when gc runs.
        gc.collect()
        gc.freeze()
        drop_to_uid = uid if real_root and self.level == "namespaces" else None
        if self.level != "bwrap":
            # Forked before any job exists, and (as root) before this server drops its privileges.
            self.template = Template(self.settings, drop_to_uid=drop_to_uid)
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

    def spare(self) -> monitor.Box:
        """The next execution's box: a candidate from the template, or under bubblewrap a fresh one."""
        if self.template is None:
            return monitor.Box(self.settings, self.proc_fd)
        # Only the weak `process` level works in a host folder; the others have a tmpfs of their own.
        work_dir = "/tmp" if self.level == "namespaces" else _make_work_dir()
        pid, fds = self.template.clone_candidate(work_dir)
        return monitor.Box(self.settings, self.proc_fd, pid=pid, fds=fds, work_dir=work_dir)

    def serve(self) -> None:
        box = self.spare()
        while True:
            job = read_frame(0)
            if job is None:
                box.close()
                return
            try:
                report = box.run(job)
            except Exception as exc:
                report = {"outcome": "sandbox_error", "msg": f"monitor failed: {exc!r}"}
            write_frame(1, encode_report(report))
            box.close()  # after answering: tearing the run down is off the critical path
            box = self.spare()


def _make_work_dir() -> str:
    path = tempfile.mkdtemp(prefix="effirl-run-")
    os.chmod(path, 0o777)
    return path


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


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
