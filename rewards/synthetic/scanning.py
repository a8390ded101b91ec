"""Scanning families: building strings (``s = s + ...`` vs ``str.join``), work hoisted out of a loop
(recomputing ``sum``/``max`` per element vs once), text search (a hand loop over slices vs
``str.count``/``find``/``replace``), value pairs (all pairs vs ``Counter``)."""

from __future__ import annotations

import functools
import random
import string
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared, stress_ints


def _ints(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(size)]


# ------------------------------------------------------------------------------------ join strings

_JOIN_FAST = {
    "forward": """\
def $fn($words):
    return '$SEP'.join($words)
""",
    "backward": """\
def $fn($words):
    return '$SEP'.join(reversed($words))
""",
    "upper": """\
def $fn($words):
    return '$SEP'.join(w.upper() for w in $words)
""",
}
# `out = out + a + b` builds a new string from `out` every time (CPython's in-place append only
# applies to `out += a` and `out = out + a`), and so does prepending: the naive loops are quadratic
# in the length of the result.
_JOIN_SLOW = {
    "forward": """\
def $fn($words):
    out = ''
    for i, w in enumerate($words):
        if i == 0:
            out = w
        else:
            out = out + '$SEP' + w
    return out
""",
    "backward": """\
def $fn($words):
    out = ''
    for i, w in enumerate($words):
        if i == 0:
            out = w
        else:
            out = w + '$SEP' + out
    return out
""",
    "upper": """\
def $fn($words):
    out = ''
    for i, w in enumerate($words):
        if i == 0:
            out = w.upper()
        else:
            out = out + '$SEP' + w.upper()
    return out
""",
}


def _join(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _JOIN_FAST[key], _JOIN_SLOW[key])


def _words(rng: random.Random, count: int, shortest: int, longest: int) -> list[str]:
    return [_text(rng, rng.randint(shortest, longest), string.ascii_lowercase) for _ in range(count)]


@functools.cache
def _stress_words(count: int) -> list[str]:
    return _words(random.Random("join_strings"), count, 8, 16)


JOIN_STRINGS = Family(
    name="join_strings",
    difficulty="easy",
    roles=("words",),
    function_names=Pool(
        train=("join_words", "to_line", "render_list", "format_words", "serialize", "words_line"),
        heldout=("as_line", "write_out", "list_to_string"),
    ),
    argument_names=Pool(train=(("words",), ("parts",), ("names",)), heldout=(("tokens",), ("items",))),
    variants=Pool(
        train=(
            _join(
                "forward",
                (
                    "returns the strings of `{words}` in order, separated by {sep} ('' for an empty list)",
                    "returns one string: the items of `{words}` with {sep} between neighbours",
                ),
                (),
            ),
            _join(
                "backward",
                (
                    "returns the strings of `{words}` from last to first, separated by {sep} ('' for an "
                    "empty list)",
                    "returns one string: the items of `{words}` in reverse order with {sep} between "
                    "neighbours",
                ),
                (),
            ),
        ),
        heldout=(
            _join(
                "upper",
                (),
                ("returns the strings of `{words}` in upper case, in order, separated by {sep}",),
            ),
        ),
    ),
    constants=Pool(
        train=tuple({"SEP": s} for s in (",", ";", " ", "|", ", ", "\\t")),
        heldout=tuple({"SEP": s} for s in ("-", "/", " : ", "::")),
    ),
    small_inputs=lambda rng, variant, c: (
        [([],), (["solo"],), (["a", "b"],), (["", "x", ""],)]
        + [(_words(rng, size, 0, 5),) for size in (4, 7)]
    ),
    stress_inputs=lambda variant, c: [(_stress_words(24_000),)],
    example_input=lambda variant, c: (["ab", "c", "de"],),
    hint="`{words}` can hold 10**6 strings.",
    prompt_values=lambda c: {"sep": repr(c["SEP"].replace("\\t", "\t"))},
    cost_in_builtins=True,
)

# ---------------------------------------------------------------------------------------- hoisting

_HOIST_FAST = {
    "above_mean": """\
def $fn($nums):
    if not $nums:
        return 0
    mean = sum($nums) / len($nums)
    return sum(1 for x in $nums if x > mean)
""",
    "at_max": """\
def $fn($nums):
    if not $nums:
        return 0
    top = max($nums)
    return sum(1 for x in $nums if x == top)
""",
    "shift": """\
def $fn($nums):
    if not $nums:
        return []
    low = min($nums)
    return [x - low for x in $nums]
""",
}
_HOIST_SLOW = {
    "above_mean": """\
def $fn($nums):
    return sum(1 for x in $nums if x > sum($nums) / len($nums))
""",
    "at_max": """\
def $fn($nums):
    return sum(1 for x in $nums if x == max($nums))
""",
    "shift": """\
def $fn($nums):
    return [x - min($nums) for x in $nums]
""",
}


