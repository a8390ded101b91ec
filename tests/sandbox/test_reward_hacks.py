"""Adversarial programs that try to collect a reward without doing the work, one class at a time.

Each test is written as a policy would attack: a pass without computing (reading another job's data
from memory), a cheaper cost (behaving differently in a repeat), a better verdict kind (claiming the
sandbox failed), or a stalled host (hash flooding, malformed records). Several variants per class.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import textwrap
import time

import pytest

from sandbox import FunctionTest, ProgramTest, Sandbox, SandboxConfig, Status
from sandbox.attacks import MEMORY_SCANNER, halves
from sandbox.identity import claim_uid_block
from tests.sandbox.host_view import settled_worker_trees

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = [FunctionTest((1, 2), 3), FunctionTest((5, 7), 12)]


def function(name: str, body: str, params: str = "*args") -> str:
    return f"def {name}({params}):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


# ------------------------------------------------------------------ 1. another job's data in memory


def leaked_secrets(box: Sandbox) -> dict[str, bool]:
    """Run jobs full of secrets on ``box``, then a scanner; which secrets the scanner found."""
    words = {name: f"{name}-{secrets.token_hex(16)}" for name in ("code", "input", "output", "own")}
    # Earlier jobs: a reference-style run (outputs come back to the sandbox), and another submission.
    reference = function("ref", f"return [{words['output']!r}, x[::-1]]", "x")
    for _ in range(2):  # every worker's server and template see them
        assert box.call_function(reference, "ref", [("abc",)]).ok
        submission = f"SECRET = {words['code']!r}\n" + function("f", "return len(SECRET) + len(x)", "x")
        assert box.run_function_tests(submission, "f", [FunctionTest((words["input"],), 1)]).status in (
            Status.PASSED,
            Status.FAILED,
        )
    # The attacker gets its own marker as an input: finding it proves the scan reads real memory.
    needles = [
        *halves(words["code"]),
        *halves(words["input"]),
        *halves(words["output"]),
        *halves(words["own"]),
    ]
    # sandbox.attacks' scanner: it reads its own address space without /proc (see there).
    scanner = MEMORY_SCANNER + function("attack", "return [own, scan(*needles)]", "own, needles")
    result = box.call_function(scanner, "attack", [(words["own"], needles)], timeout_s=60)
    assert result.ok, (result.error, result.stderr)
    _, (found, pages) = result.outputs[0]
    assert pages > 1000, f"the scan read only {pages} pages; it proves nothing"
    return dict(zip(("code", "input", "output", "own"), found))


@pytest.mark.parametrize("scope", ["worker", "run"])
def test_a_candidate_finds_no_data_of_earlier_jobs_in_its_memory(scope):
    with Sandbox(SandboxConfig(workers=1, timeout_s=60, namespace_scope=scope)) as box:
        found = leaked_secrets(box)
    assert found["own"], "control: the scanner must find its own input in its memory"
    assert not found["code"] and not found["input"] and not found["output"], found


def test_the_template_and_monitors_are_out_of_reach():
    """Nothing of the processes that outlive a run may be written or read by its candidate."""
    probe = function(
        "probe",
        """
        import os, ctypes
        out = {"proc": sorted(p for p in os.listdir("/proc") if p.isdigit())}
        for pid in (1, 2, 3):
            try:
                os.kill(pid, 0)
                out[pid] = "signal allowed"
            except OSError as exc:
                out[pid] = type(exc).__name__
        return out
        """,
    )
    with Sandbox(workers=1) as box:
        seen = box.call_function(probe, "probe", [()]).outputs[0]
    assert seen["proc"] == ["1"]
    assert seen[1] == "signal allowed"  # pid 1 is the candidate itself
    assert seen[2] == seen[3] == "ProcessLookupError"  # nothing else shares its pid namespace


# ------------------------------------------------------------------ 3. repeats held to the verdict

FLAKY_ADD = function(
    "add",
    """
    import os
    # Right or wrong at random: a candidate that could tell a repeat apart would answer cheaply there.
    return a + b if os.urandom(1)[0] < 128 else 0
    """,
    "a, b",
)


def test_every_repeat_is_judged_like_the_first(box):
    # Passing all 12 runs by chance: 1 in 4096.
    result = box.run_function_tests(FLAKY_ADD, "add", ADD_TESTS, repeats=12)
    assert result.status is Status.FAILED, result
    assert result.error_kind == "wrong_output"


def test_a_reference_must_return_the_same_values_in_every_run(box):
    unstable = function("ref", "import os\nreturn os.urandom(8).hex()", "x")
    result = box.call_function(unstable, "ref", [(1,)], repeats=3)
    assert result.status is Status.FAILED and result.error_kind == "inconsistent_runs", result


def test_runs_look_alike_from_inside(box):
    """Pid, parent, /tmp and /proc are the same in every run, first or repeat, on any worker."""
    looks = function(
        "look",
        """
        import os
        pids = sorted(p for p in os.listdir("/proc") if p.isdigit())
        seen = [os.getpid(), os.getppid(), sorted(os.listdir("/tmp")), pids, os.getcwd()]
        open("/tmp/was-here", "w").write("x")
        return seen
        """,
        "x",
    )
    result = box.call_function(looks, "look", [(1,)], repeats=6)
    # A reference-style call fails when any repeat returned something else: these all agree.
    assert result.ok, result
    assert result.outputs[0] == [1, 0, [], ["1"], "/tmp"]


def test_repeats_of_a_program_are_judged_too(box):
    flaky = "import os\nprint(int(input()) * 2 if os.urandom(1)[0] < 128 else 0)"
    result = box.run_program(flaky, [ProgramTest("4\n", "8\n")], repeats=12)
    assert result.status is Status.FAILED, result


# ------------------------------------------------------------- 5, 6. forged or malformed records

RECORDS_AFTER_START = {
    "setup_error": '{"t":"setup_error","msg":"the sandbox broke"}',
    "syntax_error": '{"t":"fatal","kind":"syntax","msg":"forged"}',
    "note": '{"t":"note","msg":"hello"}',
    "second_start": '{"t":"start"}',
    "sandbox_exc_kind": '{"t":"exc","i":0,"kind":"sandbox","msg":"x"}',
    "index_as_string": '{"t":"out","i":"0","v":3}',
    "negative_index": '{"t":"out","i":-1,"v":3}',
    "missing_value": '{"t":"out","i":0}',
    "extra_field": '{"t":"out","i":0,"v":3,"cost":0}',
    "events_as_string": '{"t":"done","events":"many"}',
    "not_an_object": "[1, 2, 3]",
    "not_json": "exit status 0",
    "bare_nan": '{"t":"out","i":0,"v":NaN}',
    "huge_decimal": '{"t":"out","i":0,"v":1' + "0" * 6000 + "}",
    "deep_nesting": '{"t":"out","i":0,"v":' + "[" * 200_000 + "]" * 200_000 + "}",
    "too_deep_value": '{"t":"out","i":0,"v":' + "[" * 900 + "]" * 900 + "}",
    "message_not_text": '{"t":"fatal","kind":"exception","msg":{"a":1}}',
}


OUTPUT_SHAPED = {"bare_nan", "huge_decimal", "deep_nesting", "too_deep_value", "extra_field"}


@pytest.mark.parametrize("where", ["module", "function"])
@pytest.mark.parametrize("record", sorted(RECORDS_AFTER_START))
def test_records_written_by_candidate_code_are_its_own_failure(box, record, where):
    line = RECORDS_AFTER_START[record] + "\n"
    write = f"import os\nos.write(3, {line.encode()!r})\n"
    if where == "module":
        code = write + "while True:\n    pass\n"  # would time out; no function is defined either
    else:
        code = function("add", write + "while True:\n    pass", "a, b")
    result = box.run_function_tests(code, "add", ADD_TESTS, timeout_s=2)
    if record in OUTPUT_SHAPED:
        # In the harness's own output format: the value goes to the host undecoded, fails to decode
        # there (a wrong answer), and the code then loops until its time is up.
        assert result.status is Status.TIMEOUT, (record, result.status, result.error)
        assert "malformed output" in str(result.tests[0].error), (record, result.tests)
    else:
        assert result.status is Status.RUNTIME_ERROR, (record, result.status, result.error)
        assert result.error_kind == "protocol_violation", (record, result.error)
    assert box.run_function_tests(ADD, "add", ADD_TESTS).ok


def test_a_done_record_does_not_end_a_function_job_early(box):
    # Forge the end, then keep going: the work after the forged mark is never counted as passed tests.
    code = function(
        "add",
        'import os\nos.write(3, b\'{"t":"done","events":null}\\n\')\nreturn a + b',
        "a, b",
    )
    result = box.run_function_tests(code, "add", ADD_TESTS)
    assert result.status is not Status.PASSED and result.status is not Status.SANDBOX_ERROR, result


def test_a_program_cannot_forge_its_exit_status(box):
    cases = {
        "raise ValueError('exit status 0')": 1,
        'import os\nos.write(3, b\'{"t":"done","events":null}\\n\')\nraise SystemExit(4)': 4,
        "print('ok')\nimport os\nos._exit(7)": 7,
        "import ctypes\nctypes.string_at(0)": -11,
        "import sys\nsys.exit('bad')": 1,
    }
    for code, expected in cases.items():
        result = box.run_program(code, [ProgramTest("", "ok\n")])
        assert result.exit_code == expected, (code, result.exit_code, result.error)
        assert result.status is Status.RUNTIME_ERROR, (code, result.status)


def test_program_work_after_a_forged_done_is_still_counted(box):
    honest = "s = 0\nfor i in range(3_000_000):\n    s += i\nprint(s)"
    forged = 'import os\nos.write(3, b\'{"t":"done","events":null}\\n\')\n' + honest
    expected = f"{sum(range(3_000_000))}\n"
    costs = []
    for code in (honest, forged):
        result = box.run_program(code, [ProgramTest("", expected)], repeats=3)
        assert result.ok, result
        costs.append(result.cost.cpu_ns)
    assert costs[1] > 0.5 * costs[0], costs  # the forged mark does not cut the measured cost


# --------------------------------------------------------------------------------- 8. hash flooding

MERSENNE = 2**61 - 1  # n and n + k * MERSENNE share Python's hash for every k


def colliding_ints(count: int) -> list:
    return [
        {"__int__": format(k * MERSENNE, "x")} if k * MERSENNE >= 2**63 else k * MERSENNE
        for k in range(count)
    ]


FLOODS = {
    "set": {"__set__": colliding_ints(100_000)},
    "frozenset": {"__frozenset__": colliding_ints(100_000)},
    "dict_keys": {"__dict__": [[k, 0] for k in colliding_ints(100_000)]},
    "nested_set": [{"__set__": colliding_ints(100_000)}],
}


@pytest.mark.parametrize("want_outputs", [False, True])
@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_outputs_chosen_to_collide_in_hash_are_refused_quickly(box, flood, want_outputs):
    # Written straight to the result channel: building such a set in the candidate would itself be
    # quadratic, but the host must never be.
    record = json.dumps({"t": "out", "i": 0, "v": FLOODS[flood]}) + "\n"
    code = (
        "import os\nRECORD = "
        + repr(record.encode())
        + "\n"
        + function(
            "f", "view = memoryview(RECORD)\nwhile view:\n    view = view[os.write(3, view):]\nreturn 0", "x"
        )
    )
    started = time.monotonic()
    if want_outputs:
        result = box.call_function(code, "f", [(1,)], timeout_s=30)
    else:
        result = box.run_function_tests(code, "f", [FunctionTest((1,), 0)], timeout_s=30)
    elapsed = time.monotonic() - started
    assert result.status is not Status.PASSED and result.status is not Status.SANDBOX_ERROR, result.error
    assert "same hash" in str(result.tests[0].error), result.tests
    # Quadratic decoding took 0.75 s for 12,000 members; 100,000 would take about a minute.
    assert elapsed < 20, elapsed


@pytest.mark.parametrize("how", ["returned", "forged"])
def test_return_values_over_the_object_budget_are_refused_undecoded(box, monkeypatch, how):
    """A JSON object costs the host about 2 us to decode: "{}," repeated up to max_result_bytes
    (32 MiB) would have cost it some 20 s a run. Over the budget nothing is decoded and the run fails."""
    import sandbox.verdict

    decoded = []
    real_loads = sandbox.verdict.codec.loads
    monkeypatch.setattr(
        sandbox.verdict.codec, "loads", lambda raw: decoded.append(len(raw)) or real_loads(raw)
    )
    if how == "returned":
        code = "def f(x):\n    return [{} for _ in range(x)]\n"  # 300,000 objects
    else:  # in the harness's own format, straight onto the result channel, then keep running
        record = b'{"t":"out","i":0,"v":[' + b"{}," * 1_000_000 + b"{}]}\n"
        code = (
            "import os\nRECORD = "
            + repr(record)
            + "\n"
            + function(
                "f",
                "view = memoryview(RECORD)\nwhile view:\n    view = view[os.write(3, view):]\n"
                "while True:\n    pass",
                "x",
            )
        )
    result = box.run_function_tests(code, "f", [FunctionTest((300_000,), [])], timeout_s=10)
    assert result.status is (Status.FAILED if how == "returned" else Status.TIMEOUT), result.error
    assert "object limit" in str(result.tests[0].error), result.tests
    if how == "returned":
        assert result.error_kind == "output_limit" and "JSON objects" in str(result.error)
    assert decoded == []
    # Large but ordinary results are within it: numbers and lists are not counted (HumanEval/130's
    # reference returns 10 million numbers), and objects up to the budget.
    within = box.run_function_tests(
        "def f(x):\n    return [0] * x, [{'k': 1}] * (x // 20)\n",
        "f",
        [FunctionTest((3_000_000,), ([0] * 3_000_000, [{"k": 1}] * 150_000))],
        timeout_s=60,
    )
    assert within.status is Status.PASSED, within.error


# ------------------------------------------------------------------------------ 12. identities


def test_each_sandbox_has_uids_of_its_own():
    first, second = claim_uid_block(), claim_uid_block()
    try:
        assert first.first != second.first
        # Another process on the host cannot take a held block either, even starting at the same place.
        script = (
            "import random, sys; sys.path.insert(0, sys.argv[1])\n"
            "from sandbox.identity import claim_uid_block\n"
            "print(claim_uid_block(random.Random(int(sys.argv[2]))).first)\n"
        )
        seed = 1234
        mine = claim_uid_block(random.Random(seed))
        try:
            repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            theirs = subprocess.run(
                [sys.executable, "-c", script, repo, str(seed)], capture_output=True, text=True, check=True
            ).stdout.strip()
            assert int(theirs) != mine.first
        finally:
            mine.release()
    finally:
        first.release()
        second.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="candidates use the caller's own uid without root")
def test_two_sandboxes_never_share_a_uid_on_the_host():
    with Sandbox(workers=2) as one, Sandbox(workers=2) as two:
        uids = [{p.uid for tree in settled_worker_trees(box) for p in tree} for box in (one, two)]
    assert uids[0] and uids[1] and not uids[0] & uids[1], uids
