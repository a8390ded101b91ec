"""``effirl sandbox check`` and ``effirl sandbox audit``: what this machine's sandbox can do.

Neither needs the training stack: they import the sandbox (and for ``--url`` the reward client) only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from sandbox.config import STRONG_LEVELS, WEAK_LEVELS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_sandbox_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``sandbox check`` and ``sandbox audit`` to ``commands`` (``command`` makes a subparser)."""
    sandbox = command(commands, "sandbox", "inspect the code sandbox", "Inspect the sandbox on this machine.")
    sandbox_commands = sandbox.add_subparsers(title="commands", metavar="COMMAND")
    check = command(
        sandbox_commands,
        "check",
        "report which isolation levels work here",
        "Start each sandbox isolation level (namespaces, bwrap, and the weak process and none) and the "
        "instruction counter for real, report what this kernel allows and which level to choose "
        "(reward.isolation in a recipe, --isolation of `effirl reward serve`). Exit status 1 when no "
        "strong level (namespaces or bwrap) works.",
        "effirl sandbox check",
    )
    check.set_defaults(run=run_check)
    audit = command(
        sandbox_commands,
        "audit",
        "run the known attacks and say which are contained",
        "Run the adversarial programs of every attack class (forged passes, costs and verdict kinds, "
        "malformed records, escapes, ...) against a sandbox on this machine, or with --url against a "
        "reward service, and report per attack: contained, NOT CONTAINED, weak by design, untrusted "
        "measure, inconclusive or not applicable. Exit status 0 when nothing is NOT CONTAINED or "
        "inconclusive, 1 otherwise, 2 for a usage error.",
        "effirl sandbox audit\n"
        "  effirl sandbox audit --isolation namespaces --scope run --only memory --only repeats\n"
        "  effirl sandbox audit --url http://HOST:8080 --token $EFFIRL_REWARD_TOKEN --json audit.json",
    )
    audit.add_argument("--url", help="audit the reward service at this URL instead of a local sandbox")
    audit.add_argument("--token", help="the service's bearer token (default: $EFFIRL_REWARD_TOKEN)")
    audit.add_argument(
        "--isolation",
        choices=("namespaces", "bwrap", "process"),
        help="local isolation level to audit (default: namespaces; 'process' is the weak opt-in level)",
    )
    audit.add_argument("--scope", choices=("worker", "run"), help="namespace scope (default: worker)")
    audit.add_argument("--json", metavar="FILE", help="also write the findings as JSON to FILE")
    audit.add_argument(
        "--only", metavar="CLASS", action="append", help="run only this attack class (repeatable)"
    )
    audit.set_defaults(run=run_audit)


def run_check(args: argparse.Namespace) -> int:
    from sandbox.probe import probe_isolation, working_levels

    reports = probe_isolation()
    width = max(len(r.name) for r in reports)
    for report in reports:
        mark = "ok  " if report.available else "NO  "
        print(f"{mark}{report.name.ljust(width)}  {report.detail}")
    working = working_levels(reports)
    strong = [level for level in working if level in STRONG_LEVELS]
    print()
    print(f"isolation levels that work here: {', '.join(working) or 'none of them'}")
    if strong:
        print(
            f"use {strong[0]}"
            + (" (the default)" if strong[0] == "namespaces" else "")
            + f": `reward.isolation: {strong[0]}` in a recipe, `effirl reward serve --isolation {strong[0]}`"
        )
    else:
        weak = [level for level in WEAK_LEVELS if level in working]
        print(
            "NO level here contains untrusted code (no user namespaces, no bubblewrap): enable "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or run the "
            "container with them), or install bubblewrap."
        )
        if weak:
            print(
                f"For code you trust, or inside a disposable container: `reward.isolation: {weak[0]}` "
                f"with `reward.allow_weak_isolation: true` (`effirl reward serve --isolation {weak[0]} "
                "--allow-weak-isolation`)."
            )
    return EXIT_OK if strong else EXIT_FAILURE


def run_audit(args: argparse.Namespace) -> int:
    from sandbox.audit import render, write_json

    if args.url and (args.isolation or args.scope):
        args.command_parser.error("--isolation and --scope choose a local sandbox; leave them out with --url")
    if args.scope and (args.isolation or "namespaces") != "namespaces":
        args.command_parser.error("--scope applies to --isolation namespaces only")
    try:
        if args.url:
            from rewards.audit import audit_service

            token = args.token if args.token is not None else os.environ.get("EFFIRL_REWARD_TOKEN")
            report = audit_service(args.url, token=token, classes=args.only, progress=True)
        else:
            from sandbox.local_audit import audit_local
            from sandbox.worker import SandboxUnavailable

            try:
                report = audit_local(
                    args.isolation or "namespaces", args.scope or "worker", classes=args.only, progress=True
                )
            except SandboxUnavailable as exc:
                raise ValueError(f"{exc} (`effirl sandbox check` shows what this machine allows)") from None
    except ValueError as exc:  # an unknown class, an unreachable service, a refused token
        print(f"effirl: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(render(report))
    if args.json:
        write_json(report, args.json)
    return report.exit_code
