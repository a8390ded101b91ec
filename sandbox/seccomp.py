"""A seccomp-BPF filter for candidate processes, assembled by hand (no libseccomp needed).

The filter is a deny-list: syscalls that let a process escape or damage its box return EPERM (the
candidate sees a PermissionError it can handle; nothing crashes), everything else is allowed. SysV and
POSIX message/shared-memory objects are denied too: they would outlive a run in a worker's IPC
namespace. So are the calls that read or steer the host's page cache without timing anything
(``fadvise64``, ``readahead``, ``preadv2``/``pwritev2`` with their RWF_NOWAIT probe, ``mincore``,
``cachestat``, and ``madvise`` with MADV_COLD/MADV_PAGEOUT): which pages of the jail's read-only files
are cached is state no run owns, and they made it a channel between runs and sandboxes. On top:
- ``socket`` only for AF_UNIX (no network even if the network namespace were missing),
- ``clone`` only with CLONE_THREAD (threads yes, new processes no) unless subprocesses are allowed,
  ``fork``/``vfork`` likewise, and ``clone3`` answers ENOSYS so libc falls back to the checkable ``clone``,
- an unknown architecture or the x32 ABI is refused.

Standard library only: this module runs inside the sandboxed child.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from dataclasses import dataclass
from typing import Any

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_AF_UNIX = 1
_CLONE_THREAD = 0x00010000
_X32_SYSCALL_BIT = 0x40000000
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data; arg0's low 32 bits (LE)

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "lookup_dcookie", "fanotify_init",
    "add_key", "request_key", "keyctl", "open_by_handle_at", "name_to_handle_at",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "iopl", "ioperm", "shmget", "semget", "msgget", "mq_open",
    "fadvise64", "readahead", "preadv2", "pwritev2", "mincore", "cachestat",
)  # fmt: skip
# madvise stays (allocators need it), but not the advice that evicts file pages from the page cache.
_MADV_COLD, _MADV_PAGEOUT = 20, 21
_OFFSET_ARG2 = 32

_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438, "kcmp": 312,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169,
    "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179, "syslog": 103, "vhangup": 153,
    "lookup_dcookie": 212, "fanotify_init": 300, "add_key": 248, "request_key": 249, "keyctl": 250,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "settimeofday": 164, "clock_settime": 227,
    "clock_adjtime": 305, "adjtimex": 159, "sethostname": 170, "setdomainname": 171, "iopl": 172,
    "ioperm": 173, "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240, "socket": 41, "clone": 56,
    "clone3": 435, "fork": 57, "vfork": 58,
    "fadvise64": 221, "readahead": 187, "preadv2": 327, "pwritev2": 328, "mincore": 27, "cachestat": 451,
    "madvise": 28,
}  # fmt: skip
_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_getfd": 438, "kcmp": 272,
    "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "unshare": 97, "setns": 268, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104,
    "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142,
    "swapon": 224, "swapoff": 225, "acct": 89, "quotactl": 60, "syslog": 116, "vhangup": 58,
    "lookup_dcookie": 18, "fanotify_init": 262, "add_key": 217, "request_key": 218, "keyctl": 219,
    "open_by_handle_at": 265, "name_to_handle_at": 264, "settimeofday": 170, "clock_settime": 112,
    "clock_adjtime": 266, "adjtimex": 171, "sethostname": 161, "setdomainname": 162,
    "shmget": 194, "semget": 190, "msgget": 186, "mq_open": 180, "socket": 198, "clone": 220, "clone3": 435,
    "fadvise64": 223, "readahead": 213, "preadv2": 286, "pwritev2": 287, "mincore": 232, "cachestat": 451,
    "madvise": 233,
}  # fmt: skip
# AUDIT_ARCH_* values: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
_ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}


class SeccompUnavailable(RuntimeError):
    """This machine's architecture or kernel cannot take our filter."""


