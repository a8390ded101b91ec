"""Number families: series sums (loop vs formula), primes (trial division vs sieve), recurrences
(naive recursion vs iteration)."""

from __future__ import annotations

import itertools
import random
from typing import Any

from rewards.synthetic.family import Family, Pool, Variant, shared


def _counts(
    rng: random.Random, fixed: tuple[int, ...], low: int, high: int, extra: int
) -> list[tuple[Any, ...]]:
    return [(n,) for n in fixed] + [(rng.randint(low, high),) for _ in range(extra)]


# ------------------------------------------------------------------------------ arithmetic series

ARITHMETIC_SERIES = Family(
    name="arithmetic_series",
    difficulty="easy",
    roles=("n",),
    function_names=Pool(
        train=("series_sum", "sum_terms", "progression_sum", "total_of_terms", "arith_total", "sum_sequence"),
        heldout=("add_progression", "terms_total", "arithmetic_sum"),
    ),
    argument_names=Pool(train=(("n",), ("count",), ("k",)), heldout=(("m",), ("terms",))),
    variants=shared(
        Variant(
            key="sum",
            descriptions=Pool(
                train=(
                    "returns the sum of the first `{n}` terms of {t0}, {t1}, {t2}, ... (each term {D} more)",
                    "returns {t0} + {t1} + {t2} + ... with exactly `{n}` terms added (0 when `{n}` is 0)",
                ),
                heldout=(
                    "computes the total of `{n}` terms of the arithmetic progression starting at {A} with "
                    "step {D}",
                ),
            ),
            fast="""\
def $fn($n):
    return $n * $A + $D * $n * ($n - 1) // 2
""",
            slow="""\
def $fn($n):
    total = 0
    for i in range($n):
        total += $A + i * $D
    return total
""",
        ),
    ),
    constants=Pool(
        train=tuple({"A": a, "D": d} for a in range(0, 6) for d in range(1, 6)),
        heldout=tuple({"A": a, "D": d} for a in range(6, 10) for d in range(6, 10)),
    ),
    small_inputs=lambda rng, variant, c: _counts(rng, (0, 1, 2, 3), 4, 60, 3),
    stress_inputs=lambda variant, c: [(200_000,)],
    example_input=lambda variant, c: (3,),
    hint="`{n}` can be as large as 10**6.",
    prompt_values=lambda c: {"t0": c["A"], "t1": c["A"] + c["D"], "t2": c["A"] + 2 * c["D"]},
)

# ---------------------------------------------------------------------------------- multiples sum

MULTIPLES_SUM = Family(
    name="multiples_sum",
    difficulty="easy",
    roles=("n",),
    function_names=Pool(
        train=(
            "sum_multiples",
            "multiples_total",
            "add_multiples",
            "sum_of_multiples",
            "multiple_sum",
            "total_mult",
        ),
        heldout=("divisible_sum", "sum_divisible", "multiples_added"),
    ),
    argument_names=Pool(train=(("n",), ("limit",), ("upto",)), heldout=(("bound",), ("top",))),
    variants=shared(
        Variant(
            key="sum",
            descriptions=Pool(
                train=(
                    "returns the sum of all multiples of {K} between 1 and `{n}` inclusive",
                    "returns the total of every number from 1 to `{n}` that is divisible by {K}",
                ),
                heldout=("adds up the positive integers not exceeding `{n}` that {K} divides evenly",),
            ),
            fast="""\
def $fn($n):
    m = $n // $K
    return $K * m * (m + 1) // 2
""",
            slow="""\
def $fn($n):
    total = 0
    for i in range(1, $n + 1):
        if i % $K == 0:
            total += i
    return total
""",
        ),
    ),
    constants=Pool(
        train=tuple({"K": k} for k in range(2, 21)),
        heldout=tuple({"K": k} for k in range(21, 41)),
    ),
    small_inputs=lambda rng, variant, c: _counts(rng, (0, 1, c["K"], c["K"] + 1), 2, 400, 3),
    stress_inputs=lambda variant, c: [(300_000,)],
    example_input=lambda variant, c: (3 * c["K"],),
    hint="`{n}` can be as large as 10**7.",
)

# ------------------------------------------------------------------------------------------ primes

_SIEVE = """\
def $fn($n):
    if $n < 2:
        return 0
    sieve = bytearray([1]) * ($n + 1)
    sieve[0] = sieve[1] = 0
    for i in range(2, int($n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, $n + 1, i)))
    return $finish
"""
_TRIAL = """\
def $fn($n):
    primes = []
    for p in range(2, $n + 1):
        d = 2
        while d * d <= p:
            if p % d == 0:
                break
            d += 1
        else:
            primes.append(p)
    return $finish
"""
# What each variant returns, from the sieve and from the list of primes.
_PRIME_FINISH = {
    "count": ("sum(sieve[$L:])", "sum(1 for p in primes if p >= $L)"),
    "sum": ("sum(i for i in range($L, $n + 1) if sieve[i])", "sum(p for p in primes if p >= $L)"),
    "square_sum": (
        "sum(i * i for i in range($L, $n + 1) if sieve[i])",
        "sum(p * p for p in primes if p >= $L)",
    ),
}


