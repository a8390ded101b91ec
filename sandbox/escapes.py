"""Attacks of `effirl sandbox audit` on the box itself: exit statuses, identities, the classic escapes.

Each probe answers one yes/no question per test (was the host file readable? did the connection
open?), so that a reward service, which says which tests failed but not what a function returned,
is judged exactly like a local sandbox. A control test that must succeed inside any box (reading the
standard library, writing to /tmp) turns a broken probe into "inconclusive" instead of "contained".
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace

from sandbox.audit import (
    HEALTHY,
    Attack,
    Context,
    Finding,
    FunctionStep,
    Observation,
    Outcome,
    Parallel,
    ProgramStep,
    Step,
    contained,
    function,
    inconclusive,
    not_contained,
    own_failure,
    record_writer,
    repeat_failed,
)
from sandbox.local_audit import candidate_uids, job_of

# ---------------------------------------------------------------------- 7. a program's exit status

EXIT_CASES = (
    ("status_in_exception_text", "raise ValueError('exit status 0')", 1),
    ("forged_done_then_exit", record_writer(b'{"t":"done","events":null}\n', "raise SystemExit(4)", True), 4),
    ("os_exit", "print('ok')\nimport os\nos._exit(5)", 5),
    ("status_printed", "print('exit status 0')\nimport sys\nsys.exit(3)", 3),
)


def exit_status_attacks() -> list[Attack]:
    return [_exit_attack(name, code, expected) for name, code, expected in EXIT_CASES]


def _exit_attack(name: str, code: str, expected: int) -> Attack:
    def judge(observations: Sequence[Observation], context: Context) -> Finding:
        run = observations[0]
        if run.exit_code == expected:
            return contained(f"exit status {expected}, the program's real one ({run.status})")
        return not_contained(
            f"reported exit status {run.exit_code}; the program really exited with {expected}"
        )

    first_line = code.strip().splitlines()[-1]
    return Attack(
        "exit_status",
        name,
        f"a program ending in `{first_line}` claims success",
        steps=lambda context: [ProgramStep(code, "", "ok\n")],
        judge=judge,
    )


# ------------------------------------------------------------------------------- 12. identities


def shared_uids(context: Context) -> Finding:
    """Start a second sandbox beside the audited one; the host's view of their processes' uids."""
    if not context.root:
        return Finding(
            Outcome.NOT_APPLICABLE,
            "not root: candidates run as the caller's own uid inside user namespaces",
        )
    from sandbox.pool import Sandbox

    box = context.extra["box"]
    with Sandbox(replace(box.config, workers=1)) as other:
        for sandbox in (box, other):
            sandbox.run(job_of(HEALTHY))
        time.sleep(0.2)  # each fork server prepares its next run after answering
        ours, theirs = candidate_uids(box), candidate_uids(other)
    if not ours or not theirs:
        return inconclusive("could not see the sandboxes' candidates in the host's /proc")
    shared = sorted(ours & theirs)
    if shared:
        return not_contained(f"candidates of two sandboxes share uid {shared[0]} on the host")
    root = "; uid 0 among them" if 0 in ours | theirs else ""
    return contained(f"uids {min(ours)}.. and {min(theirs)}..: no uid shared{root}")


# ------------------------------------------------------------------------------ classic escapes

CAN_READ = function(
    "can_read",
    "path",
    """
    import os
    if path == "<stdlib>":
        path = os.__file__
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "proc" and parts[2] == str(os.getpid()):
        return False  # its own /proc entry (pid 1 of its namespace), not the host's
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        return True
    except OSError:
        return False
    """,
)
# What a service host has that no candidate may read (a local audit uses what exists here).
REMOTE_HOST_PATHS = (
    "/etc/shadow",
    "/etc/hostname",
    "/etc/hosts",
    "/root/.bashrc",
    "/root/.ssh",
    "/var/log",
    "/proc/1/environ",
    "/sys/kernel",
)


def _host_files_steps(context: Context) -> list[FunctionStep]:
    paths = _paths(context)
    tests = ((("<stdlib>",), True), *(((path,), False) for path in paths))
    return [FunctionStep(CAN_READ, "can_read", tests)]


def _paths(context: Context) -> tuple[str, ...]:
    return (context.host_paths if not context.remote else REMOTE_HOST_PATHS)[:9]


def _judge_host_files(observations: Sequence[Observation], context: Context) -> Finding:
    run, paths = observations[0], _paths(context)
    read = [path for k, path in enumerate(paths, start=1) if run.failed_test(k)]
    if run.status in ("passed", "failed") and read:
        return not_contained(f"read host path(s) {', '.join(read[:4])}")
    if run.status not in ("passed", "failed") or run.failed_test(0):
        return inconclusive(
            f"control failed: the probe could not read the standard library ({run.describe()})"
        )
    return contained(
        f"none of {len(paths)} host paths readable ({', '.join(p.rsplit('/', 1)[-1] for p in paths)})"
    )


BLOCKED = function(
    "blocked",
    "kind, host, port",
    """
    import socket
    try:
        if kind == "tcp":  # numeric addresses only: resolving a name is the "dns" case
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect((host, port))
        elif kind == "tcp6":
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(("::1", port))
        elif kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"effirl audit", (host, port))
        elif kind == "dns":
            socket.getaddrinfo(b"example.com", 80)
            return False
        elif kind == "netlink":
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        else:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.close()
        return False
    except OSError:
        return True
    """,
)
NETWORK_KINDS = ("tcp", "tcp6", "udp", "dns", "netlink", "packet")


def _network_steps(context: Context) -> list[FunctionStep]:
    host, port = context.host_address or "127.0.0.1", context.host_port or 9
    return [FunctionStep(BLOCKED, "blocked", tuple(((kind, host, port), True) for kind in NETWORK_KINDS))]


def _judge_network(observations: Sequence[Observation], context: Context) -> Finding:
    run = observations[0]
    if run.status not in ("passed", "failed"):
        return inconclusive(run.describe())
    opened = [kind for k, kind in enumerate(NETWORK_KINDS) if run.failed_test(k)]
    listener = context.extra.get("listener")
    if listener is not None and listener.accepted:
        opened.append("a connection reached the host's listener")
    if opened:
        return not_contained(f"network open: {', '.join(opened)}")
    target = f"{context.host_address}:{context.host_port}"
    return contained(f"TCP to the host ({target}), TCPv6, UDP, DNS, netlink and raw sockets all refused")


LOOK = function(
    "look",
    "k, host_pid",
    """
    import os
    me = os.getpid()
    if k == 0:  # other processes listed in /proc
        try:
            return any(name.isdigit() and int(name) != me for name in os.listdir("/proc"))
        except OSError:
            return False
    pids = range(1, 4097) if k == 1 else [host_pid]
    for pid in pids:
        if pid == me:
            continue
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            continue
        except PermissionError:  # it exists: visible, only not ours to signal
            return True
    return False
    """,
)


def _processes_steps(context: Context) -> list[FunctionStep]:
    tests = [((0, 0), False), ((1, 0), False)]
    if context.host_pid is not None:
        tests.append(((2, context.host_pid), False))
    return [FunctionStep(LOOK, "look", tuple(tests))]


def _judge_processes(observations: Sequence[Observation], context: Context) -> Finding:
    run = observations[0]
    if run.status not in ("passed", "failed"):
        return inconclusive(run.describe())
    seen = [
        what
        for k, what in enumerate(
            ("other processes in /proc", "a pid answering signal 0", "the auditor's pid")
        )
        if k < run.total and run.failed_test(k)
    ]
    if seen:
        return not_contained(f"sees {', '.join(seen)}")
    host = " and the auditor's" if run.total > 2 else ""
    return contained(f"no other process in /proc; pids 1-4096{host} all answer ESRCH")


WROTE = function(
    "wrote",
    "path",
    """
    import os
    if path.startswith("<stdlib>"):
        path = os.path.dirname(os.__file__) + path[len("<stdlib>"):]
    try:
        with open(path, "x") as f:
            f.write("effirl audit")
    except OSError:
        return False
    if path.startswith("/tmp/"):
        os.unlink(path)
    return True
    """,
)
# Whether a file an earlier run wrote is still there (and remove it).
FOUND = function(
    "found",
    "path",
    """
    import os
    if path.startswith("<stdlib>"):
        path = os.path.dirname(os.__file__) + path[len("<stdlib>"):]
    if not os.path.exists(path):
        return False
    try:
        os.unlink(path)
    except OSError:
        pass
    return True
    """,
)
OUTSIDE_TMP = ("/", "/usr/", "/etc/", "/var/tmp/", "/dev/shm/", "<stdlib>/", "/root/", "/home/", "/run/")


def _outside(context: Context) -> list[str]:
    return [folder + f"effirl-audit-{context.nonce}" for folder in OUTSIDE_TMP]


def _write_steps(context: Context) -> list[Step | Parallel]:
    paths = _outside(context)
    write = FunctionStep(
        WROTE, "wrote", (((f"/tmp/effirl-audit-{context.nonce}",), True), *(((p,), False) for p in paths))
    )
    later = FunctionStep(FOUND, "found", tuple(((p,), False) for p in paths))
    return [write, Parallel((later,) * context.workers)]


def _judge_write(observations: Sequence[Observation], context: Context) -> Finding:
    write, later = observations[0], observations[1:]
    paths = _outside(context)
    on_host = [] if context.remote else [p for p in paths if not p.startswith("<") and _remove(p)]
    if on_host:
        return not_contained(f"wrote {', '.join(on_host[:3])} on the host")
    kept = [folder for k, folder in enumerate(OUTSIDE_TMP) if any(o.failed_test(k) for o in later)]
    if kept:
        return not_contained(f"a later run found what an earlier run wrote into {', '.join(kept)}")
    if write.status not in ("passed", "failed") or write.failed_test(0):
        return inconclusive(f"control failed: the probe could not write to /tmp ({write.describe()})")
    wrote = [folder for k, folder in enumerate(OUTSIDE_TMP, start=1) if write.failed_test(k)]
    if wrote:
        return contained(f"writes into {', '.join(wrote)} stayed in the run's own root and died with it")
    return contained(f"/tmp writable, none of {len(OUTSIDE_TMP)} folders outside it")


def _remove(path: str) -> bool:
    """True if ``path`` exists on this host (then it is removed)."""
    if not os.path.lexists(path):
        return False
    try:
        os.unlink(path)
    except OSError:
        pass
    return True


LEFTOVER = """
import os, socket, threading, time
_STATE = None

