"""What HumanEval+ and MBPP+ share: their release files and how a record becomes a :class:`Task`.

A release file (``HumanEvalPlus.jsonl.gz``, ``MbppPlus.jsonl.gz``) holds one JSON object per task
with ``task_id``, ``prompt``, ``entry_point``, ``canonical_solution``, ``base_input`` and
``plus_input`` (lists of argument lists), ``atol`` and ``contract``, plus an assertion test
(``test`` for HumanEval+, ``assertion`` for MBPP+). It gives inputs but no outputs: the expected
outputs come from running the reference in the sandbox (:mod:`rewards.datasets.expected_outputs`).
Perf tests (performance-exercising inputs grown from the plus inputs, with their expected outputs)
come from :mod:`rewards.datasets.perf_inputs`, built from the recipes effirl ships for each release.

The files are read with :mod:`json`, not through ``datasets``/Arrow: the argument lists mix types
from row to row and hold integers beyond 64 bits, which an Arrow column cannot represent.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewards.datasets.expected_outputs import (
    DEFAULT_TIMEOUT_S,
    ExpectedOutputCache,
    ReferenceCall,
    ReferenceOutputs,
    compute_expected_outputs,
)
from rewards.tasks import Task
from sandbox.types import FunctionTest

if TYPE_CHECKING:
    from sandbox import Sandbox

log = logging.getLogger(__name__)
DATA_DIR_ENV = "EFFIRL_DATA_DIR"
REQUIRED_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input")


@dataclass(frozen=True)
class ReleaseSource:
    """Where one EvalPlus dataset lives and how its records become tasks."""

    name: str
    subdir: str
    filename: str
    url: str
    reference: Callable[[dict[str, Any]], str]
    test_script: Callable[[dict[str, Any]], str | None]
    # (task_id, JSON argument lists) -> argument tuples with the Python types the reference expects
    inputs: Callable[[str, list[Any]], list[tuple[Any, ...]]]
    # entry point -> how EvalPlus grades it beyond equality (kept in metadata["oracle"])
    special_oracles: dict[str, str]


def default_release_path(source: ReleaseSource) -> Path:
    """``$EFFIRL_DATA_DIR/<subdir>/<filename>``; raises with the fix when the variable is unset."""
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        raise FileNotFoundError(
            f"no {source.name} release file given: set {DATA_DIR_ENV} to a folder holding "
            f"{source.subdir}/{source.filename} (`effirl data download {source.name}` fetches it there; "
            f"or from {source.url}) or pass path=..."
        )
    return Path(root).expanduser() / source.subdir / source.filename


def read_release(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The JSON records of a ``.jsonl`` or ``.jsonl.gz`` release file, checked for required fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"release file {path} does not exist; `effirl data download humanevalplus|mbppplus` fetches "
            f"the EvalPlus release files into ${DATA_DIR_ENV}"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON object: {exc}") from None
            absent = [k for k in REQUIRED_FIELDS if k not in record]
            if absent:
                raise ValueError(
                    f"{path}:{number}: missing field(s) {absent}; is this an EvalPlus release file?"
                )
            yield record


def load_release_tasks(
    source: ReleaseSource,
    path: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    sandbox: Sandbox | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    perf_tests: bool = True,
) -> list[Task]:
    """Tasks of an EvalPlus release file with expected outputs from the (cached) reference runs.

    With ``perf_tests`` each task also gets perf tests (cached like the expected outputs, under
    ``cache_dir/perf_inputs`` when ``cache_dir`` is given).
    """
    if split not in (None, "test"):
        raise ValueError(f"{source.name} has only a 'test' split, got split={split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    release = Path(path) if path is not None else default_release_path(source)
    records = []
    for record in read_release(release):
        if limit is not None and len(records) >= limit:
            break
        records.append(record)
    base_inputs = [source.inputs(r["task_id"], r["base_input"]) for r in records]
    plus_inputs = [source.inputs(r["task_id"], r["plus_input"]) for r in records]
    calls = [
        ReferenceCall(r["task_id"], source.reference(r), r["entry_point"], tuple(base + plus))
        for r, base, plus in zip(records, base_inputs, plus_inputs)
    ]
    outputs = compute_expected_outputs(
        sandbox, calls, cache=ExpectedOutputCache(cache_dir), timeout_s=timeout_s, allow_failed_inputs=True
    )
    tasks = [
        _task(source, record, call, expected, len(base))
        for record, call, expected, base in zip(records, calls, outputs, base_inputs)
    ]
    if not perf_tests:
        return tasks
    from rewards.datasets.perf_inputs import add_perf_tests, load_recipes, recipes_path

    return add_perf_tests(
        tasks,
        sandbox=sandbox,
        recipes=load_recipes(recipes_path(source.name)),
        cache_dir=None if cache_dir is None else Path(cache_dir) / "perf_inputs",
    )


def _task(
    source: ReleaseSource,
    record: dict[str, Any],
    call: ReferenceCall,
    expected: ReferenceOutputs,
    n_base: int,
) -> Task:
    tests = tuple(
        FunctionTest(args, value)
        for index, (args, value) in enumerate(zip(call.inputs, expected.values))
        if index not in expected.failed
    )
    metadata: dict[str, Any] = {
        "source": source.name,
        "split": "test",
        "canonical_solution": record["canonical_solution"],
        "contract": record.get("contract") or "",
    }
    if expected.failed:
        # The reference cannot produce these within the sandbox's limits, so no candidate is tested on them.
        metadata["dropped_inputs"] = {index: reason for index, reason in sorted(expected.failed.items())}
        log.warning(
            "%s: dropped %d input(s) on which the reference fails: %s",
            record["task_id"],
            len(expected.failed),
            "; ".join(f"#{i}: {r}" for i, r in sorted(expected.failed.items())[:3]),
        )
    oracle = source.special_oracles.get(record["entry_point"])
    if oracle is not None:
        metadata["oracle"] = oracle
    atol = record.get("atol") or None
    return Task(
        id=record["task_id"],
        prompt=record["prompt"],
        entry_point=record["entry_point"],
        function_tests=tests,
        n_base_tests=n_base - sum(1 for i in expected.failed if i < n_base),
        test_script=source.test_script(record),
        references=(call.code,),
        atol=None if atol is None else float(atol),
        metadata=metadata,
    )


def argument_tuples(task_id: str, inputs: list[Any]) -> list[tuple[Any, ...]]:
    """Each JSON argument list as a tuple of arguments, types as JSON gave them."""
    result = []
    for index, args in enumerate(inputs):
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"{task_id}: input {index} is a {type(args).__name__}, not a list of arguments")
        result.append(tuple(args))
    return result
