import math

import pytest

from sandbox import codec


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, -7, 2**63 - 1, -(2**63), 2**64, -(10**400), 1.5, -0.0, "héllo", "",
        [1, [2, (3, 4)]], (), (1,), {"a": 1, "b": [1.0]}, {1: "x", (1, 2): {3}}, {"__tuple__": 1},
        {1, 2, 3}, frozenset({"a"}), b"\x00\xff", bytearray(b"ab"), complex(1, -2),
        [float("inf"), float("-inf")],
    ],
)  # fmt: skip
def test_round_trip(value):
    decoded = codec.loads(codec.dumps(value))
    expected = bytes(value) if isinstance(value, bytearray) else value
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_nan_round_trips_tagged():
    text = codec.dumps(float("nan"))
    assert text == '{"__float__":"nan"}'
    assert math.isnan(codec.loads(text))


def test_plain_json_stays_plain():
    assert codec.dumps([1, "a", {"k": None}]) == '[1,"a",{"k":null}]'


def test_big_ints_travel_as_hex():
    assert codec.to_jsonable(2**70) == {"__int__": format(2**70, "x")}
    huge = 7**50000  # far beyond CPython's default 4300-digit str() limit
    assert codec.loads(codec.dumps(huge)) == huge


def test_equal_sets_encode_identically():
    assert codec.dumps({3, 1, 2}) == codec.dumps({2, 3, 1})


def test_subclasses_are_read_through_the_builtin():
    class LyingList(list):
        def __iter__(self):
            return iter([42])

    class LyingInt(int):
        def __index__(self):
            return 99

        def __eq__(self, other):
            return True

    assert codec.to_jsonable(LyingList([1, 2])) == [1, 2]
    assert codec.to_jsonable(LyingInt(5)) == 5


def test_unsupported_types_raise_a_clear_error():
    with pytest.raises(codec.EncodeError, match="type object cannot be compared"):
        codec.to_jsonable(object())


def test_too_deep_values_raise():
    value: list = []
    for _ in range(codec.MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(codec.EncodeError, match="deeper"):
        codec.to_jsonable(value)


@pytest.mark.parametrize(
    "text",
    ['{"__float__": "nope"}', '{"__bytes__": "***"}', '{"__tuple__": 3}', "[NaN]", "{", '{"__int__": "xyz"}'],
)
def test_malformed_input_raises_decode_error(text):
    with pytest.raises(codec.DecodeError):
        codec.loads(text)
