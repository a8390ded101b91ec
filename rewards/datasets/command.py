"""``effirl data``: get datasets and check how effirl reads them.

effirl data download humanevalplus          # the EvalPlus release file, into $EFFIRL_DATA_DIR
effirl data show evalplus/mbppplus --limit 5
effirl data show rows.jsonl --columns prompt=question,entry_point=fn,tests=cases
effirl data layouts                         # the layouts effirl reads as they are
effirl data perf-inputs humanevalplus       # build (or read) the perf inputs, print them per task
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence

from rewards.datasets.download import RELEASE_FILES, download_release
from rewards.datasets.evalplus import DATA_DIR_ENV
from rewards.user_error import UserError, one_line

PROG = "effirl data"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Get datasets and check how effirl reads them (docs/datasets.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    download = commands.add_parser(
        "download",
        help="fetch an EvalPlus release file into $EFFIRL_DATA_DIR",
        description=f"Fetch an EvalPlus release file into ${DATA_DIR_ENV}/<name>/ and check its "
        "SHA-256; the loaders (`humanevalplus`, `mbppplus`) read it from there.",
        epilog="examples:\n  effirl data download humanevalplus\n"
        "  effirl data download mbppplus --data-dir ~/effirl-data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("name", choices=sorted(RELEASE_FILES), help="which release file")
    download.add_argument("--data-dir", metavar="DIR", help=f"folder to fill (default: ${DATA_DIR_ENV})")
    download.add_argument("--url", help="fetch from here instead (a mirror; default: the GitHub release)")
    download.add_argument("--sha256", metavar="HEX", help="expected checksum (default: the pinned release's)")
    download.add_argument("--force", action="store_true", help="replace a different file already there")
    download.add_argument("--timeout-s", type=float, default=60.0, help="network timeout (default: 60)")
    download.set_defaults(run=_download)

    show = commands.add_parser(
        "show",
        help="load a dataset and report its tasks",
        description="Load SOURCE as training would and report its tasks: how many, their tests and "
        "trust levels, and the first task.",
        epilog="examples:\n  effirl data show evalplus/mbppplus --limit 5\n"
        "  effirl data show rows.jsonl --columns id=task_id,prompt=question,entry_point=fn,tests=cases",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("source", help="a dataset name, Hub id, dataset folder or file")
    show.add_argument("--columns", help="a layout name or role=column pairs (see `effirl data layouts`)")
    show.add_argument("--split", help="dataset split (default: the dataset's)")
    show.add_argument("--limit", type=int, help="read the first N tasks only")
    show.set_defaults(run=_show)

    layouts = commands.add_parser("layouts", help="list the layouts and the roles of --columns")
    layouts.set_defaults(run=_layouts)

    perf = commands.add_parser(
        "perf-inputs",
        help="build and print a dataset's perf inputs",
        description="Build the performance-exercising inputs of a dataset's tasks (from effirl's recipes "
        "for HumanEval+ and MBPP+, else by profiling the reference and growing its inputs), cache them "
        "like expected outputs, and print per task the reference's cost on them and each input's size "
        "(docs/datasets.md, perf tests).",
        epilog="examples:\n  effirl data perf-inputs humanevalplus\n"
        "  effirl data perf-inputs mbppplus --tasks Mbpp/2 Mbpp/3\n"
        "  effirl data perf-inputs humanevalplus --search --write-recipes recipes.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    perf.add_argument("dataset", metavar="DATASET", help="humanevalplus, mbppplus, or a task file")
    perf.add_argument("--tasks", nargs="+", metavar="ID", help="only these task ids")
    perf.add_argument("--limit", type=_count, metavar="N", help="only the first N tasks")
    perf.add_argument(
        "--search", action="store_true", help="search for the inputs again instead of using effirl's recipes"
    )
    perf.add_argument("--write-recipes", metavar="FILE", help="write the recipes of the result to FILE")
    perf.add_argument(
        "--floor-ms",
        type=_positive,
        metavar="MS",
        help="reference CPU ms to reach when searching (default: 20)",
    )
    perf.add_argument(
        "--workers", type=_positive_int, help="sandbox worker processes (default: one per CPU core)"
    )
    perf.set_defaults(run=_perf_inputs)
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _perf_inputs(args: argparse.Namespace) -> int:
    from rewards.datasets.perf_command import perf_inputs_command

    return perf_inputs_command(
        args.dataset,
        tasks=args.tasks,
        limit=args.limit,
        search=args.search,
        write_recipes=args.write_recipes,
        floor_ms=args.floor_ms,
        workers=args.workers,
    )


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Run ``effirl data`` with ``argv``; raises UserError for a user's error (one line in the CLI)."""
    parser = build_parser(prog)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    return args.run(args)


def _download(args: argparse.Namespace) -> int:
    path, fetched = download_release(
        args.name,
        data_dir=args.data_dir,
        url=args.url,
        sha256=args.sha256,
        force=args.force,
        timeout_s=args.timeout_s,
    )
    print(f"effirl: {path} {'downloaded' if fetched else 'is already there'}; SHA-256 checked")
    folder = path.parent.parent
    env = os.environ.get(DATA_DIR_ENV)
    if not env or os.path.realpath(os.path.expanduser(env)) != os.path.realpath(folder):
        print(f"effirl: set {DATA_DIR_ENV}={folder} so that load_tasks({args.name!r}) finds it")
    return 0


def _show(args: argparse.Namespace) -> int:
    from rewards.datasets import load_tasks

    options = {"columns": args.columns} if args.columns else {}
    try:
        tasks = load_tasks(args.source, split=args.split, limit=args.limit, **options)
    except UserError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{args.source}: {one_line(exc)}") from exc
    levels = Counter(task.trust_level for task in tasks)
    print(
        f"{len(tasks)} tasks from {args.source}: " + ", ".join(f"{n} {k}" for k, n in sorted(levels.items()))
    )
    if levels.get("script"):
        print(
            "  script: their verdict comes from inside the candidate's process; reward scoring refuses them"
        )
        print("  unless reward.allow_script_tests is on (docs/sandbox.md, trust levels)")
    if tasks:
        task = tasks[0]
        tests = f"{len(task.function_tests)} function tests ({task.n_base_tests} base)"
        print(f"first: {task.id}, entry point {task.entry_point}, {tests}, {len(task.references)} references")
        if task.program_tests:
            print(f"  {len(task.program_tests)} program tests")
        print("  prompt: " + " ".join(task.prompt.split())[:100])
    return 0


def _layouts(args: argparse.Namespace) -> int:
    from rewards.datasets.columns import LAYOUTS, ROLES

    for layout in LAYOUTS.values():
        hubs = ", ".join(layout.hub_ids) or "-"
        print(f"{layout.name}: {layout.description} (Hub: {hubs}; split {layout.default_split})")
        print(f"  columns: {', '.join(layout.columns.values())}")
    print("roles of --columns role=column,... (any other layout):")
    for role, text in ROLES.items():
        print(f"  {role}: {text}")
    print("  meta.<name>: copied into the task's metadata")
    return 0