def _hoist(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _HOIST_FAST[key], _HOIST_SLOW[key])


ABOVE_MEAN = Family(
    name="above_mean",
    difficulty="easy",
    roles=("nums",),
    function_names=Pool(
        train=("count_selected", "tally", "special_count", "level_count", "score_filter", "count_matching"),
        heldout=("rebase", "relative_values", "normalise_floor"),
    ),
    argument_names=Pool(train=(("nums",), ("scores",), ("values",)), heldout=(("xs",), ("readings",))),
    variants=Pool(
        train=(
            _hoist(
                "above_mean",
                (
                    "returns how many elements of `{nums}` are strictly greater than the mean of `{nums}` "
                    "(0 for an empty list)",
                    "counts the entries of `{nums}` above the average sum(`{nums}`) / len(`{nums}`) (0 if "
                    "`{nums}` is empty)",
                ),
                (),
            ),
            _hoist(
                "at_max",
                (
                    "returns how many elements of `{nums}` equal its maximum (0 for an empty list)",
                    "counts how many times the largest value of `{nums}` occurs in it (0 if `{nums}` is "
                    "empty)",
                ),
                (),
            ),
        ),
        heldout=(
            _hoist(
                "shift",
                (),
                (
                    "returns a new list with the minimum of `{nums}` subtracted from every element ([] for "
                    "an empty list)",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [([],), ([4],), ([2, 2],), ([1, 5, 5, 3],)] + [(_ints(rng, size, -20, 20),) for size in (6, 10)]
    ),
    stress_inputs=lambda variant, c: [(stress_ints("above_mean", 1800, -(10**6), 10**6),)],
    example_input=lambda variant, c: ([1, 5, 5, 3],),
    hint="`{nums}` can hold 10**5 numbers.",
    cost_in_builtins=True,
)

# ------------------------------------------------------------------------------------- text search

_SEARCH_FAST = {
    "count": """\
def $fn($text):
    return $text.count('$WORD')
""",
    "find": """\
def $fn($text):
    return $text.find('$WORD')
""",
    "remove": """\
def $fn($text):
    return $text.replace('$WORD', '')
""",
}
_SEARCH_SLOW = {
    "count": """\
def $fn($text):
    count = 0
    i = 0
    while i <= len($text) - len('$WORD'):
        if $text[i : i + len('$WORD')] == '$WORD':
            count += 1
            i += len('$WORD')
        else:
            i += 1
    return count
""",
    "find": """\
def $fn($text):
    for i in range(len($text) - len('$WORD') + 1):
        if $text[i : i + len('$WORD')] == '$WORD':
            return i
    return -1
""",
    "remove": """\
def $fn($text):
    out = ''
    i = 0
    while i < len($text):
        if $text[i : i + len('$WORD')] == '$WORD':
            i += len('$WORD')
        else:
            out += $text[i]
            i += 1
    return out
""",
}


def _search(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _SEARCH_FAST[key], _SEARCH_SLOW[key])


def _text(rng: random.Random, size: int, letters: str = "abcdefghijklmnopqrstuvwxyz  ") -> str:
    return "".join(rng.choices(letters, k=size))


def _search_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    word = c["WORD"]
    cases: list[tuple[Any, ...]] = [("",), (word,), (word + word + word[0],), ("x" + word + "y" + word,)]
    letters = "".join(sorted(set(word + "xy")))
    cases += [(_text(rng, size, letters),) for size in (8, 16)]
    return cases


@functools.cache
def _search_stress(word: str) -> str:
    # Prose without the word's first letter, then the word once near the end: a full scan.
    rng = random.Random("text_search")
    letters = "".join(ch for ch in string.ascii_lowercase + "  " if ch != word[0])
    return _text(rng, 60_000, letters) + word + _text(rng, 50, letters)


TEXT_SEARCH = Family(
    name="text_search",
    difficulty="easy",
    roles=("text",),
    function_names=Pool(
        train=("scan_text", "word_query", "search_text", "text_probe", "word_scan", "match_info"),
        heldout=("strip_word", "erase_pattern", "text_without"),
    ),
    argument_names=Pool(train=(("text",), ("s",), ("line",)), heldout=(("message",), ("doc",))),
    variants=Pool(
        train=(
            _search(
                "count",
                (
                    "returns how many non-overlapping occurrences of {word} the string `{text}` contains, "
                    "scanning from left to right",
                    "counts the occurrences of {word} in `{text}`, where a match starts only after the "
                    "previous one ends",
                ),
                (),
            ),
            _search(
                "find",
                (
                    "returns the index where {word} first occurs in the string `{text}`, or -1 if it does "
                    "not",
                    "returns the lowest position i with `{text}`[i:i+{size}] == {word}, or -1 when there is "
                    "none",
                ),
                (),
            ),
        ),
        heldout=(
            _search(
                "remove",
                (),
                (
                    "returns `{text}` with every occurrence of {word} deleted, matching from left to right "
                    "without overlaps (the remaining pieces are not searched again)",
                ),
            ),
        ),
    ),
    constants=Pool(
        train=tuple({"WORD": w} for w in ("ab", "the", "xyz", "aa", "q", "end", "ss")),
        heldout=tuple({"WORD": w} for w in ("ba", "and", "zz", "k", "ing")),
    ),
    small_inputs=_search_small,
    stress_inputs=lambda variant, c: [(_search_stress(c["WORD"]),)],
    example_input=lambda variant, c: ("x" + c["WORD"] + "y" + c["WORD"],),
    hint="`{text}` can be 10**7 characters long.",
    prompt_values=lambda c: {"word": repr(c["WORD"]), "size": len(c["WORD"])},
    cost_in_builtins=True,
)

# ------------------------------------------------------------------------------------- equal pairs

_PAIRS_FAST = {
    "difference": """\
from collections import Counter


def $fn($nums):
    counts = Counter($nums)
    return sum(counts[x] * counts[x + $D] for x in list(counts))
""",
    "sum": """\
from collections import Counter


def $fn($nums):
    counts = Counter($nums)
    total = 0
    for x, c in counts.items():
        y = $D - x
        if x < y:
            total += c * counts.get(y, 0)
        elif x == y:
            total += c * (c - 1) // 2
    return total
""",
    "same_remainder": """\
from collections import Counter


def $fn($nums):
    counts = Counter(x % $D for x in $nums)
    return sum(c * (c - 1) // 2 for c in counts.values())
""",
}
_PAIRS_TEST = {
    "difference": "abs($nums[i] - $nums[j]) == $D",
    "sum": "$nums[i] + $nums[j] == $D",
    "same_remainder": "$nums[i] % $D == $nums[j] % $D",
}
_PAIRS_SLOW = """\
def $fn($nums):
    count = 0
    for i in range(len($nums)):
        for j in range(i + 1, len($nums)):
            if $test:
                count += 1
    return count
"""


def _value_pairs(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(
        key, Pool(train, heldout), _PAIRS_FAST[key], _PAIRS_SLOW.replace("$test", _PAIRS_TEST[key])
    )


VALUE_PAIRS = Family(
    name="value_pairs",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=("count_matches", "matching_pairs", "pair_hits", "twin_count", "linked_pairs", "pair_total"),
        heldout=("pairs_alike", "congruent_pairs", "pair_census_mod"),
    ),
    argument_names=Pool(train=(("nums",), ("values",), ("ids",)), heldout=(("xs",), ("tags",))),
    variants=Pool(
        train=(
            _value_pairs(
                "difference",
                (
                    "returns how many pairs of positions i < j have abs(`{nums}`[i] - `{nums}`[j]) == {D}",
                    "counts the index pairs i < j of `{nums}` whose values differ by exactly {D}",
                ),
                (),
            ),
            _value_pairs(
                "sum",
                (
                    "returns how many pairs of positions i < j have `{nums}`[i] + `{nums}`[j] == {D}",
                    "counts the index pairs i < j of `{nums}` whose two values add up to {D}",
                ),
                (),
            ),
        ),
        heldout=(
            _value_pairs(
                "same_remainder",
                (),
                ("returns how many index pairs i < j of `{nums}` leave the same remainder modulo {D}",),
            ),
        ),
    ),
    constants=Pool(
        train=tuple({"D": d} for d in range(1, 16)),
        heldout=tuple({"D": d} for d in range(16, 24)),
    ),
    small_inputs=lambda rng, variant, c: (
        [([],), ([1],), ([0, c["D"]],), ([3, 3, 3],)]
        + [(_ints(rng, size, -c["D"], 2 * c["D"]),) for size in (6, 10)]
    ),
    stress_inputs=lambda variant, c: [(stress_ints("value_pairs", 1000, 0, 400),)],
    example_input=lambda variant, c: ([1, 1 + c["D"], c["D"] - 1, 1],),
    hint="`{nums}` can hold 10**5 integers.",
)

FAMILIES = (JOIN_STRINGS, ABOVE_MEAN, TEXT_SEARCH, VALUE_PAIRS)
