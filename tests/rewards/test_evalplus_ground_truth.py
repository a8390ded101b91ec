"""Ground truth on the full HumanEval+ (164) and MBPP+ (378) releases, through the sandbox.

Slow (minutes on 2 cores): expected outputs are computed once and then served from the default
expected-output cache ($EFFIRL_CACHE or ~/.cache/effirl), as every loader call does.

- every canonical solution passes all its base and plus inputs (run_function_tests);
- every canonical solution passes the dataset's own assertion script (run_script);
- a solution swapped in from the next task fails;
- simple mutants (an integer constant plus one; + <-> -, < <-> <=, == <-> != ...) fail. Some mutants are
  equivalent to the original (e.g. ``<`` vs ``<=`` where ties never occur), so the test asks for a
  kill rate; about 90% are killed on both datasets.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rewards.datasets import load_humanevalplus, load_mbppplus
from rewards.tasks import Task
from sandbox import ExecutionResult, Sandbox

pytestmark = pytest.mark.slow
T = TypeVar("T")
MIN_KILL_RATE = 0.85

_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Add,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
}


def mutant(code: str, entry_point: str, kind: str) -> str | None:
    """``code`` with the first eligible node of the entry point's body mutated, or None if none is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # dataset code with "\w" in plain strings
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(code)
    function = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point), None)
    if function is None:
        return None
    for node in (n for statement in function.body for n in ast.walk(statement)):
        if kind == "off_by_one" and isinstance(node, ast.Constant) and type(node.value) is int:
            node.value += 1
            return ast.unparse(tree)
        if kind == "operator" and isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
            node.op = _SWAPS[type(node.op)]()
            return ast.unparse(tree)
        if kind == "operator" and isinstance(node, ast.Compare) and type(node.ops[0]) in _SWAPS:
            node.ops[0] = _SWAPS[type(node.ops[0])]()
            return ast.unparse(tree)
    return None


# A clean checkout (CI) computes every task's expected outputs in the first test's fixture: over 1,000
# reference runs per dataset. That is set-up, not a hang, so the suite's 300 s limit does not apply.
pytestmark = pytest.mark.timeout(1800)


def parallel(function: Callable[[T], ExecutionResult], items: list[T]) -> list[ExecutionResult]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(function, items))


def function_tests(box: Sandbox, task: Task, code: str, timeout_s: float | None = None) -> ExecutionResult:
    assert task.entry_point is not None
    return box.run_function_tests(
        code, task.entry_point, task.function_tests, atol=task.atol, timeout_s=timeout_s
    )


@pytest.fixture(scope="module", params=["humanevalplus", "mbppplus"])
def dataset(request: pytest.FixtureRequest, box: Sandbox) -> tuple[str, list[Task]]:
    path: Path = request.getfixturevalue(f"{request.param}_file")
    loader: Any = load_humanevalplus if request.param == "humanevalplus" else load_mbppplus
    # Perf tests are checked where they are derived (test_perf_inputs.py, effirl data perf-inputs).
    return request.param, loader(path, sandbox=box, perf_tests=False)


def test_task_counts_and_base_plus_split(dataset: tuple[str, list[Task]]) -> None:
    name, tasks = dataset
    assert len(tasks) == {"humanevalplus": 164, "mbppplus": 378}[name]
    assert len({t.id for t in tasks}) == len(tasks)
    assert sum(len(t.function_tests) > t.n_base_tests for t in tasks) > 0.95 * len(tasks)  # plus inputs
    for task in tasks:
        assert task.n_base_tests is not None and 0 < task.n_base_tests <= len(task.function_tests), task.id
        assert task.test_script and task.reference
    dropped = {t.id: t.metadata["dropped_inputs"] for t in tasks if "dropped_inputs" in t.metadata}
    # Only Mbpp/255 asks for results (millions of combinations) beyond the sandbox's limits.
    assert set(dropped) <= {"Mbpp/255"}


def test_canonical_solutions_pass_base_and_plus_inputs(dataset: tuple[str, list[Task]], box: Sandbox) -> None:
    _, tasks = dataset
    results = parallel(lambda t: function_tests(box, t, t.reference or ""), tasks)
    failures = [(t.id, r.status.value, r.error) for t, r in zip(tasks, results) if not r.ok]
    assert failures == []
    assert all(r.passed == len(t.function_tests) for t, r in zip(tasks, results))


def test_canonical_solutions_pass_the_datasets_assertion_scripts(
    dataset: tuple[str, list[Task]], box: Sandbox
) -> None:
    _, tasks = dataset
    results = parallel(lambda t: box.run_script(t.reference or "", t.test_script or ""), tasks)
    assert [(t.id, r.error) for t, r in zip(tasks, results) if not r.ok] == []


def test_solutions_swapped_between_tasks_fail(dataset: tuple[str, list[Task]], box: Sandbox) -> None:
    _, tasks = dataset
    pairs = [(task, tasks[(i + 1) % len(tasks)]) for i, task in enumerate(tasks)]

    def run(pair: tuple[Task, Task]) -> ExecutionResult:
        task, other = pair
        # The other task's solution, callable under this task's entry point name.
        code = f"{other.reference}\n\n{task.entry_point} = {other.entry_point}\n"
        return function_tests(box, task, code, timeout_s=10)

    results = parallel(run, pairs)
    assert [(t.id, o.id) for (t, o), r in zip(pairs, results) if r.ok] == []


def test_simple_mutants_fail(dataset: tuple[str, list[Task]], box: Sandbox) -> None:
    name, tasks = dataset
    # One kind of mutant per task, the two kinds taking turns: half the sandbox runs of trying both on
    # every task (about a minute less CI for both datasets), and the kill rate is still taken over
    # about 80 mutants of each kind on HumanEval+ and 180 on MBPP+.
    kinds = ("off_by_one", "operator")
    jobs = [
        (task, kind, code)
        for index, task in enumerate(tasks)
        for kind in (kinds[index % 2],)
        if (code := mutant(task.reference or "", task.entry_point or "", kind)) is not None
    ]
    assert len(jobs) > len(tasks) // 2 and {kind for _, kind, _ in jobs} == set(kinds)
    results = parallel(lambda job: function_tests(box, job[0], job[2], timeout_s=10), jobs)
    survivors = [(task.id, kind) for (task, kind, _), r in zip(jobs, results) if r.ok]
    kill_rate = 1 - len(survivors) / len(jobs)
    assert kill_rate >= MIN_KILL_RATE, (
        f"{name}: only {kill_rate:.1%} of mutants killed; survivors {survivors}"
    )
