"""Datasets in other layouts: a column mapping, or a known layout from the registry.

``load_tasks(source, columns=...)`` reads the rows of a Hub dataset, a dataset folder or a file
(.jsonl, .json, .parquet, .csv) and turns each into a :class:`Task`. ``columns`` is either

- the name of a layout in :data:`LAYOUTS` (``evalplus_humanevalplus``, ``evalplus_mbppplus``,
  ``effibench``, ``mercury``; registered in :mod:`rewards.datasets.layouts`), optionally followed by
  ``role=column`` pairs for a copy whose columns were renamed (``mercury,pretty_content=text``); or
- a mapping of effirl's roles to the dataset's columns (:data:`ROLES`), e.g.
  ``id=task_id,prompt=question,entry_point=fn_name,tests=test_cases``.

Hub ids of the known layouts are registered datasets, so ``load_tasks("evalplus/mbppplus")`` needs
no ``columns`` at all.

Every task gets tests whose verdict the host compares (function tests, or stdin/stdout program
tests). A row whose tests cannot be expressed that way is skipped, and the skips are logged with
their reasons; only a mapping that names ``test_script`` keeps assertion scripts, and those tasks
say so in their trust level (``Task.trust_level == "script"``), which reward scoring refuses unless
``reward.allow_script_tests`` is on.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import gzip
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewards.datasets.assertions import NotConvertible, function_tests_from_check
from rewards.datasets.expected_outputs import (
    DEFAULT_TIMEOUT_S,
    ExpectedOutputCache,
    ReferenceCall,
    compute_expected_outputs,
)
from rewards.tasks import Task
from sandbox.types import FunctionTest, ProgramTest

if TYPE_CHECKING:
    from sandbox import Sandbox

log = logging.getLogger(__name__)

ROLES: dict[str, str] = {
    "id": "task id (default: the row number)",
    "prompt": "the problem statement shown to the model (required)",
    "entry_point": "the function the tests call",
    "reference": "a known-correct solution, or a list of them (the first is the cost baseline)",
    "tests": "function tests: a list (or JSON text of one) of {input|args: [arguments], "
    "output|expected: value} objects, or {inputs: [...], outputs: [...]}",
    "program_tests": "stdin/stdout tests: a list of {input|stdin, output|stdout} objects, or "
    "{inputs: [...], outputs: [...]}",
    "asserts": "assert statements calling the entry point on literals (a list, or text): they become "
    "function tests; a row with any other assert is skipped",
    "test_script": "an assertion script kept as is (trust level `script`)",
}
TEST_ROLES = ("tests", "program_tests", "asserts", "test_script")
META_PREFIX = "meta."
FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".csv")


class RowSkipped(ValueError):
    """A row that cannot become a task with host-compared tests; the message says why."""


@dataclasses.dataclass(frozen=True)
class PendingOutputs:
    """A task whose expected outputs come from running its reference on ``call.inputs``."""

    task: Task
    call: ReferenceCall


Converted = Task | PendingOutputs
Converter = Callable[[Mapping[str, Any], str], Converted]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the rows of one published dataset become tasks.

    columns: role -> the dataset's column; the converter reads a row by role.
    convert: (row by role, task-id prefix) -> a Task (or PendingOutputs); raises RowSkipped.
    hub_ids: the Hub datasets published in this layout (registered as dataset names).
    default_split: the split read when none is asked for; evaluation_split: the one to evaluate on.
    heldout_splits: splits for evaluation only (training refuses them).
    optional: roles whose column may be missing from a dataset.
    """

    name: str
    columns: Mapping[str, str]
    convert: Converter
    hub_ids: tuple[str, ...] = ()
    default_split: str | None = None
    evaluation_split: str | None = None
    heldout_splits: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    description: str = ""


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> None:
    """Add ``layout`` to :data:`LAYOUTS` and register its Hub ids as datasets."""
    from rewards.datasets.registry import LOADERS, register_dataset

    LAYOUTS[layout.name] = layout
    for hub_id in layout.hub_ids:
        loader = _hub_loader(hub_id, layout.name)
        register_dataset(
            hub_id,
            loader,
            replace=hub_id in LOADERS,
            evaluation_split=layout.evaluation_split,
            heldout_splits=layout.heldout_splits,
        )


