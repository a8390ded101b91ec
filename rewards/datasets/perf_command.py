"""``effirl data perf-inputs``: build (or search for) a dataset's perf inputs and print them per task.

    effirl data perf-inputs humanevalplus                      # from effirl's recipes, cached
    effirl data perf-inputs mbppplus --tasks Mbpp/2 Mbpp/3     # a few tasks
    effirl data perf-inputs humanevalplus --search --write-recipes new.json   # search again

Prints, per task: whether the reference reached the floor, its cost over the perf inputs (CPU ms,
min of 3 sandbox runs), and each input's size, how it was made and what it alone cost.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rewards.datasets.input_growth import describe
from rewards.datasets.perf_inputs import (
    PerfInputs,
    PerfSettings,
    derive_perf_inputs,
    load_recipes,
    perf_problem,
    recipes_path,
    save_recipes,
)
from rewards.user_error import UserError, one_line

RELEASES = ("humanevalplus", "mbppplus")


def perf_inputs_command(
    dataset: str,
    *,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    search: bool = False,
    write_recipes: str | None = None,
    floor_ms: float | None = None,
    workers: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Build and print ``dataset``'s perf inputs; returns the exit status. A dataset that cannot be
    loaded or an unknown task id is a :class:`rewards.user_error.UserError` (one line, status 2).

    search: search for the inputs again instead of building them from effirl's recipes.
    write_recipes: write the recipes of the result to this file (what ``perf_recipes/`` holds).
    """
    from rewards.datasets import load_tasks
    from sandbox import Sandbox, SandboxConfig

    out = out or sys.stdout
    options: dict[str, Any] = {"perf_tests": False} if dataset in RELEASES else {}
    try:
        loaded = load_tasks(dataset, limit=None if tasks else limit, **options)
    except UserError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{dataset}: {one_line(exc)}") from exc
    if tasks:
        by_id = {t.id: t for t in loaded}
        unknown = [t for t in tasks if t not in by_id]
        if unknown:
            raise UserError(f"{dataset} has no task(s) {', '.join(unknown)}")
        loaded = [by_id[t] for t in tasks]
    usable = [t for t in loaded if t.reference and t.entry_point and t.function_tests]
    settings = PerfSettings() if floor_ms is None else PerfSettings(floor_ms=floor_ms)
    recipes = {} if search or dataset not in RELEASES else load_recipes(recipes_path(dataset))
    config = SandboxConfig(timeout_s=120.0, **({} if workers is None else {"workers": workers}))
    from tqdm.auto import tqdm

    from rewards.datasets.perf_cache import PerfInputCache

    results: list[PerfInputs] = []
    with Sandbox(config) as box, tqdm(total=len(usable), desc=dataset, unit="task") as bar:
        # A few tasks at a time, keeping only what is printed: all inputs at once take gigabytes.
        for start in range(0, len(usable), 32):
            found = derive_perf_inputs(
                [perf_problem(t) for t in usable[start : start + 32]],
                sandbox=box,
                settings=settings,
                recipes=recipes,
                cache=PerfInputCache(),
                progress=True,
            )
            results += [_summary(r) for r in found]
            bar.update(len(found))
    print_table(results, settings, out)
    if write_recipes:
        path = save_recipes(write_recipes, results, settings)
        print(f"recipes of {len(results)} tasks written to {path}", file=out)
    skipped = len(loaded) - len(usable)
    if skipped:
        print(f"{skipped} task(s) lack a reference, entry point or function tests: no perf inputs", file=out)
    return 0


def _summary(found: PerfInputs) -> PerfInputs:
    """``found`` with each input replaced by its size description and the outputs dropped."""
    sizes: list[tuple[Any, ...]] = [(describe(args),) for args in found.inputs]
    return dataclasses.replace(found, inputs=sizes, outputs=[None] * len(sizes))


def print_table(results: Sequence[PerfInputs], settings: PerfSettings, out: TextIO) -> None:
    """One block per task (inputs as size descriptions, see ``_summary``), then a summary naming the
    tasks below the floor."""
    width = max((len(r.name) for r in results), default=4)
    for r in results:
        cost = "   n/a" if r.reference_cost_ns is None else f"{r.reference_cost_ns / 1e6:6.1f}"
        mark = "ok " if r.reached_floor else "low"
        print(f"{r.name.ljust(width)}  {mark}  reference {cost} ms  {r.note}".rstrip(), file=out)
        for args, entry, cost_ns in zip(r.inputs, r.recipe, r.costs_ns):
            factor = f"{entry.factor}" if entry.factor < 10**7 else f"~{float(entry.factor):.0e}"
            how = f"{entry.growth} x{factor}" if entry.growth else "plus input"
            print(f"{'':{width}}    {cost_ns / 1e6:7.2f} ms  {args[0]}  ({how})", file=out)
    low = [r.name for r in results if not r.reached_floor]
    print(
        f"{len(results) - len(low)} of {len(results)} tasks reach the floor of {settings.floor_ms:g} ms"
        + (f"; below it: {', '.join(low)}" if low else ""),
        file=out,
    )