def _prime_variant(key: str, train: tuple[str, ...], heldout: tuple[str, ...]) -> Variant:
    fast_finish, slow_finish = _PRIME_FINISH[key]
    return Variant(
        key=key,
        descriptions=Pool(train, heldout),
        fast=_SIEVE.replace("$finish", fast_finish),
        slow=_TRIAL.replace("$finish", slow_finish),
    )


PRIME_STATS = Family(
    name="prime_stats",
    difficulty="medium",
    roles=("n",),
    function_names=Pool(
        train=(
            "prime_stat",
            "primes_upto",
            "range_primes",
            "prime_query",
            "primes_in_range",
            "prime_info",
        ),
        heldout=("prime_measure", "primes_between", "prime_figure"),
    ),
    argument_names=Pool(train=(("n",), ("limit",), ("hi",)), heldout=(("upper",), ("m",))),
    variants=Pool(
        train=(
            _prime_variant(
                "count",
                (
                    "returns how many primes p satisfy {L} <= p <= `{n}`",
                    "counts the prime numbers from {L} up to `{n}`",
                ),
                (),
            ),
            _prime_variant(
                "sum",
                (
                    "returns the sum of all primes p with {L} <= p <= `{n}`",
                    "adds up the prime numbers from {L} to `{n}`",
                ),
                (),
            ),
        ),
        heldout=(
            _prime_variant("count", (), ("gives the number of primes in the closed range [{L}, `{n}`]",)),
            _prime_variant(
                "square_sum", (), ("returns the sum of p * p over the primes p with {L} <= p <= `{n}`",)
            ),
        ),
    ),
    constants=Pool(
        train=tuple({"L": v} for v in (1, 2, 10, 20, 50, 100)),
        heldout=tuple({"L": v} for v in (30, 40, 70)),
    ),
    small_inputs=lambda rng, variant, c: _counts(rng, (0, 1, 2, 13, 100), 3, 300, 2),
    stress_inputs=lambda variant, c: [(30_000,)],
    example_input=lambda variant, c: (c["L"] + 20,),
    hint="`{n}` can be up to 10**6.",
)

# ------------------------------------------------------------------------------------- recurrence


def _term(coefficient: int, name: str) -> str:
    return name if coefficient == 1 else f"{coefficient}*{name}"


LINEAR_RECURRENCE = Family(
    name="linear_recurrence",
    difficulty="medium",
    roles=("n",),
    function_names=Pool(
        train=("nth_term", "sequence_value", "recurrence", "term_at", "seq_term", "compute_term"),
        heldout=("value_of_term", "recur_value", "series_term"),
    ),
    argument_names=Pool(train=(("n",), ("index",), ("i",)), heldout=(("k",), ("pos",))),
    variants=shared(
        Variant(
            key="term",
            descriptions=Pool(
                train=(
                    "returns f(`{n}`), where f(0) = {S0}, f(1) = {S1} and f(k) = ({rule}) mod {M} for k >= 2",
                    "returns term number `{n}` (starting from 0) of the sequence {S0}, {S1}, ... in which "
                    "every "
                    "later term is ({rule}) mod {M}",
                ),
                heldout=(
                    "gives element `{n}` of the sequence f with f(0) = {S0}, f(1) = {S1} and, from k = 2 on, "
                    "f(k) = ({rule}) % {M}",
                ),
            ),
            fast="""\
def $fn($n):
    a, b = $S0, $S1
    for _ in range($n):
        a, b = b, ($P * b + $Q * a) % $M
    return a
""",
            slow="""\
def $fn($n):
    if $n == 0:
        return $S0
    if $n == 1:
        return $S1
    return ($P * $fn($n - 1) + $Q * $fn($n - 2)) % $M
""",
        ),
    ),
    constants=Pool(
        train=tuple(
            {"P": p, "Q": q, "M": m, "S0": s0, "S1": s1}
            for p, q, m, (s0, s1) in itertools.product(
                (1, 2, 3), (1, 2, 3), (97, 1000, 1009, 10007), ((0, 1), (1, 1), (2, 1))
            )
        ),
        heldout=tuple(
            {"P": p, "Q": q, "M": m, "S0": s0, "S1": s1}
            for (p, q), m, (s0, s1) in itertools.product(
                ((4, 1), (1, 4), (5, 2)), (9973, 1_000_000_007), ((1, 2), (3, 1))
            )
        ),
    ),
    small_inputs=lambda rng, variant, c: _counts(rng, (0, 1, 2, 5), 3, 14, 2),
    stress_inputs=lambda variant, c: [(24,)],
    example_input=lambda variant, c: (4,),
    hint="`{n}` can be up to 30.",
    prompt_values=lambda c: {"rule": f"{_term(c['P'], 'f(k-1)')} + {_term(c['Q'], 'f(k-2)')}"},
)

FAMILIES = (ARITHMETIC_SERIES, MULTIPLES_SUM, PRIME_STATS, LINEAR_RECURRENCE)