def _hub_loader(hub_id: str, layout: str) -> Callable[..., list[Task]]:
    def load(*, split: str | None = None, limit: int | None = None, **options: Any) -> list[Task]:
        return load_mapped_tasks(hub_id, layout, split=split, limit=limit, **options)

    load.__doc__ = f"Tasks of the Hub dataset {hub_id} (layout {layout!r})."
    return load


def parse_columns(columns: str | Mapping[str, str]) -> tuple[Layout | None, dict[str, str]]:
    """The layout named by ``columns`` (or None) and the role -> column mapping to apply.

    Accepts ``"mercury"``, ``"mercury,prompt=text"``, ``"prompt=question,tests=cases"`` or a dict.
    Raises ValueError naming an unknown layout or role.
    """
    layout: Layout | None = None
    pairs: dict[str, str] = {}
    if isinstance(columns, Mapping):
        items = [f"{k}={v}" for k, v in columns.items()]
    else:
        items = [item.strip() for item in columns.split(",") if item.strip()]
    for index, item in enumerate(items):
        if "=" not in item:
            if index or item not in LAYOUTS:
                known = difflib.get_close_matches(item, LAYOUTS, n=1)
                hint = f"did you mean {known[0]!r}? " if known else ""
                raise ValueError(
                    f"columns: {item!r} is not a layout nor a role=column pair; {hint}layouts: "
                    f"{', '.join(sorted(LAYOUTS))}; roles: {', '.join(ROLES)}"
                )
            layout = LAYOUTS[item]
            continue
        role, column = (part.strip() for part in item.split("=", 1))
        pairs[role] = column
    roles = tuple(layout.columns) if layout else (*ROLES, META_PREFIX + "<name>")
    for role in pairs:
        if role not in roles and not (layout is None and role.startswith(META_PREFIX) and len(role) > 5):
            close = difflib.get_close_matches(role, roles, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"columns: unknown role {role!r}; {hint}roles: {', '.join(roles)}")
    if layout is None:
        if "prompt" not in pairs:
            raise ValueError("columns: map `prompt` to the column holding the problem statement")
        if not any(role in pairs for role in TEST_ROLES):
            raise ValueError(f"columns: map one of {', '.join(TEST_ROLES)} to the column holding the tests")
        return None, pairs
    return layout, {**layout.columns, **pairs}


def load_mapped_tasks(
    source: str | os.PathLike[str],
    columns: str | Mapping[str, str],
    *,
    split: str | None = None,
    limit: int | None = None,
    sandbox: Sandbox | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    **load_options: Any,
) -> list[Task]:
    """Tasks of ``source`` read through ``columns`` (see the module docstring).

    ``sandbox`` runs references whose expected outputs a layout does not store (a default one is
    started when needed); ``load_options`` go to ``datasets.load_dataset`` for Hub ids and folders.
    """
    layout, mapping = parse_columns(columns)
    name = os.fspath(source)
    split = split if split is not None else (layout.default_split if layout else None)
    prefix = (layout.name if layout else Path(name).name.split(".")[0]) or "task"
    optional = set(layout.optional) if layout else set()
    converted: list[Converted] = []
    skipped: dict[str, str] = {}
    for number, row in enumerate(read_rows(name, split, **load_options)):
        if limit is not None and len(converted) >= limit:
            break
        by_role = _by_role(row, mapping, optional, name, number)
        by_role.setdefault("__row__", number)
        try:
            converted.append(layout.convert(by_role, prefix) if layout else convert_mapped(by_role, prefix))
        except (RowSkipped, NotConvertible) as exc:
            skipped[str(by_role.get("id", number))] = str(exc)
    if skipped:
        first = "; ".join(f"{key}: {reason}" for key, reason in list(skipped.items())[:3])
        log.warning(
            "%s: skipped %d row(s) whose tests the host cannot compare (%s%s)",
            name,
            len(skipped),
            first,
            "; ..." if len(skipped) > 3 else "",
        )
    return _resolve_pending(converted, sandbox, cache_dir, timeout_s)


