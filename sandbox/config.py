"""Configuration of a :class:`sandbox.Sandbox`: isolation level, worker count and resource limits."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

ISOLATION_LEVELS = ("namespaces", "bwrap", "process", "none")
STRONG_LEVELS = ("namespaces", "bwrap")
WEAK_LEVELS = ("process", "none")
COST_AGGREGATES = ("min", "median")
NAMESPACE_SCOPES = ("worker", "run")
MiB = 1 << 20


def weak_isolation_warning(level: str) -> str:
    """What a pool with a weak isolation level says every time it starts."""
    what = {
        "process": "seccomp and rlimits only: no namespaces, the host's filesystem, network and /proc",
        "none": "rlimits only: no namespaces, no seccomp; candidates can read and write what this "
        "user can, reach the network and signal this user's processes",
    }.get(level, "no namespaces")
    return (
        f"sandbox isolation {level!r} does NOT contain untrusted code ({what}). Use it only for code "
        "you trust, or inside a disposable container or VM; `effirl sandbox check` shows whether "
        "namespaces or bwrap work here"
    )


@dataclass(frozen=True)
class SandboxConfig:
    """How candidates are boxed and what they may use.

    isolation: ``"namespaces"`` (default; fresh user, pid, mount, network, IPC and UTS namespaces per run
        inside a read-only minimal root, seccomp, rlimits), ``"bwrap"`` (bubblewrap builds each worker's
        namespaces and root; per-run fork, seccomp, rlimits, process-group kill), ``"process"`` (no
        namespaces: seccomp and rlimits only) or ``"none"`` (rlimits only; trusted code only). The two
        weak levels are refused unless ``allow_weak_isolation`` is set, and always warn loudly.
    namespace_scope: with ``"namespaces"``: ``"worker"`` (default) makes the user, pid, network, IPC
        and UTS namespaces and the jail once per worker; each run gets a fresh process, a wiped /tmp,
        and a reaper that kills everything it left. ``"run"`` makes all six namespaces fresh for every
        execution (a fresh mount namespace with its own /tmp and /proc too), at about 3 ms more CPU
        per execution (see docs/benchmarks.md).
    allow_weak_isolation: opt in to ``"process"`` or ``"none"``.
    workers: parallel fork servers (default: the CPU count).
    timeout_s: wall-clock limit per execution, enforced by the trusted monitor.
    cpu_time_s: CPU-seconds limit per execution (RLIMIT_CPU); defaults to ``timeout_s``.
    memory_mb: memory the candidate may add over the warm interpreter (RLIMIT_AS).
    file_size_mb: largest file the candidate may write; also the size of its /tmp.
    max_threads: processes/threads per run (RLIMIT_NPROC).
    open_files: file descriptors per run (RLIMIT_NOFILE).
    stack_mb: stack size (RLIMIT_STACK).
    max_stdout_bytes / max_stderr_bytes: captured output kept per run; a candidate writing more gets
        a broken pipe, and a program test fails.
    max_result_bytes: total size of the encoded return values of one run.
    max_input_bytes: largest job (code plus encoded test inputs) accepted.
    repeats: executions per submission for cost measurement; ``cost_aggregate`` picks min or median.
    count_python_events: also count Python line events (deterministic, slower; see docs/sandbox.md).
    count_instructions: ask the kernel for hardware instruction counts (None where unsupported).
    allow_subprocesses: let candidates fork (off: fork/clone of processes fails with EPERM).
    extra_paths: further host directories made visible (read-only) inside the jail.
    host_timeout_grace_s: how long the host waits past ``timeout_s`` before declaring a worker hung.
    """

    isolation: str = "namespaces"
    namespace_scope: str = "worker"
    allow_weak_isolation: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout_s: float = 10.0
    cpu_time_s: float | None = None
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_threads: int = 32
    open_files: int = 64
    stack_mb: int = 64
    max_stdout_bytes: int = 1 * MiB
    max_stderr_bytes: int = 64 * 1024
    max_result_bytes: int = 32 * MiB
    max_input_bytes: int = 64 * MiB
    repeats: int = 1
    cost_aggregate: str = "min"
    count_python_events: bool = False
    count_instructions: bool = False
    allow_subprocesses: bool = False
    extra_paths: tuple[str, ...] = ()
    host_timeout_grace_s: float = 10.0

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_LEVELS:
            raise ValueError(
                f"sandbox isolation {self.isolation!r} is unknown; choose one of {ISOLATION_LEVELS}"
            )
        if self.isolation not in STRONG_LEVELS and not self.allow_weak_isolation:
            raise ValueError(
                f"sandbox isolation {self.isolation!r} does not contain untrusted code; "
                "set allow_weak_isolation=True to use it anyway"
            )
        if self.namespace_scope not in NAMESPACE_SCOPES:
            raise ValueError(
                f"namespace_scope must be one of {NAMESPACE_SCOPES}, got {self.namespace_scope!r}"
            )
        if self.cost_aggregate not in COST_AGGREGATES:
            raise ValueError(f"cost_aggregate must be one of {COST_AGGREGATES}, got {self.cost_aggregate!r}")
        for name in (
            "workers",
            "memory_mb",
            "file_size_mb",
            "max_threads",
            "open_files",
            "stack_mb",
            "repeats",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"sandbox {name} must be >= 1, got {getattr(self, name)}")
        if self.workers > 256:
            raise ValueError(f"sandbox workers must be <= 256 (one block of uids), got {self.workers}")
        if self.timeout_s <= 0:
            raise ValueError(f"sandbox timeout_s must be > 0, got {self.timeout_s}")

    def limits(self, timeout_s: float | None = None) -> dict[str, float | int]:
        """The per-run limits sent to the fork server."""
        wall = timeout_s if timeout_s is not None else self.timeout_s
        return {
            "wall_s": wall,
            "cpu_s": self.cpu_time_s if self.cpu_time_s is not None else wall,
            "memory_bytes": self.memory_mb * MiB,
            "file_size_bytes": self.file_size_mb * MiB,
            "work_dir_bytes": self.file_size_mb * MiB,
            "threads": self.max_threads,
            "open_files": self.open_files,
            "stack_bytes": self.stack_mb * MiB,
            "max_stdout_bytes": self.max_stdout_bytes,
            "max_stderr_bytes": self.max_stderr_bytes,
            "max_result_bytes": self.max_result_bytes,
        }

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
