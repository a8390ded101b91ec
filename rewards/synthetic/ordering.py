"""Ordering families: pair counts (all pairs vs sort + two pointers), top k (repeated max vs a heap),
ranks in a sorted list (scanning vs binary search), triangle counts (all triples vs sort + two
pointers)."""

from __future__ import annotations

import random
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared, stress_ints


def _ints(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(size)]


# -------------------------------------------------------------------------------------- pair count

_PAIR_COUNT_FAST = {
    "at_most": """\
def $fn($nums):
    values = sorted($nums)
    i, j = 0, len(values) - 1
    count = 0
    while i < j:
        if values[i] + values[j] <= $K:
            count += j - i
            i += 1
        else:
            j -= 1
    return count
""",
    "less_than": """\
def $fn($nums):
    values = sorted($nums)
    i, j = 0, len(values) - 1
    count = 0
    while i < j:
        if values[i] + values[j] < $K:
            count += j - i
            i += 1
        else:
            j -= 1
    return count
""",
    "at_least": """\
def $fn($nums):
    values = sorted($nums)
    i, j = 0, len(values) - 1
    count = 0
    while i < j:
        if values[i] + values[j] >= $K:
            count += j - i
            j -= 1
        else:
            i += 1
    return count
""",
}
_PAIR_COUNT_TEST = {"at_most": "<= $K", "less_than": "< $K", "at_least": ">= $K"}
_PAIR_COUNT_SLOW = """\
def $fn($nums):
    count = 0
    for i in range(len($nums)):
        for j in range(i + 1, len($nums)):
            if $nums[i] + $nums[j] $test:
                count += 1
    return count
"""