def _by_role(
    row: Mapping[str, Any], mapping: Mapping[str, str], optional: set[str], source: str, number: int
) -> dict[str, Any]:
    missing = [
        f"{role}={column}" for role, column in mapping.items() if column not in row and role not in optional
    ]
    if missing:
        raise ValueError(
            f"{source}: row {number} has no column(s) {', '.join(missing)}; its columns are "
            f"{', '.join(map(str, row))}: map the roles to them with columns=role=column,..."
        )
    return {role: row[column] for role, column in mapping.items() if column in row}


def _resolve_pending(
    converted: list[Converted],
    sandbox: Sandbox | None,
    cache_dir: str | os.PathLike[str] | None,
    timeout_s: float,
) -> list[Task]:
    pending = [item for item in converted if isinstance(item, PendingOutputs)]
    if not pending:
        return [item for item in converted if isinstance(item, Task)]
    outputs = compute_expected_outputs(
        sandbox,
        [item.call for item in pending],
        cache=ExpectedOutputCache(cache_dir),
        timeout_s=timeout_s,
        allow_failed_inputs=True,
    )
    filled = {}
    for item, expected in zip(pending, outputs):
        tests = tuple(
            FunctionTest(args, value)
            for index, (args, value) in enumerate(zip(item.call.inputs, expected.values))
            if index not in expected.failed
        )
        n_base = item.task.n_base_tests
        if n_base is not None:
            n_base -= sum(1 for index in expected.failed if index < n_base)
        filled[id(item)] = dataclasses.replace(item.task, function_tests=tests, n_base_tests=n_base)
    return [filled[id(item)] if isinstance(item, PendingOutputs) else item for item in converted]


def read_rows(source: str, split: str | None = None, **load_options: Any) -> Iterator[Mapping[str, Any]]:
    """The rows of a file (.jsonl/.json[.gz], .parquet, .csv), a dataset folder or a Hub dataset.

    Files are read as they are (no split); Hub ids and folders through ``datasets.load_dataset``
    with ``split`` (default ``train``).
    """
    path = Path(source).expanduser()
    if path.is_file():
        if split not in (None, "train", "test"):
            raise ValueError(f"{path} is one file, it has no split {split!r}; leave the split out")
        yield from _file_rows(path)
        return
    import datasets

    try:
        rows = datasets.load_dataset(source, split=split or "train", **load_options)
    except ValueError as exc:
        raise ValueError(f"cannot load split {split or 'train'!r} of {source!r}: {exc}") from None
    yield from rows


def _file_rows(path: Path) -> Iterator[Mapping[str, Any]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)
    elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
        stripped = text.lstrip()
        if stripped.startswith("["):
            yield from json.loads(stripped)
            return
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON object: {exc}") from None
    else:
        raise ValueError(f"cannot tell the format of {path}: use one of {', '.join(FILE_SUFFIXES)}")


def convert_mapped(row: Mapping[str, Any], prefix: str) -> Task:
    """The task of one row read through a plain role -> column mapping."""
    task_id = str(row.get("id", f"{prefix}/{row['__row__']}"))
    entry_point = _text_or_none(row.get("entry_point"))
    function_tests: tuple[FunctionTest, ...] = ()
    atol = None
    if row.get("tests") not in (None, ""):
        function_tests = function_tests_of(row["tests"], task_id)
    if row.get("asserts") not in (None, "", []):
        if not entry_point:
            raise RowSkipped("`asserts` need `entry_point`: the function the asserts call")
        converted = asserts_to_tests(_script_text(row["asserts"]), lambda call: _calls(call, entry_point))
        function_tests, atol = function_tests + converted.tests, converted.atol
    program_tests = program_tests_of(row["program_tests"], task_id) if row.get("program_tests") else ()
    test_script = _text_or_none(row.get("test_script"))
    if function_tests and not entry_point:
        raise RowSkipped("function tests need `entry_point`: map it to the column naming the function")
    if not (function_tests or program_tests or test_script):
        raise RowSkipped("no tests")
    references = row.get("reference")
    if isinstance(references, str):
        references = [references]
    metadata = {key[len(META_PREFIX) :]: value for key, value in row.items() if key.startswith(META_PREFIX)}
    return Task(
        id=task_id,
        prompt=str(row["prompt"]),
        entry_point=entry_point,
        function_tests=function_tests,
        program_tests=program_tests,
        test_script=test_script,
        references=tuple(str(r) for r in references or () if r),
        atol=atol,
        metadata={"source": prefix, **metadata},
    )


