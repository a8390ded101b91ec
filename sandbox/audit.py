"""`effirl sandbox audit`: run the known attacks on this machine's sandbox and say which are contained.

A policy optimises against whatever its candidate code can touch, and containers, GPU pods and other
kernels differ from the machine the sandbox was tested on. The audit runs the adversarial programs of
each attack class (:mod:`sandbox.attacks`) for real and judges each from the plain verdict fields
alone (status, error kind, exit status, each test's error, costs), so that the same attacks and the
same predicates judge a local :class:`~sandbox.Sandbox` (:mod:`sandbox.local_audit`) and a reward
service over HTTP (``rewards.audit``, which maps its JSON answers onto :class:`Observation`).

An attack is data: the jobs it submits (:class:`FunctionStep`, :class:`ProgramStep`,
:class:`ScriptStep`, or a :class:`Parallel` group of them) and a predicate on what came back that
returns a :class:`Finding`: contained, NOT CONTAINED, weak by design, untrusted measure, inconclusive
(the attack's own positive control failed, so a "contained" would prove nothing), not applicable or
not measurable, with a one-line reason.

    report = audit_local("namespaces", "worker")  # or rewards.audit.audit_service(url)
    print(render(report)); sys.exit(report.exit_code)
"""

from __future__ import annotations

import concurrent.futures
import enum
import json
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


class Outcome(str, enum.Enum):
    CONTAINED = "contained"
    NOT_CONTAINED = "NOT CONTAINED"
    WEAK_BY_DESIGN = "weak by design"
    UNTRUSTED_MEASURE = "untrusted measure"
    INCONCLUSIVE = "inconclusive"
    NOT_APPLICABLE = "not applicable"
    NOT_MEASURABLE = "not measurable"


# Outcomes that make the audit fail (exit status 1): an attack that worked, or one whose positive
# control failed, so that nothing was shown. Weak-by-design levels and untrusted measures are opt-ins
# that say so in their results; they do not fail it.
FAILING = frozenset({Outcome.NOT_CONTAINED, Outcome.INCONCLUSIVE})


@dataclass(frozen=True)
class Finding:
    outcome: Outcome
    reason: str


def contained(reason: str) -> Finding:
    return Finding(Outcome.CONTAINED, reason)


def not_contained(reason: str) -> Finding:
    return Finding(Outcome.NOT_CONTAINED, reason)


def inconclusive(reason: str) -> Finding:
    return Finding(Outcome.INCONCLUSIVE, reason)


@dataclass(frozen=True)
class AttackClass:
    key: str
    number: int
    title: str


CLASSES = (
    AttackClass("memory", 1, "forged pass from another job's memory"),
    AttackClass("script", 2, "forged pass through an assertion-script verdict"),
    AttackClass("repeats", 3, "forged cost by telling repeats apart"),
    AttackClass("python_events", 4, "cost counted inside the candidate"),
    AttackClass("verdict_kind", 5, "forged verdict kind"),
    AttackClass("records", 6, "malformed records"),
    AttackClass("exit_status", 7, "program exit status from text"),
    AttackClass("hash_flood", 8, "quadratic decoding"),
    AttackClass("cache_growth", 9, "what candidates print kept by the service"),
    AttackClass("event_loop", 10, "service event loop stalled"),
    AttackClass("json_depth", 11, "deeply nested request bodies"),
    AttackClass("uids", 12, "two sandboxes sharing a uid"),
    AttackClass("escapes", 13, "classic escapes"),
)
CLASS_KEYS = tuple(c.key for c in CLASSES)

# ------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class FunctionStep:
    """Call ``entry_point`` on each test's args; ``tests`` are ``(args, expected)`` pairs.

    reference: the code is judged as a reference solution: its outputs are the expected values and
    every repeat must return the same ones (locally ``want_outputs``; over HTTP the submission is its
    own ``reference``).
    """

    code: str
    entry_point: str
    tests: tuple[tuple[tuple[Any, ...], Any], ...]
    repeats: int = 1
    timeout_s: float | None = None
    reference: bool = False


@dataclass(frozen=True)
class ProgramStep:
    """Run ``code`` as a program on ``stdin`` (over HTTP: ``/run_code``, which has no repeats)."""

    code: str
    stdin: str = ""
    expected_stdout: str = ""
    repeats: int = 1
    timeout_s: float | None = None


@dataclass(frozen=True)
class ScriptStep:
    """Run ``code`` and then an assertion script in its process (the weakest trust level)."""

    code: str
    test_script: str
    entry_point: str | None = None


@dataclass(frozen=True)
class Parallel:
    """Steps submitted together (to reach every worker); observations come back in order."""

    steps: tuple[FunctionStep | ProgramStep | ScriptStep, ...]


