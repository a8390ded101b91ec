"""What the trusted monitor reads about a candidate process from the kernel, never from the candidate.

CPU clocks, memory high-water marks, scheduler state, hardware counters and exit statuses all come
from ``clock_gettime``, ``/proc/PID/*`` (through a /proc the candidate cannot see), ``perf_event_open``
and ``wait4``. Standard library only: this runs inside the monitor.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from typing import Any

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_when_blocked(proc_fd: int, pid: int, name: str, deadline: float) -> bytes | None:
    """``/proc/PID/stat`` or ``/proc/PID/status``, read once the candidate is off the CPU.

    It writes its record, then blocks in read(); until it leaves the CPU its accounted runtime may lag
    by up to a scheduler tick. Reading the file is cheap and usually shows it asleep at the first
    look. The file that showed it is returned: taken while the candidate is blocked, its figures (the
    resident set in ``stat``, the high-water mark in ``status``) belong with the CPU clock read next.
    None when the process is gone; at the deadline, the last reading.
    """
    size = 512 if name == "stat" else 8192
    while True:
        data = _read_proc(proc_fd, pid, name, size)
        if data is None or _state(data, name) != b"R" or time.monotonic() >= deadline:
            return data
        time.sleep(0)


def _state(data: bytes, name: str) -> bytes:
    if name == "stat":
        end = data.rfind(b")")
        return data[end + 2 : end + 3]
    start = data.find(b"\nState:")
    return data[start + 8 : start + 9] if start >= 0 else b""


def cpu_clock_ns(pid: int) -> int:
    # The kernel's CPU clock of another process: ((~pid) << 3) | CPUCLOCK_SCHED, see clock_getcpuclockid(3).
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def resident_bytes(stat: bytes | None) -> int:
    """The resident set in a ``/proc/PID/stat`` reading (its 24th field, in pages)."""
    try:
        return int(stat.rsplit(b")", 1)[1].split()[21]) * _PAGE_SIZE if stat else 0
    except (ValueError, IndexError):
        return 0


def peak_resident_bytes(status: bytes | None) -> int | None:
    """The high-water mark of the resident set (``VmHWM``) in a ``/proc/PID/status`` reading."""
    start = (status or b"").find(b"\nVmHWM:")
    if start < 0:
        return None
    try:
        return int(status[start + 7 : status.index(b"kB", start)]) * 1024  # type: ignore[index]
    except ValueError:
        return None


def rusage_cpu_ns(usage: Any) -> int:
    """User plus system time of a reaped child (``wait4``'s rusage), in ns (microsecond resolution)."""
    return round((usage.ru_utime + usage.ru_stime) * 1e6) * 1000  # type: ignore[attr-defined]


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    if os.WIFEXITED(status):
        return f"exit status {os.WEXITSTATUS(status)}"
    return f"status {status}"


def exit_code(status: int) -> int:
    """A shell's view of a wait status: the exit code, or minus the signal number."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1


def _read_proc(proc_fd: int, pid: int, name: str, size: int) -> bytes | None:
    try:
        fd = os.open(f"{pid}/{name}", os.O_RDONLY, dir_fd=proc_fd)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


class HardwareCounter:
    """Instructions retired by a process, via perf_event_open; ``read`` gives None when unsupported."""

    def __init__(self, pid: int) -> None:
        import ctypes

        self._fd = -1
        attr = (ctypes.c_uint64 * 16)()  # struct perf_event_attr, PERF_ATTR_SIZE_VER5 = 112 bytes
        attr[0] = 0 | (112 << 32)  # type PERF_TYPE_HARDWARE, size
        attr[1] = 1  # PERF_COUNT_HW_INSTRUCTIONS
        attr[5] = (1 << 1) | (1 << 5) | (1 << 6)  # inherit | exclude_kernel | exclude_hv
        libc = ctypes.CDLL(None, use_errno=True)
        number = {"x86_64": 298, "aarch64": 241}.get(os.uname().machine)
        if number is not None:
            self._fd = libc.syscall(number, ctypes.byref(attr), pid, -1, -1, 8)  # PERF_FLAG_FD_CLOEXEC

    def read(self) -> int | None:
        if self._fd < 0:
            return None
        try:
            return struct.unpack("<Q", os.read(self._fd, 8))[0]
        except OSError:
            return None
