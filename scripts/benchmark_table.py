"""The rows of docs/benchmarks.md, and what a benchmark needs to say where and how it ran.

A benchmark script appends one Markdown row per result, in the table format of
``scripts/bench_sandbox.py`` (``| date | benchmark | machine | result | command |``), only when asked
with ``--markdown``: a run in a checkout otherwise leaves ``git status`` clean.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

HEADER = "| date | benchmark | machine | result | command |\n|---|---|---|---|---|\n"
DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def add_table_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--markdown [TABLE]`` flag: append the result to docs/benchmarks.md (or TABLE) only when given."""
    parser.add_argument(
        "--markdown",
        nargs="?",
        type=Path,
        const=DEFAULT_TABLE,
        default=None,
        metavar="TABLE",
        help="also append the result as a row of docs/benchmarks.md (or of TABLE); without it the "
        "checkout is left as it was",
    )


def append_row(path: Path, line: str) -> None:
    """Add ``line`` (one Markdown row ending in a newline) as the last row of the table in ``path``,
    before whatever text follows the table."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + HEADER
    if HEADER not in text:
        text = text.rstrip("\n") + "\n\n" + HEADER
    start = text.index(HEADER) + len(HEADER)
    lines = text[start:].splitlines(keepends=True)
    rows = 0
    while rows < len(lines) and lines[rows].startswith("|"):
        rows += 1
    end = start + sum(len(row) for row in lines[:rows])
    if end > 0 and not text[:end].endswith("\n"):
        line = "\n" + line
    path.write_text(text[:end] + line + text[end:])


def table_row(benchmark: str, machine: str, result: str, command: str, date: str | None = None) -> str:
    """One row of the table; ``|`` inside cells is escaped so the row keeps five cells."""
    cells = [date or today(), benchmark, machine, result, f"`{command}`"]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def today() -> str:
    return datetime.date.today().isoformat()


def reproduce_command() -> str:
    """The command line this script was started with, as a user would type it from the repo root.

    Output locations are not part of what reproduces a result: ``--markdown PATH`` is dropped and
    ``--json PATH`` keeps only the file name.
    """
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        pass
    args: list[str] = []
    given = sys.argv[1:]
    index = 0
    while index < len(given):
        arg = given[index]
        index += 1
        if arg == "--markdown":
            if index < len(given) and not given[index].startswith("-"):
                index += 1  # its optional TABLE
        elif arg == "--json":
            args += [arg, Path(given[index] if index < len(given) else "").name]
            index += 1
        elif arg.startswith("--markdown="):
            continue
        elif arg.startswith("--json="):
            args.append("--json=" + Path(arg.partition("=")[2]).name)
        else:
            args.append(arg)
    return shlex.join(["python", str(script), *args])


def machine_description(device: str) -> str:
    """The accelerator (name, count, memory) or CPU a benchmark ran on, plus the torch build."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        count = torch.cuda.device_count()
        gpus = f"{count}x " if count > 1 else ""
        return f"{gpus}{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
