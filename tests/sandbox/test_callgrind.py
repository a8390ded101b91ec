"""Instruction counts under callgrind in a bubblewrap jail: exact, repeatable, start-up excluded."""

from __future__ import annotations

import functools

import pytest

from sandbox.callgrind import CallgrindFailed, callgrind_unavailable_reason, count_instructions
from sandbox.jobs import FunctionJob, ProgramJob, ScriptJob
from sandbox.types import FunctionTest, ProgramTest

# Each measurement starts valgrind on a fresh interpreter (a few seconds on a busy 2-core machine).
pytestmark = pytest.mark.slow


@functools.cache
def _reason() -> str | None:
    return callgrind_unavailable_reason()


@pytest.fixture(autouse=True)
def needs_callgrind() -> None:
    if _reason() is not None:
        pytest.skip(f"callgrind measurements unavailable: {_reason()}")


TESTS = (FunctionTest((2000,)), FunctionTest((5000,)))
LOOP = "def total(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
FORMULA = "def total(n):\n    return n * (n - 1) // 2\n"


def test_counts_are_repeatable_and_rank_solutions() -> None:
    loop = [count_instructions(FunctionJob(LOOP, "total", TESTS)) for _ in range(2)]
    formula = count_instructions(FunctionJob(FORMULA, "total", TESTS))
    assert abs(loop[0] - loop[1]) <= 0.001 * loop[0]
    # 7000 loop iterations cost far more than two multiplications; start-up (tens of millions of
    # instructions) is not counted, or the ratio would be close to 1.
    assert loop[0] > 20 * formula
    assert formula < 1_000_000


def test_programs_and_scripts() -> None:
    program = ProgramJob("n = int(input())\nprint(sum(range(n)))\n", (ProgramTest("3000\n", "4498500\n"),))
    assert count_instructions(program) > 0
    script = ScriptJob(FORMULA, "def check(candidate):\n    assert candidate(4) == 6\n", "total")
    assert count_instructions(script) > 0


def test_a_failing_run_raises() -> None:
    with pytest.raises(CallgrindFailed, match="ValueError"):
        count_instructions(FunctionJob("def total(n):\n    raise ValueError('no')\n", "total", TESTS))


def test_the_candidate_cannot_switch_counting_off() -> None:
    hiding = "import sys\ndef total(n):\n    return sys.call_tracing(lambda: sum(range(n)), ())\n"
    with pytest.raises(CallgrindFailed, match="call_tracing"):
        count_instructions(FunctionJob(hiding, "total", TESTS))


def test_evaluation_scoring_with_callgrind() -> None:
    from rewards.tasks import Task
    from rlhf.evaluation.scoring import ScoringOptions, SolutionScorer

    task = Task(
        id="toy/total",
        prompt="def total(n):\n",
        entry_point="total",
        function_tests=(FunctionTest((2000,), 1999000), FunctionTest((5000,), 12497500)),
        references=(LOOP,),
    )
    options = ScoringOptions(cost="callgrind", timeout_s=5.0, workers=2, prompt_style="chat")
    with SolutionScorer(options) as scorer:
        fast, same, wrong = scorer.score(
            [task] * 3,
            [
                f"```python\n{FORMULA}```",
                f"```python\n{LOOP}```",
                "```python\ndef total(n):\n    return 0\n```",
            ],
            [0, 1, 2],
        )
    assert fast.cost_measure == "callgrind" and fast.reference_cost == same.reference_cost
    assert fast.speedup > 20
    assert same.cost_ratio == pytest.approx(1.0, rel=0.001)
    assert wrong.cost is None and wrong.speedup is None
