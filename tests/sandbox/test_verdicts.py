"""What the sandbox decides about a submission, through the real fork servers."""

import textwrap

import pytest

from sandbox import FunctionJob, FunctionTest, ProgramTest, Status

ADD_TESTS = [FunctionTest((1, 2), 3), FunctionTest((2, 2), 4), FunctionTest((-1, 1), 0)]


def code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def test_correct_function_passes_with_cost(box):
    result = box.run_function_tests("def add(a, b):\n    return a + b\n", "add", ADD_TESTS)
    assert result.status is Status.PASSED
    assert (result.passed, result.total) == (3, 3)
    assert result.cost is not None and result.cost.cpu_ns > 0 and result.cost.wall_ns > 0


def test_wrong_output_fails_per_test(box):
    result = box.run_function_tests("def add(a, b):\n    return a * b\n", "add", ADD_TESTS)
    assert result.status is Status.FAILED
    assert [t.passed for t in result.tests] == [False, True, False]
    assert result.error_kind == "wrong_output"
    # the verdict names no expected value: nothing of the expectation leaks back either
    assert all("3" not in (t.error or "") for t in result.tests)


def test_syntax_error(box):
    result = box.run_function_tests("def add(a, b) return a + b\n", "add", ADD_TESTS)
    assert result.status is Status.SYNTAX_ERROR
    assert result.error_kind == "syntax" and "SyntaxError" in result.error


def test_missing_entry_point(box):
    result = box.run_function_tests("def plus(a, b):\n    return a + b\n", "add", ADD_TESTS)
    assert result.status is Status.RUNTIME_ERROR
    assert result.error_kind == "missing_entry_point"


def test_exception_in_one_test_fails_only_that_test(box):
    src = code(
        """
        def inv(x):
            return 1 / x
        """
    )
    result = box.run_function_tests(src, "inv", [FunctionTest((2,), 0.5), FunctionTest((0,), 0)])
    assert result.status is Status.RUNTIME_ERROR
    assert [t.passed for t in result.tests] == [True, False]
    assert "ZeroDivisionError" in result.tests[1].error


def test_module_level_exception(box):
    result = box.run_function_tests(
        "raise ValueError('boom')\ndef add(a, b):\n    return 0\n", "add", ADD_TESTS
    )
    assert result.status is Status.RUNTIME_ERROR and "boom" in result.error


def test_timeout(box):
    result = box.run_function_tests(
        "def add(a, b):\n    while True:\n        pass\n", "add", ADD_TESTS, timeout_s=0.5
    )
    assert result.status is Status.TIMEOUT
    assert result.cost is None


def test_memory_exceeded(box):
    src = "def add(a, b):\n    x = bytearray(1 << 30)\n    return len(x)\n"
    result = box.run_function_tests(src, "add", ADD_TESTS)
    assert result.status is Status.MEMORY_EXCEEDED


def test_forged_eq_cannot_pass(box):
    src = code(
        """
        class Anything:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__

        class SneakyInt(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__

        def add(a, b):
            return Anything() if a == 1 else SneakyInt(-99)
        """
    )
    result = box.run_function_tests(src, "add", ADD_TESTS)
    assert result.status is not Status.PASSED
    assert result.passed == 0


def test_inputs_are_fresh_for_every_test(box):
    src = "def f(xs):\n    xs.append(1)\n    return len(xs)\n"
    shared = [0, 0]
    result = box.run_function_tests(src, "f", [FunctionTest((shared,), 3), FunctionTest((shared,), 3)])
    assert result.status is Status.PASSED
    assert shared == [0, 0]


def test_float_tolerance_and_tagged_types(box):
    src = code(
        """
        def f(x):
            return (x / 3, {x, 2}, b"ok", float("nan"), 10 ** 30)
        """
    )
    expected = (1 / 3, {1, 2}, b"ok", float("nan"), 10**30)
    assert box.run_function_tests(src, "f", [FunctionTest((1,), expected)]).status is Status.PASSED
    close = box.run_function_tests("def f(x):\n    return x + 1e-9\n", "f", [FunctionTest((1.0,), 1.0)])
    assert close.status is Status.PASSED
    strict = box.run_function_tests(
        "def f(x):\n    return x + 1e-3\n", "f", [FunctionTest((1.0,), 1.0)], atol=1e-6
    )
    assert strict.status is Status.FAILED


def test_kwargs(box):
    src = "def f(a, *, scale=1):\n    return a * scale\n"
    result = box.run_function_tests(src, "f", [FunctionTest((2,), 6, {"scale": 3})])
    assert result.status is Status.PASSED


