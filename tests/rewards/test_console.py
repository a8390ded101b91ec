"""One configured logger with -v/-q: notices by default, details with -v, only warnings with -q."""

from __future__ import annotations

import logging
import os

import pytest

from rewards.console import NOTICE, PROGRESS_OFF_ENV, configure_logging, notice, pop_verbosity


@pytest.fixture
def restore_logging() -> None:
    yield
    configure_logging(0)


def test_flags_are_taken_from_anywhere_on_the_line() -> None:
    assert pop_verbosity(["train", "quickstart", "-v"]) == (["train", "quickstart"], 1)
    assert pop_verbosity(["-vv", "eval"]) == (["eval"], 2)
    assert pop_verbosity(["-q", "train", "-q"]) == (["train"], -2)
    assert pop_verbosity(["config", "show"]) == (["config", "show"], None)


@pytest.mark.usefixtures("restore_logging")
def test_levels_follow_the_verbosity(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("rewards.some_module")

    def said(verbosity: int) -> str:
        configure_logging(verbosity)
        log.debug("a debug line")
        log.info("an info line")
        notice(log, "a notice")
        log.warning("a warning")
        return capsys.readouterr().err

    assert said(0) == "effirl: a notice\neffirl: WARNING: a warning\n"
    assert said(1) == "effirl: an info line\neffirl: a notice\neffirl: WARNING: a warning\n"
    assert "effirl: [rewards.some_module] a debug line" in said(2)
    assert said(-1) == "effirl: WARNING: a warning\n"
    assert os.environ.get(PROGRESS_OFF_ENV) == "1"  # -q: no progress bars either
    assert said(-2) == ""
    configure_logging(0)
    assert PROGRESS_OFF_ENV not in os.environ
    for name in ("effirl", "rlhf", "rewards", "sandbox"):
        assert len(logging.getLogger(name).handlers) == 1
    assert logging.getLogger("rlhf").level == NOTICE
