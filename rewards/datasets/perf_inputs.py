"""Performance-exercising inputs for tasks that come with a reference solution and small test inputs.

Cost measured on correctness tests is mostly noise: on small inputs a quadratic and a linear solution
cost about the same. EvalPerf's answer is to measure on inputs chosen to exercise performance, and
this module derives them for HumanEval+, MBPP+ or any task with a reference and example inputs:

1. **Profile** the reference on every seed input (the plus inputs), each call timed by its own
   thread CPU clock inside the sandbox, after the task's input contract (EvalPlus's ``contract``
   assertions) accepted it. The reference is the dataset's code, trusted to time itself; candidates
   never are (their cost always comes from the kernel).
2. **Seeds**: the ``seeds`` most expensive distinct inputs (EvalPerf's selection).
3. **Grow** each seed in each way of :data:`rewards.datasets.input_growth.GROWTHS` (longer lists and
   strings, larger ints, bigger dicts, within the shapes the task's own inputs have), factor 2, 4,
   8, ... (faster when the cost stops rising), until the best ``count`` inputs of distinct seeds
   together cost at least ``floor_ms``. A growth stops when the contract rejects the input or the
   reference fails on it, a call runs past ``max_input_cost_s``, the input passes
   ``max_input_bytes``, or after ``max_rounds``.
4. **Keep** the most expensive version of each of the best ``count`` seeds and run the reference
   on them once more, as any run (cost from the kernel), for their expected outputs and the
   reference cost. Where nothing grows (fixed-size inputs), the most expensive plus inputs are kept.

What a search chose is a :class:`RecipeEntry` per input (seed, growth, factor), from which the input
follows deterministically (seeded). The search itself depends on timing, so on another machine it
could stop at another size; the recipes of HumanEval+ and MBPP+ ship with effirl (``perf_recipes/``),
so every machine builds the same inputs from them. Inputs, outputs and costs are cached like
expected outputs, under ``$EFFIRL_CACHE/perf_inputs/`` (see :mod:`rewards.datasets.perf_cache`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewards.datasets.input_growth import GENERATOR_VERSION, GROWTHS, Shape, infer_shapes
from rewards.datasets.perf_search import (
    DEFAULT_FLOOR_MS,
    PerfProblem,
    PerfSettings,
    RecipeEntry,
    Search,
    build_input,
    input_digest,
    profile_job,
    profiled_costs,
    profiler_code,
)
from rewards.tasks import Task
from sandbox.jobs import FunctionJob
from sandbox.types import FunctionTest, Status

if TYPE_CHECKING:
    from rewards.datasets.perf_cache import PerfInputCache
    from sandbox import Sandbox

__all__ = [
    "DEFAULT_FLOOR_MS",
    "PerfInputs",
    "PerfProblem",
    "PerfSettings",
    "RecipeEntry",
    "add_perf_tests",
    "derive_perf_inputs",
    "load_recipes",
    "perf_problem",
    "recipes_path",
    "save_recipes",
    "with_perf_tests",
]
log = logging.getLogger(__name__)
RECIPES_DIR = Path(__file__).with_name("perf_recipes")
RECIPES_FORMAT = "effirl-perf-recipes/1"
CHUNK = 16  # tasks searched and checked together


@dataclass
class PerfInputs:
    """The perf inputs of one task, their reference outputs and what they cost the reference.

    costs_ns: the reference's own CPU time per input (from the search's profile).
    reference_cost_ns: the sandbox's cost of the reference over all of them (min of 3 runs).
    reached_floor: whether ``reference_cost_ns`` reached the floor.
    note: why the floor was not reached, or where the recipe came from.
    """

    name: str
    inputs: list[tuple[Any, ...]]
    outputs: list[Any]
    recipe: list[RecipeEntry]
    costs_ns: list[int]
    reference_cost_ns: int | None
    reached_floor: bool
    note: str = ""
    cached: bool = field(default=False, compare=False)


# ------------------------------------------------------------------------------------------ driver


def derive_perf_inputs(
    problems: Sequence[PerfProblem],
    *,
    sandbox: Sandbox | None = None,
    settings: PerfSettings | None = None,
    recipes: dict[str, list[RecipeEntry]] | None = None,
    cache: PerfInputCache | None = None,
    progress: bool = False,
    on_result: Callable[[PerfInputs], None] | None = None,
) -> list[PerfInputs]:
    """Perf inputs for each problem: from ``cache``, else built from its recipe, else searched for.

    A recipe whose seed digests do not match the problem's inputs (another release) is ignored
    with a warning. With ``sandbox=None`` a default sandbox is started when something must run.
    ``on_result`` is called with each result as it is ready (cached ones first).
    """
    settings = settings or PerfSettings()
    plans = [_valid_recipe(p, (recipes or {}).get(p.name)) for p in problems]
    results: list[PerfInputs | None] = [
        cache.get(p, plan_text(plan, settings)) if cache is not None else None
        for p, plan in zip(problems, plans)
    ]
    for result in results:
        if result is not None and on_result is not None:
            on_result(result)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        if sandbox is None:
            from rewards.datasets.expected_outputs import DEFAULT_TIMEOUT_S
            from sandbox import Sandbox, SandboxConfig

            with Sandbox(SandboxConfig(timeout_s=DEFAULT_TIMEOUT_S)) as box:
                _compute(box, problems, plans, missing, results, settings, cache, progress, on_result)
        else:
            _compute(sandbox, problems, plans, missing, results, settings, cache, progress, on_result)
    return [r for r in results if r is not None]


def plan_text(recipe: list[RecipeEntry] | None, settings: PerfSettings) -> str:
    """What decides a problem's perf inputs besides the problem: its recipe, else the search settings."""
    if recipe is not None:
        return json.dumps({"recipe": [asdict(e) for e in recipe]}, sort_keys=True)
    return json.dumps({"search": asdict(settings)}, sort_keys=True)


