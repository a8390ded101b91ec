"""Search families: membership (list vs set), pair sums (all pairs vs a set), range sums (re-summing
vs prefix sums), best subarray (all subarrays vs Kadane), k-th order statistic (repeated min vs sort)."""

from __future__ import annotations

import random
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared


def _ints(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(size)]


# ------------------------------------------------------------------------------------- membership

_MEMBERSHIP_FAST = {
    "found": """\
def $fn($items, $queries):
    seen = set($items)
    return sum(1 for q in $queries if q in seen)
""",
    "missing": """\
def $fn($items, $queries):
    seen = set($items)
    return sum(1 for q in $queries if q not in seen)
""",
    "flags": """\
def $fn($items, $queries):
    seen = set($items)
    return [q in seen for q in $queries]
""",
}
_MEMBERSHIP_SLOW = {
    "found": """\
def $fn($items, $queries):
    return sum(1 for q in $queries if q in $items)
""",
    "missing": """\
def $fn($items, $queries):
    return sum(1 for q in $queries if q not in $items)
""",
    "flags": """\
def $fn($items, $queries):
    return [q in $items for q in $queries]
""",
}


def _membership(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _MEMBERSHIP_FAST[key], _MEMBERSHIP_SLOW[key])


def _membership_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [([], []), ([1, 2, 3], []), ([], [4, 4]), ([5, 1, 5], [5, 2, 1, 5])]
    for size in (6, 12):
        cases.append((_ints(rng, size, -20, 20), _ints(rng, size, -20, 20)))
    return cases


def _membership_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("membership_count")
    items = rng.sample(range(10**6), 2000)
    queries = [rng.choice(items) if i % 2 else rng.randrange(10**6) for i in range(2000)]
    return [(items, queries)]


