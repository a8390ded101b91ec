"""``python -m rewards.service``: the same command as ``effirl reward serve`` (rewards/service/command.py)."""

from __future__ import annotations

import sys

from rewards.service.command import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m rewards.service"))
