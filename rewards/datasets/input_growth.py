"""Type-aware growth of test inputs: bigger inputs of the same kind, inside a task's own input domain.

A task's inputs at one argument position are summarised by a :class:`Shape` (what kind of value it
is, which values and characters occur, whether lists are sorted or free of duplicates, whether
lengths or dict keys never vary). :func:`grow_input` then makes an input ``factor`` times larger
while keeping what the shape says: element types and observed value ranges, sortedness and
uniqueness, the string alphabet, fixed-size tuples and records untouched.

Two ways to enlarge a container (``Growth.container``):

- ``tile``: repeat the value itself (strings joined by a space when they hold one, unique int lists
  shifted copy by copy so they stay unique and sorted). Keeps structure that random values would
  break: balanced brackets, space-separated numbers, a list's own value mix.
- ``sample``: append new elements drawn from what was observed (ints and floats uniform in their
  observed range, strings and nested values from those seen). More varied values, fewer repeats.

``Growth.scale_ints`` also multiplies the top-level integer arguments (``n`` in ``fib(n)``), whose
size often decides the cost. Everything is deterministic for a given ``random.Random``; sets and
dicts are walked in a fixed order so the result does not depend on the hash seed.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The growth algorithm's version: part of every cache key derived from its output.
GENERATOR_VERSION = 1
POOL_SIZE = 2000  # observed values kept per position, first seen first
MAX_ELEMENTS = 1_000_000
DOMINANT_SHARE = 0.9  # of the values at a position, to take their kind as the position's
CONTAINERS = ("list", "tuple", "set", "frozenset")


def kind_of(value: Any) -> str:
    """``int``, ``float``, ``bool``, ``str``, ``list``, ``tuple``, ``set``, ``frozenset``, ``dict``,
    ``none`` or ``other``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    for kind in (int, float, str, list, tuple, frozenset, set, dict):
        if type(value) is kind:
            return kind.__name__
    return "other"


@dataclass
class Shape:
    """What the observed values at one position look like (an argument, or a container's elements)."""

    kind: str
    count: int = 0
    low: float | None = None
    high: float | None = None
    alphabet: str = ""
    has_space: bool = False
    fixed_length: bool = False
    sorted_ascending: bool = False
    sorted_descending: bool = False
    unique: bool = False
    fixed_keys: bool = False
    element: Shape | None = None
    key: Shape | None = None
    value: Shape | None = None
    pool: list[Any] = field(default_factory=list)

    @property
    def growable(self) -> bool:
        if self.kind in CONTAINERS or self.kind == "str":
            return not self.fixed_length
        if self.kind == "dict":
            return not self.fixed_keys
        return False


def infer_shape(values: Sequence[Any]) -> Shape:
    """The :class:`Shape` of the values seen at one position."""
    if not values:
        return Shape("none")
    counts = Counter(kind_of(v) for v in values)
    if set(counts) <= {"int", "float"} and len(counts) == 2:
        kind = "float"
    else:
        # A few odd inputs (a string among 1000 lists, EvalPlus's type mutations) do not make a
        # position mixed: the shape is that of the values of the dominant kind.
        kind, count = counts.most_common(1)[0]
        if count < DOMINANT_SHARE * len(values):
            return Shape("mixed", len(values), pool=_pool(values))
        values = [v for v in values if kind_of(v) == kind]
    shape = Shape(kind, len(values), pool=_pool(values))
    if kind in ("int", "float"):
        shape.low, shape.high = min(values), max(values)
    elif kind == "str":
        shape.alphabet = "".join(sorted({ch for v in values for ch in v}))
        shape.has_space = any(" " in v for v in values)
        shape.fixed_length = _fixed({len(v) for v in values}, len(values))
    elif kind in CONTAINERS:
        members = [_ordered(v) for v in values]
        elements = [x for m in members for x in m]
        shape.element = infer_shape(elements)
        shape.fixed_length = _fixed({len(m) for m in members}, len(values))
        if kind == "tuple" and shape.element.kind == "mixed":
            shape.fixed_length = True  # a record such as ("name", 3), not a sequence
        longer = [m for m in members if len(m) >= 2]
        if len(longer) >= 2 and kind in ("list", "tuple"):
            shape.sorted_ascending = all(_is_sorted(m) for m in longer)
            shape.sorted_descending = not shape.sorted_ascending and all(_is_sorted(m[::-1]) for m in longer)
        shape.unique = kind in ("set", "frozenset") or (
            len(longer) >= 2 and all(_distinct(m) for m in longer)
        )
    elif kind == "dict":
        shape.key = infer_shape([k for v in values for k in _ordered(v)])
        shape.value = infer_shape([v[k] for v in values for k in _ordered(v)])
        key_sets = {tuple(sorted(map(repr, v))) for v in values}
        shape.fixed_keys = len(values) >= 2 and len(key_sets) == 1
    return shape


