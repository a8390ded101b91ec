"""A run's output folder: one run per folder, never mixed with another, never emptied silently.

When ``effirl train`` starts a run it writes ``run.json`` into ``output_dir`` with a fresh run id,
and every checkpoint records that id (``trainer_state.json``, ``extra.run_id``); reading a
checkpoint whose id is not its folder's refuses (:func:`rlhf.training.checkpoint.load_checkpoint`), so
``--resume``, ``effirl export`` and ``effirl eval --run`` never pick up another run's checkpoint.

A folder that already holds a run (any of :data:`RUN_ENTRIES`) takes a new run only with
``--resume`` (continue it) or ``--overwrite`` (move the earlier run's entries aside to a sibling
``<output_dir>.old-<time>`` folder first, and say so). Other files in the folder (a log a script
writes there, an ``effirl sft`` adapter in ``sft/``) are left where they are.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config import ConfigError

RUN_FILE = "run.json"
# What `effirl train` writes into a run folder; a folder holding any of these holds a run.
RUN_ENTRIES = (
    RUN_FILE,
    "config.yaml",
    "metrics.jsonl",
    "eval.jsonl",
    "checkpoints",
    "tensorboard",
    "warm_start",
)


@dataclass(frozen=True)
class RunFolder:
    """A prepared output folder: its run id, and where an earlier run was moved by ``--overwrite``."""

    path: Path
    run_id: str
    moved_to: Path | None = None


def run_entries(output_dir: str | os.PathLike[str]) -> list[str]:
    """The entries of :data:`RUN_ENTRIES` that ``output_dir`` holds (empty: it holds no run)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return [name for name in RUN_ENTRIES if (folder / name).exists()]


def read_run_id(output_dir: str | os.PathLike[str]) -> str | None:
    """The run id in ``output_dir/run.json``; None when the folder has none (or a run from before ids)."""
    path = Path(output_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); restore it or move the run folder aside") from None
    run_id = record.get("run_id") if isinstance(record, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise ConfigError(f"{path} has no run_id; restore it or move the run folder aside")
    return run_id


def start_run_folder(
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resumed_from: dict[str, Any] | None = None,
) -> RunFolder:
    """Prepare ``output_dir`` for a new run and write its ``run.json``.

    A folder holding an earlier run is refused with a ConfigError naming ``--resume`` and
    ``--overwrite``; with ``overwrite`` the earlier run's entries are moved aside first (the
    returned ``moved_to``). ``resumed_from`` (checkpoint path and run id) is recorded when the run
    starts from another folder's checkpoint.
    """
    folder = Path(output_dir)
    found = refuse_used_folder(folder, overwrite=overwrite)
    moved_to = None
    if found:
        moved_to = move_run_aside(folder, found)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    record: dict[str, Any] = {"run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if resumed_from:
        record["resumed_from"] = resumed_from
    if moved_to is not None:
        record["earlier_run_moved_to"] = str(moved_to)
    _write_json(folder / RUN_FILE, record)
    return RunFolder(folder, run_id, moved_to)


def refuse_used_folder(output_dir: str | os.PathLike[str], *, overwrite: bool) -> list[str]:
    """The run entries ``output_dir`` holds; a ConfigError when it holds some and not ``overwrite``."""
    folder = Path(output_dir)
    found = run_entries(folder)
    if found and not overwrite:
        raise ConfigError(
            f"output_dir {folder} already holds a run ({', '.join(found)}); continue it with "
            f"`--resume`, start over with `--overwrite` (moves the earlier run to "
            f"{_aside_name(folder, '<time>')}), or choose another output_dir=...",
            key="output_dir",
        )
    return found


def continue_run_folder(output_dir: str | os.PathLike[str]) -> RunFolder:
    """The folder of a run being resumed; a folder from before run ids gets a ``run.json`` now."""
    folder = Path(output_dir)
    run_id = read_run_id(folder)
    if run_id is None:
        run_id = uuid.uuid4().hex[:12]
        record = {"run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "adopted": True}
        _write_json(folder / RUN_FILE, record)
    return RunFolder(folder, run_id)


def move_run_aside(output_dir: Path, entries: list[str]) -> Path:
    """Move ``entries`` of ``output_dir`` into a new sibling ``<output_dir>.old-<time>``; returns it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = _aside_name(output_dir, stamp)
    suffix = 1
    while target.exists():
        suffix += 1
        target = _aside_name(output_dir, f"{stamp}-{suffix}")
    target.mkdir(parents=True)
    for name in entries:
        os.replace(output_dir / name, target / name)
    return target


def _aside_name(output_dir: Path, stamp: str) -> Path:
    folder = output_dir if output_dir.name else output_dir.resolve()
    return folder.with_name(f"{folder.name}.old-{stamp}")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
