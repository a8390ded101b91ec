"""Exact, repeatable instruction counts of a job under valgrind's callgrind, in a bubblewrap jail.

CPU time is noisy and perf counters are often unavailable; callgrind counts every instruction the
candidate executes, the same number on every run (to within a few dozen instructions of allocator
jitter), at a cost of about 50x slower execution. Use it to *measure* code that already passed
in the sandbox, not to judge code:

- **Where it runs.** The fork-server sandbox cannot host valgrind (it forks a warm interpreter and
  its seccomp filter is tuned for that), so each measurement is a fresh process:
  ``bwrap`` (new user, pid, network, IPC, UTS and mount namespaces; read-only /usr and Python
  install; private /tmp; no capabilities; dies with its parent) running
  ``valgrind --tool=callgrind python -I -S harness.py``, with a CPU-time rlimit and a wall-clock
  deadline that kills its session.
- **The trade-off.** There is no seccomp filter and no fork-server isolation here, and the
  candidate shares its process with valgrind, so a hostile candidate could tamper with the
  reported count (never with the host: the jail is read-only apart from its own /tmp and the
  output folder). That is why only code that already passed its tests in the sandbox is measured.
- **What is counted.** The harness decodes the test inputs and imports the modules the sandbox
  preloads, then runs candidate module code, every test call and the encoding of each return
  value (the span the sandbox times) inside ``sys.call_tracing``; callgrind collects only inside
  that C function (``--collect-atstart=no --toggle-collect=sys_call_tracing``), so interpreter
  start-up and shutdown do not count. The harness removes ``sys.call_tracing`` before candidate
  code runs, so the candidate cannot switch counting off by calling it. Program tests run in one
  process (the module re-executed per stdin) rather than one process each.

This needs a Python whose symbol table names ``sys_call_tracing`` (most builds keep it; a stripped
binary does not, and :func:`count_instructions` then raises :class:`CallgrindUnavailable`).
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox.jobs import FunctionJob, Job, ProgramJob, ScriptJob, function_payload, script_payload
from sandbox.types import FunctionTest

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)

HARNESS = r"""
import io, json, sys
sys.path.insert(0, "/effirl")
from sandbox import codec
from sandbox.harness import preload

preload()
job = json.load(open("/job/job.json"))
mode = job["mode"]
code = compile(job["code"], "<candidate>", "exec", dont_inherit=True)
script = compile(job["test_script"], "<test>", "exec", dont_inherit=True) if mode == "script" else None
inputs = [(codec.from_jsonable(a), codec.from_jsonable(k)) for a, k in job.get("inputs", [])]
stdins = job.get("stdins", [])
real_stdin, real_stdout = sys.stdin, sys.stdout


def function_tests():
    namespace = {"__name__": "candidate"}
    exec(code, namespace)
    function = namespace[job["entry_point"]]
    for args, kwargs in inputs:
        codec.to_jsonable(function(*args, **kwargs))


def program_tests():
    for text in stdins:
        sys.stdin, sys.stdout = io.StringIO(text), io.StringIO()
        try:
            exec(code, {"__name__": "__main__"})
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        finally:
            sys.stdin, sys.stdout = real_stdin, real_stdout


def script_test():
    namespace = {"__name__": "candidate"}
    exec(code, namespace)
    exec(script, namespace)
    if job.get("entry_point") and callable(namespace.get("check")):
        namespace["check"](namespace[job["entry_point"]])


