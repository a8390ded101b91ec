"""Families of overlapping subproblems and merged sets: counting compositions and fewest parts (naive
recursion vs a table), common subsequences and edit distance (naive recursion vs dynamic
programming), connected components (relabelling every node vs union-find)."""

from __future__ import annotations

import functools
import random
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared

# Naive recursions are exponential: their stress inputs are the largest sizes whose call count stays
# under this, so the slow solution takes tens of milliseconds rather than minutes.
_MAX_NAIVE_CALLS = 40_000

# ------------------------------------------------------------------------------------ stair ways

_STAIR_FAST = {
    "ways": """\
def $fn($n):
    ways = [1] + [0] * $n
    for i in range(1, $n + 1):
        ways[i] = sum(ways[i - s] for s in ($S1, $S2, $S3) if s <= i) % 1_000_000_007
    return ways[$n]
""",
    "fewest": """\
def $fn($n):
    fewest = [0] + [-1] * $n
    for i in range(1, $n + 1):
        options = [fewest[i - s] for s in ($S1, $S2, $S3) if s <= i and fewest[i - s] >= 0]
        if options:
            fewest[i] = min(options) + 1
    return fewest[$n]
""",
}
_STAIR_SLOW = {
    "ways": """\
def $fn($n):
    if $n == 0:
        return 1
    return sum($fn($n - s) for s in ($S1, $S2, $S3) if s <= $n) % 1_000_000_007
""",
    "fewest": """\
def $fn($n):
    if $n == 0:
        return 0
    best = -1
    for s in ($S1, $S2, $S3):
        if s <= $n:
            rest = $fn($n - s)
            if rest >= 0 and (best < 0 or rest + 1 < best):
                best = rest + 1
    return best
""",
}


def _stair(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _STAIR_FAST[key], _STAIR_SLOW[key])


def _stair_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    parts = (c["S1"], c["S2"], c["S3"])
    calls = [1]  # calls[m]: calls the naive recursion makes for m
    while True:
        m = len(calls)
        calls.append(1 + sum(calls[m - s] for s in parts if s <= m))
        if calls[-1] > _MAX_NAIVE_CALLS:
            return [(m - 1,)]


def _parts(*values: tuple[int, int, int]) -> tuple[dict[str, int], ...]:
    return tuple({"S1": a, "S2": b, "S3": c} for a, b, c in values)


STAIR_WAYS = Family(
    name="stair_ways",
    difficulty="medium",
    roles=("n",),
    function_names=Pool(
        train=("climb", "stairs", "staircase", "step_plan", "compose", "climb_stairs"),
        heldout=("ladder", "jump_plan", "hop_plan"),
    ),
    argument_names=Pool(train=(("n",), ("steps",), ("height",)), heldout=(("total",), ("target",))),
    variants=shared(
        _stair(
            "ways",
            (
                "returns the number of ordered ways to write `{n}` as a sum of parts from "
                "{{{S1}, {S2}, {S3}}} (order matters; 1 way for 0), modulo 10**9 + 7",
                "counts, modulo 10**9 + 7, the ways to climb `{n}` stairs taking {S1}, {S2} or {S3} stairs "
                "at a time (different orders count separately; 1 way for 0 stairs)",
            ),
            (
                "returns, modulo 10**9 + 7, how many sequences of jumps of length {S1}, {S2} or {S3} sum to "
                "exactly `{n}` (the empty sequence for 0)",
            ),
        ),
        _stair(
            "fewest",
            (
                "returns the fewest parts from {{{S1}, {S2}, {S3}}} (repeats allowed) that sum to `{n}`, "
                "or -1 if none do (0 for 0)",
                "returns the smallest number of steps of size {S1}, {S2} or {S3} that climb exactly `{n}` "
                "stairs, or -1 if that is impossible",
            ),
            (
                "gives the minimum count of jumps of length {S1}, {S2} or {S3} adding up to exactly `{n}` "
                "(-1 if no sequence does)",
            ),
        ),
    ),
    constants=Pool(
        train=_parts((1, 2, 3), (1, 2, 5), (1, 3, 4), (2, 3, 5), (1, 4, 5), (2, 3, 7), (1, 2, 6)),
        heldout=_parts((1, 3, 5), (2, 4, 7), (1, 5, 6), (2, 5, 6)),
    ),
    small_inputs=lambda rng, variant, c: (
        [(0,), (1,), (2,), (c["S3"],)] + [(rng.randint(3, 14),) for _ in range(3)]
    ),
    stress_inputs=_stair_stress,
    example_input=lambda variant, c: (c["S2"] + c["S3"],),
    hint="`{n}` can be as large as 10**3.",
)

# ------------------------------------------------------------------------------------ lcs length

_LCS_FAST = {
    "common": """\
def $fn($a, $b):
    previous = [0] * (len($b) + 1)
    for left in $a:
        current = [0]
        for j, right in enumerate($b):
            current.append(previous[j] + 1 if left == right else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]
""",
    "edit": """\
def $fn($a, $b):
    previous = list(range(len($b) + 1))
    for i, left in enumerate($a, 1):
        current = [i]
        for j, right in enumerate($b):
            if left == right:
                current.append(previous[j])
            else:
                current.append(1 + min(previous[j], previous[j + 1], current[j]))
        previous = current
    return previous[-1]
""",
}
_LCS_SLOW = {
    "common": """\
def $fn($a, $b):
    if not $a or not $b:
        return 0
    if $a[0] == $b[0]:
        return 1 + $fn($a[1:], $b[1:])
    return max($fn($a[1:], $b), $fn($a, $b[1:]))
""",
    "edit": """\
def $fn($a, $b):
    if not $a:
        return len($b)
    if not $b:
        return len($a)
    if $a[0] == $b[0]:
        return $fn($a[1:], $b[1:])
    return 1 + min($fn($a[1:], $b), $fn($a, $b[1:]), $fn($a[1:], $b[1:]))
""",
}