def _pair_count(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    slow = _PAIR_COUNT_SLOW.replace("$test", _PAIR_COUNT_TEST[key])
    return Variant(key, Pool(train, heldout), _PAIR_COUNT_FAST[key], slow)


PAIR_COUNT = Family(
    name="pair_count",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=("count_pairs", "pair_count", "pairs_within", "small_pairs", "budget_pairs", "pair_tally"),
        heldout=("pairs_bounded", "count_two", "pair_census"),
    ),
    argument_names=Pool(train=(("nums",), ("values",), ("prices",)), heldout=(("xs",), ("weights",))),
    variants=Pool(
        train=(
            _pair_count(
                "at_most",
                (
                    "returns how many pairs of positions i < j have `{nums}`[i] + `{nums}`[j] <= {K}",
                    "counts the pairs of entries of `{nums}` (at different indices) whose sum is at most {K}",
                ),
                (),
            ),
            _pair_count(
                "less_than",
                (
                    "returns the number of index pairs i < j with `{nums}`[i] + `{nums}`[j] < {K}",
                    "counts pairs of elements of `{nums}` at distinct positions that add up to less than {K}",
                ),
                (),
            ),
        ),
        heldout=(
            _pair_count(
                "at_least",
                (),
                ("returns how many pairs of indices i < j satisfy `{nums}`[i] + `{nums}`[j] >= {K}",),
            ),
        ),
    ),
    constants=Pool(
        train=tuple({"K": k} for k in range(-20, 41, 2)),
        heldout=tuple({"K": k} for k in range(-19, 41, 2)),
    ),
    small_inputs=lambda rng, variant, c: (
        [([],), ([c["K"]],), ([1, 2],), ([c["K"] // 2] * 3,)]
        + [(_ints(rng, size, -30, 30),) for size in (5, 8, 11)]
    ),
    stress_inputs=lambda variant, c: [(stress_ints("pair_count", 1100, -1000, 1000),)],
    example_input=lambda variant, c: ([c["K"] - 5, 2, 3, c["K"]],),
    hint="`{nums}` can hold 10**5 integers.",
)

# -------------------------------------------------------------------------------------------- top k

_TOP_FAST = {
    "largest": """\
import heapq


def $fn($nums, $k):
    return heapq.nlargest($k, $nums)
""",
    "smallest": """\
import heapq


def $fn($nums, $k):
    return heapq.nsmallest($k, $nums)
""",
    "sum_largest": """\
import heapq


def $fn($nums, $k):
    return sum(heapq.nlargest($k, $nums))
""",
}
_TOP_SLOW = {
    "largest": """\
def $fn($nums, $k):
    rest = list($nums)
    result = []
    while rest and len(result) < $k:
        best = max(rest)
        rest.remove(best)
        result.append(best)
    return result
""",
    "smallest": """\
def $fn($nums, $k):
    rest = list($nums)
    result = []
    while rest and len(result) < $k:
        best = min(rest)
        rest.remove(best)
        result.append(best)
    return result
""",
    "sum_largest": """\
def $fn($nums, $k):
    rest = list($nums)
    total = 0
    for _ in range(min($k, len(rest))):
        best = max(rest)
        rest.remove(best)
        total += best
    return total
""",
}


def _top(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _TOP_FAST[key], _TOP_SLOW[key])


TOP_K = Family(
    name="top_k",
    difficulty="medium",
    roles=("nums", "k"),
    function_names=Pool(
        train=("select_k", "k_extremes", "pick_k", "k_values", "take_k", "k_selection"),
        heldout=("k_best", "podium", "top_total"),
    ),
    argument_names=Pool(
        train=(("nums", "k"), ("scores", "count"), ("values", "n")),
        heldout=(("xs", "m"), ("data", "size")),
    ),
    variants=Pool(
        train=(
            _top(
                "largest",
                (
                    "returns the `{k}` largest values of `{nums}` from largest to smallest (all of them if "
                    "there are fewer; duplicates count separately)",
                    "returns a list of the `{k}` biggest entries of `{nums}` in decreasing order (the whole "
                    "list sorted if it is shorter)",
                ),
                (),
            ),
            _top(
                "smallest",
                (
                    "returns the `{k}` smallest values of `{nums}` in increasing order (all of them if there "
                    "are fewer; duplicates count separately)",
                    "returns a list of the `{k}` lowest entries of `{nums}`, smallest first (the whole list "
                    "sorted if it is shorter)",
                ),
                (),
            ),
        ),
        heldout=(
            _top(
                "sum_largest",
                (),
                ("returns the sum of the `{k}` largest entries of `{nums}` (of all entries if fewer)",),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [([], 2), ([5], 0), ([5], 3), ([3, 1, 3, 2], 2)]
        + [(_ints(rng, size, -20, 20), rng.randint(1, size)) for size in (6, 10)]
    ),
    stress_inputs=lambda variant, c: [(stress_ints("top_k", 8000, -(10**6), 10**6), 300)],
    example_input=lambda variant, c: ([4, 9, 1, 7], 2),
    hint="`{nums}` can hold 10**6 numbers and `{k}` can be 10**3.",
    cost_in_builtins=True,
)

# ------------------------------------------------------------------------------------- sorted rank

_RANK_FAST = {
    "below": """\
from bisect import bisect_left


def $fn($nums, $queries):
    return [bisect_left($nums, q) for q in $queries]
""",
    "at_most": """\
from bisect import bisect_right


def $fn($nums, $queries):
    return [bisect_right($nums, q) for q in $queries]
""",
    "at_least": """\
from bisect import bisect_left


def $fn($nums, $queries):
    return [len($nums) - bisect_left($nums, q) for q in $queries]
""",
}
_RANK_SLOW = {
    "below": """\
def $fn($nums, $queries):
    return [sum(1 for x in $nums if x < q) for q in $queries]
""",
    "at_most": """\
def $fn($nums, $queries):
    return [sum(1 for x in $nums if x <= q) for q in $queries]
""",
    "at_least": """\
def $fn($nums, $queries):
    return [sum(1 for x in $nums if x >= q) for q in $queries]
""",
}


def _rank(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _RANK_FAST[key], _RANK_SLOW[key])


def _rank_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [
        ([], [3]),
        ([1, 2, 3], []),
        ([2, 2, 2], [1, 2, 3]),
        ([1, 4, 9], [0, 4, 10]),
    ]
    for size in (5, 9):
        cases.append((sorted(_ints(rng, size, -10, 10)), _ints(rng, 4, -12, 12)))
    return cases


def _rank_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("sorted_rank")
    return [(sorted(_ints(rng, 2500, 0, 10**6)), _ints(rng, 250, 0, 10**6))]


SORTED_RANK = Family(
    name="sorted_rank",
    difficulty="medium",
    roles=("nums", "queries"),
    function_names=Pool(
        train=("rank_queries", "count_below", "positions", "rank_of", "sorted_counts", "answer_ranks"),
        heldout=("rank_lookup", "order_counts", "rank_each"),
    ),
    argument_names=Pool(
        train=(("nums", "queries"), ("sorted_values", "asks"), ("arr", "targets")),
        heldout=(("xs", "probes"), ("data", "lookups")),
    ),
    variants=Pool(
        train=(
            _rank(
                "below",
                (
                    "takes a list `{nums}` sorted in increasing order and returns, for each value in "
                    "`{queries}`, how many elements of `{nums}` are smaller than it",
                    "answers each query q of `{queries}` with the number of entries of the ascending list "
                    "`{nums}` that are less than q, as a list",
                ),
                (),
            ),
            _rank(
                "at_most",
                (
                    "takes an ascending list `{nums}` and returns, for each q in `{queries}`, how many "
                    "elements of `{nums}` are at most q",
                    "returns a list with, for every query q of `{queries}`, the count of values <= q in "
                    "the sorted list `{nums}`",
                ),
                (),
            ),
        ),
        heldout=(
            _rank(
                "at_least",
                (),
                (
                    "returns, for every q in `{queries}`, how many elements of the increasing list "
                    "`{nums}` are greater than or equal to q",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=_rank_small,
    stress_inputs=_rank_stress,
    example_input=lambda variant, c: ([1, 3, 3, 8], [3, 9]),
    hint="`{nums}` and `{queries}` can each hold 10**5 numbers.",
)

# ---------------------------------------------------------------------------------- triangle count

_TRIANGLE_FAST = """\
def $fn($sides):
    values = sorted($sides)
    count = 0
    for k in range(2, len(values)):
        i, j = 0, k - 1
        while i < j:
            if values[i] + values[j] $cmp values[k]:
                count += j - i
                j -= 1
            else:
                i += 1
    return count
"""
_TRIANGLE_SLOW = """\
def $fn($sides):
    count = 0
    n = len($sides)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                a, b, c = sorted(($sides[i], $sides[j], $sides[k]))
                if a + b $cmp c:
                    count += 1
    return count
"""


def _triangle(key: str, cmp: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(
        key, Pool(train, heldout), _TRIANGLE_FAST.replace("$cmp", cmp), _TRIANGLE_SLOW.replace("$cmp", cmp)
    )


TRIANGLE_COUNT = Family(
    name="triangle_count",
    difficulty="hard",
    roles=("sides",),
    function_names=Pool(
        train=("count_triangles", "triangle_triples", "valid_triangles", "triangles", "tri_count", "sticks"),
        heldout=("triangle_options", "triple_count", "count_triads"),
    ),
    argument_names=Pool(train=(("sides",), ("lengths",), ("sticks",)), heldout=(("xs",), ("rods",))),
    variants=Pool(
        train=(
            _triangle(
                "strict",
                ">",
                (
                    "returns how many triples of positions i < j < k of the positive integers `{sides}` "
                    "could be the side lengths of a triangle (the two shorter sides sum to more than the "
                    "longest)",
                    "counts the index triples i < j < k whose lengths `{sides}`[i], `{sides}`[j], "
                    "`{sides}`[k] (positive integers) form a triangle of positive area",
                ),
                (),
            ),
        ),
        heldout=(
            _triangle(
                "degenerate",
                ">=",
                (),
                (
                    "returns how many index triples i < j < k of the positive integers `{sides}` satisfy: "
                    "the two smaller values add up to at least the largest",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [([],), ([3, 4],), ([3, 4, 5],), ([1, 2, 3],), ([2, 2, 2, 2],)]
        + [(_ints(rng, size, 1, 12),) for size in (5, 8)]
    ),
    stress_inputs=lambda variant, c: [(stress_ints("triangle_count", 90, 1, 1000),)],
    example_input=lambda variant, c: ([2, 2, 3, 4],),
    hint="`{sides}` can hold 10**3 numbers.",
)

FAMILIES = (PAIR_COUNT, TOP_K, SORTED_RANK, TRIANGLE_COUNT)
