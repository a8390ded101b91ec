"""Channels between runs that `effirl sandbox audit` found open, each now closed (the exploit runs).

- /tmp's inode counter carried a value from one run to the next in the worker scope: each run now
  gets a fresh tmpfs in a mount namespace of its own.
- The host's page cache of the jail's read-only files, read without timing (preadv2 RWF_NOWAIT) and
  cleared (fadvise DONTNEED): those calls, readahead, mincore, cachestat and madvise's eviction
  advice are refused by seccomp. Timing a read remains possible; docs/sandbox.md says what is left.
- A valid but very wide record took the monitor past the host's deadline (sandbox_error): the values
  a run may write are counted before decoding.
"""

from __future__ import annotations

import os
import textwrap

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


def test_another_sandbox_cannot_take_an_answer_from_the_page_cache():
    tests = [FunctionTest((N,), ANSWER)]
    with Sandbox(SandboxConfig(workers=1)) as first:
        honest = first.run_function_tests(HONEST, "solve", tests, repeats=3)
        sender = first.run_function_tests(VIA_PAGE_CACHE, "solve", tests)  # computes, leaves the answer
        assert sender.ok or "Operation not permitted" in str(sender.error), sender.error
    # Another sandbox, fresh namespaces per run: a later sample of the same prompt, say.
    with Sandbox(SandboxConfig(workers=1, namespace_scope="run")) as second:
        cheat = second.run_function_tests(VIA_PAGE_CACHE, "solve", tests, repeats=3)
    assert honest.ok, honest.error
    # The channel's calls are refused: the cheat fails outright, or it computed the answer honestly.
    assert not cheat.ok or cheat.cost.cpu_ns > 0.5 * honest.cost.cpu_ns, (cheat.costs, honest.cost)


PAGE_CACHE_CALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
fd = os.open(os.__file__, os.O_RDONLY)
mapped = libc.mmap(None, 4096, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
vector = ctypes.create_string_buffer(1)
out = {}

def raw(name, *args):
    number = {"mincore": 27, "readahead": 187, "madvise": 28}[name]
    if libc.syscall(number, *args) != 0:
        raise OSError(ctypes.get_errno(), name)

calls = {
    "fadvise": lambda: os.posix_fadvise(fd, 0, 4096, os.POSIX_FADV_DONTNEED),
    "preadv2": lambda: os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT),
    "mincore": lambda: raw("mincore", ctypes.c_void_p(mapped), ctypes.c_size_t(4096), vector),
    "readahead": lambda: raw("readahead", fd, ctypes.c_long(0), ctypes.c_size_t(4096)),
    "madvise_pageout": lambda: raw("madvise", ctypes.c_void_p(mapped), ctypes.c_size_t(4096), 21),
    "madvise_cold": lambda: raw("madvise", ctypes.c_void_p(mapped), ctypes.c_size_t(4096), 20),
}
for name, call in calls.items():
    try:
        call()
        out[name] = "allowed"
    except PermissionError:
        out[name] = "EPERM"
    except OSError as exc:
        out[name] = type(exc).__name__
# An allocator's own advice stays allowed.
dontneed = libc.syscall(28, ctypes.c_void_p(mapped), ctypes.c_size_t(4096), 4)
out["madvise_dontneed"] = "allowed" if dontneed == 0 else "refused"
return out
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="raw syscall numbers here are x86_64's")
def test_the_page_cache_cannot_be_read_or_cleared_without_timing():
    with Sandbox(SandboxConfig(workers=1)) as box:
        result = box.call_function(
            "def probe():\n" + textwrap.indent(PAGE_CACHE_CALLS, "    "), "probe", [()]
        )
    assert result.ok, (result.error, result.stderr)
    seen = result.outputs[0]
    assert seen.pop("madvise_dontneed") == "allowed", seen
    assert set(seen.values()) == {"EPERM"}, seen


# One valid 'out' record of 8 MiB of empty objects: the monitor decodes it whole (about 1.3 s and
# 60 MB per MiB here), past the run's deadline and the host's grace; the host then declares the worker
# lost, twice, and the candidate's own failure becomes sandbox_error (which scores 0 instead of a
# timeout penalty, and is dropped from the cache so that it runs again).
WIDE = b'{"t":"out","i":0,"v":[' + b"{}," * (8 * (1 << 20) // 3) + b"{}]}\n"
WRITES_WIDE = (
    f"import os\ndef add(a, b):\n    view = memoryview({WIDE!r})\n"
    "    while view:\n        view = view[os.write(3, view):]\n    while True:\n        pass\n"
)


def test_a_wide_record_is_the_candidates_failure_not_the_sandboxs():
    config = SandboxConfig(workers=1, timeout_s=2.0, host_timeout_grace_s=2.0)
    with Sandbox(config) as box:
        result = box.run_function_tests(WRITES_WIDE, "add", [FunctionTest((1, 2), 3)])
        assert box.run_function_tests(
            "def add(a, b):\n    return a + b\n", "add", [FunctionTest((1, 2), 3)]
        ).ok
    assert result.status is not Status.SANDBOX_ERROR, result.error


def test_sandbox_check_finds_the_default_level_available():
    report = probe_isolation(("namespaces",))[0]
    assert report.available, report.detail