def _hold(listener):
    try:
        listener.accept()
    except OSError:
        pass
    time.sleep(120)

def survive(name):
    global _STATE
    if _STATE is None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect("\\0" + name)
            alive = True
        except OSError:
            alive = False
        probe.close()
        if not alive:  # leave a listener behind, in a thread and in a daemon process if allowed
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind("\\0" + name)
            listener.listen(1)
            threading.Thread(target=_hold, args=(listener,)).start()
            try:
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        _hold(listener)
                        os._exit(0)
                    os._exit(0)
            except OSError:
                pass
        _STATE = not alive
    return _STATE
"""


def _judge_leftover(observations: Sequence[Observation], context: Context) -> Finding:
    run = observations[0]
    if run.ok:
        return contained("nothing a run left listening (thread, daemon) was there for the next run")
    number = repeat_failed(run)
    if number is not None and run.failed_test(0):
        return not_contained(f"run {number} reached a listener an earlier run left behind")
    return inconclusive(run.describe())


def escape_attacks() -> list[Attack]:
    return [
        Attack(
            "escapes",
            "host_files",
            "read files of the host outside the jail",
            steps=_host_files_steps,
            judge=_judge_host_files,
        ),
        Attack(
            "escapes",
            "network",
            "open the network, even loopback to the host",
            steps=_network_steps,
            judge=_judge_network,
        ),
        Attack(
            "escapes",
            "host_processes",
            "see or signal processes outside the run (the host, its monitor and template)",
            steps=_processes_steps,
            judge=_judge_processes,
        ),
        Attack(
            "escapes",
            "write_outside_tmp",
            "write files outside /tmp",
            steps=_write_steps,
            judge=_judge_write,
        ),
        Attack(
            "escapes",
            "outlive_the_run",
            "keep a thread or daemon alive after the run, for the next run to reach",
            steps=lambda context: [
                FunctionStep(LEFTOVER, "survive", (((f"effirl-audit-{context.nonce}",), True),), repeats=3)
            ],
            judge=_judge_leftover,
        ),
        Attack(
            "escapes",
            "fork_bomb",
            "fork without end",
            steps=lambda context: [
                FunctionStep(
                    function("add", "a, b", "import os\nwhile True:\n    os.fork()"), "add", (((1, 2), 3),)
                ),
                HEALTHY,
            ],
            judge=own_failure("a fork bomb"),
        ),
        Attack(
            "escapes",
            "memory_bomb",
            "allocate without end",
            steps=lambda context: [
                FunctionStep(
                    function(
                        "add", "a, b", "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))"
                    ),
                    "add",
                    (((1, 2), 3),),
                ),
                HEALTHY,
            ],
            judge=own_failure("a memory bomb"),
        ),
    ]


__all__ = ["escape_attacks", "exit_status_attacks", "shared_uids"]
