"""Turn an assertion script (HumanEval's ``check(candidate)``) into function tests the host compares.

An assertion script runs in the candidate's process, so its verdict comes from inside the code it
judges: a candidate can write a "script passed" record itself, or return objects that equal anything.
Most of HumanEval's asserts are plain calls on literal arguments compared with literal values, which
say exactly the same thing as a function test; those are converted. A script with any assert that does
not have such a shape (loops, helper functions, random inputs, properties instead of values) is left
unconverted as a whole: keeping only some of its asserts would let wrong solutions pass.

Shapes converted (``candidate`` is ``check``'s parameter; literal means ``ast.literal_eval`` accepts it):

    assert candidate(ARGS) == LITERAL          assert LITERAL == candidate(ARGS)
    assert candidate(ARGS) is True|False|None  assert candidate(ARGS)            (expects True)
    assert not candidate(ARGS)                 (expects False)
    assert abs(candidate(ARGS) - LITERAL) < TOL   (also <=, math.fabs; TOL becomes the task's atol)
    assert True                                (no test)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from sandbox.types import FunctionTest


@dataclass(frozen=True)
class ConvertedChecks:
    tests: tuple[FunctionTest, ...]
    atol: float | None


class NotConvertible(ValueError):
    """An assertion script with a statement that has no function-test equivalent."""


def function_tests_from_check(script: str, function: str = "check") -> ConvertedChecks:
    """The function tests equivalent to ``function`` in ``script``; raises :class:`NotConvertible`."""
    try:
        tree = ast.parse(script)
    except SyntaxError as exc:
        raise NotConvertible(f"the script does not parse: {exc}") from None
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    if len(checks) != 1 or not checks[0].args.args:
        raise NotConvertible(f"the script defines no `{function}(candidate)` function")
    check = checks[0]
    candidate = check.args.args[0].arg
    tests: list[FunctionTest] = []
    atol: float | None = None
    for statement in check.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring or a stray string
        if not isinstance(statement, ast.Assert):
            raise NotConvertible(f"line {statement.lineno}: a {type(statement).__name__} statement")
        converted = _assertion(statement.test, candidate)
        if converted is None:
            continue  # assert True
        test, tolerance = converted
        tests.append(test)
        if tolerance is not None:
            atol = max(atol or 0.0, tolerance)
    if not tests:
        raise NotConvertible("the script asserts nothing about the candidate")
    return ConvertedChecks(tuple(tests), atol)


def _assertion(test: ast.expr, candidate: str) -> tuple[FunctionTest, float | None] | None:
    if isinstance(test, ast.Constant) and test.value is True:
        return None
    call = _candidate_call(test, candidate)
    if call is not None:
        return _test(call, True), None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        call = _candidate_call(test.operand, candidate)
        if call is not None:
            return _test(call, False), None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, (ast.Eq, ast.Is)):
            for side, other in ((left, right), (right, left)):
                call = _candidate_call(side, candidate)
                if call is not None:
                    expected = _literal(other, test)
                    if isinstance(op, ast.Is) and expected not in (True, False, None):
                        break
                    return _test(call, expected), None
        if isinstance(op, (ast.Lt, ast.LtE)):
            difference = _absolute_difference(left)
            if difference is not None:
                call_node, expected_node = difference
                call = _candidate_call(call_node, candidate)
                tolerance = _literal(right, test)
                if call is not None and isinstance(tolerance, (int, float)) and tolerance > 0:
                    return _test(call, _literal(expected_node, test)), float(tolerance)
    raise NotConvertible(f"line {test.lineno}: `assert {ast.unparse(test)}` is not a plain comparison")


def _candidate_call(node: ast.expr, candidate: str) -> ast.Call | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == candidate:
        return node
    return None


def _absolute_difference(node: ast.expr) -> tuple[ast.expr, ast.expr] | None:
    """For ``abs(a - b)`` or ``math.fabs(a - b)``: (a, b)."""
    if not (isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords):
        return None
    func = node.func
    named_abs = isinstance(func, ast.Name) and func.id == "abs"
    named_fabs = isinstance(func, ast.Attribute) and func.attr == "fabs"
    inner = node.args[0]
    if (named_abs or named_fabs) and isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub):
        return inner.left, inner.right
    return None


def _test(call: ast.Call, expected: object) -> FunctionTest:
    args = tuple(_literal(arg, call) for arg in call.args)
    kwargs = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise NotConvertible(f"line {call.lineno}: `**` arguments")
        kwargs[keyword.arg] = _literal(keyword.value, call)
    return FunctionTest(args, expected, kwargs)


_ARITHMETIC = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}


def _literal(node: ast.expr, context: ast.AST) -> object:
    """A literal, or constant arithmetic on literals (``3 * 19``, ``'ab' + 'c'``, ``2.0 / 3.0``)."""
    if isinstance(node, ast.Starred):
        raise NotConvertible(f"line {context.lineno}: `*` arguments")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(item, context) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _literal(node.left, context), _literal(node.right, context)
        small = all(isinstance(v, (int, float)) and abs(v) < 1 << 64 for v in (left, right))
        if isinstance(node.op, ast.Pow) and not (small and abs(right) <= 64):
            raise NotConvertible(f"line {context.lineno}: `{ast.unparse(node)}` is too large to fold")
        if isinstance(node.op, ast.Mult) and not small and max(_size(left), _size(right)) > 1 << 16:
            raise NotConvertible(f"line {context.lineno}: `{ast.unparse(node)}` is too large to fold")
        try:
            return _ARITHMETIC[type(node.op)](left, right)
        except (TypeError, ArithmeticError, MemoryError):
            pass
    raise NotConvertible(f"line {context.lineno}: `{ast.unparse(node)}` is not a literal")


def _size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value)
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0
