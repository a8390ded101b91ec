"""The search for perf inputs: profile the reference on the seeds, grow them, keep the best.

See :mod:`rewards.datasets.perf_inputs` for what is searched for and why. This module holds the
data a search works on (settings, problems, recipe entries), the profiling harness that runs inside
the sandbox, and one problem's search state; the driver that runs many searches side by side on a
sandbox lives in ``perf_inputs``.
"""

from __future__ import annotations

import ast
import hashlib
import random
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewards.datasets.input_growth import (
    GENERATOR_VERSION,
    GROWTHS,
    Growth,
    Shape,
    grow_input,
    infer_shapes,
    kind_of,
)
from sandbox import codec
from sandbox.jobs import FunctionJob
from sandbox.types import ExecutionResult, FunctionTest, Status

# The reference must cost at least this much CPU time over a task's perf tests. On a shared 2-core
# machine the minimum of 5 sandbox runs of a loop varies by 2-16% at 0.15 ms and 1-5% from 6 ms on,
# where the machine's load, not the run's length, sets the noise (docs/datasets.md, "Perf tests").
DEFAULT_FLOOR_MS = 20.0
PROFILE_ENTRY = "_effirl_profile"
MIN_GAIN_NS = 100_000


@dataclass(frozen=True)
class PerfSettings:
    """How perf inputs are searched for.

    floor_ms: reference CPU time the kept inputs must reach together (the search's goal).
    count: inputs kept per task (each grown from a different seed where possible).
    seeds: most expensive plus inputs grown.
    max_input_cost_s: CPU time one reference call may take; a larger input is not kept.
    max_input_bytes: largest input kept, measured by the length of its repr (about its JSON size).
    max_rounds: doublings (or faster steps) tried per growth.
    """

    floor_ms: float = DEFAULT_FLOOR_MS
    count: int = 3
    seeds: int = 4
    max_input_cost_s: float = 1.0
    max_input_bytes: int = 1 << 20
    max_rounds: int = 20

    def __post_init__(self) -> None:
        if self.floor_ms <= 0 or self.count < 1 or self.seeds < 1 or self.max_rounds < 0:
            raise ValueError(f"perf settings need floor_ms > 0, count >= 1, seeds >= 1: {self}")


@dataclass(frozen=True)
class PerfProblem:
    """What the search needs of one task.

    name: the task id. code / entry_point: the reference and the function the inputs go to.
    contract: EvalPlus-style assertions on the arguments (empty: none).
    inputs: all of the task's inputs (their shapes bound the growth).
    seed_inputs: the inputs profiled and grown (the plus inputs).
    """

    name: str
    code: str
    entry_point: str
    contract: str
    inputs: tuple[tuple[Any, ...], ...]
    seed_inputs: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class RecipeEntry:
    """How one perf input is made: ``seed_inputs[seed]`` grown ``factor`` times by ``growth``
    (``""``: the seed as it is). ``digest`` identifies the seed input."""

    seed: int
    growth: str
    factor: int
    digest: str


def input_digest(args: Sequence[Any]) -> str:
    return hashlib.blake2b(codec.dumps(list(args)).encode(), digest_size=8).hexdigest()


def sketch(args: Sequence[Any]) -> tuple[int, str]:
    """About how large ``args`` is encoded (its repr's length; ``codec`` would take far longer on
    the inputs a search makes) and a key that tells two candidates apart within one process."""
    text = repr(args)
    return len(text), hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def build_input(problem: PerfProblem, shapes: Sequence[Shape], entry: RecipeEntry) -> tuple[Any, ...]:
    """The input ``entry`` describes: deterministic (the growth's random choices are seeded)."""
    seed = problem.seed_inputs[entry.seed]
    if not entry.growth or entry.factor <= 1:
        return tuple(seed)
    growth = next(g for g in GROWTHS if g.name == entry.growth)
    rng = random.Random(
        f"effirl-perf/{GENERATOR_VERSION}/{problem.name}/{entry.seed}/{entry.growth}/{entry.factor}"
    )
    return grow_input(seed, shapes, entry.factor, growth, rng)


# --------------------------------------------------------------------------------------- profiling

_PROFILER = """

import signal as _effirl_signal
import sys as _effirl_sys
import time as _effirl_time

# The sandbox's own encoder of return values (loaded in the child): encoding a big result is part
# of what a run costs, so it is timed with the call.
_effirl_encode = getattr(_effirl_sys.modules.get("sandbox.codec"), "to_jsonable", lambda value: value)


class _EffirlOverLimit(BaseException):
    pass


def _effirl_over_limit(signum, frame):
    raise _EffirlOverLimit("over the per-input CPU limit")


def _effirl_contract({parameters}):
{contract}


def {profile}(*args, **kwargs):
    _effirl_contract(*args, **kwargs)
    _effirl_signal.signal(_effirl_signal.SIGPROF, _effirl_over_limit)
    _effirl_signal.setitimer(_effirl_signal.ITIMER_PROF, {limit})
    try:
        start = _effirl_time.thread_time_ns()
        _effirl_encode({entry_point}(*args, **kwargs))
        return _effirl_time.thread_time_ns() - start
    finally:
        _effirl_signal.setitimer(_effirl_signal.ITIMER_PROF, 0)
"""