def function_tests_of(value: Any, task_id: str) -> tuple[FunctionTest, ...]:
    """Function tests from a list of {input|args, output|expected} objects or {inputs, outputs}."""
    cases = _json_value(value, task_id, "tests")
    if isinstance(cases, Mapping) and "inputs" in cases and "outputs" in cases:
        cases = [{"input": i, "output": o} for i, o in zip(cases["inputs"], cases["outputs"])]
    if not isinstance(cases, list):
        raise RowSkipped(f"tests: expected a list of test objects, got {type(cases).__name__}")
    tests = []
    for index, case in enumerate(cases):
        if not isinstance(case, Mapping):
            raise RowSkipped(f"tests[{index}] is a {type(case).__name__}, not an object")
        args = _first(case, ("input", "args", "inputs"), index)
        expected = _first(case, ("output", "expected", "outputs"), index)
        if isinstance(args, str):
            args = _json_value(args, task_id, f"tests[{index}].input")
        if not isinstance(args, (list, tuple)):
            args = [args]
        tests.append(FunctionTest(tuple(args), expected))
    return tuple(tests)


def program_tests_of(value: Any, task_id: str) -> tuple[ProgramTest, ...]:
    """stdin/stdout tests from a list of {input|stdin, output|stdout} objects or {inputs, outputs}."""
    cases = _json_value(value, task_id, "program_tests")
    if isinstance(cases, Mapping) and "inputs" in cases and "outputs" in cases:
        cases = [{"input": i, "output": o} for i, o in zip(cases["inputs"], cases["outputs"])]
    if not isinstance(cases, list):
        raise RowSkipped(f"program_tests: expected a list, got {type(cases).__name__}")
    tests = []
    for index, case in enumerate(cases):
        if not isinstance(case, Mapping):
            raise RowSkipped(f"program_tests[{index}] is a {type(case).__name__}, not an object")
        stdin = _first(case, ("input", "stdin"), index)
        stdout = _first(case, ("output", "stdout", "expected_output"), index)
        if not isinstance(stdin, str) or not isinstance(stdout, str):
            raise RowSkipped(f"program_tests[{index}]: stdin and stdout must be text")
        tests.append(ProgramTest(stdin, stdout))
    return tuple(tests)


def asserts_to_tests(script: str, is_call: Callable[[Any], bool]) -> Any:
    """Function tests from assert statements whose calls ``is_call`` accepts (ConvertedChecks).

    Imports, ``solution = Solution()``, ``pass`` and an ``if __name__ == "__main__"`` block are
    ignored; any other statement, or an assert that is not a plain comparison of such a call with a
    literal, raises NotConvertible (see :mod:`rewards.datasets.assertions`).
    """
    import ast

    try:
        tree = ast.parse(script)
    except SyntaxError as exc:
        raise NotConvertible(f"the asserts do not parse: {exc.msg} (line {exc.lineno})") from None

    class Calls(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            self.generic_visit(node)
            if is_call(node):
                return ast.copy_location(
                    ast.Call(ast.Name("candidate", ast.Load()), node.args, node.keywords), node
                )
            return node

    lines = ["def check(candidate):"]
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom, ast.Pass)) or _is_main_guard(statement):
            continue
        if isinstance(statement, ast.Assign) and ast.unparse(statement.value) == "Solution()":
            continue
        rewritten = ast.fix_missing_locations(Calls().visit(statement))
        lines.extend("    " + line for line in ast.unparse(rewritten).splitlines())
    return function_tests_from_check("\n".join(lines) + "\n")


def _is_main_guard(statement: Any) -> bool:
    import ast

    return isinstance(statement, ast.If) and "__name__" in ast.unparse(statement.test)


def _calls(node: Any, name: str) -> bool:
    import ast

    return isinstance(node.func, ast.Name) and node.func.id == name


def _first(case: Mapping[str, Any], keys: Iterable[str], index: int) -> Any:
    for key in keys:
        if key in case:
            return case[key]
    raise RowSkipped(f"test {index} has none of the keys {', '.join(keys)}")


def _json_value(value: Any, task_id: str, what: str) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowSkipped(f"{what} of {task_id} is not JSON: {exc}") from None
    return value


def _script_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(str(line) for line in value)
    return str(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and not value.strip()) else str(value)
