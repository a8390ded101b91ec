"""Generate synthetic efficiency tasks: the family registry and :func:`synthetic_tasks`."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence
from typing import Any

from rewards.synthetic import arithmetic, counting, searching
from rewards.synthetic.family import (
    EXAMPLE_FORMATS,
    FRAMES,
    SPLITS,
    Family,
    Rendering,
    compile_function,
    parameters_key,
    render_prompt,
    render_source,
)
from rewards.tasks import Task
from sandbox.types import FunctionTest

FAMILIES: dict[str, Family] = {}
# Tasks per family when ``n`` is not given.
DEFAULT_PER_FAMILY = {"train": 200, "heldout": 40}
# Consecutive draws that only repeat earlier prompts before a family counts as exhausted.
_EXHAUSTED_AFTER = 300


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` to the registry (``replace`` to redefine a name)."""
    if family.name in FAMILIES and not replace:
        raise ValueError(f"a synthetic family named {family.name!r} exists; pass replace=True to redefine it")
    FAMILIES[family.name] = family
    return family


for _family in (*arithmetic.FAMILIES, *searching.FAMILIES, *counting.FAMILIES):
    register_family(_family)


def family_names() -> list[str]:
    return list(FAMILIES)


def synthetic_tasks(
    split: str = "train", n: int | None = None, seed: int = 0, families: Sequence[str] | None = None
) -> list[Task]:
    """Deterministic synthetic tasks of ``split`` (``"train"`` or ``"heldout"``).

    Families take turns, so any ``n`` gives a balanced mix; without ``n`` each family contributes
    up to ``DEFAULT_PER_FAMILY[split]`` tasks. The same arguments always give the same tasks, and a
    family's k-th task does not depend on ``n``. Held-out tasks use function names, argument names,
    phrasings and (per family) variants or constants that train tasks never use.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; choose one of {SPLITS}")
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chosen = _choose(families)
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


def _choose(families: Sequence[str] | None) -> list[Family]:
    if families is None:
        return list(FAMILIES.values())
    if isinstance(families, str):
        families = [families]
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown synthetic families {unknown}; known: {', '.join(FAMILIES)}")
    return [FAMILIES[name] for name in dict.fromkeys(families)]


def _family_tasks(
    family: Family, split: str, seed: int, limit: int, memo: dict[tuple[str, str], list[FunctionTest]]
) -> Iterator[Task]:
    rng = random.Random(f"effirl-synthetic:{seed}:{family.name}:{split}")
    pools = (
        family.function_names.of(split),
        family.argument_names.of(split),
        family.variants.of(split),
        family.constants.of(split),
        FRAMES.of(split),
        EXAMPLE_FORMATS.of(split),
    )
    if not all(pools):
        return
    seen: set[tuple[Any, ...]] = set()
    misses = 0
    while len(seen) < limit and misses < _EXHAUSTED_AFTER:
        name, arguments, variant, constants, frame, example_format = (rng.choice(p) for p in pools)
        descriptions = variant.descriptions.of(split)
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
        choice = Rendering(name, arguments, variant, constants, description, frame, example_format)
        yield _build(family, split, len(seen) - 1, choice, rng, memo)


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
    return function(*copy.deepcopy(args))


def _stress_tests(
    family: Family, choice: Rendering, fast: Any, memo: dict[tuple[str, str], list[FunctionTest]]
) -> list[FunctionTest]:
    # Stress inputs depend only on the family's parameters, so tasks sharing them share the (big) inputs.
    key = (family.name, parameters_key(choice.variant.key, choice.constants))
    if key not in memo:
        inputs = family.stress_inputs(choice.variant.key, choice.constants)
        memo[key] = [FunctionTest(args, _call(fast, args)) for args in inputs]
    return memo[key]
