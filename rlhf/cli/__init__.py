"""The `effirl` command line (`python -m rlhf.cli`)."""

from rlhf.cli.main import main

__all__ = ["main"]
