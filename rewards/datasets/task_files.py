"""Task files in effirl's own schema: JSON Lines or Parquet, one row per :class:`Task`.

Every row has the same columns, so Arrow (and with it ``datasets``, Parquet and the Hub) can hold
any task. Values that vary in type from task to task are stored as tagged-JSON *text*
(:mod:`sandbox.codec`: plain JSON, with ``{"__tuple__": [...]}``, ``{"__set__": [...]}``,
``{"__bytes__": "<base64>"}``, ``{"__float__": "nan"}``, ... for what JSON cannot hold)::

    {
      "format": "effirl-task/1",
      "id": "synthetic/multiples_sum/train/0",
      "prompt": "Write a Python function `f(n)` that ...",
      "entry_point": "f",                        # or null for stdin/stdout programs
      "function_tests": "[{\\"args\\": {\\"__tuple__\\": [10]}, \\"expected\\": 30, \\"kwargs\\": {}}]",
      "n_base_tests": 1,                         # or null
      "program_tests": [{"stdin": "3\\n", "expected_stdout": "6\\n"}],
      "test_script": null,                       # or assertion-script text
      "perf_tests": "[{\\"args\\": [10000000], \\"expected\\": 49999995000000}]",   # or null
      "references": ["def f(n): ..."],
      "atol": null,                              # or a float
      "metadata": "{\\"family\\": \\"multiples_sum\\", ...}"
    }

``function_tests`` is the tagged-JSON text of a list of ``{"args", "expected", "kwargs"}`` objects
(``args`` a tuple or list of the positional arguments, ``kwargs`` an object); ``metadata`` is the
tagged-JSON text of an object. ``perf_tests`` (performance-exercising tests, see
:class:`rewards.tasks.Task`) is tagged-JSON text of a list of function tests in that form or of
``{"stdin", "expected_stdout"}`` program tests; null, empty or absent (files written before it
existed) means none. ``save_tasks`` then ``load_task_file`` gives back equal tasks.
Files are read with ``datasets`` (``load_dataset("json" | "parquet", data_files=...)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards.tasks import Task
from sandbox import codec
from sandbox.types import FunctionTest, ProgramTest

TASK_FORMAT = "effirl-task/1"
COLUMNS = (
    "format",
    "id",
    "prompt",
    "entry_point",
    "function_tests",
    "n_base_tests",
    "program_tests",
    "test_script",
    "perf_tests",
    "references",
    "atol",
    "metadata",
)
JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)


class TaskFormatError(ValueError):
    """A row that is not a task in effirl's schema."""


def task_to_record(task: Task) -> dict[str, Any]:
    """One row of the task-file schema."""
    try:
        tests = codec.dumps([_function_test_record(t) for t in task.function_tests])
        perf = codec.dumps([_perf_test_record(t) for t in task.perf_tests]) if task.perf_tests else None
        metadata = codec.dumps(dict(task.metadata))
    except codec.EncodeError as exc:
        raise TaskFormatError(f"task {task.id!r} holds a value a task file cannot store: {exc}") from None
    return {
        "format": TASK_FORMAT,
        "id": task.id,
        "prompt": task.prompt,
        "entry_point": task.entry_point,
        "function_tests": tests,
        "n_base_tests": task.n_base_tests,
        "program_tests": [
            {"stdin": t.stdin, "expected_stdout": t.expected_stdout} for t in task.program_tests
        ],
        "test_script": task.test_script,
        "perf_tests": perf,
        "references": list(task.references),
        "atol": None if task.atol is None else float(task.atol),
        "metadata": metadata,
    }


def _function_test_record(test: FunctionTest) -> dict[str, Any]:
    return {"args": test.args, "expected": test.expected, "kwargs": dict(test.kwargs)}


def _perf_test_record(test: FunctionTest | ProgramTest) -> dict[str, Any]:
    if isinstance(test, ProgramTest):
        return {"stdin": test.stdin, "expected_stdout": test.expected_stdout}
    return _function_test_record(test)


def task_from_record(record: Mapping[str, Any]) -> Task:
    """The :class:`Task` of one row; raises :class:`TaskFormatError` naming the bad field."""
    label = f"task {record.get('id')!r}"
    if record.get("format", TASK_FORMAT) != TASK_FORMAT:
        raise TaskFormatError(f"{label}: format {record.get('format')!r} is not {TASK_FORMAT!r}")
    for name in ("id", "prompt"):
        if not isinstance(record.get(name), str):
            raise TaskFormatError(f"{label}: field {name!r} must be a string, got {record.get(name)!r}")
    try:
        raw_tests = _decode_text(record.get("function_tests"), [])
        raw_perf = _decode_text(record.get("perf_tests"), [])
        metadata = _decode_text(record.get("metadata"), {})
    except codec.DecodeError as exc:
        raise TaskFormatError(f"{label}: {exc}") from None
    if not isinstance(raw_tests, list) or not isinstance(raw_perf, list) or not isinstance(metadata, dict):
        raise TaskFormatError(
            f"{label}: function_tests and perf_tests must encode a list each, metadata an object"
        )
    function_tests = tuple(_function_test(t, label, i) for i, t in enumerate(raw_tests))
    perf_tests = tuple(_perf_test(t, label, i) for i, t in enumerate(raw_perf))
    program_tests = tuple(
        ProgramTest(str(t["stdin"]), str(t["expected_stdout"])) for t in record.get("program_tests") or ()
    )
    atol = record.get("atol")
    n_base = record.get("n_base_tests")
    try:
        return _task(record, function_tests, perf_tests, program_tests, atol, n_base, metadata)
    except ValueError as exc:  # Task's own checks, e.g. function perf tests without an entry point
        raise TaskFormatError(str(exc)) from None