def profiler_code(code: str, entry_point: str, contract: str, limit_s: float) -> str:
    """``code`` plus a function that checks the contract, calls the entry point under a CPU-time
    limit, encodes its result as the sandbox would, and returns the thread CPU time of the call and
    the encoding in ns (the process clock is tick-granular inside the sandbox; the thread's is not)."""
    parameters = _parameters(code, entry_point)
    body = textwrap.dedent(contract).strip("\n")
    if parameters is None or not body.strip():
        parameters, body = "*args, **kwargs", "pass"
    return code + _PROFILER.format(
        parameters=parameters,
        contract=textwrap.indent(body, "    "),
        profile=PROFILE_ENTRY,
        limit=float(limit_s),
        entry_point=entry_point,
    )


def _parameters(code: str, entry_point: str) -> str | None:
    """The entry point's parameter list without annotations (the first top-level definition)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            arguments = node.args
            for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
                arg.annotation = None
            for arg in (arguments.vararg, arguments.kwarg):
                if arg is not None:
                    arg.annotation = None
            return ast.unparse(arguments)
    return None


def _compiles(code: str) -> bool:
    try:
        compile(code, "<profiler>", "exec", dont_inherit=True)  # parsed and compiled, never run here
    except (SyntaxError, ValueError):
        return False
    return True


def profile_job(code: str, candidates: Sequence[tuple[Any, ...]], settings: PerfSettings) -> FunctionJob:
    return FunctionJob(
        code,
        PROFILE_ENTRY,
        tuple(FunctionTest(tuple(args)) for args in candidates),
        timeout_s=len(candidates) * settings.max_input_cost_s * 2 + 10,
        repeats=1,
        want_outputs=True,
    )


def profiled_costs(result: ExecutionResult, count: int) -> list[int | None]:
    """Per candidate: its CPU ns, or None where the contract, the reference or the run failed."""
    if result.status in (Status.TIMEOUT, Status.SANDBOX_ERROR, Status.SYNTAX_ERROR):
        return [None] * count
    outputs = result.outputs or []
    if len(outputs) != count or len(result.tests) != count:
        return [None] * count
    return [
        value if test.passed and isinstance(value, int) and not isinstance(value, bool) else None
        for test, value in zip(result.tests, outputs)
    ]


# ------------------------------------------------------------------------------------------ search


@dataclass
class _Chain:
    """One seed grown one way: the factor reached, its cost, and the next step."""

    seed: int
    growth: Growth
    cost: int
    factor: int = 1
    step: int = 2
    stalls: int = 0
    last: str = ""
    size: int = 0
    next_size: int = 0
    done: bool = False
    grew: bool = False


class Search:
    """The search state of one problem (see the module docstring)."""

    def __init__(self, problem: PerfProblem, settings: PerfSettings) -> None:
        self.problem = problem
        self.settings = settings
        self.shapes = infer_shapes(problem.inputs or problem.seed_inputs)
        self.contract = problem.contract
        self.code = profiler_code(problem.code, problem.entry_point, self.contract, settings.max_input_cost_s)
        if not _compiles(self.code):
            self.contract = ""
            self.code = profiler_code(problem.code, problem.entry_point, "", settings.max_input_cost_s)
        self.seed_costs: list[int | None] = []
        self.seeds: list[int] = []
        self.chains: list[_Chain] = []
        self.rounds = 0
        self.note = ""

    def profile_job(self) -> FunctionJob:
        return profile_job(self.code, self.problem.seed_inputs, self.settings)

    def start(self, costs: list[int | None]) -> bool:
        """Take the profile; False asks for a profile without the contract (it rejected everything)."""
        if self.contract and self.problem.seed_inputs and not any(c is not None for c in costs):
            self.contract = ""
            self.note = "contract rejected every plus input; ignored"
            self.code = profiler_code(
                self.problem.code, self.problem.entry_point, "", self.settings.max_input_cost_s
            )
            return False
        self.seed_costs = costs
        # The most expensive inputs (EvalPerf's selection), but where plus inputs already reach
        # the per-input target, the cheapest of those: they need no growth and cost no more than
        # the floor asks.
        ranked = sorted(((c, i) for i, c in enumerate(costs) if c is not None), key=lambda item: -item[0])
        above = [item for item in ranked if item[0] >= self.target]
        if len(above) >= self.settings.count:
            ranked = above[::-1]
        seen: set[str] = set()
        for cost, index in ranked:
            size, text = sketch(self.problem.seed_inputs[index])
            if text in seen:
                continue
            seen.add(text)
            self.seeds.append(index)
            self.chains += [
                _Chain(index, g, cost, last=text, size=size, done=cost >= self.target)
                for g in self.growths(index)
            ]
            if len(seen) >= self.settings.seeds:
                break
        return True

    def growths(self, seed: int) -> list[Growth]:
        """The growths that change this seed: container growths only where it has a growable
        container, integer scaling only where it has a top-level int."""
        args = self.problem.seed_inputs[seed]
        shapes = self.shapes
        containers = any(
            i < len(shapes) and shapes[i].growable and kind_of(a) == shapes[i].kind
            for i, a in enumerate(args)
        )
        ints = any(
            i < len(shapes) and shapes[i].kind == "int" and kind_of(a) == "int" and a
            for i, a in enumerate(args)
        )
        return [g for g in GROWTHS if (not g.container or containers) and (not g.scale_ints or ints)]

    @property
    def target(self) -> float:
        """The cost each kept input should reach: the floor shared by ``count`` inputs, in ns."""
        return self.settings.floor_ms * 1e6 / self.settings.count

    @property
    def finished(self) -> bool:
        if self.rounds >= self.settings.max_rounds or all(c.done for c in self.chains):
            return True
        return sum(cost for _, cost in self.selection()) >= self.settings.floor_ms * 1e6

    def round_jobs(self) -> list[tuple[FunctionJob, list[tuple[_Chain, int, str]], list[str]]]:
        """One profile job per seed, for the next factor of each of its live chains: the job, the
        (chain, factor, candidate key) it answers, and the key of each of its tests."""
        self.rounds += 1
        by_seed: dict[int, list[tuple[_Chain, int, str, tuple[Any, ...]]]] = {}
        seed_bytes = {c.seed: c.size for c in self.chains if c.factor == 1}
        for chain in self.chains:
            if chain.done:
                continue
            factor = chain.factor * chain.step
            if (
                chain.growth.container
                and seed_bytes.get(chain.seed, 0) * factor > 2 * self.settings.max_input_bytes
            ):
                chain.done = True
                continue
            entry = RecipeEntry(chain.seed, chain.growth.name, factor, "")
            candidate = build_input(self.problem, self.shapes, entry)
            size, text = sketch(candidate)
            # No longer growing (a container at its length cap, whose sampled values still change)
            # or too large: this chain is done.
            stuck = size <= chain.size and not chain.growth.scale_ints
            if text == chain.last or stuck or size > self.settings.max_input_bytes:
                chain.done = True
                continue
            by_seed.setdefault(chain.seed, []).append((chain, factor, text, candidate))
            chain.next_size = size
        jobs = []
        for items in by_seed.values():
            unique: dict[str, tuple[Any, ...]] = {}
            for _, _, text, candidate in items:
                unique.setdefault(text, candidate)
            job = profile_job(self.code, list(unique.values()), self.settings)
            jobs.append((job, [(chain, factor, text) for chain, factor, text, _ in items], list(unique)))
        return jobs

    def update(
        self, members: list[tuple[_Chain, int, str]], keys: list[str], result: ExecutionResult
    ) -> None:
        costs = dict(zip(keys, profiled_costs(result, len(keys))))
        target = self.target
        for chain, factor, text in members:
            cost = costs.get(text)
            if cost is None:
                chain.done = True
                continue
            ratio = cost / max(chain.cost, 1)
            chain.stalls = chain.stalls + 1 if ratio < 1.05 else 0
            if ratio < 1.2:
                chain.step = min(chain.step * chain.step, 1 << 16)
            chain.factor, chain.cost, chain.last, chain.grew = factor, cost, text, True
            chain.size = chain.next_size
            if cost >= target or chain.stalls >= 4:
                chain.done = True

    def selection(self) -> list[tuple[RecipeEntry, int]]:
        """The most expensive version of each of the best ``count`` seeds, with its cost.

        A grown version counts only when it costs at least 20% and 0.1 ms more than the seed: an
        input that grew without costing more (an early exit, an O(1) reference) is not worth its size.
        """
        seed_cost = {i: c for i, c in enumerate(self.seed_costs) if c is not None}
        best = {i: (seed_cost[i], RecipeEntry(i, "", 1, "")) for i in self.seeds}
        for chain in self.chains:
            gain = chain.cost - best[chain.seed][0]
            if chain.grew and chain.cost > 1.2 * best[chain.seed][0] and gain > MIN_GAIN_NS:
                best[chain.seed] = (chain.cost, RecipeEntry(chain.seed, chain.growth.name, chain.factor, ""))
        ranked = sorted(best.values(), key=lambda item: -item[0])[: self.settings.count]
        return [(entry, cost) for cost, entry in ranked]
