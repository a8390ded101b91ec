"""MBPP+ (EvalPlus): 378 curated MBPP problems with many more test inputs.

JSON has no tuples, sets or complex numbers, so the release file stores them as lists and strings;
which arguments must be turned back into which type is known per task (the table below follows
EvalPlus's own loader). Expected outputs come from running ``canonical_solution`` in the sandbox;
``test_script`` is the dataset's ``assertion`` block.

Three tasks (``check_str``, ``text_match_three``, ``text_starta_endb``) have references returning
``re.Match`` objects, which EvalPlus grades only on "is not None". The sandbox compares builtin
values only, so their reference is wrapped to return that boolean and the tests expect booleans:
a candidate returning the match object itself fails their function tests (their ``test_script``,
which asserts truthiness, still accepts it). Tasks EvalPlus compares as sets carry
``metadata["oracle"] = "set_equal"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rewards.datasets.evalplus import ReleaseSource, argument_tuples, load_release_tasks
from rewards.datasets.expected_outputs import DEFAULT_TIMEOUT_S
from rewards.tasks import Task

if TYPE_CHECKING:
    from sandbox import Sandbox

Args = tuple[Any, ...]


def _tuple_each(args: Args) -> Args:
    return tuple(tuple(a) for a in args)


def _tuples_inside_each(args: Args) -> Args:
    return tuple([tuple(x) for x in a] for a in args)


def _first_tuples_inside(args: Args) -> Args:
    return ([tuple(x) for x in args[0]], *args[1:])


def _second_tuple(args: Args) -> Args:
    return (args[0], tuple(args[1]), *args[2:])


def _first_tuple(args: Args) -> Args:
    return (tuple(args[0]), *args[1:])


def _tuple_of_tuples_each(args: Args) -> Args:
    return tuple(tuple(tuple(x) for x in a) for a in args)


def _first_tuple_with_tuple_items(args: Args) -> Args:
    return (tuple(tuple(x) if isinstance(x, list) else x for x in args[0]), *args[1:])


def _first_sets(args: Args) -> Args:
    # EvalPlus turns an empty inner list into {} (an empty dict), not set(); kept for parity.
    return ([set(x) if isinstance(x, list) and x else {} for x in args[0]],)


def _float_complex(args: Args) -> Args:
    return (float(args[0]), complex(args[1]))


def _complex(args: Args) -> Args:
    return (complex(args[0]),)


def _dict_of_tuples(args: Args) -> Args:
    return ({k: tuple(v) for k, v in args[0].items()}, *args[1:])


def _deep_tuples(value: Any) -> Any:
    return tuple(_deep_tuples(v) for v in value) if isinstance(value, list) else value


def _all_deep_tuples(args: Args) -> Args:
    return tuple(_deep_tuples(a) for a in args)


def _table() -> dict[int, Callable[[Args], Args]]:
    groups: list[tuple[Callable[[Args], Args], tuple[int, ...]]] = [
        (
            _tuple_each,
            (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630),
        ),
        (_tuple_each, (726, 740, 744, 809)),
        (_tuples_inside_each, (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780)),
        (_first_tuples_inside, (75, 413, 444, 753)),
        (_second_tuple, (106, 750)),
        (_first_sets, (115,)),
        (_float_complex, (124,)),
        (_first_tuple, (250, 405, 446, 617, 720, 763, 808, 307)),
        (_tuple_of_tuples_each, (259, 401, 445)),
        (_first_tuple_with_tuple_items, (278,)),
        (_dict_of_tuples, (722,)),
        (_complex, (252,)),
        (_all_deep_tuples, (580, 615, 791)),
    ]
    return {number: restore for restore, numbers in groups for number in numbers}


TYPE_RESTORERS = _table()


def restore_types(task_id: str, inputs: list[Any]) -> list[Args]:
    """The argument tuples of ``task_id`` with tuples, sets and complex numbers restored."""
    tuples = argument_tuples(task_id, inputs)
    try:
        number = int(task_id.rsplit("/", 1)[-1])
    except ValueError:
        raise ValueError(f"MBPP+ task id {task_id!r} does not end in a task number") from None
    restore = TYPE_RESTORERS.get(number)
    if restore is None:
        return tuples
    try:
        return [restore(args) for args in tuples]
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"{task_id}: inputs do not have the shape its type table expects: {exc}") from None


NOT_NONE_ORACLE = ("check_str", "text_match_three", "text_starta_endb")
SET_EQUAL_ORACLE = (
    "similar_elements",
    "find_char_long",
    "common_in_nested_lists",
    "extract_singly",
    "larg_nnum",
    "intersection_array",
    "find_dissimilar",
    "Diff",
)


def _reference(record: dict[str, Any]) -> str:
    code = record["canonical_solution"]
    name = record["entry_point"]
    if name not in NOT_NONE_ORACLE:
        return code
    return (
        f"{code}\n\n_match_{name} = {name}\n\n\n"
        f"def {name}(*args):\n    return _match_{name}(*args) is not None\n"
    )


def _test_script(record: dict[str, Any]) -> str | None:
    assertion = record.get("assertion") or None
    if assertion and "math." in assertion and "import math" not in assertion:
        # Some assertions call math.isclose; EvalPlus's harness has math imported, a bare script does not.
        return "import math\n" + assertion
    return assertion


MBPPPLUS = ReleaseSource(
    name="mbppplus",
    subdir="mbppplus",
    filename="MbppPlus.jsonl.gz",
    url="https://github.com/evalplus/mbppplus_release/releases",
    reference=_reference,
    test_script=_test_script,
    inputs=restore_types,
    special_oracles={
        **dict.fromkeys(NOT_NONE_ORACLE, "not_none"),
        **dict.fromkeys(SET_EQUAL_ORACLE, "set_equal"),
    },
)


def load_mbppplus(
    path: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    sandbox: Sandbox | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    perf_tests: bool = True,
) -> list[Task]:
    """MBPP+ tasks from ``path`` (default ``$EFFIRL_DATA_DIR/mbppplus/MbppPlus.jsonl.gz``).

    ``sandbox`` runs the references whose outputs are not cached yet (a default one is started
    when None and needed); ``cache_dir`` overrides the expected-output cache folder. With
    ``perf_tests`` (default) each task gets performance-exercising tests too
    (:mod:`rewards.datasets.perf_inputs`).
    """
    return load_release_tasks(
        MBPPPLUS,
        path,
        split=split,
        limit=limit,
        sandbox=sandbox,
        cache_dir=cache_dir,
        timeout_s=timeout_s,
        perf_tests=perf_tests,
    )