def _task(
    record: Mapping[str, Any],
    function_tests: tuple[FunctionTest, ...],
    perf_tests: tuple[FunctionTest | ProgramTest, ...],
    program_tests: tuple[ProgramTest, ...],
    atol: Any,
    n_base: Any,
    metadata: dict[str, Any],
) -> Task:
    return Task(
        id=record["id"],
        prompt=record["prompt"],
        entry_point=record.get("entry_point"),
        function_tests=function_tests,
        n_base_tests=None if n_base is None else int(n_base),
        program_tests=program_tests,
        test_script=record.get("test_script"),
        perf_tests=perf_tests,
        references=tuple(record.get("references") or ()),
        atol=None if atol is None else float(atol),
        metadata=metadata,
    )


def _decode_text(value: Any, empty: Any) -> Any:
    # Tagged-JSON text is the stored form; an already-parsed value is accepted for hand-written files.
    if value is None:
        return empty
    return codec.loads(value) if isinstance(value, str) else codec.from_jsonable(value)


def _perf_test(raw: Any, label: str, index: int) -> FunctionTest | ProgramTest:
    if isinstance(raw, dict) and "stdin" in raw:
        if not isinstance(raw["stdin"], str) or not isinstance(raw.get("expected_stdout"), str):
            raise TaskFormatError(f"{label}: perf test {index}: stdin and expected_stdout must be strings")
        return ProgramTest(raw["stdin"], raw["expected_stdout"])
    return _function_test(raw, label, index, what="perf test")


def _function_test(raw: Any, label: str, index: int, what: str = "function test") -> FunctionTest:
    if not isinstance(raw, dict) or "args" not in raw:
        raise TaskFormatError(f"{label}: {what} {index} must be an object with 'args', got {raw!r:.80}")
    args, kwargs = raw["args"], raw.get("kwargs") or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise TaskFormatError(f"{label}: {what} {index}: args must be a list/tuple and kwargs an object")
    return FunctionTest(args, raw.get("expected"), dict(kwargs))


def save_tasks(tasks: Iterable[Task], path: str | os.PathLike[str]) -> Path:
    """Write ``tasks`` to ``path``: Parquet for ``.parquet``, JSON Lines for ``.jsonl``/``.json``."""
    path = Path(path)
    records = [task_to_record(t) for t in tasks]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    if _has_suffix(path, PARQUET_SUFFIXES):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = (
            pa.Table.from_pylist(records, schema=_arrow_schema())
            if records
            else _arrow_schema().empty_table()
        )
        pq.write_table(table, temporary)
    elif _has_suffix(path, (".jsonl", ".json")):
        with open(temporary, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        raise ValueError(f"cannot tell the format of {path}: use a .jsonl, .json or .parquet file name")
    os.replace(temporary, path)
    return path


def _arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("format", pa.string()),
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("entry_point", pa.string()),
            ("function_tests", pa.large_string()),
            ("n_base_tests", pa.int64()),
            (
                "program_tests",
                pa.list_(pa.struct([("stdin", pa.string()), ("expected_stdout", pa.string())])),
            ),
            ("test_script", pa.string()),
            ("perf_tests", pa.large_string()),
            ("references", pa.list_(pa.string())),
            ("atol", pa.float64()),
            ("metadata", pa.large_string()),
        ]
    )


def load_task_file(
    path: str | os.PathLike[str], *, split: str | None = None, limit: int | None = None
) -> list[Task]:
    """Tasks from a JSON Lines or Parquet file in effirl's schema (read through ``datasets``).

    ``split`` keeps only tasks whose ``metadata["split"]`` equals it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    if _has_suffix(path, PARQUET_SUFFIXES):
        builder = "parquet"
    elif _has_suffix(path, JSON_SUFFIXES):
        builder = "json"
    else:
        raise ValueError(f"cannot tell the format of {path}: use a .jsonl, .json(.gz) or .parquet file")
    if path.stat().st_size == 0 or (builder == "parquet" and _parquet_rows(path) == 0):
        return []  # datasets refuses files without rows
    import datasets

    rows = datasets.load_dataset(builder, data_files=str(path), split="train")
    return tasks_from_rows(rows, split=split, limit=limit, source=str(path))


def load_task_dataset(
    name_or_dir: str, *, split: str | None = None, limit: int | None = None, **load_options: Any
) -> list[Task]:
    """Tasks from a ``datasets`` dataset in effirl's schema: a Hub id or a local dataset folder.

    ``split`` names the dataset split (default ``train``); other options go to ``load_dataset``.
    """
    import datasets

    try:
        rows = datasets.load_dataset(name_or_dir, split=split or "train", **load_options)
    except ValueError as exc:
        raise ValueError(f"cannot load split {split or 'train'!r} of {name_or_dir!r}: {exc}") from None
    return tasks_from_rows(rows, limit=limit, source=name_or_dir)


def tasks_from_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    split: str | None = None,
    limit: int | None = None,
    source: str = "rows",
) -> list[Task]:
    """Tasks from rows in the task-file schema, keeping those of ``split`` (by metadata) if given."""
    tasks: list[Task] = []
    for number, row in enumerate(rows):
        if limit is not None and len(tasks) >= limit:
            break
        missing = [c for c in ("id", "prompt") if c not in row]
        if missing:
            raise TaskFormatError(
                f"{source}: row {number} lacks {missing}; is it a task file in effirl's schema?"
            )
        task = task_from_record(row)
        if split is None or task.metadata.get("split") == split:
            tasks.append(task)
    return tasks


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))