Step = FunctionStep | ProgramStep | ScriptStep


@dataclass(frozen=True)
class Observation:
    """The plain verdict fields of one step, whether it ran here or behind a reward service.

    test_errors: one entry per test, None where it passed. refused: the service's message when it
    refused the request (4xx). script_marked: the service said the verdict is of script trust.
    elapsed_s: wall time from submitting to the verdict, seen by the auditor.
    """

    status: str
    error_kind: str | None = None
    error: str | None = None
    exit_code: int | None = None
    passed: int = 0
    total: int = 0
    test_errors: tuple[str | None, ...] = ()
    cpu_ns: int | None = None
    python_events: int | None = None
    cost_measure: str | None = None
    cost_trusted: bool | None = None
    elapsed_s: float = 0.0
    refused: str | None = None
    script_marked: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def failed_test(self, index: int) -> bool:
        return index >= len(self.test_errors) or self.test_errors[index] is not None

    def describe(self) -> str:
        """``status/error_kind: error`` on one line, for reasons."""
        if self.refused is not None:
            return f"refused: {one_line(self.refused)}"
        kind = f"/{self.error_kind}" if self.error_kind else ""
        error = f": {one_line(self.error)}" if self.error else ""
        return f"{self.status}{kind}{error}"


def repeat_failed(observation: Observation) -> int | None:
    """The number of the repeat (2 or more) that failed a submission, if its error says so."""
    match = re.search(r"\brun (\d+)\b", observation.error or "")
    number = int(match.group(1)) if match else None
    return number if number is not None and number >= 2 else None


def one_line(text: str | None, limit: int = 140) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ------------------------------------------------------------------------------------ attacks


@dataclass(frozen=True)
class Context:
    """What the attacks of one audit may know about the target (built once per audit)."""

    remote: bool
    isolation: str
    scope: str | None
    workers: int
    nonce: str
    root: bool = False
    count_python_events: bool = False
    host_address: str | None = None  # a TCP address that listens on the target's host
    host_port: int | None = None
    host_pid: int | None = None  # a process of the host (local only)
    host_paths: tuple[str, ...] = ()  # host files a candidate must not read
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attack:
    """One adversarial program and the predicate that judges it.

    steps: the jobs to submit, built per audit (nonces, secrets); judge: the predicate on what came
        back. custom: instead of both, a function that runs the attack itself.
    where: ``both``, ``local`` (needs the host's view, e.g. uids; ``local_because`` says why) or
        ``service`` (an attack on the reward service; its runner supplies ``custom``).
    exclusive: run alone, not beside other attacks (timing, or jobs that must reach every worker).
    refusal_ok: a service refusing one of its requests (4xx) is an answer the predicate judges;
        otherwise a refusal makes the attack inconclusive.
    """

    cls: str
    name: str
    tries: str
    steps: Callable[[Context], Sequence[Step | Parallel]] | None = None
    judge: Callable[[Sequence[Observation], Context], Finding] | None = None
    where: str = "both"
    exclusive: bool = False
    custom: Callable[[Context], Finding] | None = None
    refusal_ok: bool = False
    local_because: str = "it needs the host's own view"


# ---------------------------------------------------------------------- writing attacks

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = (((1, 2), 3), ((5, 7), 12))
HEALTHY = FunctionStep(ADD, "add", ADD_TESTS)


def function(name: str, params: str, body: str) -> str:
    """Source of ``def name(params):`` with ``body`` (dedented) as its body."""
    return f"def {name}({params}):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


def record_writer(line: bytes, then: str = "while True:\n    pass", at_module: bool = False) -> str:
    """Code that writes ``line`` on the result channel (fd 3) once candidate code runs, then ``then``
    (in ``add(a, b)``, or at module level)."""
    write = f"import os\nview = memoryview({line!r})\nwhile view:\n    view = view[os.write(3, view):]\n"
    if at_module:
        return write + then + "\n"
    return function("add", "a, b", write + then)


def own_failure(what: str) -> Callable[[Sequence[Observation], Context], Finding]:
    """Judge ``[attack, ..., healthy]``: the attack is the candidate's own failure (never
    ``sandbox_error`` or ``syntax_error``, never a pass) and the next job still passes."""

    def judge(observations: Sequence[Observation], context: Context) -> Finding:
        attack, healthy = observations[0], observations[-1]
        if attack.status in ("sandbox_error", "syntax_error"):
            return not_contained(f"{what} became {attack.status}: {attack.describe()}")
        if attack.ok:
            return not_contained(f"{what} passed")
        if not healthy.ok:
            return not_contained(f"the next job failed after it: {healthy.describe()}")
        return contained(
            f"the candidate's own failure ({attack.status}/{attack.error_kind}); the next job passed"
        )

    return judge


