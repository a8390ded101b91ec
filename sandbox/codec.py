"""Tagged JSON for values that cross the sandbox boundary.

Plain JSON cannot tell a tuple from a list, has no sets, bytes or non-finite floats, and only string
dict keys. We keep plain JSON wherever it is unambiguous and tag the rest with a one-key object:

    tuple      {"__tuple__": [...]}          set / frozenset  {"__set__": [...]} / {"__frozenset__": [...]}
    bytes      {"__bytes__": "<base64>"}     float nan/inf    {"__float__": "nan" | "inf" | "-inf"}
    big int    {"__int__": "<hex>"}          dict, keys not all str (or a key that looks like a tag)
    complex    {"__complex__": [re, im]}                      {"__dict__": [[key, value], ...]}

Integers beyond 64 bits travel as hex because CPython converts huge ints to decimal in quadratic time
(and caps it at 4300 digits by default). Decoding never executes anything: no pickle, no eval, and it
stays linear on hostile input: sets, frozensets and non-string dict keys whose members were chosen to
collide in Python's hash (``n`` and ``n + k * (2**61 - 1)`` hash alike) are refused before a set or
dict is built, since inserting colliding members one by one takes quadratic time.
This module is imported inside the sandboxed child, so it uses the standard library only.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

TAGS = frozenset(
    {"__tuple__", "__set__", "__frozenset__", "__bytes__", "__float__", "__int__", "__complex__", "__dict__"}
)
_INT64 = 1 << 63
MAX_DEPTH = 200
# Members of one set (or keys of one dict) allowed to share a hash value. Equal hashes are rare in real
# outputs (-1 and -2 share one; so do 1, 1.0 and True, which are equal anyway); a few are harmless.
MAX_SHARED_HASH = 8


class EncodeError(ValueError):
    """A value that cannot be represented (unsupported type, too deep, too large)."""


class DecodeError(ValueError):
    """Malformed tagged JSON."""


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """Turn a Python value into plain JSON data, tagging what JSON cannot hold.

    Subclasses of builtins are read through the builtin's own methods, so a subclass that overrides
    ``__iter__``, ``__eq__`` or ``__repr__`` cannot make its value look different from what it holds.
    """
    if _depth > MAX_DEPTH:
        raise EncodeError(f"value nested deeper than {MAX_DEPTH} levels")
    d = _depth + 1
    if value is None or value is True or value is False:
        return value
    if isinstance(value, bool):  # bool cannot be subclassed, kept for clarity of the branch order
        return bool(value)
    if isinstance(value, int):
        raw = int.__index__(value)
        return raw if -_INT64 <= raw < _INT64 else {"__int__": int.__format__(raw, "x")}
    if isinstance(value, float):
        raw = float.__float__(value)
        if math.isfinite(raw):
            return raw
        return {"__float__": "nan" if math.isnan(raw) else ("inf" if raw > 0 else "-inf")}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v, d) for v in tuple.__iter__(value)]}
    if isinstance(value, list):
        return [to_jsonable(v, d) for v in list.__iter__(value)]
    if isinstance(value, dict):
        items = [(k, dict.__getitem__(value, k)) for k in dict.__iter__(value)]
        if all(type(k) is str for k in (k for k, _ in items)) and not (
            len(items) == 1 and items[0][0] in TAGS
        ):
            return {k: to_jsonable(v, d) for k, v in items}
        return {"__dict__": [[to_jsonable(k, d), to_jsonable(v, d)] for k, v in items]}
    if isinstance(value, frozenset):
        return {"__frozenset__": _sorted_members(frozenset.__iter__(value), d)}
    if isinstance(value, set):
        return {"__set__": _sorted_members(set.__iter__(value), d)}
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, complex):
        return {"__complex__": [to_jsonable(value.real, d), to_jsonable(value.imag, d)]}
    raise EncodeError(f"values of type {type(value).__name__} cannot be compared; return builtin types")


def _sorted_members(members: Any, depth: int) -> list[Any]:
    # Sorting the encoded members by their JSON text makes equal sets encode identically.
    encoded = [to_jsonable(v, depth) for v in members]
    return sorted(encoded, key=lambda v: json.dumps(v, sort_keys=True))


def from_jsonable(data: Any, _depth: int = 0) -> Any:
    """Inverse of :func:`to_jsonable`; raises :class:`DecodeError` on malformed tags."""
    if _depth > MAX_DEPTH + 2:
        raise DecodeError(f"value nested deeper than {MAX_DEPTH} levels")
    d = _depth + 1
    if isinstance(data, list):
        return [from_jsonable(v, d) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        ((tag, body),) = data.items()
        if tag in TAGS:
            return _decode_tag(tag, body, d)
    return {k: from_jsonable(v, d) for k, v in data.items()}


def _decode_tag(tag: str, body: Any, depth: int) -> Any:
    try:
        if tag == "__tuple__":
            return tuple(from_jsonable(v, depth) for v in _expect(body, list, tag))
        if tag == "__set__":
            return set(_hash_safe([from_jsonable(v, depth) for v in _expect(body, list, tag)], tag))
        if tag == "__frozenset__":
            return frozenset(_hash_safe([from_jsonable(v, depth) for v in _expect(body, list, tag)], tag))
        if tag == "__bytes__":
            return base64.b64decode(_expect(body, str, tag), validate=True)
        if tag == "__float__":
            if body not in ("nan", "inf", "-inf"):
                raise DecodeError(f"__float__ must be 'nan', 'inf' or '-inf', got {body!r}")
            return float(body)
        if tag == "__int__":
            return int(_expect(body, str, tag), 16)
        if tag == "__complex__":
            re_part, im_part = _expect(body, list, tag)
            return complex(from_jsonable(re_part, depth), from_jsonable(im_part, depth))
        pairs = [(from_jsonable(k, depth), from_jsonable(v, depth)) for k, v in _expect(body, list, tag)]
        _hash_safe([k for k, _ in pairs], tag)
        return dict(pairs)
    except DecodeError:
        raise
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"malformed {tag} value: {exc}") from None


def _hash_safe(members: list[Any], tag: str) -> list[Any]:
    """``members``, unless more than MAX_SHARED_HASH of them share a hash value (hash flooding)."""
    counts: dict[int, int] = {}
    for member in members:
        key = hash(member)  # TypeError for an unhashable member: malformed, reported by the caller
        count = counts.get(key, 0) + 1
        if count > MAX_SHARED_HASH:
            raise DecodeError(
                f"{tag} has more than {MAX_SHARED_HASH} members with the same hash value; refusing to "
                "build it (members chosen to collide make decoding quadratic)"
            )
        counts[key] = count
    return members


def _expect(body: Any, kind: type, tag: str) -> Any:
    if not isinstance(body, kind):
        raise DecodeError(f"{tag} expects a JSON {kind.__name__}, got {type(body).__name__}")
    return body


def dumps(value: Any) -> str:
    """Encode ``value`` as compact tagged JSON text."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Decode tagged JSON text. Bare NaN/Infinity literals are rejected: they must be tagged."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. a decimal integer of 5,000 digits
        raise DecodeError(f"unreadable value: {str(exc)[:200]}") from None
    return from_jsonable(data)


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"bare {name} is not allowed; encode it as {{'__float__': ...}}")
