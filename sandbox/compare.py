"""Trusted comparison of a candidate's decoded outputs with expected values.

Runs on the host side only. Both sides are plain builtins produced by :mod:`sandbox.codec`, so no
object the candidate made (and no forged ``__eq__``) takes part in the comparison.

Float handling follows EvalPlus: when ``atol`` is given, or the expected value is a float or a flat
list/tuple of floats, values match if ``|actual - expected| <= atol + 1e-7 * |expected|`` (numpy's
``allclose`` rule, ``atol`` defaulting to 1e-6), with matching container types and lengths. Otherwise
the comparison is exact (Python ``==`` on builtins, so ``1 == 1.0 == True`` as in EvalPlus), except that
NaN equals NaN.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_FLOAT_ATOL = 1e-6
RTOL = 1e-7


def is_floats(value: Any) -> bool:
    """True for a float, or a non-empty list/tuple whose items are all floats."""
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(isinstance(v, float) for v in value)
    return False


def outputs_match(actual: Any, expected: Any, atol: float | None = None) -> bool:
    """Whether ``actual`` is an acceptable output for ``expected``."""
    if exact_equal(actual, expected):
        return True
    tolerance = atol or 0.0
    if tolerance == 0.0 and is_floats(expected):
        tolerance = DEFAULT_FLOAT_ATOL
    if tolerance == 0.0:
        return False
    return _close(actual, expected, tolerance)


def exact_equal(a: Any, b: Any) -> bool:
    """Python equality on builtins, with NaN equal to NaN at any depth."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(exact_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(exact_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # comparing e.g. a huge int with a float can raise OverflowError
        return False


def _close(actual: Any, expected: Any, atol: float) -> bool:
    if isinstance(expected, (list, tuple)):
        return (
            type(actual) is type(expected)
            and len(actual) == len(expected)
            and all(_close(a, e, atol) for a, e in zip(actual, expected))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        try:
            a, e = float(actual), float(expected)
        except OverflowError:
            return False
        if math.isnan(a) or math.isnan(e):
            return math.isnan(a) and math.isnan(e)
        if math.isinf(a) or math.isinf(e):
            return a == e
        return abs(a - e) <= atol + RTOL * abs(e)
    return exact_equal(actual, expected)
