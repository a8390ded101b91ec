"""Generate synthetic efficiency tasks: the family registry and :func:`synthetic_tasks`."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from typing import Any

from rewards.synthetic import (
    arithmetic,
    counting,
    dynamic,
    numbers,
    ordering,
    scanning,
    searching,
    windows,
)
from rewards.synthetic.family import (
    EXAMPLE_FORMATS,
    FRAMES,
    SIDES,
    Family,
    Rendering,
    compile_function,
    parameters_key,
    render_prompt,
    render_source,
)
from rewards.tasks import Task
from sandbox.types import FunctionTest

# ``heldout`` re-phrases the training families; ``heldout_families`` holds whole families out.
SPLITS = ("train", "heldout", "heldout_families")
FAMILIES: dict[str, Family] = {}
# Whole families held out of training: only the ``heldout_families`` split has them, so neither
# ``train`` nor the in-family ``heldout`` split (nor a warm start on training tasks) ever shows them.
HELDOUT_FAMILIES: set[str] = set()
# Tasks per family when ``n`` is not given.
DEFAULT_PER_FAMILY = {"train": 200, "heldout": 40, "heldout_families": 40}
# Consecutive draws that only repeat earlier prompts before a family counts as exhausted.
_EXHAUSTED_AFTER = 300


def register_family(family: Family, *, replace: bool = False, heldout: bool = False) -> Family:
    """Add ``family`` to the registry (``replace`` to redefine a name).

    ``heldout``: a family held out of training, whose tasks only the ``heldout_families`` split has.
    """
    if family.name in FAMILIES and not replace:
        raise ValueError(f"a synthetic family named {family.name!r} exists; pass replace=True to redefine it")
    FAMILIES[family.name] = family
    if heldout:
        HELDOUT_FAMILIES.add(family.name)
    else:
        HELDOUT_FAMILIES.discard(family.name)
    return family


_HELDOUT_NAMES = (
    "square_count",
    "set_bits",
    "divisible_count",
    "triangle_count",
    "next_greater",
    "interval_overlap",
    "longest_distinct_run",
    "lcs_length",
    "components",
)
for _family in (
    *arithmetic.FAMILIES,
    *searching.FAMILIES,
    *counting.FAMILIES,
    *numbers.FAMILIES,
    *ordering.FAMILIES,
    *scanning.FAMILIES,
    *windows.FAMILIES,
    *dynamic.FAMILIES,
):
    register_family(_family, heldout=_family.name in _HELDOUT_NAMES)


def family_names(split: str | None = None) -> list[str]:
    """Every family's name, or those that ``split`` draws from (held-out families only in
    ``heldout_families``; the others in ``train`` and ``heldout``)."""
    if split is None:
        return list(FAMILIES)
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; choose one of {SPLITS}")
    held = split == "heldout_families"
    return [name for name in FAMILIES if (name in HELDOUT_FAMILIES) == held]


def synthetic_tasks(
    split: str = "train", n: int | None = None, seed: int = 0, families: Sequence[str] | None = None
) -> list[Task]:
    """Deterministic synthetic tasks of ``split`` (``"train"``, ``"heldout"`` or ``"heldout_families"``).

    Families take turns, so any ``n`` gives a balanced mix; without ``n`` each family contributes
    up to ``DEFAULT_PER_FAMILY[split]`` tasks. The same arguments always give the same tasks, and a
    family's k-th task does not depend on ``n``. ``train`` and ``heldout`` draw from the training
    families only; ``heldout`` tasks use function names, argument names, phrasings and (per
    family) variants or constants that train tasks never use. ``heldout_families`` draws only from
    the families in ``HELDOUT_FAMILIES``, which no other split ever shows.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; choose one of {SPLITS}")
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chosen = _choose(families, split)
    per_family = DEFAULT_PER_FAMILY[split] if n is None else n
    memo: dict[tuple[str, str], list[FunctionTest]] = {}
    streams = [_family_tasks(f, split, seed, per_family, memo) for f in chosen]
    tasks: list[Task] = []
    while streams and (n is None or len(tasks) < n):
        for stream in list(streams):
            task = next(stream, None)
            if task is None:
                streams.remove(stream)
                continue
            tasks.append(task)
            if n is not None and len(tasks) >= n:
                break
    return tasks


def _choose(families: Sequence[str] | None, split: str) -> list[Family]:
    allowed = family_names(split)
    if families is None:
        return [FAMILIES[name] for name in allowed]
    if isinstance(families, str):
        families = [families]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown synthetic families {unknown}; known: {', '.join(FAMILIES)}")
    elsewhere = [name for name in families if name not in allowed]
    if elsewhere:
        where = "heldout_families" if split != "heldout_families" else "train and heldout"
        raise ValueError(
            f"synthetic families {elsewhere} are not in split {split!r}; they belong to split(s) {where}"
        )
    return [FAMILIES[name] for name in dict.fromkeys(families)]


