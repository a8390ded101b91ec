"""``python -m rewards.service``: the same command as ``effirl reward serve`` (rewards/service/command.py)."""

from __future__ import annotations

import sys

from rewards.service.command import main
from rewards.user_error import UserError, debug_requested, report_user_error

PROG = "python -m rewards.service"

if __name__ == "__main__":
    try:
        sys.exit(main(prog=PROG))
    except UserError as exc:
        sys.exit(report_user_error(exc, PROG, debug=debug_requested()))