def test_unserialisable_return_value_fails_cleanly(box):
    result = box.run_function_tests("def f():\n    return object()\n", "f", [FunctionTest((), None)])
    assert result.status is Status.FAILED
    assert "cannot be compared" in result.tests[0].error


def test_call_function_returns_outputs(box):
    result = box.call_function("def sq(x):\n    return x * x, [x]\n", "sq", [(2,), (3,)])
    assert result.status is Status.PASSED
    assert result.outputs == [(4, [2]), (9, [3])]


@pytest.mark.parametrize(
    "exit_code",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit(0)",
        "import os\nos.closerange(0, 1024)",
        # A signal it sends itself is ignored (it is pid 1 of its namespace); a fault is not.
        "import ctypes\nctypes.string_at(0)",
    ],
)
@pytest.mark.parametrize("where", ["module", "function"])
def test_early_exit_never_passes(box, exit_code, where):
    if where == "module":
        src = exit_code + "\ndef add(a, b):\n    return a + b\n"
    else:
        body = textwrap.indent(exit_code, "    ")
        src = f"def add(a, b):\n{body}\n    return a + b\n"
    result = box.run_function_tests(src, "add", ADD_TESTS)
    assert result.status is not Status.PASSED
    assert result.passed < len(ADD_TESTS)


def test_program_tests_compare_stdout(box):
    src = "import sys\nn = int(sys.stdin.readline())\nprint(sum(range(n + 1)))\n"
    tests = [ProgramTest("3\n", "6\n"), ProgramTest("10\n", "55"), ProgramTest("4\n", "11\n")]
    result = box.run_program(src, tests)
    assert result.status is Status.FAILED
    assert [t.passed for t in result.tests] == [True, True, False]
    ok = box.run_program(src, tests[:2])
    assert ok.status is Status.PASSED and ok.cost is not None


def test_program_large_stdin_and_sys_exit_zero(box):
    src = "import sys\ndata = sys.stdin.read().split()\nprint(len(data))\nsys.exit(0)\n"
    stdin = "x " * 200_000
    result = box.run_program(src, [ProgramTest(stdin, "200000")])
    assert result.status is Status.PASSED


def test_program_nonzero_exit_is_runtime_error(box):
    result = box.run_program("import sys\nprint(1)\nsys.exit(3)\n", [ProgramTest("", "1")])
    assert result.status is Status.RUNTIME_ERROR


def test_assertion_script_mode(box):
    script = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"
    good = box.run_script("def add(a, b):\n    return a + b\n", script, entry_point="add")
    bad = box.run_script("def add(a, b):\n    return a - b\n", script, entry_point="add")
    crash = box.run_script("def add(a, b):\n    return a / 0\n", script, entry_point="add")
    assert good.status is Status.PASSED
    assert bad.status is Status.FAILED and bad.error_kind == "assertion"
    assert crash.status is Status.RUNTIME_ERROR


def test_plain_assertion_script(box):
    result = box.run_script("def f(x):\n    return x + 1\n", "assert f(1) == 2\nassert f(2) == 3\n")
    assert result.status is Status.PASSED


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (FunctionJob(123, "f", []), "code must be a string"),
        (FunctionJob("def f(): pass", "not an identifier", []), "identifier"),
        (FunctionJob("def f(x): pass", "f", [FunctionTest(5, None)]), "args must be a list or tuple"),
        (FunctionJob("def f(x): pass", "f", [FunctionTest((object(),), None)]), "cannot be sent"),
        (FunctionJob("def f(x): pass", "f", ["nope"]), "must be a FunctionTest"),
    ],
)
def test_bad_input_gets_a_clear_status(box, job, message):
    result = box.run(job)
    assert result.status is Status.SANDBOX_ERROR and result.error_kind == "bad_input"
    assert message in result.error


def test_oversized_inputs_are_refused_not_crashing():
    from sandbox import Sandbox

    with Sandbox(workers=1, max_input_bytes=10_000) as small:
        result = small.run_function_tests(
            "def f(x):\n    return len(x)\n", "f", [FunctionTest(("x" * 20_000,), 1)]
        )
        assert result.status is Status.SANDBOX_ERROR and "max_input_bytes" in result.error
        assert small.run_function_tests("def f(x):\n    return x\n", "f", [FunctionTest((1,), 1)]).ok


def test_stdout_is_captured_and_capped(box):
    result = box.run_function_tests(
        "def f():\n    print('hello')\n    return 1\n", "f", [FunctionTest((), 1)]
    )
    assert result.status is Status.PASSED and result.stdout == "hello\n"
