"""Each isolation layer, probed from inside the box by candidate code."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox import FunctionTest, Sandbox, SandboxConfig, SandboxUnavailable, Status
from tests.sandbox.host_view import settled_worker_trees

REPO = Path(__file__).resolve().parents[2]


def probe(box: Sandbox, body: str, *args):
    """Run ``def probe(*args): <body>`` in the box and return its value."""
    src = "def probe(*args):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
    result = box.call_function(src, "probe", [args])
    assert result.status is Status.PASSED, (result.error, result.tests, result.stderr)
    return result.outputs[0]


SYSCALL_ERRNO = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, number, argv in args[0]:
    ctypes.set_errno(0)
    rc = libc.syscall(number, *argv)
    out[name] = (rc, ctypes.get_errno())
return out
"""
# x86_64 numbers; arguments chosen so that the call would succeed or fail harmlessly if allowed.
DANGEROUS_SYSCALLS = [
    ("ptrace", 101, [0, 0, 0, 0]),
    ("mount", 165, [0, 0, 0, 0, 0]),
    ("bpf", 321, [0, 0, 0]),
    ("keyctl", 250, [0, 0, 0]),
    ("perf_event_open", 298, [0, 0, -1, -1, 0]),
    ("unshare", 272, [0x40000000]),
    ("setns", 308, [0, 0]),
    ("socket_inet", 41, [2, 1, 0]),
    ("kexec_load", 246, [0, 0, 0, 0]),
    ("io_uring_setup", 425, [1, 0]),
    ("userfaultfd", 323, [0]),
    ("shmget", 29, [0, 4096, 0o1000]),
    ("fork", 57, []),
]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers in this test are x86_64's")
def test_seccomp_denies_dangerous_syscalls(box):
    seen = probe(box, SYSCALL_ERRNO, DANGEROUS_SYSCALLS)
    for name, _, _ in DANGEROUS_SYSCALLS:
        rc, err = seen[name]
        assert rc == -1 and err == 1, f"{name} was not refused with EPERM: {seen[name]}"


def test_threads_and_unix_sockets_still_work(box):
    value = probe(
        box,
        """
        import threading, socket
        box = []
        t = threading.Thread(target=lambda: box.append(1)); t.start(); t.join()
        a, b = socket.socketpair(); a.send(b"x")
        return box + [b.recv(1).decode()]
        """,
    )
    assert value == [1, "x"]


def test_no_network_even_to_host_loopback(box):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        outcome = probe(
            box,
            """
            import socket
            try:
                s = socket.create_connection(("127.0.0.1", args[0]), timeout=1)
                return "connected"
            except OSError as exc:
                return type(exc).__name__
            """,
            port,
        )
        assert outcome != "connected"
    finally:
        listener.close()


