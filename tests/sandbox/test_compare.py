import pytest

from sandbox.compare import is_floats, outputs_match


@pytest.mark.parametrize(
    ("actual", "expected", "atol", "match"),
    [
        (3, 3, None, True),
        (3, 4, None, False),
        ([1, 2], (1, 2), None, False),
        ((1, 2), (1, 2), None, True),
        (True, 1, None, True),  # Python equality, as EvalPlus compares
        (0.1 + 0.2, 0.3, None, True),  # floats get atol 1e-6 by default
        (0.3001, 0.3, None, False),
        (0.3001, 0.3, 1e-3, True),
        ([0.1 + 0.2, 1.0], [0.3, 1.0], None, True),
        ([0.1 + 0.2, 1.0], (0.3, 1.0), None, False),
        (float("nan"), float("nan"), None, True),
        ([float("nan")], [float("nan")], None, True),
        (float("inf"), float("inf"), None, True),
        (float("inf"), 1e308, 1e-6, False),
        ("a", "a", 1e-3, True),
        ({"x": [1.0]}, {"x": [1.0]}, None, True),
        (10**400, 1.0, 1e-6, False),
        ({1, 2}, {2, 1}, None, True),
    ],
)
def test_outputs_match(actual, expected, atol, match):
    assert outputs_match(actual, expected, atol) is match


def test_is_floats():
    assert is_floats(1.0) and is_floats([1.0, 2.0]) and is_floats((0.5,))
    assert not is_floats([]) and not is_floats([1.0, 2]) and not is_floats(1)
