"""Open findings of `effirl sandbox audit`: each a working exploit, marked xfail(strict) until fixed.

When the sandbox closes one, its test passes, strict xfail turns that into a failure, and the mark
(and the entry in tests/sandbox/test_audit.py's OPEN_FINDINGS) comes off.
"""

from __future__ import annotations

import pytest

from sandbox import FunctionTest, Sandbox, SandboxConfig, Status
from sandbox.probe import probe_isolation

N = 2_000_000
ANSWER = sum(i * i % 7 for i in range(N)) % 4096
HONEST = "def solve(n):\n    return sum(i * i % 7 for i in range(n)) % 4096\n"

# An 8-bit answer and a 4-bit tag ride on /tmp's inode counter, which a worker's tmpfs keeps across
# runs: run 1 computes, then creates files until the next inode number spells the message; a repeat
# creates one file, reads its number, and returns the answer without computing it (the low two bits
# are slack, as each reader moves the counter on by one).
SMALL_ANSWER = sum(i * i % 7 for i in range(N)) % 256
SMALL = "def solve(n):\n    return sum(i * i % 7 for i in range(n)) % 256\n"
VIA_TMP_INODES = """
import os
MOD, TAG = 1 << 14, 0xA

def _ino():
    fd = os.open("/tmp/.n", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)
        os.unlink("/tmp/.n")

def solve(n):
    seen = _ino() % MOD
    if seen >> 10 == TAG:
        return seen >> 2 & 0xFF
    answer = sum(i * i % 7 for i in range(n)) % 256
    message = TAG << 10 | answer << 2
    for _ in range(MOD):
        if _ino() % MOD == (message - 1) % MOD:
            break
    return answer
"""


@pytest.mark.xfail(
    strict=True,
    reason="worker scope: /tmp is wiped but not remounted, so its inode numbers carry a value from one "
    "run to the next; repeats reuse run 1's work and the min cost is theirs",
)
def test_a_repeat_cannot_reuse_run_1s_answer_through_tmp_inode_numbers():
    with Sandbox(SandboxConfig(workers=1)) as box:
        honest = box.run_function_tests(SMALL, "solve", [FunctionTest((N,), SMALL_ANSWER)], repeats=3)
        cheat = box.run_function_tests(VIA_TMP_INODES, "solve", [FunctionTest((N,), SMALL_ANSWER)], repeats=3)
    assert honest.ok and cheat.ok, (honest.error, cheat.error)
    assert cheat.cost.cpu_ns > 0.5 * honest.cost.cpu_ns, (cheat.costs, honest.cost)


# The same through the host's page cache: which pages of a read-only file of the jail are cached is
# state no run, scope or sandbox owns. posix_fadvise(DONTNEED) clears a page, a read sets it, and
# preadv2(RWF_NOWAIT) reads it back without timing anything; 20 bits are 40 pages (bit, complement).
VIA_PAGE_CACHE = """
import os
PAGE, BITS, TAG = 4096, 20, 0x9D

def _file():
    root = os.path.dirname(os.__file__)
    paths = [os.path.join(root, n) for n in os.listdir(root) if n.endswith(".py")]
    return max(paths, key=os.path.getsize)

def _cached(fd, page):
    try:
        return os.preadv(fd, [bytearray(1)], page * PAGE, os.RWF_NOWAIT) == 1
    except BlockingIOError:
        return False

def solve(n):
    fd = os.open(_file(), os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    pairs = [(_cached(fd, 2 * i), _cached(fd, 2 * i + 1)) for i in range(BITS)]
    value = sum(1 << i for i, (one, _) in enumerate(pairs) if one)
    if all(a != b for a, b in pairs) and value >> 12 == TAG:
        answer = value & 0xFFF
    else:
        answer = sum(i * i % 7 for i in range(n)) % 4096
    os.posix_fadvise(fd, 0, 2 * BITS * PAGE, os.POSIX_FADV_DONTNEED)
    for i in range(BITS):
        os.pread(fd, 1, (2 * i + (0 if (TAG << 12 | answer) >> i & 1 else 1)) * PAGE)
    return answer
"""


@pytest.mark.xfail(
    strict=True,
    reason="the host's page cache of the jail's read-only files is shared by every run and sandbox, and "
    "preadv2(RWF_NOWAIT) + posix_fadvise(DONTNEED) read and write it: one run (or sample) hands its "
    "answer to the next",
)
def test_another_sandbox_cannot_take_an_answer_from_the_page_cache():
    tests = [FunctionTest((N,), ANSWER)]
    with Sandbox(SandboxConfig(workers=1)) as first:
        honest = first.run_function_tests(HONEST, "solve", tests, repeats=3)
        assert first.run_function_tests(VIA_PAGE_CACHE, "solve", tests).ok  # computes, leaves the answer
    # Another sandbox, fresh namespaces per run: a later sample of the same prompt, say.
    with Sandbox(SandboxConfig(workers=1, namespace_scope="run")) as second:
        cheat = second.run_function_tests(VIA_PAGE_CACHE, "solve", tests, repeats=3)
    assert honest.ok and cheat.ok, (honest.error, cheat.error)
    assert cheat.cost.cpu_ns > 0.5 * honest.cost.cpu_ns, (cheat.costs, honest.cost)


# One valid 'out' record of 8 MiB of empty objects: the monitor decodes it whole (about 1.3 s and
# 60 MB per MiB here), past the run's deadline and the host's grace; the host then declares the worker
# lost, twice, and the candidate's own failure becomes sandbox_error (which scores 0 instead of a
# timeout penalty, and is dropped from the cache so that it runs again).
WIDE = b'{"t":"out","i":0,"v":[' + b"{}," * (8 * (1 << 20) // 3) + b"{}]}\n"
WRITES_WIDE = (
    f"import os\ndef add(a, b):\n    view = memoryview({WIDE!r})\n"
    "    while view:\n        view = view[os.write(3, view):]\n    while True:\n        pass\n"
)


@pytest.mark.xfail(
    strict=True,
    reason="the monitor decodes a record of up to max_result_bytes whole and without a deadline "
    "(~1.3 s and ~60 MB per MiB of empty objects), so a valid but wide record outlasts the host's "
    "grace and becomes sandbox_error",
)
def test_a_wide_record_is_the_candidates_failure_not_the_sandboxs():
    config = SandboxConfig(workers=1, timeout_s=2.0, host_timeout_grace_s=2.0)
    with Sandbox(config) as box:
        result = box.run_function_tests(WRITES_WIDE, "add", [FunctionTest((1, 2), 3)])
        assert box.run_function_tests(
            "def add(a, b):\n    return a + b\n", "add", [FunctionTest((1, 2), 3)]
        ).ok
    assert result.status is not Status.SANDBOX_ERROR, result.error


@pytest.mark.xfail(
    strict=True,
    reason="sandbox/probe.py reads /proc/self/uid_map inside the candidate, and worker-scope candidates "
    "have no /proc since they became pid 1 of their own namespace: `effirl sandbox check` says the "
    "default level is unavailable and exits 1",
)
def test_sandbox_check_finds_the_default_level_available():
    report = probe_isolation(("namespaces",))[0]
    assert report.available, report.detail
