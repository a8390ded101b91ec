"""The pool survives anything a candidate does, and the next run is unaffected."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
from random import Random

import pytest

from sandbox import FunctionTest, Sandbox, Status
from sandbox.jobs import FunctionJob
from tests.sandbox.host_view import settled_worker_trees

CHECK = [FunctionTest((2,), 4)]
HEALTHY = "def f(x):\n    return x * 2\n"


def function(body: str) -> str:
    return "def f(x):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


def assert_next_run_works(box: Sandbox) -> None:
    for _ in range(3):  # reaches both workers
        result = box.run_function_tests(HEALTHY, "f", CHECK)
        assert result.status is Status.PASSED, (result.error, result.stderr)
    # From the host: each worker holds its template and the next run's candidate; nothing
    # a candidate started outlives its run.
    for tree in settled_worker_trees(box):
        assert len(tree) == 2, f"processes left behind: {tree}"
    assert box.call_function("import os\ndef f():\n    return os.listdir('/tmp')\n", "f", [()]).outputs == [
        []
    ]


ATTACKS = {
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", {Status.RUNTIME_ERROR}),
    "memory_bomb": (
        "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))",
        {Status.MEMORY_EXCEEDED},
    ),
    "infinite_loop": ("while True:\n    pass", {Status.TIMEOUT}),
    "ignores_sigterm": (
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass",
        {Status.TIMEOUT},
    ),
    "huge_return_value": ("return 'x' * (64 << 20)", {Status.FAILED}),
    "huge_stdout": ("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)", {Status.RUNTIME_ERROR}),
    "segfault": ("import ctypes\nctypes.string_at(0)", {Status.RUNTIME_ERROR}),
    # The candidate is pid 1 of its own pid namespace: its parent (the monitor) is out of its reach
    # (getppid() is 0), and the kernel ignores signals that an init process sends itself.
    "kill_parent": ("import os\nos.kill(os.getppid(), 9)\nreturn x * 2", {Status.PASSED}),
    "kill_everything": (
        "import os\ntry:\n    os.kill(-1, 9)\nexcept OSError:\n    pass\nreturn x * 2",
        {Status.PASSED},
    ),
    "kill_own_group": ("import os\nos.killpg(0, 9)", {Status.FAILED}),
    "close_all_fds": ("import os\nos.closerange(0, 4096)\nreturn x * 2", {Status.RUNTIME_ERROR}),
    "deep_recursion": ("def r(n):\n    return r(n + 1) + 1\nreturn r(0)", {Status.RUNTIME_ERROR}),
    "deep_recursion_unlimited": (
        "import sys\nsys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1) + 1\nreturn r(0)",
        {Status.RUNTIME_ERROR, Status.TIMEOUT, Status.MEMORY_EXCEEDED},
    ),
    "writes_files": (
        "open('/tmp/junk', 'wb').write(b'z' * (64 << 20))",
        {Status.RUNTIME_ERROR},
    ),
    "thread_bomb": (
        "import threading, time\nwhile True:\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
        {Status.RUNTIME_ERROR, Status.MEMORY_EXCEEDED},
    ),
    "huge_integer": ("return 10 ** (10 ** 9)", {Status.TIMEOUT, Status.MEMORY_EXCEEDED}),
    "raises_base_exception": ("raise KeyboardInterrupt", {Status.RUNTIME_ERROR}),
    "stops_itself": (
        "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\nreturn x * 2",
        {Status.PASSED},
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_pool_survives(box, attack):
    body, allowed = ATTACKS[attack]
    result = box.run_function_tests(function(body), "f", CHECK, timeout_s=2.0)
    assert result.status in allowed, (attack, result.status, result.error)
    assert_next_run_works(box)


@pytest.fixture(scope="module")
def subprocess_box():
    with Sandbox(workers=1, timeout_s=5.0, memory_mb=256, allow_subprocesses=True, max_threads=16) as sandbox:
        yield sandbox


def test_spawned_daemons_are_gone_after_the_run(subprocess_box):
    daemon = function(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)
            os._exit(0)
        os.wait()
        return x * 2
        """
    )
    result = subprocess_box.run_function_tests(daemon, "f", CHECK)
    assert result.status is Status.PASSED
    assert_next_run_works(subprocess_box)


def test_fork_bomb_with_subprocesses_allowed_is_contained(subprocess_box):
    bomb = function("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    result = subprocess_box.run_function_tests(bomb, "f", CHECK, timeout_s=1.0)
    assert result.status is Status.TIMEOUT
    assert_next_run_works(subprocess_box)


def test_fork_servers_killed_at_any_moment_never_give_a_wrong_verdict():
    """Kill fork servers at random moments (mid-job, mid-start, while cloning a spare) under load.

    A job whose server died is retried once; if that fails too it says sandbox_error. It must never
    be judged on something that is not its own report: the template used to outlive its server for
    an instant, holding the host's pipe, and write a set-up error there that read as an empty report
    (a passing submission judged "failed", 0 of 2 tests).
    """
    random = Random(7)
    tests = [FunctionTest((1, 2), 3), FunctionTest((2, 3), 5)]
    with Sandbox(workers=2, timeout_s=5.0, memory_mb=256) as sandbox:
        stop = threading.Event()
        kills = []

        def killer() -> None:
            while not stop.wait(random.uniform(0.02, 0.1)):
                process = random.choice(sandbox._workers).process
                if process is not None:
                    try:
                        os.kill(process.pid, signal.SIGKILL)
                        kills.append(process.pid)
                    except ProcessLookupError:
                        pass

        assassin = threading.Thread(target=killer)
        assassin.start()
        try:
            futures = [
                sandbox.submit(
                    FunctionJob(f"K = {n}\ndef add(x, y):\n    return x + y\n", "add", tests, None, 5.0, 1)
                )
                for n in range(300)
            ]
            results = [future.result(timeout=600) for future in futures]
        finally:
            stop.set()
            assassin.join()
        assert len(kills) >= 10
        wrong = [r for r in results if r.status not in (Status.PASSED, Status.SANDBOX_ERROR)]
        assert wrong == []
        assert sum(r.status is Status.PASSED for r in results) >= 50  # not a test of sandbox errors alone
        assert (
            sandbox.run_function_tests("def add(x, y):\n    return x + y\n", "add", tests).status
            is Status.PASSED
        )
