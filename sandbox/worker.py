"""Host side of one fork server: start it in its box, hand it jobs, restart it if it dies."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.frames import HEADER as _HEADER
from sandbox.frames import REPORT_OUTCOMES, decode_report
from sandbox.namespaces import ETC_PATHS, SYSTEM_PATHS, python_paths
from sandbox.zygote import CANDIDATE_ENV

log = logging.getLogger(__name__)
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_PATH = f"import sys; sys.path.insert(0, {PACKAGE_PARENT!r}); "
_BOOT = _PATH + "from sandbox.zygote import main; main()"
_BOOT_BOXED = _PATH + "from sandbox.candidate import boxed_main; boxed_main()"
_START_TIMEOUT_S = 60.0
# Not -I: it implies -E, which ignores PYTHONHASHSEED and so gives every worker its own str hashes
# (and set order). The environment is set explicitly instead; -s and -P keep the rest of -I.
_FLAGS = ["-s", "-P", "-S"] if sys.version_info >= (3, 11) else ["-s", "-S"]


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be set up on this machine."""


class WorkerLost(RuntimeError):
    """The fork server died or hung while running a job; it has been restarted."""


class Worker:
    """One fork server process. Not thread-safe on its own: the pool gives each worker one thread."""

    def __init__(self, config: SandboxConfig, index: int, uid: int) -> None:
        self.config = config
        self.index = index
        self.uid = uid  # the unprivileged uid this worker drops to when started as root
        self.process: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] = {}
        self.restarts = 0
        self._lock = threading.Lock()

    def start(self) -> dict[str, Any]:
        jail_root = tempfile.mkdtemp(prefix="effirl-jail-")
        options = {
            "isolation": self.config.isolation,
            "allow_subprocesses": self.config.allow_subprocesses,
            "jail_root": jail_root,
            "extra_paths": list(self.config.extra_paths),
            "work_dir_bytes": self.config.file_size_mb << 20,
            "namespace_scope": self.config.namespace_scope,
            "uid": self.uid,
        }
        # The real interpreter, not a venv's symlink to it: the jail binds the Python install only.
        python = os.path.realpath(sys.executable)
        if self.config.isolation == "bwrap":
            options["bwrap_command"] = self._bwrap_command()
        command = [python, *_FLAGS, "-c", _BOOT, json.dumps(options)]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={"PYTHONHASHSEED": "0"},  # same str hashes, hence set order, in every worker
                start_new_session=True,
                close_fds=True,
            )
            hello = self._receive(time.monotonic() + _START_TIMEOUT_S)
        except (OSError, WorkerLost) as exc:
            self.kill()
            raise SandboxUnavailable(f"sandbox worker {self.index} did not start: {exc}") from None
        finally:
            try:
                os.rmdir(jail_root)  # the jail lives in the worker's own mount namespace
            except OSError:
                pass
        if hello.get("t") != "ready":
            self.kill()
            raise SandboxUnavailable(
                f"sandbox worker {self.index} could not set up isolation level {self.config.isolation!r}: "
                f"{hello.get('msg')}. {_remedy(self.config.isolation)}"
            )
        self.hello = hello
        return hello

    def _bwrap_command(self) -> list[str]:
        """The bubblewrap command that starts one boxed candidate interpreter (isolation 'bwrap')."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(
                "isolation 'bwrap' needs bubblewrap: install the Debian package `bubblewrap` "
                "(scripts/setup.sh does this as root) or use isolation 'namespaces'"
            )
        args = [
            bwrap,
            "--unshare-all",
            "--new-session",
            "--die-with-parent",
            "--as-pid-1",
            "--cap-drop",
            "ALL",
            # /tmp first: a tmpfs mounted after the binds would hide any of them that live under /tmp
            # (a checkout or virtual environment there).
            "--tmpfs",
            "/tmp",
        ]
        for path in (
            *SYSTEM_PATHS,
            *ETC_PATHS,
            *python_paths(),
            PACKAGE_PARENT + "/sandbox",
            *self.config.extra_paths,
        ):
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.exists(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp", "--clearenv"]
        environment = {**CANDIDATE_ENV, "PYTHONHASHSEED": "0"}
        environment["EFFIRL_ALLOW_SUBPROCESSES"] = json.dumps(self.config.allow_subprocesses)
        for key, value in environment.items():
            args += ["--setenv", key, value]
        return [*args, "--", os.path.realpath(sys.executable), *_FLAGS, "-c", _BOOT_BOXED]

    def execute(self, job: bytes, wall_s: float) -> dict[str, Any]:
        """Run one job; raises :class:`WorkerLost` (after restarting the server) if it dies or hangs."""
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                self._restart("it was not running")
            deadline = time.monotonic() + wall_s + self.config.host_timeout_grace_s
            try:
                self._send(job)
                report = self._receive(deadline)
                if report.get("outcome") not in REPORT_OUTCOMES:
                    raise WorkerLost(f"its answer was not a report ({str(report)[:200]})")
                return report
            except (OSError, ValueError, WorkerLost) as exc:
                self._restart(str(exc))
                raise WorkerLost(f"sandbox worker {self.index} lost while running a job: {exc}") from None

    def _restart(self, reason: str) -> None:
        log.warning("restarting sandbox worker %d: %s", self.index, reason)
        self.kill()
        self.restarts += 1
        self.start()

    def _send(self, job: bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(_HEADER.pack(len(job)) + job)
        self.process.stdin.flush()

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        (size,) = _HEADER.unpack(self._read_exact(fd, _HEADER.size, deadline))
        return decode_report(self._read_exact(fd, size, deadline))

    def _read_exact(self, fd: int, size: int, deadline: float) -> bytes:
        chunks, remaining = [], size
        while remaining:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise WorkerLost("no answer before the deadline")
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                continue
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                raise WorkerLost(f"the fork server exited ({self._exit_description()})")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _exit_description(self) -> str:
        if self.process is None:
            return "never started"
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.kill()
        except OSError:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.process = None


def _remedy(level: str) -> str:
    if level == "namespaces":
        return (
            "This level needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0 and, on "
            "Debian/Ubuntu, kernel.unprivileged_userns_clone=1 / no AppArmor userns restriction) and "
            "Linux >= 5.12. Fix that, or explicitly choose a weaker level with "
            "SandboxConfig(isolation='process', allow_weak_isolation=True)."
        )
    if level == "bwrap":
        return "Check that `bwrap --unshare-all true` works for this user, or use isolation 'namespaces'."
    return ""