def _valid_recipe(problem: PerfProblem, recipe: list[RecipeEntry] | None) -> list[RecipeEntry] | None:
    if recipe is None:
        return None
    names = {g.name for g in GROWTHS} | {""}
    for entry in recipe:
        if (
            not 0 <= entry.seed < len(problem.seed_inputs)
            or entry.growth not in names
            or input_digest(problem.seed_inputs[entry.seed]) != entry.digest
        ):
            log.warning(
                "%s: its perf-input recipe does not match this release's inputs; searching", problem.name
            )
            return None
    return list(recipe)


def _compute(
    box: Any,
    problems: Sequence[PerfProblem],
    plans: list[list[RecipeEntry] | None],
    missing: Sequence[int],
    results: list[PerfInputs | None],
    settings: PerfSettings,
    cache: PerfInputCache | None,
    progress: bool,
    on_result: Callable[[PerfInputs], None] | None,
) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(missing), desc="perf inputs", unit="task", disable=not progress, leave=False)
    # A chunk at a time: grown inputs take far more memory as Python objects than as JSON, so only
    # one chunk's candidates are alive at once, while a chunk still keeps every worker busy.
    for start in range(0, len(missing), CHUNK):
        _compute_chunk(
            box, problems, plans, missing[start : start + CHUNK], results, settings, cache, on_result, bar
        )
    bar.close()


def _compute_chunk(
    box: Any,
    problems: Sequence[PerfProblem],
    plans: list[list[RecipeEntry] | None],
    missing: Sequence[int],
    results: list[PerfInputs | None],
    settings: PerfSettings,
    cache: PerfInputCache | None,
    on_result: Callable[[PerfInputs], None] | None,
    bar: Any,
) -> None:
    searched = [i for i in missing if plans[i] is None]
    searches = {i: Search(problems[i], settings) for i in searched}
    if searches:
        _search(box, searches, bar)
    shapes = {i: searches[i].shapes if i in searches else infer_shapes(problems[i].inputs) for i in missing}
    chosen: dict[int, list[RecipeEntry]] = {}
    notes: dict[int, str] = {}
    for i in missing:
        if i in searches:
            search = searches[i]
            chosen[i] = [_with_digest(problems[i], entry) for entry, _ in search.selection()]
            notes[i] = search.note
        else:
            chosen[i] = plans[i] or []
            notes[i] = "from effirl's recipe"
    contracts = {i: searches[i].contract if i in searches else problems[i].contract for i in missing}
    finals = _verify(box, problems, missing, chosen, shapes, contracts, settings)
    for i in missing:
        inputs, outputs, recipe, costs, reference_cost = finals[i]
        floor_ns = settings.floor_ms * 1e6
        reached = reference_cost is not None and reference_cost >= floor_ns
        note = notes[i]
        if not reached and not note:
            note = _why_short(searches.get(i), recipe)
        result = PerfInputs(problems[i].name, inputs, outputs, recipe, costs, reference_cost, reached, note)
        results[i] = result
        if cache is not None:
            cache.put(problems[i], plan_text(plans[i], settings), result)
        if on_result is not None:
            on_result(result)
        bar.update(1)


