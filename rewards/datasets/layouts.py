"""The published layouts effirl reads as they are: EvalPlus on the Hub, EffiBench and Mercury.

Each is a :class:`~rewards.datasets.columns.Layout` in ``LAYOUTS`` (the column mapping plus the
converter); their Hub ids become dataset names (``load_tasks("evalplus/mbppplus")``).

- ``evalplus_humanevalplus`` (``evalplus/humanevalplus``: task_id, prompt, canonical_solution,
  entry_point, test). ``test`` is a ``check(candidate)`` script holding the literal lists
  ``inputs`` and ``results`` (base and plus inputs, de-duplicated) and the tolerance in its
  ``assertion(candidate(*inp), exp, ATOL)`` call: they become function tests. A few tasks store no
  ``results`` (the script compares against the reference instead); their expected outputs come
  from running the reference in the sandbox. Base and plus inputs are not told apart, so
  ``n_base_tests`` is unknown (None); the release files (``humanevalplus``) keep them apart.
- ``evalplus_mbppplus`` (``evalplus/mbppplus``: task_id, code, prompt, source_file, test_imports,
  test_list, test). The same ``inputs``/``results`` at module level; the entry point is the
  function the ``assertion`` call runs. The prompt is EvalPlus's own: the description and the first
  assert in a docstring. The base tests are the first ones, one per distinct assert of
  ``test_list``. Ids are ``Mbpp/<task_id>``, as in the release files.
- ``effibench`` (``DONG19/EffiBench``: problem_idx, markdown_description, canonical_solution,
  small_test_cases, test_case; optional task_name, difficulty). LeetCode problems: the tests are
  ``assert solution.METHOD(...) == ...`` lines; the small ones become the base tests.
- ``mercury`` (``Elfsong/Mercury``: slug_name, pretty_content, prompt, entry_point, solutions,
  test_cases, convert_offline, evaluate_offline; optional difficulty). ``test_cases`` is JSON of
  ``{"input": [arguments], "expected": value}``; rows whose ``convert_offline`` or
  ``evaluate_offline`` do more than pass the case through and compare with ``==`` (linked lists,
  trees, answers in any order) are skipped, since only an in-process check could judge them.

LeetCode problems (EffiBench, Mercury) ask for ``class Solution``; here the prompt asks for a
module-level function ``METHOD(...)`` with the method's parameters, which is what the sandbox calls.
The references are the published classes with that function added (``Solution().METHOD(...)``).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rewards.datasets.assertions import NotConvertible
from rewards.datasets.columns import Layout, PendingOutputs, RowSkipped, asserts_to_tests, register_layout
from rewards.datasets.expected_outputs import ReferenceCall
from rewards.datasets.mbppplus import NOT_NONE_ORACLE, SET_EQUAL_ORACLE
from rewards.datasets.mbppplus import _reference as mbppplus_reference
from rewards.tasks import Task
from sandbox.types import FunctionTest

# What LeetCode solutions take for granted (the judges import these before the solution runs).
LEETCODE_PRELUDE = """\
from typing import *
import bisect, collections, functools, heapq, itertools, math, operator, re, string
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict, deque, OrderedDict
from functools import cache, lru_cache, reduce
from heapq import heapify, heappop, heappush
from itertools import accumulate, combinations, permutations, product
from math import ceil, floor, gcd, inf, sqrt
"""


@dataclass(frozen=True)
class EvalplusTest:
    """What an EvalPlus Hub ``test`` script says: inputs, expected results (None: compare with the
    reference), the tolerance, the function called and a special oracle."""

    inputs: list[tuple[Any, ...]]
    results: list[Any] | None
    atol: float | None
    entry_point: str | None
    oracle: str | None


def parse_evalplus_test(code: str) -> EvalplusTest:
    """Read an EvalPlus Hub ``test`` script (both datasets); raises RowSkipped when it has another shape."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise RowSkipped(f"the test script does not parse: {exc.msg}") from None
    found: dict[str, Any] = {}
    atol: float | None = None
    entry_point = oracle = None
    # Statement by statement: the literals hold most of the nodes, and only their values matter.
    for node in _statements(tree.body):
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in ("inputs", "results"):
            found[target.id] = python_literal(node.value)
        call = node.value if isinstance(node, ast.Expr) else None
        if isinstance(call, ast.Call) and _name(call.func) == "assertion" and len(call.args) >= 3:
            called = call.args[0]
            if isinstance(called, ast.Call) and _name(called.func) not in (None, "candidate"):
                entry_point = _name(called.func)
            atol = _number(call.args[-1])
        test = node.test if isinstance(node, ast.Assert) else None
        if (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Call)
            and _name(test.left.func) == "_poly"
        ):
            oracle, atol = "poly_root", _number(test.comparators[0])
    if "inputs" not in found:
        raise RowSkipped("the test script assigns no `inputs` list")
    inputs, results = found["inputs"], found.get("results")
    if not isinstance(inputs, list) or not all(isinstance(i, (list, tuple)) for i in inputs):
        raise RowSkipped("`inputs` is not a list of argument lists")
    if results is not None and (not isinstance(results, list) or len(results) != len(inputs)):
        raise RowSkipped("`results` is not a list as long as `inputs`")
    return EvalplusTest([tuple(i) for i in inputs], results, atol or None, entry_point, oracle)


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for statement in body:
        yield statement
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(statement, field, None)
            if isinstance(inner, list):
                yield from _statements(inner)