@dataclass(frozen=True)
class SeccompFilter:
    """An assembled filter, ready to install in the current process."""

    program: bytes
    arch: str

    def install(self) -> None:
        """Set no_new_privs and load the filter; irreversible for this process and its children."""
        prctl, program = self.prepare()
        if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, program, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")

    def prepare(self) -> tuple[Any, Any]:
        """``prctl`` and a reference to the program, built now (in the fork server, before any candidate
        is cloned) so that each install is just two calls, with nothing to build or look up."""
        cached = _PREPARED.get(self.program)
        if cached is None:
            buffer = ctypes.create_string_buffer(self.program, len(self.program))
            fprog = _SockFprog(len(self.program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            cached = _PREPARED[self.program] = (prctl, ctypes.byref(fprog), fprog, buffer)
        return cached[0], cached[1]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


# The structures live as long as the process: the kernel reads them at each install.
_PREPARED: dict[bytes, tuple[Any, Any, _SockFprog, ctypes.Array]] = {}


def build_filter(*, allow_subprocesses: bool = False, arch: str | None = None) -> SeccompFilter:
    """Assemble the candidate filter for ``arch`` (default: this machine)."""
    arch = arch or platform.machine()
    if arch not in _ARCHES:
        raise SeccompUnavailable(f"no seccomp syscall table for architecture {arch!r}")
    audit_arch, table = _ARCHES[arch]
    asm = _Assembler()
    asm.load(_OFFSET_ARCH)
    asm.jump_if_equal(audit_arch, "check_nr", None)
    asm.ret(_RET_KILL_PROCESS)
    asm.label("check_nr")
    asm.load(_OFFSET_NR)
    if arch == "x86_64":
        asm.jump_if_greater_equal(_X32_SYSCALL_BIT, "deny", None)
    for name in DENIED:
        if name in table:
            asm.jump_if_equal(table[name], "deny", None)
    asm.jump_if_equal(table["socket"], "socket", None)
    asm.jump_if_equal(table["madvise"], "madvise", None)
    if not allow_subprocesses:
        asm.jump_if_equal(table["clone"], "clone", None)
        asm.jump_if_equal(table["clone3"], "nosys", None)
        for name in ("fork", "vfork"):
            if name in table:
                asm.jump_if_equal(table[name], "deny", None)
    asm.ret(_RET_ALLOW)
    asm.label("socket")
    asm.load(_OFFSET_ARG0)
    asm.jump_if_equal(_AF_UNIX, "allow", "deny")
    asm.label("clone")
    asm.load(_OFFSET_ARG0)
    asm.jump_if_set(_CLONE_THREAD, "allow", "deny")
    asm.label("madvise")
    asm.load(_OFFSET_ARG2)
    asm.jump_if_equal(_MADV_COLD, "deny", None)
    asm.jump_if_equal(_MADV_PAGEOUT, "deny", "allow")
    asm.label("allow")
    asm.ret(_RET_ALLOW)
    asm.label("deny")
    asm.ret(_RET_ERRNO | errno.EPERM)
    asm.label("nosys")
    asm.ret(_RET_ERRNO | errno.ENOSYS)
    return SeccompFilter(program=asm.assemble(), arch=arch)


class _Assembler:
    """Just enough of a classic-BPF assembler: forward jumps to labels, resolved in a second pass."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((_LD_W_ABS, None, None, offset))

    def ret(self, value: int) -> None:
        self._code.append((_RET_K, None, None, value))

    def jump_if_equal(self, k: int, if_true: str | None, if_false: str | None) -> None:
        self._code.append((_JEQ_K, if_true, if_false, k))

    def jump_if_greater_equal(self, k: int, if_true: str | None, if_false: str | None) -> None:
        self._code.append((_JGE_K, if_true, if_false, k))

    def jump_if_set(self, k: int, if_true: str | None, if_false: str | None) -> None:
        self._code.append((_JSET_K, if_true, if_false, k))

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, if_true, if_false, k) in enumerate(self._code):
            out += struct.pack("<HBBI", code, self._offset(index, if_true), self._offset(index, if_false), k)
        return bytes(out)

    def _offset(self, index: int, label: str | None) -> int:
        if label is None:
            return 0  # fall through to the next instruction
        offset = self._labels[label] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump to {label!r} out of range ({offset})")
        return offset