def infer_shapes(inputs: Sequence[Sequence[Any]]) -> list[Shape]:
    """One shape per argument position over ``inputs`` (argument tuples of one task)."""
    width = max((len(args) for args in inputs), default=0)
    return [infer_shape([args[i] for args in inputs if len(args) > i]) for i in range(width)]


@dataclass(frozen=True)
class Growth:
    """How to grow: ``container`` is ``tile``, ``sample`` or None (leave containers); ``scale_ints``
    multiplies top-level integer arguments too."""

    container: str | None
    scale_ints: bool

    @property
    def name(self) -> str:
        parts = [self.container] if self.container else []
        return "+".join(parts + (["scale"] if self.scale_ints else []))


GROWTHS = (
    Growth("tile", False),
    Growth("sample", False),
    Growth(None, True),
    Growth("tile", True),
    Growth("sample", True),
)


def growth_named(name: str) -> Growth:
    for growth in GROWTHS:
        if growth.name == name:
            return growth
    raise ValueError(f"unknown growth {name!r}; known: {', '.join(g.name for g in GROWTHS)}")


def grow_input(
    args: Sequence[Any], shapes: Sequence[Shape], factor: float, growth: Growth, rng: random.Random
) -> tuple[Any, ...]:
    """``args`` grown ``factor`` times (containers in length, ints in value) as ``growth`` says."""
    grown = []
    for index, value in enumerate(args):
        shape = shapes[index] if index < len(shapes) else Shape("other")
        kind = kind_of(value)
        if kind == "int" and growth.scale_ints and shape.kind == "int":
            grown.append(value * int(factor))
        elif growth.container is not None and shape.growable and kind == shape.kind:
            grown.append(_grow(value, shape, factor, growth.container, rng))
        else:
            grown.append(value)
    return tuple(grown)


def _grow(value: Any, shape: Shape, factor: float, how: str, rng: random.Random) -> Any:
    if shape.kind == "str":
        return _grow_str(value, shape, factor, how, rng)
    if shape.kind == "dict":
        return _grow_dict(value, shape, factor, rng)
    return _grow_sequence(value, shape, factor, how, rng)


def _target(length: int, factor: float) -> int:
    return int(min(MAX_ELEMENTS, max(math.ceil(length * factor), math.ceil(factor))))


def _grow_str(text: str, shape: Shape, factor: float, how: str, rng: random.Random) -> str:
    target = _target(len(text), factor)
    if how == "tile" and text:
        joiner = " " if " " in text else ""
        copies = max(1, math.ceil(target / (len(text) + len(joiner))))
        return joiner.join([text] * copies)
    if not shape.alphabet:
        return text
    return text + "".join(rng.choice(shape.alphabet) for _ in range(max(0, target - len(text))))


def _grow_sequence(value: Any, shape: Shape, factor: float, how: str, rng: random.Random) -> Any:
    items = _ordered(value)
    target = _target(len(items), factor)
    element = shape.element or Shape("other")
    if how == "tile" and items and not (shape.unique and element.kind != "int"):
        copies = max(1, math.ceil(target / len(items)))
        if shape.unique:
            span = int(max(items)) - int(min(items)) + 1
            step = -span if shape.sorted_descending else span
            grown = [x + k * step for k in range(copies) for x in items]
        else:
            grown = items * copies
    else:
        grown = list(items)
        if shape.unique:
            grown = _unique_fill(grown, element, target, rng)
        else:
            grown += [_new_element(element, items, rng) for _ in range(target - len(items))]
    if shape.sorted_ascending or shape.sorted_descending:
        try:
            grown.sort(reverse=shape.sorted_descending)
        except TypeError:
            pass
    return _as_kind(grown, shape.kind)