MEMBERSHIP_COUNT = Family(
    name="membership_count",
    difficulty="easy",
    roles=("items", "queries"),
    function_names=Pool(
        train=(
            "query_count",
            "count_queries",
            "lookup_count",
            "tally_queries",
            "scan_queries",
            "process_queries",
        ),
        heldout=("membership", "check_queries", "probe_values"),
    ),
    argument_names=Pool(
        train=(("items", "queries"), ("nums", "targets"), ("values", "asks")),
        heldout=(("pool", "probes"), ("data", "lookups")),
    ),
    variants=Pool(
        train=(
            _membership(
                "found",
                (
                    "returns how many elements of `{queries}` occur in `{items}` (count repeated queries "
                    "each time)",
                    "counts the entries of `{queries}` that are present in the list `{items}`",
                ),
                (),
            ),
            _membership(
                "missing",
                (
                    "returns how many elements of `{queries}` do not occur in `{items}` (count repeats each "
                    "time)",
                    "counts the entries of `{queries}` that are absent from the list `{items}`",
                ),
                (),
            ),
        ),
        heldout=(
            _membership(
                "flags",
                (),
                (
                    "returns a list holding, for each element of `{queries}` in order, whether it is in "
                    "`{items}`",
                ),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=_membership_small,
    stress_inputs=_membership_stress,
    example_input=lambda variant, c: ([1, 2, 3], [2, 5, 3]),
    hint="Both lists can hold 10**5 numbers.",
    cost_in_builtins=True,
)

# --------------------------------------------------------------------------------------- pair sum

PAIR_SUM = Family(
    name="pair_sum",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=("has_pair", "pair_exists", "two_sum_exists", "find_pair", "has_two_sum", "pair_with_sum"),
        heldout=("sum_pair", "two_add_up", "any_pair_sum"),
    ),
    argument_names=Pool(train=(("nums",), ("values",), ("arr",)), heldout=(("numbers",), ("xs",))),
    variants=shared(
        Variant(
            "exists",
            Pool(
                (
                    "returns True if two elements at different positions of `{nums}` add up to {K}, "
                    "otherwise False",
                    "checks whether some pair of entries of `{nums}` (at distinct indices) sums to {K}",
                ),
                ("tells whether `{nums}` has two entries at different indices whose sum is {K}",),
            ),
            fast="""\
def $fn($nums):
    seen = set()
    for x in $nums:
        if $K - x in seen:
            return True
        seen.add(x)
    return False
""",
            slow="""\
def $fn($nums):
    for i in range(len($nums)):
        for j in range(i + 1, len($nums)):
            if $nums[i] + $nums[j] == $K:
                return True
    return False
""",
        ),
    ),
    constants=Pool(
        train=tuple({"K": k} for k in range(10, 61)),
        heldout=tuple({"K": k} for k in range(61, 121)),
    ),
    small_inputs=lambda rng, variant, c: [
        ([],),
        ([c["K"]],),
        ([c["K"] // 2, c["K"] - c["K"] // 2],),
        ([1, c["K"] - 1, 3],),
        (_ints(rng, 5, -30, 30),),
        (_ints(rng, 8, -c["K"], 2 * c["K"]),),
    ],
    stress_inputs=lambda variant, c: [(random.Random("pair_sum").sample(range(1000, 10**6), 1500),)],
    example_input=lambda variant, c: ([2, c["K"] - 2, 7],),
    hint="`{nums}` can hold 10**5 numbers.",
)

# ------------------------------------------------------------------------------------- range sums

_RANGE_FAST = {
    "inclusive": """\
def $fn($nums, $queries):
    prefix = [0]
    for x in $nums:
        prefix.append(prefix[-1] + x)
    return [prefix[j + 1] - prefix[i] for i, j in $queries]
""",
    "halfopen": """\
def $fn($nums, $queries):
    prefix = [0]
    for x in $nums:
        prefix.append(prefix[-1] + x)
    return [prefix[j] - prefix[i] for i, j in $queries]
""",
    "largest": """\
def $fn($nums, $queries):
    prefix = [0]
    for x in $nums:
        prefix.append(prefix[-1] + x)
    return max((prefix[j + 1] - prefix[i] for i, j in $queries), default=0)
""",
}
_RANGE_SLOW = {
    "inclusive": """\
def $fn($nums, $queries):
    return [sum($nums[i : j + 1]) for i, j in $queries]
""",
    "halfopen": """\
def $fn($nums, $queries):
    return [sum($nums[i:j]) for i, j in $queries]
""",
    "largest": """\
def $fn($nums, $queries):
    return max((sum($nums[i : j + 1]) for i, j in $queries), default=0)
""",
}


def _range_variant(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _RANGE_FAST[key], _RANGE_SLOW[key])


def _ranges(rng: random.Random, n: int, count: int, halfopen: bool) -> list[tuple[int, int]]:
    pairs = []
    for _ in range(count):
        i = rng.randrange(n)
        j = rng.randrange(i, n)
        pairs.append((i, j + 1) if halfopen else (i, j))
    return pairs


def _range_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    halfopen = variant == "halfopen"
    cases: list[tuple[Any, ...]] = [([5], [(0, 1)] if halfopen else [(0, 0)]), ([1, 2, 3], [])]
    for size in (4, 7, 10):
        cases.append((_ints(rng, size, -9, 9), _ranges(rng, size, 4, halfopen)))
    return cases


def _range_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("range_sums")
    nums = _ints(rng, 5000, -1000, 1000)
    return [(nums, _ranges(rng, len(nums), 2000, variant == "halfopen"))]


RANGE_SUMS = Family(
    name="range_sums",
    difficulty="medium",
    roles=("nums", "queries"),
    function_names=Pool(
        train=("range_sums", "interval_sums", "sum_ranges", "segment_sums", "answer_queries", "block_sums"),
        heldout=("span_query", "query_spans", "range_result"),
    ),
    argument_names=Pool(
        train=(("nums", "queries"), ("values", "ranges"), ("arr", "pairs")),
        heldout=(("data", "spans"), ("xs", "asks")),
    ),
    variants=Pool(
        train=(
            _range_variant(
                "inclusive",
                (
                    "returns, for each pair (i, j) in `{queries}`, the sum of `{nums}`[i] through "
                    "`{nums}`[j] "
                    "(both included), as a list",
                    "answers each query (i, j) of `{queries}` with sum(`{nums}`[i:j+1]) and returns the "
                    "answers in a list",
                ),
                (),
            ),
            _range_variant(
                "halfopen",
                (
                    "returns a list with sum(`{nums}`[i:j]) for every pair (i, j) in `{queries}`",
                    "returns, for each (i, j) in `{queries}`, the total of `{nums}` from index i up to but "
                    "not "
                    "including j, as a list",
                ),
                (),
            ),
        ),
        heldout=(
            _range_variant(
                "largest",
                (),
                (
                    "returns the largest sum(`{nums}`[i:j+1]) over the pairs (i, j) in `{queries}` (0 if "
                    "there are none)",
                ),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=_range_small,
    stress_inputs=_range_stress,
    example_input=lambda variant, c: (
        [1, 2, 3, 4],
        [(0, 2), (1, 3)] if variant != "halfopen" else [(0, 2), (1, 4)],
    ),
    hint="`{nums}` and `{queries}` can each hold 10**5 items.",
    cost_in_builtins=True,
)

# ----------------------------------------------------------------------------------- best subarray

_KADANE = {
    "max": """\
def $fn($nums):
    best = current = $nums[0]
    for x in $nums[1:]:
        current = max(x, current + x)
        best = max(best, current)
    return best
""",
    "max_or_zero": """\
def $fn($nums):
    best = current = 0
    for x in $nums:
        current = max(0, current + x)
        best = max(best, current)
    return best
""",
    "min": """\
def $fn($nums):
    best = current = $nums[0]
    for x in $nums[1:]:
        current = min(x, current + x)
        best = min(best, current)
    return best
""",
}
_ALL_SUBARRAYS = {
    "max": """\
def $fn($nums):
    best = $nums[0]
    for i in range(len($nums)):
        total = 0
        for j in range(i, len($nums)):
            total += $nums[j]
            best = max(best, total)
    return best
""",
    "max_or_zero": """\
def $fn($nums):
    best = 0
    for i in range(len($nums)):
        total = 0
        for j in range(i, len($nums)):
            total += $nums[j]
            best = max(best, total)
    return best
""",
    "min": """\
def $fn($nums):
    best = $nums[0]
    for i in range(len($nums)):
        total = 0
        for j in range(i, len($nums)):
            total += $nums[j]
            best = min(best, total)
    return best
""",
}


def _subarray(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _KADANE[key], _ALL_SUBARRAYS[key])


def _subarray_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [([4],), ([-3],), ([-2, -1, -5],), ([2, -1, 2],)]
    if variant == "max_or_zero":
        cases.append(([],))
    cases += [(_ints(rng, size, -10, 10),) for size in (5, 9)]
    return cases


MAX_SUBARRAY = Family(
    name="max_subarray",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=(
            "best_subarray",
            "max_subarray_sum",
            "subarray_sum",
            "best_run",
            "contiguous_best",
            "max_slice",
        ),
        heldout=("extreme_subarray", "run_total", "slice_extreme"),
    ),
    argument_names=Pool(train=(("nums",), ("arr",), ("values",)), heldout=(("seq",), ("xs",))),
    variants=Pool(
        train=(
            _subarray(
                "max",
                (
                    "returns the largest sum of a non-empty contiguous subarray of `{nums}` (`{nums}` is "
                    "not empty)",
                    "finds the maximum total of any non-empty run of consecutive elements of the non-empty "
                    "list "
                    "`{nums}`",
                ),
                (),
            ),
            _subarray(
                "max_or_zero",
                (
                    "returns the largest sum of a contiguous subarray of `{nums}`, where the empty subarray "
                    "counts as 0",
                    "returns the maximum of 0 and the best sum of consecutive elements of `{nums}`",
                ),
                (),
            ),
        ),
        heldout=(
            _subarray(
                "min",
                (),
                (
                    "returns the smallest sum of a non-empty run of consecutive elements of the non-empty "
                    "list `{nums}`",
                ),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=_subarray_small,
    stress_inputs=lambda variant, c: [(_ints(random.Random("max_subarray"), 1000, -1000, 1000),)],
    example_input=lambda variant, c: ([2, -5, 3, 4, -1],),
    hint="`{nums}` can hold 10**5 numbers.",
)

# ---------------------------------------------------------------------------------- order statistic

_ORDER_FAST = {
    "smallest": """\
def $fn($nums, $k):
    return sorted($nums)[$k - 1]
""",
    "largest": """\
def $fn($nums, $k):
    return sorted($nums, reverse=True)[$k - 1]
""",
    "distinct": """\
def $fn($nums, $k):
    return sorted(set($nums))[$k - 1]
""",
}
_ORDER_SLOW = {
    "smallest": """\
def $fn($nums, $k):
    rest = list($nums)
    for _ in range($k - 1):
        rest.remove(min(rest))
    return min(rest)
""",
    "largest": """\
def $fn($nums, $k):
    rest = list($nums)
    for _ in range($k - 1):
        rest.remove(max(rest))
    return max(rest)
""",
    "distinct": """\
def $fn($nums, $k):
    rest = list($nums)
    for _ in range($k - 1):
        low = min(rest)
        rest = [x for x in rest if x != low]
    return min(rest)
""",
}


def _order(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _ORDER_FAST[key], _ORDER_SLOW[key])


def _order_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [([7], 1), ([3, 1, 2], 2), ([5, 5, 1], 2), ([4, 4, 4, 9], 1)]
    for size in (6, 10):
        nums = _ints(rng, size, -15, 15)
        limit = len(set(nums)) if variant == "distinct" else size
        cases.append((nums, rng.randint(1, limit)))
    return cases


def _order_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("kth_element")
    size, k = (2000, 600) if variant == "distinct" else (3000, 1500)
    return [(rng.sample(range(10**6), size), k)]


KTH_ELEMENT = Family(
    name="kth_element",
    difficulty="medium",
    roles=("nums", "k"),
    function_names=Pool(
        train=("kth_value", "order_stat", "pick_kth", "kth_element", "select_kth", "rank_value"),
        heldout=("nth_in_order", "kth_pick", "position_value"),
    ),
    argument_names=Pool(
        train=(("nums", "k"), ("values", "rank"), ("arr", "pos")),
        heldout=(("data", "index"), ("xs", "r")),
    ),
    variants=Pool(
        train=(
            _order(
                "smallest",
                (
                    "returns the `{k}`-th smallest element of `{nums}` (1-based, duplicates count "
                    "separately)",
                    "returns sorted(`{nums}`)[`{k}` - 1], the `{k}`-th smallest value counting duplicates",
                ),
                (),
            ),
            _order(
                "largest",
                (
                    "returns the `{k}`-th largest element of `{nums}` (1-based, duplicates count separately)",
                    "returns the value that comes `{k}`-th when `{nums}` is sorted from largest to smallest",
                ),
                (),
            ),
        ),
        heldout=(
            _order(
                "distinct",
                (),
                (
                    "returns the `{k}`-th smallest distinct value of `{nums}` (1-based; equal values count "
                    "once)",
                ),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=_order_small,
    stress_inputs=_order_stress,
    example_input=lambda variant, c: ([5, 1, 4, 1, 3], 2),
    hint="`{nums}` can hold 10**5 numbers and `{k}` is always valid.",
)

FAMILIES = (MEMBERSHIP_COUNT, PAIR_SUM, RANGE_SUMS, MAX_SUBARRAY, KTH_ELEMENT)
