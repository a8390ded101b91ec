"""Linux namespace, mount, capability and rlimit calls for building the sandbox's boxes.

Two levels of box:
- the *jail* each fork server lives in, built once per worker: a private mount namespace whose root
  is a fresh tmpfs holding read-only bind mounts of the system directories and the Python install,
  nothing else (no /home, /root, /work, /var, host /tmp), entered with pivot_root;
- the *per-run box*: fresh user, mount, pid, network, IPC and UTS namespaces for every execution, a
  private tmpfs working directory at /tmp, and a fresh /proc that shows only the run's own process.

Standard library only (ctypes): this module runs inside the fork server.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
RUN_NAMESPACES = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
AT_RECURSIVE = 0x8000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 1, 4, 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "mount_setattr": 442, "clone": 56},
    "aarch64": {"pivot_root": 41, "mount_setattr": 442, "clone": 220},
}
CLONE_PARENT = 0x00008000
_SIGCHLD = 17

_libc = ctypes.CDLL(None, use_errno=True)
# Looked up once, at import in the fork server: the first lookup of a name on a CDLL builds its function
# object, which every candidate (a copy of the template) would otherwise build again, page faults and all.
_prctl, _mount, _capset, _syscall = _libc.prctl, _libc.mount, _libc.capset, _libc.syscall


class IsolationError(RuntimeError):
    """A layer of isolation could not be set up."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise IsolationError(f"{what} failed: {os.strerror(code)} (errno {code})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()
    result = _mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount({source!r} -> {target!r}, {fstype!r})")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount({target!r})")


def _syscall_number(name: str) -> int:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        raise IsolationError(f"no syscall numbers for {platform.machine()!r}")
    return table[name]


def clone_sibling(flags: int) -> int:
    """A copy of this process made by clone(2) with CLONE_PARENT: its parent is *our* parent, and it
    starts in the new namespaces ``flags``. Returns the child's pid here and 0 in the child.

    This is how the fork server's template hands candidates to the server: the server can wait for
    them (exit status, resource usage) although it never held the memory they are copies of. Call it
    only from a single-threaded process: unlike os.fork(), no at-fork handlers run in the child
    (Python's, like reseeding `random`, or glibc's), which a process with one thread does not need.
    """
    number = _syscall_number("clone")
    zero = ctypes.c_long(0)
    pid = _syscall(
        ctypes.c_long(number), ctypes.c_long(CLONE_PARENT | flags | _SIGCHLD), zero, zero, zero, zero
    )
    if pid < 0:
        code = ctypes.get_errno()
        raise IsolationError(f"clone({flags:#x}) failed: {os.strerror(code)} (errno {code})")
    return pid


def pivot_root(new_root: str, put_old: str) -> None:
    result = _libc.syscall(_syscall_number("pivot_root"), new_root.encode(), put_old.encode())
    _check(result, "pivot_root")


def make_tree_read_only(path: str) -> None:
    """Make the mount at ``path`` and every mount below it read-only and nosuid (Linux >= 5.12)."""

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    at_fdcwd = -100
    result = _libc.syscall(
        _syscall_number("mount_setattr"),
        ctypes.c_int(at_fdcwd),
        path.encode(),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr({path!r}, read-only, recursive)")


SANDBOX_INSIDE_ID = 1000  # the uid/gid candidates see; mapped to an unprivileged id outside


def write_id_maps(inside: int, outside_uid: int, outside_gid: int, proc_fd: int | None = None) -> None:
    """Map one uid/gid into the user namespace just created by this process.

    ``proc_fd``: an open directory of a /proc that shows this process (default: the mounted /proc).
    """
    entries = (
        ("setgroups", "deny"),
        ("uid_map", f"{inside} {outside_uid} 1"),
        ("gid_map", f"{inside} {outside_gid} 1"),
    )
    for name, text in entries:
        fd = os.open(
            f"self/{name}" if proc_fd is not None else f"/proc/self/{name}", os.O_WRONLY, dir_fd=proc_fd
        )
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def enter_user_namespace(proc_fd: int | None = None) -> None:
    """A private user namespace for this process, mapping SANDBOX_INSIDE_ID to our uid outside.

    The caller keeps full capabilities inside it (to set up mounts) until it drops them.
    """
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER)
    write_id_maps(SANDBOX_INSIDE_ID, uid, gid, proc_fd)


def die_with_parent() -> None:
    """Get SIGKILL when the parent dies, so no box outlives the process that watches it."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def set_dumpable(dumpable: bool = True) -> None:
    """Whether processes of the same uid may open this one's memory and files under /proc.

    setuid() clears "dumpable", which makes /proc/self/uid_map root-owned and unwritable for the
    user-namespace setup that follows: restore it there. Processes that hold what candidates must not
    touch (the template, the monitors) clear it.
    """
    _prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


# Built at import, like the function objects above: capset only reads them.
_CAP_HEADER = ctypes.byref(_CapHeader(0x20080522, 0))  # _LINUX_CAPABILITY_VERSION_3
_NO_CAPABILITIES = ctypes.byref((_CapData * 2)())


def drop_bounding_set() -> None:
    """Empty the capability bounding set, so that no execve can ever grant a capability again.

    It is inherited by every process cloned from this one, so the template empties it once for all
    its candidates; a fresh user namespace starts with a full set again, so a candidate cloned into
    one (the run scope) empties its own. Emptying it costs a credentials update per capability, about
    0.4 ms in all.
    """
    for cap in range(64):
        if _prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows


def drop_capabilities(*, bounding_set: bool = True) -> None:
    """Clear the ambient, effective, permitted and inheritable capability sets, and unless this
    process inherited an empty one (``bounding_set=False``), the bounding set."""
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if bounding_set:
        drop_bounding_set()
    _check(_capset(_CAP_HEADER, _NO_CAPABILITIES), "capset")


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to each candidate process."""

    cpu_s: float
    address_space_bytes: int
    file_size_bytes: int
    open_files: int
    threads: int
    stack_bytes: int


