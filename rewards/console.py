"""What effirl tells the person at the terminal: one configured logger and its verbosity.

Every module logs through ``logging.getLogger(__name__)`` (``rlhf.training.trainer``, ``rewards.scorer``,
``sandbox.pool``, ...). :func:`configure_logging`, called once by each command line (``effirl``,
``python -m rewards.service``), gives the package loggers ``effirl``, ``rlhf``, ``rewards`` and
``sandbox`` one handler on stderr and a level from the ``-v``/``-q`` flags:

=========  ===========  ==============================================================
flags      level        what reaches the user
=========  ===========  ==============================================================
``-qq``    ERROR        errors only
``-q``     WARNING      warnings and errors; no progress bars
(none)     NOTICE       what a command is doing ("eval at start: pass rate ..."), warnings
``-v``     INFO         details: caches, sandbox workers, datasets, timings
``-vv``    DEBUG        everything
=========  ===========  ==============================================================

Without a command line (effirl used as a library) nothing is configured: the application decides,
as with any library; Python's default shows warnings.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
PACKAGES = ("effirl", "rlhf", "rewards", "sandbox")
VERBOSE_FLAGS = {"-v": 1, "--verbose": 1, "-vv": 2, "-vvv": 3, "-q": -1, "--quiet": -1, "-qq": -2}
_LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: NOTICE, 1: logging.INFO, 2: logging.DEBUG}
# tqdm reads this (>= 4.66), in this process and in the Ray workers and subprocesses it starts.
PROGRESS_OFF_ENV = "TQDM_DISABLE"
_progress_switched_off = False  # whether configure_logging set it (and so may take it back)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test harnesses and tqdm replace it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"effirl: {record.levelname}: {message}"
        if record.levelno < logging.INFO:
            return f"effirl: [{record.name}] {message}"
        return f"effirl: {message}"


def level_of(verbosity: int) -> int:
    """The logging level of ``verbosity`` (-2 .. 2; beyond is clamped)."""
    return _LEVELS[max(-2, min(2, verbosity))]


def configure_logging(verbosity: int = 0) -> None:
    """Give the package loggers one stderr handler at the level ``verbosity`` asks for.

    Calling it again replaces the earlier handler, so there is always exactly one. ``verbosity < 0``
    also switches progress bars off (here and in the processes this one starts).
    """
    level = level_of(verbosity)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    handler.set_name("effirl")
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "effirl"]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    global _progress_switched_off
    if verbosity < 0 and PROGRESS_OFF_ENV not in os.environ:
        os.environ[PROGRESS_OFF_ENV] = "1"
        _progress_switched_off = True
    elif verbosity >= 0 and _progress_switched_off:
        os.environ.pop(PROGRESS_OFF_ENV, None)
        _progress_switched_off = False


def pop_verbosity(argv: list[str]) -> tuple[list[str], int | None]:
    """``argv`` without its ``-v``/``-q`` flags (anywhere on the line), and the verbosity they ask
    for (None when there were none)."""
    rest, verbosity = [], None
    for arg in argv:
        if arg in VERBOSE_FLAGS:
            verbosity = (verbosity or 0) + VERBOSE_FLAGS[arg]
        else:
            rest.append(arg)
    return rest, verbosity


def notice(logger: logging.Logger, message: str, *args: Any) -> None:
    """Log what a command is doing: shown unless ``-q``."""
    logger.log(NOTICE, message, *args)
