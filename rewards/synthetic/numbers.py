"""Number-theory families: divisors (scan everything vs stop at the square root), modular powers
(a loop vs ``pow(b, e, m)``), square roots (counting up vs ``math.isqrt``), bit counts (shifting bit
by bit vs ``bin``/``x & (x - 1)``), inclusion-exclusion counts (a loop vs a closed form)."""

from __future__ import annotations

import math
import random
from typing import Any

from rewards.synthetic.family import Constants, Family, Pool, Variant, shared


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _prime_at_least(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n


# -------------------------------------------------------------------------------- smallest divisor

_DIVISOR_FAST = {
    "smallest": """\
def $fn($n):
    d = 2
    while d * d <= $n:
        if $n % d == 0:
            return d
        d += 1
    return $n
""",
    "largest_proper": """\
def $fn($n):
    d = 2
    while d * d <= $n:
        if $n % d == 0:
            return $n // d
        d += 1
    return 1
""",
    "is_prime": """\
def $fn($n):
    d = 2
    while d * d <= $n:
        if $n % d == 0:
            return False
        d += 1
    return True
""",
}
_DIVISOR_SLOW = {
    "smallest": """\
def $fn($n):
    return min(d for d in range(2, $n + 1) if $n % d == 0)
""",
    "largest_proper": """\
def $fn($n):
    return max(d for d in range(1, $n) if $n % d == 0)
""",
    "is_prime": """\
def $fn($n):
    return len([d for d in range(1, $n + 1) if $n % d == 0]) == 2
""",
}


def _divisor(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _DIVISOR_FAST[key], _DIVISOR_SLOW[key])


SMALLEST_DIVISOR = Family(
    name="smallest_divisor",
    difficulty="easy",
    roles=("n",),
    function_names=Pool(
        train=("divisor_of", "factor_query", "divisor_probe", "find_divisor", "factor_of", "divisor_pick"),
        heldout=("factor_check", "factor_probe", "examine_factors"),
    ),
    argument_names=Pool(train=(("n",), ("num",), ("value",)), heldout=(("x",), ("number",))),
    variants=Pool(
        train=(
            _divisor(
                "smallest",
                (
                    "returns the smallest integer d > 1 that divides `{n}` (`{n}` is at least 2)",
                    "returns the least divisor of `{n}` that is greater than 1, for `{n}` >= 2",
                ),
                (),
            ),
            _divisor(
                "largest_proper",
                (
                    "returns the largest divisor of `{n}` that is smaller than `{n}` itself (1 when `{n}` is "
                    "prime; `{n}` >= 2)",
                    "returns the biggest d < `{n}` with `{n}` % d == 0, for `{n}` >= 2",
                ),
                (),
            ),
        ),
        heldout=(
            _divisor(
                "is_prime",
                (),
                ("tells whether the integer `{n}` >= 2 is prime (True) or not (False)",),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [(2,), (3,), (4,), (9,), (49,), (97,)] + [(rng.randint(5, 2000),) for _ in range(3)]
    ),
    stress_inputs=lambda variant, c: [(_prime_at_least(150_000),), (2 * _prime_at_least(60_000),)],
    example_input=lambda variant, c: (15,),
    hint="`{n}` can be as large as 10**12.",
)

# ------------------------------------------------------------------------------------- mod power

MOD_POWER = Family(
    name="mod_power",
    difficulty="easy",
    roles=("base", "exp"),
    function_names=Pool(
        train=("power_mod", "mod_pow", "modular_power", "pow_remainder", "power_rest", "exp_mod"),
        heldout=("raise_mod", "residue_of_power", "powmod"),
    ),
    argument_names=Pool(
        train=(("base", "exp"), ("b", "e"), ("a", "n")),
        heldout=(("x", "k"), ("value", "times")),
    ),
    variants=shared(
        Variant(
            "power",
            Pool(
                (
                    "returns `{base}` ** `{exp}` modulo {M}, for integers `{base}` >= 0 and `{exp}` >= 0",
                    "returns the remainder of `{base}` to the power `{exp}` divided by {M} (`{base}` and "
                    "`{exp}` non-negative)",
                ),
                (
                    "computes (`{base}` raised to `{exp}`) % {M} for non-negative integers `{base}` and "
                    "`{exp}`",
                ),
            ),
            fast="""\
def $fn($base, $exp):
    return pow($base, $exp, $M)
""",
            slow="""\
def $fn($base, $exp):
    result = 1
    for _ in range($exp):
        result = result * $base % $M
    return result
""",
        )
    ),
    constants=Pool(
        train=tuple({"M": m} for m in (97, 1000, 1009, 10007, 65537, 999_983, 1_000_000_007)),
        heldout=tuple({"M": m} for m in (101, 7919, 100_003, 998_244_353)),
    ),
    small_inputs=lambda rng, variant, c: (
        [(0, 0), (0, 3), (2, 0), (5, 1), (3, 13)]
        + [(rng.randint(0, 10**6), rng.randint(0, 60)) for _ in range(3)]
    ),
    stress_inputs=lambda variant, c: [(123_456, 200_000), (987_654_321, 150_000)],
    example_input=lambda variant, c: (3, 4),
    hint="`{exp}` can be as large as 10**18.",
)

# ------------------------------------------------------------------------------------ square count

_SQUARE_FAST = {
    "count": """\
import math


def $fn($n):
    return math.isqrt($n)
""",
    "is_square": """\
import math


def $fn($n):
    return math.isqrt($n) ** 2 == $n
""",
    "root": """\
import math


def $fn($n):
    return math.isqrt($n)
""",
}
_SQUARE_SLOW = {
    "count": """\
def $fn($n):
    count = 0
    k = 1
    while k * k <= $n:
        count += 1
        k += 1
    return count
""",
    "is_square": """\
def $fn($n):
    k = 0
    while k * k < $n:
        k += 1
    return k * k == $n
""",
    "root": """\
def $fn($n):
    k = 0
    while (k + 1) * (k + 1) <= $n:
        k += 1
    return k
""",
}


def _square(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _SQUARE_FAST[key], _SQUARE_SLOW[key])


SQUARE_COUNT = Family(
    name="square_count",
    difficulty="easy",
    roles=("n",),
    function_names=Pool(
        train=("count_squares", "squares_upto", "square_total", "num_squares", "squares_below", "sq_count"),
        heldout=("square_query", "root_probe", "square_info"),
    ),
    argument_names=Pool(train=(("n",), ("limit",), ("upto",)), heldout=(("x",), ("value",))),
    variants=Pool(
        train=(
            _square(
                "count",
                (
                    "returns how many perfect squares k * k with k >= 1 are at most `{n}` (`{n}` >= 0)",
                    "counts the positive integers k whose square does not exceed the non-negative integer "
                    "`{n}`",
                ),
                (),
            ),
        ),
        heldout=(
            _square("is_square", (), ("tells whether the non-negative integer `{n}` is a perfect square",)),
            _square(
                "root",
                (),
                ("returns the largest integer k with k * k <= `{n}` for a non-negative integer `{n}`",),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [(0,), (1,), (2,), (15,), (16,), (17,)]
        + [(rng.randint(18, 10**4),) for _ in range(2)]
        + [(rng.randint(2, 99) ** 2,)]
    ),
    stress_inputs=lambda variant, c: [(150_000**2,), (200_000**2 - 1,)],
    example_input=lambda variant, c: (30,),
    hint="`{n}` can be as large as 10**18.",
)

# ---------------------------------------------------------------------------------------- set bits

_BITS_FAST = {
    "total": """\
def $fn($nums):
    return sum(bin(x).count('1') for x in $nums)
""",
    "powers_of_two": """\
def $fn($nums):
    return sum(1 for x in $nums if x > 0 and x & (x - 1) == 0)
""",
    "odd_parity": """\
def $fn($nums):
    return sum(bin(x).count('1') % 2 for x in $nums)
""",
}
_BITS_SLOW = {
    "total": """\
def $fn($nums):
    total = 0
    for x in $nums:
        while x > 0:
            total += x % 2
            x //= 2
    return total
""",
    "powers_of_two": """\
def $fn($nums):
    count = 0
    for x in $nums:
        if x <= 0:
            continue
        while x % 2 == 0:
            x //= 2
        if x == 1:
            count += 1
    return count
""",
    "odd_parity": """\
def $fn($nums):
    count = 0
    for x in $nums:
        ones = 0
        while x > 0:
            ones += x % 2
            x //= 2
        count += ones % 2
    return count
""",
}


def _bits(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _BITS_FAST[key], _BITS_SLOW[key])


def _bits_stress(variant: str, c: Constants) -> list[tuple[Any, ...]]:
    rng = random.Random("set_bits")
    if variant == "powers_of_two":
        # Values with many trailing zero bits: masks and aligned sizes, half of them powers of two.
        return [([rng.choice((1, 3, 5, 7)) << rng.randint(40, 60) for _ in range(3000)],)]
    return [([rng.getrandbits(1024) for _ in range(160)],)]


SET_BITS = Family(
    name="set_bits",
    difficulty="easy",
    roles=("nums",),
    function_names=Pool(
        train=("bit_stat", "mask_count", "bits_query", "count_masks", "bit_census", "mask_stat"),
        heldout=("parity_count", "odd_parity_count", "parity_tally"),
    ),
    argument_names=Pool(train=(("nums",), ("values",), ("masks",)), heldout=(("xs",), ("words",))),
    variants=Pool(
        train=(
            _bits(
                "total",
                (
                    "returns the total number of 1 bits in the binary forms of the non-negative integers in "
                    "`{nums}`",
                    "adds up, over the non-negative integers of `{nums}`, how many bits are set in each",
                ),
                (),
            ),
            _bits(
                "powers_of_two",
                (
                    "returns how many elements of `{nums}` (non-negative integers) are powers of two "
                    "(1, 2, 4, ...)",
                    "counts the entries of `{nums}` equal to 2 ** k for some k >= 0 (entries are >= 0)",
                ),
                (),
            ),
        ),
        heldout=(
            _bits(
                "odd_parity",
                (),
                ("returns how many non-negative integers in `{nums}` have an odd number of 1 bits",),
            ),
        ),
    ),
    constants=shared({}),
    small_inputs=lambda rng, variant, c: (
        [([],), ([0],), ([1, 2, 3],), ([8, 6, 1024, 0],)]
        + [([rng.randint(0, 300) for _ in range(size)],) for size in (5, 9)]
    ),
    stress_inputs=_bits_stress,
    example_input=lambda variant, c: ([3, 4, 7],),
    hint="`{nums}` can hold 10**5 bit masks of up to 1024 bits.",
)

# ---------------------------------------------------------------------------- inclusion-exclusion

_DIVISIBLE_FAST = {
    "either": """\
def $fn($n):
    return $n // $A + $n // $B - $n // $L
""",
    "neither": """\
def $fn($n):
    return $n - ($n // $A + $n // $B - $n // $L)
""",
    "exactly_one": """\
def $fn($n):
    return $n // $A + $n // $B - 2 * ($n // $L)
""",
}
_DIVISIBLE_SLOW = {
    "either": """\
def $fn($n):
    return sum(1 for k in range(1, $n + 1) if k % $A == 0 or k % $B == 0)
""",
    "neither": """\
def $fn($n):
    return sum(1 for k in range(1, $n + 1) if k % $A != 0 and k % $B != 0)
""",
    "exactly_one": """\
def $fn($n):
    return sum(1 for k in range(1, $n + 1) if (k % $A == 0) != (k % $B == 0))
""",
}


def _divisible(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    return Variant(key, Pool(train, heldout), _DIVISIBLE_FAST[key], _DIVISIBLE_SLOW[key])


def _pairs(values: tuple[tuple[int, int], ...]) -> tuple[dict[str, int], ...]:
    return tuple({"A": a, "B": b, "L": math.lcm(a, b)} for a, b in values)


DIVISIBLE_COUNT = Family(
    name="divisible_count",
    difficulty="medium",
    roles=("n",),
    function_names=Pool(
        train=(
            "divisibility_count",
            "count_by_divisors",
            "rule_count",
            "count_upto",
            "number_filter",
            "divisor_rule",
        ),
        heldout=("divisor_hits", "count_by_rule", "multiple_census"),
    ),
    argument_names=Pool(train=(("n",), ("limit",), ("top",)), heldout=(("bound",), ("m",))),
    variants=Pool(
        train=(
            _divisible(
                "either",
                (
                    "returns how many integers k with 1 <= k <= `{n}` are divisible by {A} or by {B} (or "
                    "both)",
                    "counts the numbers from 1 to `{n}` that are multiples of {A} or of {B}",
                ),
                (),
            ),
            _divisible(
                "neither",
                (
                    "returns how many integers from 1 to `{n}` are divisible by neither {A} nor {B}",
                    "counts k in 1..`{n}` such that k is a multiple of neither {A} nor {B}",
                ),
                (),
            ),
        ),
        heldout=(
            _divisible(
                "exactly_one",
                (),
                ("returns how many integers in 1..`{n}` are divisible by exactly one of {A} and {B}",),
            ),
        ),
    ),
    constants=Pool(
        train=_pairs(((2, 3), (3, 5), (4, 6), (5, 7), (6, 10), (4, 9), (7, 11))),
        heldout=_pairs(((8, 12), (9, 15), (13, 17))),
    ),
    small_inputs=lambda rng, variant, c: (
        [(0,), (1,), (c["A"],), (c["B"],), (c["L"],)] + [(rng.randint(2, 500),) for _ in range(3)]
    ),
    stress_inputs=lambda variant, c: [(250_000,)],
    example_input=lambda variant, c: (2 * c["L"],),
    hint="`{n}` can be as large as 10**15.",
)

FAMILIES = (SMALLEST_DIVISOR, MOD_POWER, SQUARE_COUNT, SET_BITS, DIVISIBLE_COUNT)
