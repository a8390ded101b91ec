"""`UserError`: a problem the user caused and can fix, reported on one line.

Command lines (``effirl ...``, ``python -m rewards.service``) print a UserError as
``<prog>: error: <message>`` and exit with status 2; ``--debug`` or ``EFFIRL_DEBUG=1`` prints the
traceback first. A bug is not a UserError: it keeps its traceback and exit status 1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping

DEBUG_ENV = "EFFIRL_DEBUG"
EXIT_USAGE = 2


class UserError(Exception):
    """An error the user caused and can fix: its message names the problem and the fix."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (lines joined with ``; ``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def debug_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``EFFIRL_DEBUG`` asks for tracebacks (any value but empty, 0, false, no)."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def report_user_error(exc: BaseException, prog: str, *, debug: bool = False) -> int:
    """Print ``exc`` as ``<prog>: error: <message>`` (its traceback first with ``debug``); returns 2."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
    return EXIT_USAGE