def python_literal(node: ast.AST) -> Any:
    """The value of a literal as ``repr`` writes it, including ``inf``, ``nan``, ``set()`` and
    complex numbers; raises RowSkipped for anything else (no code runs)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [python_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(python_literal(e) for e in node.elts)
    if isinstance(node, ast.Set):
        return {python_literal(e) for e in node.elts}
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {python_literal(k): python_literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return math.inf if node.id == "inf" else math.nan
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = python_literal(node.operand)
        if isinstance(value, (int, float, complex)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = python_literal(node.left), python_literal(node.right)
        if isinstance(right, complex) and isinstance(left, (int, float)) and not isinstance(left, bool):
            return left + right if isinstance(node.op, ast.Add) else left - right
    if (
        isinstance(node, ast.Call)
        and _name(node.func) in ("set", "frozenset", "float", "complex")
        and not node.keywords
    ):
        args = [python_literal(a) for a in node.args]
        if _name(node.func) in ("set", "frozenset") and len(args) <= 1:
            return (set if _name(node.func) == "set" else frozenset)(*args)
        if len(args) == 1 and isinstance(args[0], str):
            try:
                return (float if _name(node.func) == "float" else complex)(args[0])
            except ValueError:
                pass
    raise RowSkipped(f"`{ast.unparse(node)[:60]}` is not a literal")


def _name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _number(node: ast.AST) -> float | None:
    try:
        value = python_literal(node)
    except RowSkipped:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _evalplus_task(
    parsed: EvalplusTest, *, task_id: str, prompt: str, entry_point: str, reference: str,
    n_base: int | None, test_script: str | None, metadata: dict[str, Any],
) -> Task | PendingOutputs:  # fmt: skip
    task = Task(
        id=task_id,
        prompt=prompt,
        entry_point=entry_point,
        n_base_tests=n_base,
        test_script=test_script,
        references=(reference,),
        atol=parsed.atol,
        metadata=metadata,
    )
    if parsed.results is None:
        return PendingOutputs(task, ReferenceCall(task_id, reference, entry_point, tuple(parsed.inputs)))
    tests = tuple(FunctionTest(args, value) for args, value in zip(parsed.inputs, parsed.results))
    return Task(**{**task.__dict__, "function_tests": tests})


def convert_humanevalplus(row: Mapping[str, Any], prefix: str) -> Task | PendingOutputs:
    """A task of ``evalplus/humanevalplus``."""
    parsed = parse_evalplus_test(str(row["test"]))
    entry_point = str(row["entry_point"])
    metadata: dict[str, Any] = {
        "source": "humanevalplus",
        "split": "test",
        "layout": prefix,
        "canonical_solution": row["canonical_solution"],
    }
    if parsed.oracle or entry_point == "find_zero":
        metadata["oracle"] = "poly_root"
    return _evalplus_task(
        parsed,
        task_id=str(row["task_id"]),
        prompt=str(row["prompt"]),
        entry_point=entry_point,
        reference=str(row["prompt"]) + str(row["canonical_solution"]),
        n_base=None,
        test_script=f"{row['test']}\n\ncheck({entry_point})\n",
        metadata=metadata,
    )


def convert_mbppplus(row: Mapping[str, Any], prefix: str) -> Task | PendingOutputs:
    """A task of ``evalplus/mbppplus``."""
    parsed = parse_evalplus_test(str(row["test"]))
    asserts = [str(a).strip() for a in row.get("test_list") or () if str(a).strip()]
    entry_point = parsed.entry_point or _called_function(asserts) or _defined_function(str(row["code"]))
    if not entry_point:
        raise RowSkipped("cannot tell which function the tests call")
    # As the release loader does: references of tasks graded on `is not None` return that boolean.
    code = mbppplus_reference({"canonical_solution": str(row["code"]), "entry_point": entry_point})
    metadata: dict[str, Any] = {
        "source": "mbppplus",
        "split": "test",
        "layout": prefix,
        "canonical_solution": row["code"],
        "source_file": row.get("source_file") or "",
    }
    if entry_point in NOT_NONE_ORACLE:
        metadata["oracle"] = "not_none"
    elif entry_point in SET_EQUAL_ORACLE:
        metadata["oracle"] = "set_equal"
    imports = "\n".join(str(i) for i in row.get("test_imports") or ())
    first = f"{asserts[0]}\n" if asserts else ""
    return _evalplus_task(
        parsed,
        task_id=f"Mbpp/{row['task_id']}",
        prompt=f'"""\n{row["prompt"]}\n{first}"""\n',
        entry_point=entry_point,
        reference=code,
        n_base=min(len(dict.fromkeys(asserts)), len(parsed.inputs)) if asserts else None,
        test_script=(f"{imports}\n" if imports else "") + "\n".join(asserts) + "\n" if asserts else None,
        metadata=metadata,
    )


def _called_function(asserts: list[str]) -> str | None:
    for line in asserts:
        try:
            tree = ast.parse(line)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) not in (
                None,
                "set",
                "sorted",
                "abs",
                "isclose",
            ):
                return _name(node.func)
    return None


def _defined_function(code: str) -> str | None:
    match = re.search(r"^def\s+(\w+)\s*\(", code, re.MULTILINE)
    return match.group(1) if match else None


def convert_effibench(row: Mapping[str, Any], prefix: str) -> Task:
    """A task of EffiBench: its LeetCode asserts become function tests of a module-level function."""
    small, large = str(row.get("small_test_cases") or ""), str(row["test_case"])
    methods = set(re.findall(r"\bsolution\.(\w+)\s*\(", small + "\n" + large))
    if len(methods) != 1:
        raise RowSkipped(f"the asserts call {len(methods)} methods of Solution, not one")
    (method,) = methods

    def is_call(node: ast.Call) -> bool:
        func = node.func
        return isinstance(func, ast.Attribute) and func.attr == method and _name(func.value) == "solution"

    try:
        base = asserts_to_tests(small, is_call) if small.strip() else None
        extra = asserts_to_tests(large, is_call)
    except NotConvertible as exc:
        raise RowSkipped(f"an assert is not a plain call on literals ({exc})") from None
    solution = str(row["canonical_solution"])
    params, returns = _method_signature(solution, method)
    base_tests = base.tests if base else ()
    atols = [c.atol for c in (base, extra) if c is not None and c.atol is not None]
    metadata: dict[str, Any] = {"source": "effibench", "layout": prefix, "canonical_solution": solution}
    for key in ("task_name", "difficulty"):
        if row.get(key):
            metadata[key] = row[key]
    return Task(
        id=f"effibench/{row['problem_idx']}",
        prompt=function_prompt(str(row["markdown_description"]), method, params, returns),
        entry_point=method,
        function_tests=base_tests + extra.tests,
        n_base_tests=len(base_tests) if base_tests else None,
        references=(with_function(solution, method),),
        atol=max(atols) if atols else None,
        metadata=metadata,
    )


def convert_mercury(row: Mapping[str, Any], prefix: str) -> Task:
    """A task of Mercury: its JSON test cases become function tests of a module-level function."""
    if not _passes_case_through(str(row["convert_offline"])):
        raise RowSkipped("convert_offline builds objects from the case (e.g. linked lists or trees)")
    if not _compares_with_equality(str(row["evaluate_offline"])):
        raise RowSkipped("evaluate_offline is not a plain `outputs == expected`")
    method = str(row["entry_point"])
    cases = row["test_cases"]
    cases = json.loads(cases) if isinstance(cases, str) else cases
    tests = []
    for index, case in enumerate(cases or ()):
        if not isinstance(case, Mapping) or "input" not in case or "expected" not in case:
            raise RowSkipped(f"test case {index} is not an object with input and expected")
        args = case["input"]
        tests.append(
            FunctionTest(tuple(args) if isinstance(args, (list, tuple)) else (args,), case["expected"])
        )
    if not tests:
        raise RowSkipped("no test cases")
    stub = str(row["prompt"])
    match = re.search(
        rf"def\s+{re.escape(method)}\s*\(\s*self\s*,?(.*?)\)\s*(?:->\s*(.*?))?\s*:", stub, re.DOTALL
    )
    if match is None:
        raise RowSkipped(f"the prompt has no `def {method}(self, ...)`")
    params, returns = " ".join(match.group(1).split()), (match.group(2) or "").strip() or None
    solutions = [s for s in row.get("solutions") or () if isinstance(s, Mapping) and s.get("solution")]
    solutions.sort(key=lambda s: _runtime_ms(s.get("runtime")))
    content = row["pretty_content"]
    description = content[0] if isinstance(content, (list, tuple)) and content else str(content)
    metadata: dict[str, Any] = {"source": "mercury", "layout": prefix, "slug_name": row["slug_name"]}
    if row.get("difficulty"):
        metadata["difficulty"] = row["difficulty"]
    return Task(
        id=f"mercury/{row['slug_name']}",
        prompt=function_prompt(str(description), method, params, returns),
        entry_point=method,
        function_tests=tuple(tests),
        references=tuple(with_function(str(s["solution"]), method) for s in solutions),
        metadata=metadata,
    )


def _runtime_ms(runtime: Any) -> float:
    match = re.search(r"\d+(?:\.\d+)?", str(runtime or ""))
    return float(match.group(0)) if match else math.inf


def _function_body(source: str, name: str) -> list[ast.stmt] | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(functions) != 1:
        return None
    body = functions[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # a docstring
    return body


def _passes_case_through(source: str) -> bool:
    """``def convert_offline(case): return case`` (or unpacking and returning the same pair)."""
    body = _function_body(source, "convert_offline")
    if body is None:
        return False
    text = [ast.unparse(s) for s in body]
    return text == ["return case"] or text == ["inputs, expected = case", "return (inputs, expected)"]


def _compares_with_equality(source: str) -> bool:
    """``return outputs == expected``, or ``if outputs == expected: return True`` then ``return False``."""
    body = _function_body(source, "evaluate_offline")
    if body is None:
        return False
    text = "\n".join(ast.unparse(s) for s in body)
    plain = ("outputs == expected", "expected == outputs")
    return text in {f"return {c}" for c in plain} | {
        f"if {c}:\n    return True\nreturn False" for c in plain
    } | {f"if {c}:\n    return True\nelse:\n    return False" for c in plain}


def _method_signature(solution: str, method: str) -> tuple[str, str | None]:
    try:
        tree = ast.parse(solution)
    except SyntaxError as exc:
        raise RowSkipped(f"the canonical solution does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Solution":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    arguments = item.args
                    arguments.args = arguments.args[1:]  # drop self
                    returns = ast.unparse(item.returns) if item.returns else None
                    return ast.unparse(arguments), returns
    raise RowSkipped(f"the canonical solution has no Solution.{method}")


def function_prompt(description: str, name: str, params: str, returns: str | None) -> str:
    """A LeetCode problem asked as a module-level function."""
    arrow = f" -> {returns}" if returns else ""
    return (
        f"{description.strip()}\n\nWrite the solution as a Python function at module level (not a method "
        f"of a class):\n\n```python\nfrom typing import *\n\ndef {name}({params}){arrow}:\n```\n"
    )


def with_function(solution: str, method: str) -> str:
    """A ``class Solution`` with the module-level function the tests call added."""
    return (
        f"{LEETCODE_PRELUDE}\n{solution.rstrip()}\n\n\n"
        f"def {method}(*args, **kwargs):\n    return Solution().{method}(*args, **kwargs)\n"
    )


EVALPLUS_COLUMNS = ("task_id", "prompt", "canonical_solution", "entry_point", "test")
MBPP_COLUMNS = ("task_id", "code", "prompt", "source_file", "test_imports", "test_list", "test")
EFFIBENCH_COLUMNS = (
    "problem_idx", "task_name", "difficulty", "markdown_description", "canonical_solution",
    "small_test_cases", "test_case",
)  # fmt: skip
MERCURY_COLUMNS = (
    "slug_name", "difficulty", "pretty_content", "prompt", "entry_point", "solutions", "test_cases",
    "convert_offline", "evaluate_offline",
)  # fmt: skip

for _layout in (
    Layout(
        "evalplus_humanevalplus",
        {c: c for c in EVALPLUS_COLUMNS},
        convert_humanevalplus,
        hub_ids=("evalplus/humanevalplus",),
        default_split="test",
        description="HumanEval+ as published on the Hub by EvalPlus",
    ),
    Layout(
        "evalplus_mbppplus",
        {c: c for c in MBPP_COLUMNS},
        convert_mbppplus,
        hub_ids=("evalplus/mbppplus",),
        default_split="test",
        optional=("source_file", "test_imports", "test_list"),
        description="MBPP+ as published on the Hub by EvalPlus",
    ),
    Layout(
        "effibench",
        {c: c for c in EFFIBENCH_COLUMNS},
        convert_effibench,
        hub_ids=("DONG19/EffiBench",),
        default_split="train",
        optional=("task_name", "difficulty", "small_test_cases"),
        description="EffiBench (Huang et al. 2024): LeetCode problems with efficient canonical solutions",
    ),
    Layout(
        "mercury",
        {c: c for c in MERCURY_COLUMNS},
        convert_mercury,
        hub_ids=("Elfsong/Mercury",),
        default_split="train",
        evaluation_split="eval",
        heldout_splits=("eval",),
        optional=("difficulty", "solutions"),
        description="Mercury (Du et al. 2024): LeetCode problems with runtime-ranked solutions",
    ),
):
    register_layout(_layout)
