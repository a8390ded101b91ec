"""Window and sweep families: next greater element (scanning right vs a monotonic stack), overlapping
intervals (every start against every interval vs a sorted sweep), window sums (re-summing each
window vs sliding), longest run without repeats (restarting at every position vs a sliding window)."""

from __future__ import annotations

import random
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared, stress_ints


def _ints(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(size)]


# ---------------------------------------------------------------------------------- next greater

_NEXT_FAST = {
    "value": """\
def $fn($nums):
    result = [-1] * len($nums)
    stack = []
    for i, x in enumerate($nums):
        while stack and $nums[stack[-1]] < x:
            result[stack.pop()] = x
        stack.append(i)
    return result
""",
    "distance": """\
def $fn($nums):
    result = [0] * len($nums)
    stack = []
    for i, x in enumerate($nums):
        while stack and $nums[stack[-1]] < x:
            j = stack.pop()
            result[j] = i - j
        stack.append(i)
    return result
""",
}
_NEXT_SLOW = {
    "value": """\
def $fn($nums):
    result = []
    for i in range(len($nums)):
        found = -1
        for j in range(i + 1, len($nums)):
            if $nums[j] > $nums[i]:
                found = $nums[j]
                break
        result.append(found)
    return result
""",
    "distance": """\
def $fn($nums):
    result = []
    for i in range(len($nums)):
        wait = 0
        for j in range(i + 1, len($nums)):
            if $nums[j] > $nums[i]:
                wait = j - i
                break
        result.append(wait)
    return result
""",
}


def _next(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _NEXT_FAST[key], _NEXT_SLOW[key])


def _next_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    # A long, noisy decline (prices falling for a while) followed by a recovery.
    rng = random.Random("next_greater")
    falling = [5000 - 3 * i + rng.randint(0, 4) for i in range(1300)]
    return [(falling + _ints(rng, 200, 0, 6000),)]