def _search(box: Any, searches: dict[int, Search], bar: Any) -> None:
    pending = list(searches.values())
    for _attempt in range(2):  # a second profile without the contract where it rejected everything
        ran = box.run_many([s.profile_job() for s in pending])
        pending = [
            s for s, r in zip(pending, ran) if not s.start(profiled_costs(r, len(s.problem.seed_inputs)))
        ]
        if not pending:
            break
    for search in pending:
        search.start([None] * len(search.problem.seed_inputs))
    active = [s for s in searches.values() if not s.finished]
    while active:
        bar.set_description(f"perf inputs (growing {len(active)}, round {max(s.rounds for s in active) + 1})")
        work = [(s, job, members, keys) for s in active for job, members, keys in s.round_jobs()]
        for (search, _, members, keys), result in zip(work, box.run_many([w[1] for w in work])):
            search.update(members, keys, result)
        active = [s for s in active if not s.finished]
    bar.set_description("perf inputs")


def _with_digest(problem: PerfProblem, entry: RecipeEntry) -> RecipeEntry:
    return RecipeEntry(entry.seed, entry.growth, entry.factor, input_digest(problem.seed_inputs[entry.seed]))


def _why_short(search: Search | None, recipe: list[RecipeEntry]) -> str:
    if search is None:
        return "below the floor on this machine"
    if not recipe:
        return "the reference fails on every plus input"
    if not any(c.grew for c in search.chains):
        return "no input grows (fixed-size inputs, or growth rejected)"
    if search.rounds >= search.settings.max_rounds:
        return "stopped after the most rounds"
    return "growth stopped (size or time cap, contract, or reference failure)"


def _verify(
    box: Any,
    problems: Sequence[PerfProblem],
    missing: Sequence[int],
    chosen: dict[int, list[RecipeEntry]],
    shapes: dict[int, list[Shape]],
    contracts: dict[int, str],
    settings: PerfSettings,
) -> dict[int, tuple[list[tuple[Any, ...]], list[Any], list[RecipeEntry], list[int], int | None]]:
    """Run the reference on the chosen inputs: profiled costs, outputs and the sandbox's cost.

    Inputs the contract or the reference rejects now (a recipe made elsewhere, other limits) are
    dropped; where none is left, the task gets no perf inputs.
    """
    inputs = {i: [build_input(problems[i], shapes[i], e) for e in chosen[i]] for i in missing}
    profiled = box.run_many(
        [
            profile_job(
                profiler_code(
                    problems[i].code, problems[i].entry_point, contracts[i], settings.max_input_cost_s
                ),
                inputs[i],
                settings,
            )
            for i in missing
        ]
    )
    keep: dict[int, list[int]] = {}
    costs: dict[int, list[int]] = {}
    for i, result in zip(missing, profiled):
        values = profiled_costs(result, len(inputs[i]))
        keep[i] = [k for k, v in enumerate(values) if v is not None]
        costs[i] = [int(values[k]) for k in keep[i]]  # type: ignore[arg-type]
    runs = box.run_many(
        [
            FunctionJob(
                problems[i].code,
                problems[i].entry_point,
                tuple(FunctionTest(tuple(inputs[i][k])) for k in keep[i]),
                timeout_s=len(keep[i]) * settings.max_input_cost_s * 3 + 10,
                repeats=3,
                want_outputs=True,
            )
            for i in missing
        ]
    )
    out = {}
    for i, run in zip(missing, runs):
        ok = run.status is Status.PASSED and run.outputs is not None and len(run.outputs) == len(keep[i])
        if not ok or not keep[i]:
            out[i] = ([], [], [], [], None)
            continue
        assert run.outputs is not None and run.cost is not None
        out[i] = (
            [inputs[i][k] for k in keep[i]],
            list(run.outputs),
            [chosen[i][k] for k in keep[i]],
            costs[i],
            run.cost.cpu_ns,
        )
    return out


