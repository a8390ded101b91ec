"""Counting families: repeats and frequencies (list.count vs Counter), order-keeping dedupe (list vs
set), anagram classes (pairwise vs hashing), common prefixes (prefix by prefix vs one scan)."""

from __future__ import annotations

import random
import string
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared


def _ints(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(size)]


def _word(rng: random.Random, length: int, letters: str = "abcde") -> str:
    return "".join(rng.choice(letters) for _ in range(length))


# --------------------------------------------------------------------------------------- repeats

REPEAT_DETECTION = Family(
    name="repeat_detection",
    difficulty="easy",
    roles=("nums",),
    function_names=Pool(
        train=("has_repeat", "repeats", "occurs_often", "has_frequent", "check_repeats", "frequent_exists"),
        heldout=("value_recurs", "many_copies", "has_heavy_value"),
    ),
    argument_names=Pool(train=(("nums",), ("values",), ("items",)), heldout=(("data",), ("xs",))),
    variants=shared(
        Variant(
            "at_least",
            Pool(
                (
                    "returns True if some value occurs at least {K} times in `{nums}`, otherwise False",
                    "checks whether any element of `{nums}` appears {K} or more times",
                ),
                ("tells whether `{nums}` contains a value with {K} or more copies",),
            ),
            fast="""\
from collections import Counter


def $fn($nums):
    return any(c >= $K for c in Counter($nums).values())
""",
            slow="""\
def $fn($nums):
    return any($nums.count(x) >= $K for x in $nums)
""",
        )
    ),
    constants=Pool(train=tuple({"K": k} for k in (2, 3, 4)), heldout=tuple({"K": k} for k in (5, 6))),
    small_inputs=lambda rng, variant, c: [
        ([],),
        ([1] * c["K"],),
        ([1] * (c["K"] - 1) + [2],),
        (list(range(6)),),
        (_ints(rng, 8, 0, 3),),
        (_ints(rng, 12, 0, 5),),
    ],
    stress_inputs=lambda variant, c: [(random.Random("repeat_detection").sample(range(10**6), 2000),)],
    example_input=lambda variant, c: ([3] * c["K"] + [1],),
    hint="`{nums}` can hold 10**5 numbers.",
    cost_in_builtins=True,
)

# ------------------------------------------------------------------------------------ frequencies

FREQUENT_VALUES = Family(
    name="frequent_values",
    difficulty="medium",
    roles=("nums",),
    function_names=Pool(
        train=("frequent_values", "common_values", "values_seen_often", "popular", "hot_values", "often"),
        heldout=("recurring_values", "heavy_hitters", "repeated_at_least"),
    ),
    argument_names=Pool(train=(("nums",), ("values",), ("items",)), heldout=(("data",), ("xs",))),
    variants=shared(
        Variant(
            "sorted_at_least",
            Pool(
                (
                    "returns the sorted list of distinct values that occur at least {K} times in `{nums}`",
                    "returns, in increasing order and without repeats, the elements of `{nums}` that appear "
                    "{K} or "
                    "more times",
                ),
                ("lists (ascending, each once) every value having {K} or more occurrences in `{nums}`",),
            ),
            fast="""\
from collections import Counter


def $fn($nums):
    return sorted(x for x, c in Counter($nums).items() if c >= $K)
""",
            slow="""\
def $fn($nums):
    return sorted({x for x in $nums if $nums.count(x) >= $K})
""",
        )
    ),
    constants=Pool(train=tuple({"K": k} for k in (2, 3, 4, 5)), heldout=tuple({"K": k} for k in (6, 7, 8))),
    small_inputs=lambda rng, variant, c: [
        ([],),
        ([4] * c["K"] + [2] * (c["K"] - 1),),
        ([9, 8] * c["K"],),
        (_ints(rng, 3 * c["K"], 0, 3),),
        (_ints(rng, 4 * c["K"], -2, 2),),
    ],
    stress_inputs=lambda variant, c: [([x % 1000 * 7 for x in range(2000)],)],
    example_input=lambda variant, c: ([5] * c["K"] + [1, 2],),
    hint="`{nums}` can hold 10**5 numbers.",
    cost_in_builtins=True,
)

# ------------------------------------------------------------------------------------------ dedupe

