"""The one task schema every dataset loader yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.types import FunctionTest, ProgramTest


@dataclass(frozen=True)
class Task:
    """A coding problem.

    id: unique within its dataset, e.g. ``HumanEval/0`` or ``synthetic/sum_range/train/17``.
    prompt: the problem statement with the function signature, as shown to the model.
    entry_point: the function the tests call (None for stdin/stdout programs).
    function_tests: call-and-compare tests; the first ``n_base_tests`` are the dataset's base tests
        (HumanEval+/MBPP+ keep base and plus inputs apart), the rest are extra (plus / stress) tests.
    program_tests: stdin/stdout tests for whole programs.
    test_script: an assertion script (e.g. HumanEval's ``check(candidate)``); weaker trust level.
    perf_tests: performance-exercising tests (function tests for an entry point, or program tests),
        apart from the correctness tests. When a task has them, a solution's cost is measured on them
        only, after every correctness test passed; they are judged too (a wrong output on one fails
        the solution), so they can never be a free cheap run. Empty: cost is measured on the
        correctness tests.
    references: known-correct solutions; the first is the cost baseline.
    atol: absolute float tolerance for comparisons (None: exact).
    metadata: source, difficulty, family, split, ...
    """

    id: str
    prompt: str
    entry_point: str | None = None
    function_tests: tuple[FunctionTest, ...] = ()
    n_base_tests: int | None = None
    program_tests: tuple[ProgramTest, ...] = ()
    test_script: str | None = None
    perf_tests: tuple[FunctionTest | ProgramTest, ...] = ()
    references: tuple[str, ...] = ()
    atol: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = {type(test) for test in self.perf_tests}
        if kinds - {FunctionTest, ProgramTest} or len(kinds) > 1:
            raise ValueError(
                f"task {self.id!r}: perf_tests must be all FunctionTest or all ProgramTest, "
                f"got {sorted(k.__name__ for k in kinds)}"
            )
        if kinds == {FunctionTest} and not self.entry_point:
            raise ValueError(f"task {self.id!r}: function perf_tests need an entry_point to call")

    @property
    def trust_level(self) -> str:
        """How a verdict on this task is reached, strongest first: ``function`` (return values compared
        on the host), ``program`` (stdout compared on the host), ``script`` (an assertion script run in
        the candidate's own process, which the candidate can subvert) or ``none`` (no tests)."""
        if self.function_tests:
            return "function"
        if self.program_tests:
            return "program"
        return "script" if self.test_script else "none"

    @property
    def reference(self) -> str | None:
        return self.references[0] if self.references else None