measured = {"function": function_tests, "program": program_tests, "script": script_test}[mode]
tracing = sys.call_tracing
del sys.call_tracing
tracing(measured, ())
"""


class CallgrindUnavailable(RuntimeError):
    """valgrind, bubblewrap or a Python with symbols is missing; the message says which and the fix."""


class CallgrindFailed(RuntimeError):
    """The measured run did not complete (an exception, a timeout, a crash)."""


@dataclass(frozen=True)
class CallgrindConfig:
    """Limits of one measurement.

    timeout_s: wall-clock limit (valgrind runs code about 50x slower than python).
    cpu_s: CPU-time rlimit of the jail (None: ``timeout_s``).
    python: the interpreter to run (default: this one, symlinks resolved).
    """

    timeout_s: float = 120.0
    cpu_s: float | None = None
    python: str | None = None


def callgrind_unavailable_reason(python: str | None = None) -> str | None:
    """Why callgrind measurements cannot run here, or None when they can (checked for real)."""
    for tool, fix in (("valgrind", "apt-get install valgrind"), ("bwrap", "apt-get install bubblewrap")):
        if shutil.which(tool) is None:
            return f"--cost callgrind needs `{tool}` on PATH ({fix})"
    probe = FunctionJob("def f():\n    return 1\n", "f", (FunctionTest(()),))
    try:
        count_instructions(probe, config=CallgrindConfig(timeout_s=60.0, python=python))
    except (CallgrindUnavailable, CallgrindFailed) as exc:
        return str(exc)
    return None


def count_instructions(job: Job, *, config: CallgrindConfig | None = None) -> int:
    """Instructions the candidate's module code and test calls executed (see the module docstring).

    Raises CallgrindUnavailable when the tools are missing and CallgrindFailed when the run fails.
    """
    config = config or CallgrindConfig()
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("bwrap") is None:
        raise CallgrindUnavailable("callgrind measurements need `valgrind` and `bwrap` on PATH")
    python = os.path.realpath(config.python or sys.executable)
    with tempfile.TemporaryDirectory(prefix="effirl-callgrind-") as work:
        job_dir, out_dir = Path(work, "job"), Path(work, "out")
        job_dir.mkdir()
        out_dir.mkdir()
        (job_dir / "job.json").write_text(json.dumps(_payload(job)), encoding="utf-8")
        (job_dir / "harness.py").write_text(HARNESS, encoding="utf-8")
        command = [
            *_jail(python, job_dir, out_dir),
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=sys_call_tracing",
            "--callgrind-out-file=/out/callgrind.out",
            "--log-file=/out/valgrind.log",
            python,
            "-I",
            "-S",
            "/job/harness.py",
        ]
        cpu_limit = int(config.cpu_s or config.timeout_s) + 1
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit)),
        )
        try:
            _, stderr = process.communicate(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise CallgrindFailed(f"callgrind run exceeded {config.timeout_s:g} s") from None
        if process.returncode != 0:
            log = (
                (out_dir / "valgrind.log").read_text(errors="replace")
                if (out_dir / "valgrind.log").exists()
                else ""
            )
            detail = (log + stderr.decode(errors="replace")).strip().splitlines()
            raise CallgrindFailed(
                f"callgrind run failed (exit {process.returncode}): {' | '.join(detail[-3:]) or 'no output'}"
            )
        report = out_dir / "callgrind.out"
        match = _TOTALS.search(report.read_text(errors="replace")) if report.exists() else None
        if match is None:
            raise CallgrindFailed("callgrind wrote no totals")
        count = int(match.group(1))
    if count == 0:
        raise CallgrindUnavailable(
            f"callgrind counted nothing: {python} has no symbol `sys_call_tracing` (a stripped build); "
            "use a Python build with its symbol table (e.g. pyenv's, or the distribution's with debug "
            "symbols)"
        )
    return count


def _payload(job: Job) -> dict[str, object]:
    if isinstance(job, FunctionJob):
        return function_payload(job)
    if isinstance(job, ProgramJob):
        return {"mode": "program", "code": job.code, "stdins": [t.stdin for t in job.tests]}
    if isinstance(job, ScriptJob):
        return script_payload(job)
    raise TypeError(f"cannot measure a {type(job).__name__} with callgrind")


def _jail(python: str, job_dir: Path, out_dir: Path) -> list[str]:
    """The bwrap prefix: a read-only minimal root with the Python install, effirl's sandbox package
    (for its codec and preload list), the job (read-only) and the output folder."""
    command = [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "PYTHONHASHSEED",
        "0",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        path = Path(top)
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            command += ["--ro-bind", top, top]
    if Path("/etc/ld.so.cache").exists():
        command += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefix = Path(python).resolve().parent.parent
    if not str(prefix).startswith("/usr/"):
        command += ["--ro-bind", str(prefix), str(prefix)]
    command += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        str(_PACKAGE_ROOT / "sandbox"),
        "/effirl/sandbox",
        "--ro-bind",
        str(job_dir),
        "/job",
        "--bind",
        str(out_dir),
        "/out",
        "--chdir",
        "/tmp",
        "--",
    ]
    return command