def _unique_fill(items: list[Any], element: Shape, target: int, rng: random.Random) -> list[Any]:
    seen = set()
    out = []
    for x in items:
        if _hashable(x) and x not in seen:
            seen.add(x)
            out.append(x)
    if element.kind == "int" and element.low is not None and element.high is not None:
        low, high = int(element.low), int(element.high)
        high = max(high, low + 2 * target)  # room for ``target`` distinct values
        while len(out) < target:
            x = rng.randint(low, high)
            if x not in seen:
                seen.add(x)
                out.append(x)
        return out
    misses = 0
    while len(out) < target and misses < 100:
        x = _new_element(element, items, rng)
        if _hashable(x) and x not in seen:
            seen.add(x)
            out.append(x)
            misses = 0
        else:
            misses += 1
    return out


def _grow_dict(value: dict[Any, Any], shape: Shape, factor: float, rng: random.Random) -> dict[Any, Any]:
    keys = _ordered(value)
    target = _target(len(keys), factor)
    key_shape = shape.key or Shape("other")
    value_shape = shape.value or Shape("other")
    values = [value[k] for k in keys]
    grown = dict(value)
    misses = 0
    while len(grown) < target and misses < 100:
        key = _new_element(key_shape, keys, rng, widen=target)
        if not _hashable(key) or key in grown:
            misses += 1
            continue
        misses = 0
        grown[key] = _new_element(value_shape, values, rng)
    return grown


def _new_element(shape: Shape, local: Sequence[Any], rng: random.Random, widen: int = 0) -> Any:
    """A new value like those ``shape`` describes: scalars from the observed range or alphabet,
    anything else copied from the value being grown (``local``) or from the observed pool."""
    if shape.kind == "int" and shape.low is not None and shape.high is not None:
        return rng.randint(int(shape.low), int(shape.high) + widen)
    if shape.kind == "float" and shape.low is not None and shape.high is not None:
        return rng.uniform(float(shape.low), float(shape.high))
    if shape.kind == "bool":
        return rng.random() < 0.5
    if shape.kind == "str" and widen and shape.alphabet:
        length = max((len(s) for s in shape.pool), default=4)
        return "".join(rng.choice(shape.alphabet) for _ in range(max(length, 4)))
    source = shape.pool if shape.kind == "str" and shape.pool else (local or shape.pool)
    if not source:
        return None
    return rng.choice(list(source))


def _as_kind(items: list[Any], kind: str) -> Any:
    if kind == "tuple":
        return tuple(items)
    if kind == "set":
        return set(items)
    if kind == "frozenset":
        return frozenset(items)
    return items


def _ordered(value: Iterable[Any]) -> list[Any]:
    """Members in a hash-seed-independent order (sets and dict keys sorted by their repr)."""
    if isinstance(value, (set, frozenset, dict)):
        return sorted(value, key=repr)
    return list(value)


def _pool(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    seen: set[str] = set()
    for v in values:
        text = repr(v)
        if len(text) > 200 or text in seen:
            continue
        seen.add(text)
        out.append(v)
        if len(out) >= POOL_SIZE:
            break
    return out


def _fixed(lengths: set[int], count: int) -> bool:
    return count >= 2 and len(lengths) == 1


def _is_sorted(items: Sequence[Any]) -> bool:
    try:
        return all(a <= b for a, b in itertools.pairwise(items))
    except TypeError:
        return False


def _distinct(items: Sequence[Any]) -> bool:
    try:
        return len(set(items)) == len(items)
    except TypeError:
        return False


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def describe(args: Sequence[Any]) -> str:
    """A short size description of an argument tuple, e.g. ``list[20000], int(1.2e+06)``."""
    parts = []
    for value in args:
        kind = kind_of(value)
        if kind in ("list", "tuple", "set", "frozenset", "dict", "str"):
            parts.append(f"{kind}[{len(value)}]")
        elif kind == "int":
            digits = int(abs(value).bit_length() * 0.30103) + 1
            parts.append(f"int({value})" if abs(value) < 100_000 else f"int(~1e{digits - 1})")
        else:
            parts.append(kind)
    return ", ".join(parts)