NEXT_GREATER = Family(
    name="next_greater",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=("next_greater", "next_larger", "next_higher", "following_max", "greater_to_right", "next_up"),
        heldout=("days_until_higher", "wait_for_rise", "next_rise"),
    ),
    argument_names=Pool(train=(("nums",), ("prices",), ("values",)), heldout=(("temps",), ("xs",))),
    variants=Pool(
        train=(
            _next(
                "value",
                (
                    "returns a list whose item i is the first element after position i in `{nums}` that is "
                    "larger than `{nums}`[i], or -1 if there is none",
                    "maps every position i of `{nums}` to the nearest later value strictly greater than "
                    "`{nums}`[i] (-1 when no later value is greater), as a list",
                ),
                (),
            ),
        ),
        heldout=(
            _next(
                "distance",
                (),
                (
                    "returns a list whose item i is how many positions after i the first value greater than "
                    "`{nums}`[i] appears in `{nums}` (0 if none does)",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [([],), ([1],), ([2, 1],), ([1, 2],), ([3, 1, 2, 4, 4],)]
        + [(_ints(rng, size, 0, 9),) for size in (6, 10)]
    ),
    stress_inputs=_next_stress,
    example_input=lambda variant, c: ([2, 1, 3, 2],),
    hint="`{nums}` can hold 10**5 numbers.",
)

# ------------------------------------------------------------------------------- interval overlap

_OVERLAP_FAST = {
    "halfopen": """\
def $fn($intervals):
    events = []
    for start, end in $intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort()
    best = current = 0
    for _, change in events:
        current += change
        best = max(best, current)
    return best
""",
    "closed": """\
def $fn($intervals):
    events = []
    for start, end in $intervals:
        events.append((start, 0))
        events.append((end, 1))
    events.sort()
    best = current = 0
    for _, kind in events:
        current += 1 if kind == 0 else -1
        best = max(best, current)
    return best
""",
}
_OVERLAP_SLOW = {
    "halfopen": """\
def $fn($intervals):
    best = 0
    for point, _ in $intervals:
        best = max(best, sum(1 for start, end in $intervals if start <= point < end))
    return best
""",
    "closed": """\
def $fn($intervals):
    best = 0
    for point, _ in $intervals:
        best = max(best, sum(1 for start, end in $intervals if start <= point <= end))
    return best
""",
}


def _overlap(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _OVERLAP_FAST[key], _OVERLAP_SLOW[key])


def _spans(rng: random.Random, count: int, horizon: int, longest: int, closed: bool) -> list[tuple[int, int]]:
    spans = []
    for _ in range(count):
        start = rng.randint(0, horizon)
        spans.append((start, start + rng.randint(0 if closed else 1, longest)))
    return spans


def _overlap_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    closed = variant == "closed"
    cases: list[tuple[Any, ...]] = [([],), ([(1, 3)],), ([(1, 3), (3, 5)],), ([(0, 10), (2, 4), (3, 6)],)]
    cases += [(_spans(rng, size, 20, 6, closed),) for size in (5, 9)]
    return cases


OVERLAP = Family(
    name="interval_overlap",
    difficulty="medium",
    roles=("intervals",),
    function_names=Pool(
        train=("max_overlap", "peak_overlap", "rooms_needed", "busiest", "max_concurrent", "overlap_depth"),
        heldout=("most_simultaneous", "peak_load", "crowd_size"),
    ),
    argument_names=Pool(
        train=(("intervals",), ("meetings",), ("spans",)), heldout=(("bookings",), ("ranges",))
    ),
    variants=Pool(
        train=(
            _overlap(
                "halfopen",
                (
                    "returns the largest number of intervals of `{intervals}` that share a point, where each "
                    "pair (start, end) with start < end covers start <= x < end",
                    "takes `{intervals}`, a list of half-open ranges (start, end) (start included, end "
                    "excluded, start < end), and returns how many of them overlap at the busiest point",
                ),
                (),
            ),
        ),
        heldout=(
            _overlap(
                "closed",
                (),
                (
                    "returns the most intervals of `{intervals}` containing one common point, each pair "
                    "(start, end) with start <= end covering every x with start <= x <= end",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=_overlap_small,
    stress_inputs=lambda variant, c: [
        (_spans(random.Random("interval_overlap"), 900, 10**5, 3000, variant == "closed"),)
    ],
    example_input=lambda variant, c: ([(1, 4), (2, 5), (4, 6)],),
    hint="`{intervals}` can hold 10**5 pairs.",
)

# -------------------------------------------------------------------------------------- window sum

_WINDOW_FAST = {
    "max": """\
def $fn($nums, $k):
    total = sum($nums[:$k])
    best = total
    for i in range($k, len($nums)):
        total += $nums[i] - $nums[i - $k]
        best = max(best, total)
    return best
""",
    "min": """\
def $fn($nums, $k):
    total = sum($nums[:$k])
    best = total
    for i in range($k, len($nums)):
        total += $nums[i] - $nums[i - $k]
        best = min(best, total)
    return best
""",
    "positive": """\
def $fn($nums, $k):
    total = sum($nums[:$k])
    count = 1 if total > 0 else 0
    for i in range($k, len($nums)):
        total += $nums[i] - $nums[i - $k]
        if total > 0:
            count += 1
    return count
""",
}
_WINDOW_SLOW = {
    "max": """\
def $fn($nums, $k):
    return max(sum($nums[i : i + $k]) for i in range(len($nums) - $k + 1))
""",
    "min": """\
def $fn($nums, $k):
    return min(sum($nums[i : i + $k]) for i in range(len($nums) - $k + 1))
""",
    "positive": """\
def $fn($nums, $k):
    return sum(1 for i in range(len($nums) - $k + 1) if sum($nums[i : i + $k]) > 0)
""",
}


def _window(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _WINDOW_FAST[key], _WINDOW_SLOW[key])


def _window_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [([5], 1), ([1, -2, 3], 3), ([4, -1, 2, 1], 2), ([-3, -1, -2], 1)]
    for size in (6, 11):
        cases.append((_ints(rng, size, -9, 9), rng.randint(1, size)))
    return cases


WINDOW_SUM = Family(
    name="window_sum",
    difficulty="medium",
    roles=("nums", "k"),
    function_names=Pool(
        train=("window_best", "best_window", "block_extreme", "window_total", "run_of_k", "k_window"),
        heldout=("slide_sum", "stretch_sum", "frame_sums"),
    ),
    argument_names=Pool(
        train=(("nums", "k"), ("values", "width"), ("arr", "size")),
        heldout=(("xs", "w"), ("readings", "span")),
    ),
    variants=Pool(
        train=(
            _window(
                "max",
                (
                    "returns the largest sum of `{k}` consecutive elements of `{nums}` (1 <= `{k}` <= "
                    "len(`{nums}`))",
                    "returns the maximum over all windows of `{k}` adjacent entries of `{nums}` of the "
                    "window's total, for 1 <= `{k}` <= len(`{nums}`)",
                ),
                (),
            ),
            _window(
                "min",
                (
                    "returns the smallest sum of `{k}` consecutive elements of `{nums}` (1 <= `{k}` <= "
                    "len(`{nums}`))",
                    "returns the minimum total of a block of `{k}` adjacent entries of `{nums}`, for "
                    "1 <= `{k}` <= len(`{nums}`)",
                ),
                (),
            ),
        ),
        heldout=(
            _window(
                "positive",
                (),
                (
                    "returns how many runs of `{k}` consecutive elements of `{nums}` have a sum greater "
                    "than 0 (1 <= `{k}` <= len(`{nums}`))",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=_window_small,
    stress_inputs=lambda variant, c: [(stress_ints("window_sum", 8000, -1000, 1000), 800)],
    example_input=lambda variant, c: ([1, 3, -2, 5], 2),
    hint="`{nums}` can hold 10**6 numbers and `{k}` can be 10**4.",
    cost_in_builtins=True,
)

# ---------------------------------------------------------------------------- longest distinct run

_RUN_FAST = {
    "length": """\
def $fn($nums):
    last = {}
    start = best = 0
    for i, x in enumerate($nums):
        if last.get(x, -1) >= start:
            start = last[x] + 1
        last[x] = i
        best = max(best, i - start + 1)
    return best
""",
    "start": """\
def $fn($nums):
    last = {}
    start = best = best_start = 0
    for i, x in enumerate($nums):
        if last.get(x, -1) >= start:
            start = last[x] + 1
        last[x] = i
        if i - start + 1 > best:
            best, best_start = i - start + 1, start
    return best_start
""",
}
_RUN_SLOW = {
    "length": """\
def $fn($nums):
    best = 0
    for i in range(len($nums)):
        seen = set()
        for x in $nums[i:]:
            if x in seen:
                break
            seen.add(x)
        best = max(best, len(seen))
    return best
""",
    "start": """\
def $fn($nums):
    best = best_start = 0
    for i in range(len($nums)):
        seen = set()
        for x in $nums[i:]:
            if x in seen:
                break
            seen.add(x)
        if len(seen) > best:
            best, best_start = len(seen), i
    return best_start
""",
}


def _run(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _RUN_FAST[key], _RUN_SLOW[key])


def _run_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    # Session ids that repeat only after a few hundred others: long runs without a repeat.
    rng = random.Random("longest_distinct_run")
    nums: list[int] = []
    for _ in range(4):
        block = list(range(350))
        rng.shuffle(block)
        nums += block
    return [(nums,)]


LONGEST_DISTINCT_RUN = Family(
    name="longest_distinct_run",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=(
            "longest_unique_run",
            "distinct_stretch",
            "no_repeat_span",
            "unique_window",
            "fresh_run",
            "lur",
        ),
        heldout=("where_unique_run", "first_distinct_span", "unique_run_start"),
    ),
    argument_names=Pool(train=(("nums",), ("ids",), ("seq",)), heldout=(("xs",), ("events",))),
    variants=Pool(
        train=(
            _run(
                "length",
                (
                    "returns the length of the longest run of consecutive elements of `{nums}` in which no "
                    "value appears twice (0 for an empty list)",
                    "returns how long the longest contiguous slice of `{nums}` with all-distinct values is",
                ),
                (),
            ),
        ),
        heldout=(
            _run(
                "start",
                (),
                (
                    "returns the start index of the first longest contiguous slice of `{nums}` whose values "
                    "are all different (0 for an empty list)",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [([],), ([1],), ([1, 1],), ([1, 2, 1, 3, 4],), ([5, 5, 6, 7, 5],)]
        + [(_ints(rng, size, 0, 5),) for size in (8, 12)]
    ),
    stress_inputs=_run_stress,
    example_input=lambda variant, c: ([1, 2, 1, 3, 4, 3],),
    hint="`{nums}` can hold 10**5 numbers.",
)

FAMILIES = (NEXT_GREATER, OVERLAP, WINDOW_SUM, LONGEST_DISTINCT_RUN)