@dataclass
class Result:
    cls: str
    name: str
    tries: str
    outcome: Outcome
    reason: str
    seconds: float


@dataclass
class Report:
    target: str
    isolation: str
    scope: str | None
    header: list[str]
    results: list[Result]
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if any(r.outcome in FAILING for r in self.results) else 0

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        titles = {c.key: c.title for c in CLASSES}
        return {
            "target": self.target,
            "isolation": self.isolation,
            "scope": self.scope,
            "header": self.header,
            "seconds": round(self.seconds, 2),
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "findings": [
                {
                    "class": r.cls,
                    "class_title": titles.get(r.cls, r.cls),
                    "attack": r.name,
                    "tries": r.tries,
                    "outcome": r.outcome.value,
                    "reason": r.reason,
                    "seconds": round(r.seconds, 2),
                }
                for r in self.results
            ],
        }


Executor = Callable[[Step], Observation]


def run_attacks(
    attacks: Sequence[Attack],
    execute: Executor,
    context: Context,
    *,
    parallel: int = 2,
    skip: Callable[[Attack], str | None] = lambda attack: None,
    progress: bool = False,
) -> list[Result]:
    """Run ``attacks`` (exclusive ones alone, first; the rest ``parallel`` at a time), in catalogue order.

    ``skip(attack)`` returns a reason when the attack does not apply to this target. An attack that
    raises is inconclusive: the audit itself never fails half-way.
    """
    results: dict[int, Result] = {}
    bar = _progress(len(attacks), progress)

    def one(index: int, attack: Attack) -> None:
        started = time.monotonic()
        why = skip(attack)
        if why is not None:
            finding = Finding(Outcome.NOT_APPLICABLE, why)
        else:
            finding = _attempt(attack, execute, context)
        results[index] = Result(
            attack.cls, attack.name, attack.tries, finding.outcome, one_line(finding.reason, 200),
            time.monotonic() - started,
        )  # fmt: skip
        if bar is not None:
            bar.update(1)

    order = list(enumerate(attacks))
    for index, attack in order:
        if attack.exclusive:
            one(index, attack)
    rest = [(i, a) for i, a in order if not a.exclusive]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(one, i, a) for i, a in rest]:
            future.result()
    if bar is not None:
        bar.close()
    return [results[i] for i in range(len(attacks))]


def _attempt(attack: Attack, execute: Executor, context: Context) -> Finding:
    try:
        if attack.custom is not None:
            return attack.custom(context)
        assert attack.steps is not None and attack.judge is not None
        observations: list[Observation] = []
        for item in attack.steps(context):
            if isinstance(item, Parallel):
                with concurrent.futures.ThreadPoolExecutor(max_workers=len(item.steps)) as pool:
                    observations += list(pool.map(execute, item.steps))
            else:
                observations.append(execute(item))
        refused = next((o for o in observations if o.refused is not None), None)
        if refused is not None and not attack.refusal_ok:
            return inconclusive(f"the service refused a request of this attack: {refused.refused}")
        return attack.judge(observations, context)
    except Exception as exc:  # the audit reports, it does not crash
        return inconclusive(f"the attack could not be run: {type(exc).__name__}: {exc}")


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="audit", unit="attack", leave=False, disable=None)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def select(attacks: Iterable[Attack], classes: Sequence[str] | None) -> list[Attack]:
    """The attacks of ``classes`` (all when None); an unknown class is a ValueError naming the known."""
    if classes:
        unknown = sorted(set(classes) - set(CLASS_KEYS))
        if unknown:
            raise ValueError(f"unknown attack class {unknown[0]!r}; known: {', '.join(CLASS_KEYS)}")
    return [a for a in attacks if not classes or a.cls in classes]


def render(report: Report) -> str:
    """The report as text: a header, a table per attack class, a summary line."""
    lines = [f"effirl sandbox audit of {report.target}", *report.header, ""]
    width = max((len(r.name) for r in report.results), default=10)
    for attack_class in CLASSES:
        rows = [r for r in report.results if r.cls == attack_class.key]
        if not rows:
            continue
        lines.append(f"{attack_class.number:>2}. {attack_class.title}")
        for row in rows:
            lines.append(f"    {row.outcome.value:<17} {row.name:<{width}}  {row.reason}")
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts().items(), key=_order))
    verdict = (
        "audit passed (nothing NOT CONTAINED or inconclusive)" if report.exit_code == 0 else "audit FAILED"
    )
    lines += ["", f"{verdict}: {counts} ({report.seconds:.1f} s)"]
    return "\n".join(lines)


def _order(item: tuple[str, int]) -> int:
    return [o.value for o in Outcome].index(item[0])


def write_json(report: Report, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report.to_dict(), f, indent=2)
        f.write("\n")
