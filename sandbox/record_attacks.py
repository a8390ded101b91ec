"""Attacks of `effirl sandbox audit` on the result channel: forged verdict kinds, malformed records,
records too costly to decode, and outputs chosen to collide in Python's hash.

The candidate shares its process with the harness, so it can write anything on fd 3; each attack
writes what the harness never would (or would, but at a cost) and checks that it stays the
candidate's own failure, decoded quickly, and that the next job still passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sandbox.audit import (
    ADD_TESTS,
    HEALTHY,
    Attack,
    Context,
    Finding,
    FunctionStep,
    Observation,
    ProgramStep,
    contained,
    not_contained,
    own_failure,
    record_writer,
)

# ------------------------------------------------------------------- 5, 6. forged or malformed records


def _record_attack(cls: str, name: str, tries: str, line: bytes, **options: object) -> Attack:
    code = record_writer(line, **options)  # type: ignore[arg-type]
    return Attack(
        cls,
        name,
        tries,
        steps=lambda context: [FunctionStep(code, "add", ADD_TESTS, timeout_s=5.0), HEALTHY],
        judge=own_failure(tries),
    )


def _json_line(record: object) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


WIDE_RECORD_MIB = 3
WIDE_RECORD = b'{"t":"out","i":0,"v":[' + b"{}," * (WIDE_RECORD_MIB * (1 << 20) // 3) + b"{}]}\n"
WIDE_TIMEOUT_S = 1.0


def _judge_wide(observations: Sequence[Observation], context: Context) -> Finding:
    run, healthy = observations
    overrun = run.elapsed_s - WIDE_TIMEOUT_S
    if run.status == "sandbox_error":
        return not_contained(f"a valid but costly record became sandbox_error: {run.describe()}")
    if not healthy.ok:
        return not_contained(f"the next job failed after it: {healthy.describe()}")
    if overrun > 1.0:
        at_limit = overrun * 32 / WIDE_RECORD_MIB
        return not_contained(
            f"a {WIDE_RECORD_MIB} MiB record of empty objects kept its run {overrun:.1f} s past a "
            f"{WIDE_TIMEOUT_S:g} s deadline (decoded whole); 32 MiB would take ~{at_limit:.0f} s and GBs of "
            "monitor memory, past the host's grace: sandbox_error"
        )
    return contained(
        f"the run ended {max(overrun, 0):.1f} s after its deadline ({run.status}); the next job passed"
    )


# --------------------------------------------------------------------------------- 8. hash flooding

MERSENNE = 2**61 - 1  # n and n + k * MERSENNE share Python's hash for every k


def _colliding(count: int) -> list[object]:
    return [
        {"__int__": format(k * MERSENNE, "x")} if k * MERSENNE >= 2**63 else k * MERSENNE
        for k in range(count)
    ]


def _flood_attack(name: str, value: object) -> Attack:
    line = _json_line({"t": "out", "i": 0, "v": value})
    code = record_writer(line, then="return 0").replace("def add(a, b)", "def f(x)")

    def judge(observations: Sequence[Observation], context: Context) -> Finding:
        run = observations[0]
        if run.status == "sandbox_error" or run.ok:
            return not_contained(f"an output of 100,000 colliding members ended as {run.describe()}")
        if run.elapsed_s > 10:
            return not_contained(f"decoding 100,000 colliding members took {run.elapsed_s:.1f} s")
        error = next((e for e in run.test_errors if e), run.error)
        return contained(f"refused in {run.elapsed_s:.1f} s: {error}")

    return Attack(
        "hash_flood",
        name,
        f"return a {name.replace('_', ' ')} of 100,000 members that collide in Python's hash",
        steps=lambda context: [FunctionStep(code, "f", (((1,), 0),), timeout_s=30.0)],
        judge=judge,
    )


def forged_record_attacks() -> list[Attack]:
    """Classes 5 (forged verdict kinds) and 6 (malformed records)."""
    return [
        _record_attack(
            "verdict_kind",
            "setup_error_at_import",
            "write a set-up error record from module code",
            b'{"t":"setup_error","msg":"the sandbox broke"}\n',
            at_module=True,
        ),
        _record_attack(
            "verdict_kind",
            "syntax_error_in_call",
            "write a syntax-error record from a test call",
            b'{"t":"fatal","kind":"syntax","msg":"forged"}\n',
        ),
        _record_attack(
            "verdict_kind",
            "done_then_answer",
            "write a done record, then answer",
            b'{"t":"done","events":null}\n',
            then="return a + b",
        ),
        Attack(
            "verdict_kind",
            "program_setup_error",
            "a program writes a set-up error record, prints the answer and exits 0",
            steps=lambda context: [
                ProgramStep(
                    record_writer(b'{"t":"setup_error","msg":"x"}\n', then="print('ok')", at_module=True),
                    "",
                    "ok\n",
                ),
                HEALTHY,
            ],
            judge=own_failure("a forged set-up error record in a program"),
        ),
        _record_attack(
            "records", "wrong_types", "records with wrong-typed fields", b'{"t":"out","i":"0","v":3}\n'
        ),
        _record_attack(
            "records",
            "deep_nesting",
            "a record nested 200,000 deep",
            b'{"t":"out","i":0,"v":' + b"[" * 200_000 + b"]" * 200_000 + b"}\n",
        ),
        _record_attack("records", "bare_nan", "a bare NaN in a record", b'{"t":"out","i":0,"v":NaN}\n'),
        _record_attack(
            "records",
            "huge_decimal",
            "a 6,000-digit decimal integer in a record",
            b'{"t":"out","i":0,"v":1' + b"0" * 6000 + b"}\n",
        ),
        _record_attack(
            "records", "not_json", "a line that is not JSON ('exit status 0')", b"exit status 0\n"
        ),
        _record_attack(
            "records",
            "giant_line",
            "a 40 MiB line without a newline",
            b"",
            then="chunk = b'x' * (1 << 20)\nfor _ in range(40):\n    os.write(3, chunk)\nreturn a + b",
        ),
        Attack(
            "records",
            "wide_record",
            f"a valid {WIDE_RECORD_MIB} MiB record of empty objects, then keep running",
            steps=lambda context: [
                FunctionStep(record_writer(WIDE_RECORD), "add", ADD_TESTS, timeout_s=WIDE_TIMEOUT_S),
                HEALTHY,
            ],
            judge=_judge_wide,
            exclusive=True,
        ),
    ]


def flood_attacks() -> list[Attack]:
    """Class 8: outputs whose members collide in Python's hash (quadratic to decode naively)."""
    return [
        _flood_attack("set", {"__set__": _colliding(100_000)}),
        _flood_attack("dict_keys", {"__dict__": [[k, 0] for k in _colliding(100_000)]}),
    ]