def apply_limits(limits: Limits) -> None:
    cpu = max(1, int(limits.cpu_s + 0.999))
    settings = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (limits.address_space_bytes, limits.address_space_bytes)),
        (resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes)),
        (resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files)),
        (resource.RLIMIT_NPROC, (limits.threads, limits.threads)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_STACK, (limits.stack_bytes, limits.stack_bytes)),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
        (resource.RLIMIT_MSGQUEUE, (0, 0)),
    ]
    for which, value in settings:
        resource.setrlimit(which, value)


# ---------------------------------------------------------------------------------------------- jail

SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
# Only the /etc files a Python program may reasonably read; the rest (shadow, keys, configs) stays out.
ETC_PATHS = (
    "/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
    "/etc/mime.types", "/etc/os-release", "/etc/alternatives",
)  # fmt: skip
DEVICES = ("null", "zero", "full", "random", "urandom")


def python_paths() -> list[str]:
    """Directories the interpreter needs at run time (stdlib, extension modules, libpython)."""
    paths = {sys.base_prefix, sys.base_exec_prefix}
    return sorted(p for p in paths if p and not any(p.startswith(s + "/") for s in SYSTEM_PATHS))


def build_jail(root: str, extra_paths: Iterable[str] = ()) -> list[str]:
    """Turn this process's world into the jail; returns notes on what was left out.

    Must be called in a fresh mount namespace this process may modify. ``root`` is an empty directory
    used as the mount point of the new root. Everything is read-only except /proc, which the per-run
    setup writes its user-namespace maps through, and which the candidate never sees (it gets its own).
    """
    notes: list[str] = []
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    read_only: list[str] = []
    for path in (*SYSTEM_PATHS, *ETC_PATHS, *python_paths(), *extra_paths):
        if _bind_into(root, path, notes):
            read_only.append(path)
    dev = os.path.join(root, "dev")
    os.makedirs(dev, mode=0o755, exist_ok=True)
    for name in DEVICES:
        node = os.path.join(dev, name)
        open(node, "w").close()
        mount(f"/dev/{name}", node, None, MS_BIND)
        read_only.append(f"/dev/{name}")
    for name in ("tmp", "proc", ".old_root"):
        os.makedirs(os.path.join(root, name), mode=0o755, exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    mount("/proc", os.path.join(root, "proc"), None, MS_BIND | MS_REC)
    os.chdir(root)
    pivot_root(".", ".old_root")
    os.chdir("/")
    umount("/.old_root", MNT_DETACH)
    os.rmdir("/.old_root")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in read_only:
        try:
            make_tree_read_only(path)
        except IsolationError as exc:
            raise IsolationError(f"{exc}; the sandbox needs Linux >= 5.12 for a read-only jail") from None
    return notes


def _bind_into(root: str, path: str, notes: list[str]) -> bool:
    """Bind ``path`` at the same place under ``root``; True if a mount was made."""
    if not os.path.lexists(path):
        return False
    target = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return False
    if os.path.lexists(target) and os.path.ismount(target):
        return False  # already inside an earlier bind
    if os.path.isdir(path):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        open(target, "w").close()
    try:
        mount(path, target, None, MS_BIND | MS_REC)
        return True
    except IsolationError as exc:
        notes.append(f"not visible in the sandbox: {path} ({exc})")
        return False


# Each candidate gets its own pid and mount namespaces when it is cloned (sandbox.candidate); the
# fork server's own pid namespace stays the host's, so its template can clone them as its siblings.
WORKER_NAMESPACES = CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS


def enter_jail(root: str, extra_paths: Iterable[str] = (), *, worker_namespaces: bool) -> list[str]:
    """Enter a fresh jail (the caller drops root privileges afterwards, see :func:`become_unprivileged`).

    As root the jail's namespaces are made directly and privileges are dropped once it is built, so
    candidates never run as a uid that owns anything on the host; each worker gets its own uid so that
    per-user limits (RLIMIT_NPROC) count one worker's processes only. As an ordinary user a user
    namespace provides the privileges needed to build the jail.

    With ``worker_namespaces`` the jail also gets its own network, IPC and UTS namespaces.
    """
    flags = CLONE_NEWNS | (WORKER_NAMESPACES if worker_namespaces else 0)
    if running_as_real_root():
        unshare(flags)
    else:
        enter_user_namespace()
        unshare(flags)
    return build_jail(root, extra_paths)


def running_as_real_root() -> bool:
    """Root of the initial user namespace (not merely uid 0 inside a user namespace)."""
    return os.geteuid() == 0 and _is_initial_user_namespace()


def become_unprivileged(uid: int) -> None:
    """Drop from root to ``uid``/``uid`` with no groups; call only when :func:`running_as_real_root`."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    set_dumpable()


def _is_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def _tmpfs_options(size_bytes: int) -> str:
    return f"size={max(64, size_bytes // 1024)}k,nr_inodes=1024,mode=1777"


def mount_run_tmp(work_dir_bytes: int) -> None:
    """A fresh, size-capped tmpfs at /tmp for one run (call in the run's own mount namespace)."""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, _tmpfs_options(work_dir_bytes))


def mount_run_proc() -> bool:
    """In pid 1 of the run's namespace: a /proc that shows only this run. False if the kernel refuses."""
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return True
    except IsolationError:
        # Hide the host's processes rather than show them.
        mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k")
        return False