_DEDUPE_FAST = {
    "first": """\
def $fn($items):
    seen = set()
    result = []
    for x in $items:
        if x not in seen:
            seen.add(x)
            result.append(x)
    return result
""",
    "last": """\
def $fn($items):
    seen = set()
    result = []
    for x in reversed($items):
        if x not in seen:
            seen.add(x)
            result.append(x)
    result.reverse()
    return result
""",
}
_DEDUPE_SLOW = {
    "first": """\
def $fn($items):
    result = []
    for x in $items:
        if x not in result:
            result.append(x)
    return result
""",
    "last": """\
def $fn($items):
    result = []
    for i, x in enumerate($items):
        if x not in $items[i + 1 :]:
            result.append(x)
    return result
""",
}


def _dedupe(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _DEDUPE_FAST[key], _DEDUPE_SLOW[key])


DEDUPE = Family(
    name="dedupe",
    difficulty="easy",
    roles=("items",),
    function_names=Pool(
        train=("dedupe", "unique_in_order", "remove_duplicates", "distinct_items", "drop_repeats", "uniq"),
        heldout=("squash_repeats", "deduplicate", "without_copies"),
    ),
    argument_names=Pool(train=(("items",), ("nums",), ("seq",)), heldout=(("data",), ("xs",))),
    variants=Pool(
        train=(
            _dedupe(
                "first",
                (
                    "returns the distinct values of `{items}` in the order of their first appearance",
                    "returns a new list with the repeated values of `{items}` removed, keeping each "
                    "value's first occurrence",
                ),
                (),
            ),
        ),
        heldout=(
            _dedupe(
                "last",
                (),
                (
                    "returns `{items}` with repeats removed, keeping only the last occurrence of each "
                    "value, in order",
                    "drops every value of `{items}` that occurs again later in the list and returns what is "
                    "left, in order",
                ),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=lambda rng, variant, c: [
        ([],),
        ([1, 1, 1],),
        ([3, 1, 3, 2, 1],),
        (_ints(rng, 8, 0, 4),),
        (_ints(rng, 12, -3, 6),),
    ],
    stress_inputs=lambda variant, c: [([x * 7919 % 10007 for x in range(2500)] + list(range(0, 1000, 2)),)],
    example_input=lambda variant, c: ([3, 1, 3, 2, 1],),
    hint="`{items}` can hold 10**5 numbers.",
    cost_in_builtins=True,
)

# -------------------------------------------------------------------------------------- anagrams

_ANAGRAM_FAST = {
    "groups": """\
def $fn($words):
    return len({''.join(sorted(w)) for w in $words})
""",
    "largest": """\
from collections import Counter


def $fn($words):
    return max(Counter(''.join(sorted(w)) for w in $words).values(), default=0)
""",
    "paired": """\
from collections import Counter


def $fn($words):
    keys = [''.join(sorted(w)) for w in $words]
    sizes = Counter(keys)
    return sum(1 for key in keys if sizes[key] > 1)
""",
}
_ANAGRAM_SLOW = {
    "groups": """\
def $fn($words):
    groups = []
    for w in $words:
        if not any(sorted(w) == sorted(g) for g in groups):
            groups.append(w)
    return len(groups)
""",
    "largest": """\
def $fn($words):
    best = 0
    for w in $words:
        best = max(best, sum(1 for v in $words if sorted(v) == sorted(w)))
    return best
""",
    "paired": """\
def $fn($words):
    count = 0
    for i, w in enumerate($words):
        if any(j != i and sorted(v) == sorted(w) for j, v in enumerate($words)):
            count += 1
    return count
""",
}


def _anagram(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _ANAGRAM_FAST[key], _ANAGRAM_SLOW[key])


def _anagram_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [([],), (["ab"],), (["ab", "ba", "abc"],), (["x", "x", "y"],)]
    cases += [([_word(rng, rng.randint(1, 3), "abc") for _ in range(size)],) for size in (5, 9)]
    return cases


def _anagram_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("anagram_groups")
    words = ["".join(rng.sample(string.ascii_lowercase, 8)) for _ in range(280)]
    words += ["".join(rng.sample(w, len(w))) for w in words[:20]]
    return [(words,)]


ANAGRAM_GROUPS = Family(
    name="anagram_groups",
    difficulty="hard",
    roles=("words",),
    function_names=Pool(
        train=(
            "anagram_classes",
            "anagram_stat",
            "anagram_info",
            "anagram_query",
            "letter_groups",
            "anagrams",
        ),
        heldout=("rearrangements", "same_letters", "anagram_partners"),
    ),
    argument_names=Pool(train=(("words",), ("strs",), ("names",)), heldout=(("terms",), ("tokens",))),
    variants=Pool(
        train=(
            _anagram(
                "groups",
                (
                    "returns how many groups of anagrams the list `{words}` forms (words are anagrams when "
                    "they "
                    "have the same letters with the same counts)",
                    "counts the distinct anagram classes among `{words}`; two words share a class when "
                    "sorting "
                    "their letters gives the same string",
                ),
                (),
            ),
            _anagram(
                "largest",
                (
                    "returns the size of the largest group of mutual anagrams in `{words}` (0 for an empty "
                    "list; "
                    "equal words count as anagrams)",
                    "returns how many words of `{words}` are in the biggest anagram class (words whose "
                    "sorted "
                    "letters match), or 0 if `{words}` is empty",
                ),
                (),
            ),
        ),
        heldout=(
            _anagram(
                "paired",
                (),
                (
                    "returns how many words of `{words}` have at least one anagram elsewhere in the list "
                    "(another "
                    "position whose word has the same sorted letters)",
                ),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=_anagram_small,
    stress_inputs=_anagram_stress,
    example_input=lambda variant, c: (["tea", "eat", "tan", "ate", "nat", "bat"],),
    hint="`{words}` can hold 10**5 short words.",
)

# --------------------------------------------------------------------------------- common prefix

_AFFIX_FAST = {
    "prefix": """\
def $fn($words):
    if not $words:
        return ''
    low, high = min($words), max($words)
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    return low[:i]
""",
    "suffix": """\
def $fn($words):
    if not $words:
        return ''
    flipped = [w[::-1] for w in $words]
    low, high = min(flipped), max(flipped)
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    return low[:i][::-1]
""",
}
_AFFIX_SLOW = {
    "prefix": """\
def $fn($words):
    if not $words:
        return ''
    best = ''
    for size in range(1, len($words[0]) + 1):
        candidate = $words[0][:size]
        if all(w.startswith(candidate) for w in $words):
            best = candidate
        else:
            break
    return best
""",
    "suffix": """\
def $fn($words):
    if not $words:
        return ''
    best = ''
    for size in range(1, len($words[0]) + 1):
        candidate = $words[0][-size:]
        if all(w.endswith(candidate) for w in $words):
            best = candidate
        else:
            break
    return best
""",
}


def _affix(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _AFFIX_FAST[key], _AFFIX_SLOW[key])


def _affix_small(rng: random.Random, variant: str, c: Constants) -> list[tuple[Any, ...]]:
    cases: list[tuple[Any, ...]] = [([],), (["alone"],), (["abc", "abd", "ab"],), (["x", "y"],), (["", "a"],)]
    stem = _word(rng, rng.randint(1, 4))
    words = [stem + _word(rng, rng.randint(0, 3)) for _ in range(4)]
    cases.append(([w[::-1] for w in words] if variant == "suffix" else words,))
    return cases


def _affix_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("common_prefix")
    stem = _word(rng, 600, string.ascii_lowercase)
    words = [stem + _word(rng, 20, string.ascii_lowercase) for _ in range(300)]
    return [([w[::-1] for w in words] if variant == "suffix" else words,)]


COMMON_PREFIX = Family(
    name="common_prefix",
    difficulty="easy",
    roles=("words",),
    function_names=Pool(
        train=("common_prefix", "longest_prefix", "shared_start", "prefix_of_all", "lcp", "shared_prefix"),
        heldout=("common_affix", "shared_part", "longest_shared"),
    ),
    argument_names=Pool(train=(("words",), ("strs",), ("names",)), heldout=(("terms",), ("tokens",))),
    variants=Pool(
        train=(
            _affix(
                "prefix",
                (
                    "returns the longest string that every word in `{words}` starts with ('' if `{words}` "
                    "is empty)",
                    "returns the longest common prefix of the strings in `{words}`, or '' when there is none",
                ),
                (),
            ),
        ),
        heldout=(
            _affix(
                "suffix",
                (),
                ("returns the longest string that all strings of `{words}` end with ('' for an empty list)",),
            ),
        ),
    ),
    constants=Pool(train=({},), heldout=({},)),
    small_inputs=_affix_small,
    stress_inputs=_affix_stress,
    example_input=lambda variant, c: (
        ["flower", "flow", "flight"] if variant == "prefix" else ["running", "sing"],
    ),
    hint="`{words}` can hold 10**4 long strings.",
)

FAMILIES = (REPEAT_DETECTION, FREQUENT_VALUES, DEDUPE, ANAGRAM_GROUPS, COMMON_PREFIX)
