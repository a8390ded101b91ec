"""What a synthetic task family is made of, and how one of its tasks is rendered.

A family is a parameterised problem with a fast and a slow (naive) algorithm. A task picks, from the
pools of its split, a function name, argument names, a variant (what exactly is computed), numeric
constants, a description phrasing, a sentence frame and an example format. Every pool has a
``train`` and a ``heldout`` side, and each family keeps at least its variants or its constants
disjoint between the two, so held-out tasks are new problems in new words, not re-rolled train tasks.
A whole family held out of training (split ``heldout_families``) renders tasks from both sides,
each task from one: there the family itself is what the model has never seen.

Source templates use :class:`string.Template` placeholders: ``$fn`` for the function name, one per
argument role (``$nums``), and one per constant (``$K``). Description templates use
:meth:`str.format` fields: ``{nums}`` for an argument's name, ``{K}`` for a constant, plus whatever
the family's ``prompt_values`` derives from the constants.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
# The two sides of every pool: what training tasks use, and what the held-out re-phrasing uses.
SIDES = ("train", "heldout")
DIFFICULTIES = ("easy", "medium", "hard")
Constants = Mapping[str, Any]


@dataclass(frozen=True)
class Pool(Generic[T]):
    """The values one prompt dimension may take in each split."""

    train: tuple[T, ...]
    heldout: tuple[T, ...]

    def of(self, side: str) -> tuple[T, ...]:
        if side not in SIDES:
            raise ValueError(f"unknown pool side {side!r}; choose one of {SIDES}")
        return self.train if side == "train" else self.heldout


def shared(*values: T) -> Pool[T]:
    """A pool with the same values on both sides (for dimensions another pool keeps disjoint)."""
    return Pool(tuple(values), tuple(values))


@dataclass(frozen=True)
class Variant:
    """One exact problem of a family: its descriptions and its fast and slow solutions."""

    key: str
    descriptions: Pool[str]
    fast: str
    slow: str


@dataclass(frozen=True)
class Family:
    """A parameterised problem with a fast and a slow algorithm.

    roles: the argument roles in call order (the placeholders of sources and descriptions).
    small_inputs: (rng, variant key, constants) -> small argument tuples for correctness tests.
    stress_inputs: (variant key, constants) -> argument tuples big enough that the slow solution
        costs at least 5x the fast one; deterministic, so tasks with equal parameters share them.
        They become the task's ``perf_tests``: cost is measured on them alone, after the small
        correctness tests pass.
    example_input: (variant key, constants) -> the argument tuple shown in the prompt.
    prompt_values: constants -> extra format fields for descriptions (e.g. the first terms).
    hint: a sentence on input sizes, with the same format fields as descriptions.
    cost_in_builtins: the slow or the fast solution does its main work inside C builtins
        (``x in list``, ``sum`` of a slice, ``str.join``, ``heapq``), which a count of Python line
        events does not see, so only CPU time compares the two (tests and scripts check it there).
    """

    name: str
    difficulty: str
    roles: tuple[str, ...]
    function_names: Pool[str]
    argument_names: Pool[tuple[str, ...]]
    variants: Pool[Variant]
    constants: Pool[dict[str, Any]]
    small_inputs: Callable[[random.Random, str, Constants], list[tuple[Any, ...]]]
    stress_inputs: Callable[[str, Constants], list[tuple[Any, ...]]]
    example_input: Callable[[str, Constants], tuple[Any, ...]]
    hint: str = ""
    prompt_values: Callable[[Constants], dict[str, Any]] = field(default=lambda constants: {})
    cost_in_builtins: bool = False

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"family {self.name}: difficulty must be one of {DIFFICULTIES}")
        for names in (*self.argument_names.train, *self.argument_names.heldout):
            if len(names) != len(self.roles):
                raise ValueError(
                    f"family {self.name}: argument names {names} do not match roles {self.roles}"
                )
        train_keys = {v.key for v in self.variants.train}
        heldout_keys = {v.key for v in self.variants.heldout}
        train_constants = {_freeze(c) for c in self.constants.train}
        heldout_constants = {_freeze(c) for c in self.constants.heldout}
        if train_keys & heldout_keys and train_constants & heldout_constants:
            raise ValueError(
                f"family {self.name}: train and heldout share variants {sorted(train_keys & heldout_keys)} "
                "and constants; make one of the two pools disjoint"
            )


@functools.cache
def stress_ints(seed: str, size: int, low: int, high: int) -> list[int]:
    """``size`` random integers in [low, high] drawn from ``seed``: one list, shared by every task
    whose stress input it is (generation copies arguments before calling a reference)."""
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(size)]


def _freeze(constants: Constants) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(constants.items()))


def parameters_key(variant: str, constants: Constants) -> str:
    """A stable text key for (variant, constants): what makes two tasks the same problem."""
    inner = ", ".join(f"{k}={v!r}" for k, v in sorted(constants.items()))
    return f"{variant}({inner})"


# Sentence frames around a description; ``{signature}`` is e.g. ``sum_to(n)``.
FRAMES = Pool(
    train=(
        "Write a Python function `{signature}` that {description}.",
        "Implement `{signature}`, which {description}.",
        "Define a Python function `{signature}` that {description}.",
        "Create a function `{signature}` in Python that {description}.",
    ),
    heldout=(
        "Your task: code `{signature}` so that it {description}.",
        "Provide a Python function `{signature}`; it {description}.",
        "We need `{signature}` in Python: a function that {description}.",
    ),
)
EXAMPLE_FORMATS = Pool(
    train=("Example: {call} == {result}.", "E.g. {call} returns {result}."),
    heldout=("For instance, {call} gives {result}.", "Sample: {call} -> {result}."),
)


@dataclass(frozen=True)
class Rendering:
    """The concrete choices of one task."""

    function_name: str
    argument_names: tuple[str, ...]
    variant: Variant
    constants: Constants
    description: str
    frame: str
    example_format: str


def render_source(
    family: Family, template: str, function_name: str, argument_names: tuple[str, ...], constants: Constants
) -> str:
    """A solution's source with the task's names and constants filled in."""
    fields = {"fn": function_name, **dict(zip(family.roles, argument_names)), **constants}
    try:
        return string.Template(template).substitute(fields)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"family {family.name}: bad source template ({exc})") from None


def compile_function(source: str, function_name: str) -> Callable[..., Any]:
    """Our own generated reference code, executed in-process (trusted: it is written here)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<synthetic {function_name}>", "exec"), namespace)
    return namespace[function_name]


def render_prompt(
    family: Family, choice: Rendering, example_args: tuple[Any, ...], example_result: Any
) -> str:
    """The prompt: frame around the description, then the size hint and a one-line example."""
    fields = {
        "fn": choice.function_name,
        **{role: name for role, name in zip(family.roles, choice.argument_names)},
        **choice.constants,
        **family.prompt_values(choice.constants),
    }
    signature = f"{choice.function_name}({', '.join(choice.argument_names)})"
    description = choice.description.format(**fields)
    parts = [choice.frame.format(signature=signature, description=description)]
    if family.hint:
        parts.append(family.hint.format(**fields))
    call = f"{choice.function_name}({', '.join(repr(a) for a in example_args)})"
    parts.append(choice.example_format.format(call=call, result=repr(example_result)))
    return " ".join(parts)