def _family_tasks(
    family: Family, split: str, seed: int, limit: int, memo: dict[tuple[str, str], list[FunctionTest]]
) -> Iterator[Task]:
    # A held-out family's tasks come from both sides of its pools, each task from one side, so
    # its names, variants and phrasings stay as consistent as a training family's.
    named = [(side, f"{split}:{side}") for side in SIDES] if split == "heldout_families" else [(split, split)]
    streams = [
        _renderings(family, side, random.Random(f"effirl-synthetic:{seed}:{family.name}:{name}"))
        for side, name in named
    ]
    index = 0
    while streams and index < limit:
        for stream in list(streams):
            drawn = next(stream, None)
            if drawn is None:
                streams.remove(stream)
                continue
            yield _build(family, split, index, *drawn, memo)
            index += 1
            if index >= limit:
                return


def _renderings(family: Family, side: str, rng: random.Random) -> Iterator[tuple[Rendering, random.Random]]:
    """Distinct choices from ``side`` of the family's pools, until they run out."""
    pools = (
        family.function_names.of(side),
        family.argument_names.of(side),
        family.variants.of(side),
        family.constants.of(side),
        FRAMES.of(side),
        EXAMPLE_FORMATS.of(side),
    )
    if not all(pools):
        return
    seen: set[tuple[Any, ...]] = set()
    misses = 0
    while misses < _EXHAUSTED_AFTER:
        name, arguments, variant, constants, frame, example_format = (rng.choice(p) for p in pools)
        descriptions = variant.descriptions.of(side)
        description = rng.choice(descriptions) if descriptions else None
        # The prompt is a function of these choices, so equal choices would repeat a prompt.
        key = (
            name,
            arguments,
            variant.key,
            parameters_key(variant.key, constants),
            description,
            frame,
            example_format,
        )
        if description is None or key in seen:
            misses += 1
            continue
        misses = 0
        seen.add(key)
        yield Rendering(name, arguments, variant, constants, description, frame, example_format), rng


def _build(
    family: Family,
    split: str,
    index: int,
    choice: Rendering,
    rng: random.Random,
    memo: dict[tuple[str, str], list[FunctionTest]],
) -> Task:
    names = (choice.function_name, choice.argument_names, choice.constants)
    fast_source = render_source(family, choice.variant.fast, *names)
    slow_source = render_source(family, choice.variant.slow, *names)
    fast = compile_function(fast_source, choice.function_name)
    small = [
        FunctionTest(args, _call(fast, args))
        for args in family.small_inputs(rng, choice.variant.key, choice.constants)
    ]
    stress = _stress_tests(family, choice, fast, memo)
    example = family.example_input(choice.variant.key, choice.constants)
    params = parameters_key(choice.variant.key, choice.constants)
    return Task(
        id=f"synthetic/{family.name}/{split}/{index}",
        prompt=render_prompt(family, choice, example, _call(fast, example)),
        entry_point=choice.function_name,
        function_tests=tuple(small),
        n_base_tests=len(small),
        perf_tests=tuple(stress),
        references=(fast_source,),
        metadata={
            "source": "synthetic",
            "family": family.name,
            "difficulty": family.difficulty,
            "split": split,
            "variant": choice.variant.key,
            "constants": dict(choice.constants),
            "params": params,
            "slow_reference": slow_source,
            "n_stress_tests": len(stress),
        },
    )


def _call(function: Any, args: tuple[Any, ...]) -> Any:
    # A reference may mutate its arguments; the stored test inputs must stay as generated.
    return function(*(_fresh(a) for a in args))


_IMMUTABLE = (int, float, str, bytes, bool, type(None))


def _fresh(value: Any) -> Any:
    """``copy.deepcopy(value)``, with a fast path for the big flat lists of stress inputs."""
    if isinstance(value, _IMMUTABLE):
        return value
    if type(value) is list and all(type(v) in _IMMUTABLE for v in value):
        return list(value)
    return copy.deepcopy(value)


def _stress_tests(
    family: Family, choice: Rendering, fast: Any, memo: dict[tuple[str, str], list[FunctionTest]]
) -> list[FunctionTest]:
    # Stress inputs depend only on the family's parameters, so tasks sharing them share the (big) inputs.
    key = (family.name, parameters_key(choice.variant.key, choice.constants))
    if key not in memo:
        inputs = family.stress_inputs(choice.variant.key, choice.constants)
        memo[key] = [FunctionTest(args, _call(fast, args)) for args in inputs]
    return memo[key]
