"""`effirl sandbox audit` against a :class:`~sandbox.Sandbox` on this machine.

Starts a sandbox of the isolation level and namespace scope the user chose, a TCP listener on the
host's loopback (a candidate must not reach it) and a file outside any jail (a candidate must not read
it), runs every attack of :mod:`sandbox.attacks` on it and reports what ``probe_isolation`` says of
each level here.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from sandbox.audit import (
    Attack,
    Context,
    FunctionStep,
    Observation,
    ProgramStep,
    Report,
    Step,
    one_line,
    plural,
    run_attacks,
    select,
)
from sandbox.config import STRONG_LEVELS, SandboxConfig
from sandbox.jobs import FunctionJob, ProgramJob, ScriptJob
from sandbox.types import ExecutionResult, FunctionTest, ProgramTest


def observe(result: ExecutionResult, elapsed_s: float, *, count_python_events: bool) -> Observation:
    """An :class:`ExecutionResult` as plain fields."""
    return Observation(
        status=result.status.value,
        error_kind=result.error_kind,
        error=result.error,
        exit_code=result.exit_code,
        passed=result.passed,
        total=result.total,
        test_errors=tuple(None if t.passed else (t.error or "failed") for t in result.tests),
        cpu_ns=None if result.cost is None else result.cost.cpu_ns,
        python_events=None if result.cost is None else result.cost.python_events,
        cost_measure="python_events" if count_python_events else "cpu",
        cost_trusted=not count_python_events,
        elapsed_s=elapsed_s,
    )


def job_of(step: Step) -> FunctionJob | ProgramJob | ScriptJob:
    if isinstance(step, FunctionStep):
        tests = tuple(FunctionTest(tuple(args), expected) for args, expected in step.tests)
        return FunctionJob(
            step.code,
            step.entry_point,
            tests,
            None,
            step.timeout_s,
            step.repeats,
            want_outputs=step.reference,
        )
    if isinstance(step, ProgramStep):
        test = ProgramTest(step.stdin, step.expected_stdout)
        return ProgramJob(step.code, (test,), step.timeout_s, step.repeats)
    return ScriptJob(step.code, step.test_script, step.entry_point)


def audit_local(
    isolation: str = "namespaces",
    scope: str = "worker",
    *,
    classes: Sequence[str] | None = None,
    workers: int = 2,
    probe: bool = True,
    progress: bool = False,
    config: SandboxConfig | None = None,
) -> Report:
    """Audit a :class:`~sandbox.Sandbox` of ``isolation`` and ``scope`` on this machine.

    ``config`` replaces the one built from the arguments (e.g. to audit a deliberately weakened
    setup). Raises :class:`~sandbox.SandboxUnavailable` when the level cannot be set up here.
    """
    from sandbox.attacks import ATTACKS
    from sandbox.pool import Sandbox

    attacks = select(ATTACKS, classes)
    config = config or SandboxConfig(
        isolation=isolation,
        namespace_scope=scope,
        allow_weak_isolation=isolation not in STRONG_LEVELS,
        workers=workers,
        timeout_s=10.0,
    )
    started = time.monotonic()
    header: list[str] = []
    if probe:
        from sandbox.probe import probe_isolation

        layers = probe_isolation()
        width = max(len(r.name) for r in layers)
        header.append("probe_isolation (each level started here):")
        header += [
            f"  {'ok' if r.available else 'NO':<3} {r.name:<{width}}  {one_line(r.detail, 100)}"
            for r in layers
        ]
    with Sandbox(config) as box, _HostListener() as listener, _HostSecret() as secret:
        level = box.config.isolation
        scope_used = box.config.namespace_scope if level == "namespaces" else None
        in_use = f"{level} ({scope_used} scope)" if scope_used else level
        pool = plural(box.config.workers, "worker")
        header.insert(0, f"isolation in use: {in_use}, {pool}, worker uid {box.info['worker_uid']}")
        context = Context(
            remote=False,
            isolation=level,
            scope=scope_used,
            workers=box.config.workers,
            nonce=secrets.token_hex(8),
            root=os.geteuid() == 0,
            count_python_events=box.config.count_python_events,
            host_address="127.0.0.1",
            host_port=listener.port,
            host_pid=os.getpid(),
            host_paths=_host_paths(secret.path),
            extra={"box": box, "listener": listener},
        )

        def execute(step: Step) -> Observation:
            begun = time.monotonic()
            result = box.run(job_of(step))
            return observe(
                result, time.monotonic() - begun, count_python_events=box.config.count_python_events
            )

        def skip(attack: Attack) -> str | None:
            if attack.where == "service":
                return "service-side: run `effirl sandbox audit --url URL` against a reward service"
            return None

        results = run_attacks(
            attacks, execute, context, parallel=box.config.workers, skip=skip, progress=progress
        )
    return Report("this machine's sandbox", level, scope_used, header, results, time.monotonic() - started)


def _host_paths(secret: str) -> tuple[str, ...]:
    """Host files and folders that exist here and that no candidate may read."""
    home = os.path.expanduser("~")
    candidates = [
        secret,
        *_checkout_file(),
        "/etc/shadow",
        "/etc/hostname",
        "/etc/hosts",
        os.path.join(home, ".bashrc"),
        os.path.join(home, ".ssh"),
        "/var/log",
        "/proc/1/environ",
    ]
    return tuple(p for p in candidates if os.path.exists(p) and os.access(p, os.R_OK))


def _checkout_file() -> list[str]:
    """A file beside the sandbox package (the checkout or site-packages it lives in)."""
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    files = [n for n in names if not n.startswith(".") and os.path.isfile(os.path.join(parent, n))]
    return [os.path.join(parent, n) for n in files[:1]]


class _HostListener:
    """A TCP listener on the host's loopback that counts the connections it accepts."""

    def __enter__(self) -> _HostListener:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            connection.close()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class _HostSecret:
    """A file outside any jail holding a random word; removed afterwards."""

    def __enter__(self) -> _HostSecret:
        self.folder = tempfile.mkdtemp(prefix="effirl-audit-")
        self.path = os.path.join(self.folder, "secret")
        with open(self.path, "w") as f:
            f.write(secrets.token_hex(16))
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            os.unlink(self.path)
            os.rmdir(self.folder)
        except OSError:
            pass


def candidate_uids(box: Any) -> set[int]:
    """Host uids of the candidates of ``box``: the live processes below its fork servers that have no
    children (each worker's sealed candidate waiting for its next job), read from the host's /proc."""
    roots = [w.process.pid for w in box._workers if w.process is not None]
    children: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if fields.get("State", "").strip().startswith("Z"):
            continue
        children.setdefault(int(fields["PPid"]), []).append((int(name), int(fields["Uid"].split()[0])))
    uids, stack = set(), list(roots)
    while stack:
        for pid, uid in children.get(stack.pop(), []):
            if pid not in children:
                uids.add(uid)
            stack.append(pid)
    return uids