def test_filesystem_is_read_only_and_host_private_dirs_are_hidden(box, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    outcome = probe(
        box,
        """
        import os
        out = {}
        for path in ("/usr/evil", "/etc/evil", "/evil", args[0] + ".copy"):
            try:
                open(path, "w").write("x")
                out[path] = "written"
            except OSError as exc:
                out[path] = type(exc).__name__
        out["secret"] = os.path.exists(args[0])
        out["root"] = sorted(os.listdir("/"))
        open("/tmp/scratch", "w").write("fine")
        out["scratch"] = open("/tmp/scratch").read()
        out["cwd"] = os.getcwd()
        return out
        """,
        str(secret),
    )
    assert all(outcome[p] != "written" for p in ("/usr/evil", "/etc/evil", "/evil", str(secret) + ".copy"))
    assert outcome["secret"] is False
    assert "home" not in outcome["root"] and "work" not in outcome["root"] and "var" not in outcome["root"]
    assert outcome["scratch"] == "fine" and outcome["cwd"] == "/tmp"


def test_nothing_persists_between_runs(box):
    first = probe(box, "open('/tmp/marker', 'w').write('x')\nimport os\nreturn os.listdir('/tmp')")
    assert first == ["marker"]
    for _ in range(4):  # both workers, twice
        assert probe(box, "import os\nreturn os.listdir('/tmp')") == []


def test_clean_environment_and_only_the_result_channels_are_open(monkeypatch):
    monkeypatch.setenv("EFFIRL_TEST_SECRET", "hunter2")
    with Sandbox(workers=1) as fresh:
        env = probe(fresh, "import os\nreturn dict(os.environ)")
        fds = probe(fresh, OPEN_DESCRIPTORS)
    assert "EFFIRL_TEST_SECRET" not in env and "hunter2" not in str(env)
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONUTF8", "PWD"}
    assert fds == [0, 1, 2, 3, 4]


# /proc is hidden from candidates, so ask the kernel about each descriptor number instead.
OPEN_DESCRIPTORS = """
import os
open_fds = []
for fd in range(1 << 12):
    try:
        os.fstat(fd)
    except OSError:
        continue
    open_fds.append(fd)
return open_fds
"""


def test_candidate_is_pid_1_of_its_own_namespace_and_sees_no_processes(box):
    info = probe(
        box,
        """
        import os
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        out = {"pid": os.getpid(), "ppid": os.getppid(), "proc": pids}
        try:
            os.kill(args[0], 0)
            out["host_pid"] = "visible"
        except OSError as exc:
            out["host_pid"] = type(exc).__name__
        return out
        """,
        os.getpid(),
    )
    assert info["pid"] == 1 and info["ppid"] == 0  # its monitor is outside its pid namespace
    assert info["proc"] == ["1"]  # its own /proc: no process of the worker or the host is there
    # "not visible" (ProcessLookupError), not "visible but denied" (PermissionError)
    assert info["host_pid"] == "ProcessLookupError"


def test_worker_processes_are_unprivileged_from_the_hosts_view(box):
    box.run_function_tests("def f():\n    return 1\n", "f", [FunctionTest((), 1)])
    for tree in settled_worker_trees(box):
        # The template, and the sealed candidate it cloned for the next job (a child of the server).
        assert len(tree) == 2, tree
        candidate = max(tree, key=lambda p: p.pid)  # cloned after the template
        assert candidate.cap_eff == 0, candidate
        if os.geteuid() == 0:
            assert all(p.uid != 0 for p in tree), "no sandbox process may keep uid 0 on the host"


CAPABILITY_SETS = """
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
return {name: int(status[name].strip(), 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
"""


@pytest.mark.parametrize("scope", ["worker", "run"])
def test_candidate_holds_no_capability_and_cannot_regain_one(box, run_scope_box, scope):
    # The bounding set too: in the worker scope the template empties it once for every candidate it
    # clones; a fresh user namespace (run scope) starts with a full one, which the candidate empties.
    sets = probe(box if scope == "worker" else run_scope_box, CAPABILITY_SETS)
    assert sets == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


def test_run_scope_gives_every_execution_fresh_namespaces(run_scope_box):
    info = probe(run_scope_box, "import os\nreturn [os.getpid(), open('/proc/self/uid_map').read().split()]")
    assert info[0] == 1
    assert info[1][1] != "0"
    assert probe(run_scope_box, "open('/tmp/x', 'w').write('1')\nreturn 1") == 1
    assert probe(run_scope_box, "import os\nreturn os.listdir('/tmp')") == []


@pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (scripts/setup.sh installs it)"
)
def test_bwrap_level_runs_each_execution_in_a_fresh_bubblewrap_box():
    with Sandbox(workers=1, isolation="bwrap") as bw:
        result = bw.run_function_tests("def add(a, b):\n    return a + b\n", "add", [FunctionTest((1, 2), 3)])
        assert result.status is Status.PASSED and result.cost is not None
        assert probe(bw, "import os\nreturn os.getpid()") == 1
        seen = probe(
            bw,
            "import socket\ntry:\n    socket.socket(socket.AF_INET)\n    return 'open'\n"
            "except OSError:\n    return 'refused'",
        )
        assert seen == "refused"
        assert probe(bw, "import os\nreturn os.path.exists('/home') or os.path.exists('/var')") is False


def test_weak_levels_need_explicit_opt_in():
    with pytest.raises(ValueError, match="allow_weak_isolation"):
        SandboxConfig(isolation="process")
    with pytest.raises(ValueError, match="unknown"):
        SandboxConfig(isolation="chroot")


def test_weak_level_warns_loudly(capsys):
    with Sandbox(workers=1, isolation="process", allow_weak_isolation=True) as weak:
        assert weak.run_function_tests("def f():\n    return 1\n", "f", [FunctionTest((), 1)]).ok
    assert "does NOT contain untrusted code" in capsys.readouterr().err


def test_missing_bwrap_is_a_loud_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        Sandbox(workers=1, isolation="bwrap")


UNSHARE = shutil.which("unshare")
IN_USERNS = """
import sys
sys.path.insert(0, {repo!r})
from sandbox import Sandbox, FunctionTest, SandboxUnavailable
try:
    with Sandbox(workers=1) as box:
        src = "import os\\ndef f():\\n    return [os.getuid(), os.getpid()]"
        r = box.call_function(src, "f", [()])
        print("OK", r.status.value, r.outputs)
except SandboxUnavailable as exc:
    print("UNAVAILABLE", exc)
"""


def _run_in_user_namespace(prelude: str) -> str:
    script = IN_USERNS.format(repo=str(REPO))
    command = [
        UNSHARE,
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        f'{prelude} exec "$0" -c "$1"',
        sys.executable,
        script,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


@pytest.mark.skipif(UNSHARE is None, reason="util-linux unshare is not installed")
def test_unprivileged_path_builds_its_jail_in_a_user_namespace():
    # Started as a non-initial-namespace "root", the fork server takes the ordinary user's path.
    output = _run_in_user_namespace("")
    assert "OK passed" in output, output


@pytest.mark.skipif(UNSHARE is None, reason="util-linux unshare is not installed")
def test_disabled_user_namespaces_refuse_loudly_instead_of_degrading():
    output = _run_in_user_namespace("echo 0 > /proc/sys/user/max_user_namespaces;")
    assert "UNAVAILABLE" in output and "user namespaces" in output and "allow_weak_isolation" in output, (
        output
    )