def _lcs(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _LCS_FAST[key], _LCS_SLOW[key])


def _naive_string_calls(variant: str, a: str, b: str) -> int:
    @functools.cache
    def calls(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return 1
        if a[i] == b[j]:
            return 1 + calls(i + 1, j + 1)
        extra = calls(i + 1, j + 1) if variant == "edit" else 0
        return 1 + calls(i + 1, j) + calls(i, j + 1) + extra

    return calls(0, 0)


def _word(rng: random.Random, length: int, letters: str) -> str:
    return "".join(rng.choice(letters) for _ in range(length))


def _lcs_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random(f"lcs_length:{variant}")
    cases = []
    for letters in ("acgt", "abcdefgh"):
        size = 2
        a, b = _word(rng, size, letters), _word(rng, size, letters)
        while True:
            longer = a + rng.choice(letters), b + rng.choice(letters)
            if _naive_string_calls(variant, *longer) > _MAX_NAIVE_CALLS:
                break
            a, b = longer
        cases.append((a, b))
    return cases


def _lcs_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [("", ""), ("abc", ""), ("", "xy"), ("abc", "abc"), ("abcde", "ace")]
    cases += [(_word(rng, rng.randint(1, 6), "abc"), _word(rng, rng.randint(1, 6), "abc")) for _ in range(2)]
    return cases


LCS_LENGTH = Family(
    name="lcs_length",
    difficulty="hard",
    roles=("a", "b"),
    function_names=Pool(
        train=("lcs", "common_subsequence", "lcs_length", "shared_subseq", "longest_common", "subseq_match"),
        heldout=("edit_distance", "levenshtein", "edits_needed"),
    ),
    argument_names=Pool(
        train=(("a", "b"), ("s", "t"), ("first", "second")), heldout=(("x", "y"), ("source", "target"))
    ),
    variants=Pool(
        train=(
            _lcs(
                "common",
                (
                    "returns the length of the longest common subsequence of the strings `{a}` and `{b}` "
                    "(characters in order, not necessarily adjacent)",
                    "returns the length of the longest string that is a subsequence of both `{a}` and `{b}`",
                ),
                (),
            ),
        ),
        heldout=(
            _lcs(
                "edit",
                (),
                (
                    "returns the fewest single-character insertions, deletions and substitutions that turn "
                    "the string `{a}` into `{b}` (the Levenshtein distance)",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=_lcs_small,
    stress_inputs=_lcs_stress,
    example_input=lambda variant, c: ("abcde", "ace"),
    hint="`{a}` and `{b}` can each be 1000 characters long.",
)

# ------------------------------------------------------------------------------------- components

_COMPONENTS_FAST = """\
def $fn($n, $edges):
    parent = list(range($n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in $edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    $finish
"""
_COMPONENTS_SLOW = """\
def $fn($n, $edges):
    label = list(range($n))
    for a, b in $edges:
        old, new = label[a], label[b]
        if old != new:
            label = [new if x == old else x for x in label]
    $finish
"""
_COMPONENTS_FINISH = {
    "count": (
        "return sum(1 for x in range($n) if find(x) == x)",
        "return len(set(label))",
    ),
    "largest": (
        "sizes = {}\n    for x in range($n):\n        root = find(x)\n"
        "        sizes[root] = sizes.get(root, 0) + 1\n    return max(sizes.values(), default=0)",
        "return max((label.count(x) for x in set(label)), default=0)",
    ),
}


def _components(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    fast_finish, slow_finish = _COMPONENTS_FINISH[key]
    return Variant(
        key,
        Pool(train, heldout),
        _COMPONENTS_FAST.replace("$finish", fast_finish),
        _COMPONENTS_SLOW.replace("$finish", slow_finish),
    )


def _graph(rng: random.Random, n: int, m: int) -> tuple[int, list[tuple[int, int]]]:
    return n, [(rng.randrange(n), rng.randrange(n)) for _ in range(m)] if n else []


COMPONENTS = Family(
    name="components",
    difficulty="hard",
    roles=("n", "edges"),
    function_names=Pool(
        train=("count_components", "islands", "connected_groups", "network_parts", "clusters", "num_groups"),
        heldout=("biggest_group", "largest_cluster", "main_component"),
    ),
    argument_names=Pool(
        train=(("n", "edges"), ("nodes", "links"), ("size", "pairs")),
        heldout=(("count", "roads"), ("people", "friendships")),
    ),
    variants=Pool(
        train=(
            _components(
                "count",
                (
                    "takes nodes 0..`{n}`-1 and a list `{edges}` of undirected edges (a, b) and returns the "
                    "number of connected components",
                    "returns how many connected groups the nodes 0, 1, ..., `{n}`-1 form when each pair "
                    "(a, b) in `{edges}` links a and b",
                ),
                (),
            ),
        ),
        heldout=(
            _components(
                "largest",
                (),
                (
                    "returns the number of nodes in the largest connected component of the undirected graph "
                    "on nodes 0..`{n}`-1 with edge list `{edges}` (0 when `{n}` is 0)",
                ),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [(0, []), (1, []), (3, [(0, 1)]), (4, [(0, 1), (2, 3), (1, 0)])]
        + [_graph(rng, size, size // 2) for size in (6, 10)]
    ),
    stress_inputs=lambda variant, c: [_graph(random.Random("components"), 1200, 1000)],
    example_input=lambda variant, c: (5, [(0, 1), (1, 2), (3, 4)]),
    hint="`{n}` and len(`{edges}`) can be 10**5.",
)

FAMILIES = (STAIR_WAYS, LCS_LENGTH, COMPONENTS)