# ----------------------------------------------------------------------------------------- recipes


def recipes_path(dataset: str) -> Path:
    return RECIPES_DIR / f"{dataset}.json"


def load_recipes(path: str | Path) -> dict[str, list[RecipeEntry]]:
    """Recipes from a file written by :func:`save_recipes`; {} when absent or of another generator."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != RECIPES_FORMAT or data.get("generator") != GENERATOR_VERSION:
        log.warning("%s is for another perf-input generator; its tasks are searched again", path)
        return {}
    return {
        task: [RecipeEntry(int(s), str(g), int(f), str(d)) for s, g, f, d in entries]
        for task, entries in data["tasks"].items()
    }


def save_recipes(path: str | Path, results: Sequence[PerfInputs], settings: PerfSettings) -> Path:
    """Write the recipes of ``results`` (one task per line, so changes read well in a diff)."""
    path = Path(path)
    head = {"format": RECIPES_FORMAT, "generator": GENERATOR_VERSION, "floor_ms": settings.floor_ms}
    lines = [
        f"    {json.dumps(r.name)}: {json.dumps([[e.seed, e.growth, e.factor, e.digest] for e in r.recipe])}"
        for r in results
    ]
    text = json.dumps(head)[:-1] + ', "tasks": {\n' + ",\n".join(lines) + "\n}}\n"
    json.loads(text)  # what we write must read back
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- tasks


def perf_problem(task: Task) -> PerfProblem:
    """The search problem of a task with a reference and function tests: its extra (plus) inputs are
    the seeds, or all of its inputs when it has no extra ones."""
    if not task.reference or not task.entry_point or not task.function_tests:
        raise ValueError(
            f"task {task.id!r} needs a reference, an entry point and function tests for perf inputs"
        )
    inputs = tuple(tuple(t.args) for t in task.function_tests)
    n_base = task.n_base_tests or 0
    seeds = inputs[n_base:] if 0 < n_base < len(inputs) else inputs
    contract = task.metadata.get("contract") or ""
    return PerfProblem(task.id, task.reference, task.entry_point, str(contract), inputs, seeds)


def with_perf_tests(task: Task, found: PerfInputs, settings: PerfSettings) -> Task:
    """``task`` with ``found`` as its perf tests, and what they are in ``metadata["perf"]``."""
    from rewards.datasets.input_growth import describe

    tests = tuple(FunctionTest(tuple(args), value) for args, value in zip(found.inputs, found.outputs))
    cost = found.reference_cost_ns
    metadata = {
        **task.metadata,
        "perf": {
            "sizes": [describe(args) for args in found.inputs],
            "reference_cost_ms": None if cost is None else round(cost / 1e6, 3),
            "floor_ms": settings.floor_ms,
            "reached_floor": found.reached_floor,
            "note": found.note,
        },
    }
    return dataclasses.replace(task, perf_tests=tests, metadata=metadata)


def add_perf_tests(
    tasks: Sequence[Task],
    *,
    sandbox: Sandbox | None = None,
    settings: PerfSettings | None = None,
    recipes: dict[str, list[RecipeEntry]] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> list[Task]:
    """``tasks`` with perf tests derived for those with a reference, an entry point and function
    tests (see the module docstring); the others, and tasks whose reference fails on every
    candidate input, are returned as they are. Cached under ``cache_dir`` (default
    ``$EFFIRL_CACHE/perf_inputs``)."""
    from rewards.datasets.perf_cache import PerfInputCache

    settings = settings or PerfSettings()
    eligible = [i for i, t in enumerate(tasks) if t.reference and t.entry_point and t.function_tests]
    problems = [perf_problem(tasks[i]) for i in eligible]
    found = derive_perf_inputs(
        problems,
        sandbox=sandbox,
        settings=settings,
        recipes=recipes,
        cache=PerfInputCache(cache_dir),
        progress=progress,
    )
    out = list(tasks)
    for i, result in zip(eligible, found):
        if result.inputs:
            out[i] = with_perf_tests(tasks[i], result, settings)
    return out
