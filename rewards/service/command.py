"""The reward service's command line: ``effirl reward serve`` and ``python -m rewards.service``.

Both are this one command. Its flags are generated from the fields of :class:`ServiceConfig` and
:class:`RewardSettings` (name, type, choices, default and help text), so a field added to either is a
flag at once; the fields that are not flags are listed below with the reason.

    effirl reward serve --port 8080 --workers 8 --cost-measure cpu --efficiency-weight 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

from rewards.console import configure_logging
from rewards.service.config import ServiceConfig
from rewards.settings import RewardSettings
from rewards.user_error import UserError

PROG = "python -m rewards.service"
TOKEN_ENV = "EFFIRL_REWARD_TOKEN"

# Fields that are not flags, and why.
NOT_FLAGS = {
    "service.reward": "its fields are flags of their own",
    "service.sandbox": "derived from the reward settings and --workers",
    "reward.workers": "--workers (the service's pool) says it",
    "reward.service_url": "where a trainer sends completions; a service does not forward them",
}

_DESCRIPTION = """\
Serve rewards over HTTP with local sandbox workers: /v1/score (what trainers use through
reward.service_url), /v1/evaluate, SandboxFusion's /run_code, /healthz and /metrics
(docs/reward_service.md). Bind to a non-local host only behind --token.

The reward settings below are what a request is scored with when it does not say. A request's
`settings` change the shaping keys freely and the execution keys where the service can run that way
(--repeats, --timeout-s up to --max-repeats and --max-run-timeout-s); a request asking for another
--cost-measure or --memory-mb than the service's is refused with 409, never scored with the
service's own. The sandbox's --isolation is the service's alone: no request can change it."""

_EXAMPLES = """\
examples:
  effirl reward serve --port 8080 --workers 8
  EFFIRL_REWARD_TOKEN=secret effirl reward serve --host 0.0.0.0
  effirl reward serve --efficiency-weight 1.0 --repeats 3 --max-run-timeout-s 30
  effirl reward serve --isolation bwrap            # `effirl sandbox check` says which levels work
  effirl reward serve --isolation none --allow-weak-isolation   # trusted code only, loudly warned"""


def flag_fields() -> dict[str, list[dataclasses.Field[Any]]]:
    """The fields that are flags, by owner (``service``, ``reward``), in declaration order."""
    owners: dict[str, type] = {"service": ServiceConfig, "reward": RewardSettings}
    return {
        owner: [f for f in dataclasses.fields(cls) if f"{owner}.{f.name}" not in NOT_FLAGS]
        for owner, cls in owners.items()
    }


def flag_name(f: dataclasses.Field[Any]) -> str:
    """``timeout_s`` -> ``--timeout-s``."""
    return "--" + f.name.replace("_", "-")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of the command, one flag per field of :func:`flag_fields`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more: -v details (INFO), -vv everything"
    )
    parser.add_argument(
        "-q", "--quiet", action="count", default=0, help="say less: -q warnings and errors only, -qq errors"
    )
    groups = {
        "service": parser.add_argument_group("service"),
        "reward": parser.add_argument_group(
            "reward settings", "the service's own; see docs/rewards.md and docs/config.md (`reward`)"
        ),
    }
    hints = {"service": typing.get_type_hints(ServiceConfig), "reward": typing.get_type_hints(RewardSettings)}
    seen: set[str] = set()
    for owner, fields in flag_fields().items():
        for f in fields:
            if f.name in seen:
                raise AssertionError(f"two fields named {f.name!r} would share the flag {flag_name(f)}")
            seen.add(f.name)
            _add_flag(groups[owner], f, hints[owner][f.name], owner)
    return parser


def _add_flag(group: Any, f: dataclasses.Field[Any], hint: Any, owner: str) -> None:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    help_text = str(f.metadata.get("help", "")).replace("%", "%%")
    shown = "none" if default is None else default
    if owner == "service" and f.name == "token":
        shown = f"${TOKEN_ENV}, else none"
    options: dict[str, Any] = {"dest": f"{owner}.{f.name}", "default": argparse.SUPPRESS}
    base = _non_null(hint)
    if base is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif get_origin(base) is Literal:
        options["choices"] = list(get_args(base))
    elif base in (int, float, str):
        options["type"] = base
        options["metavar"] = {int: "N", float: "X", str: "TEXT"}[base]
    else:
        raise AssertionError(f"no flag for {owner}.{f.name} of type {hint!r}; add it to NOT_FLAGS")
    group.add_argument(flag_name(f), help=f"{help_text} (default: {shown})", **options)


def _non_null(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        members = [m for m in get_args(hint) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """The :class:`ServiceConfig` the parsed flags ask for; flags left out keep the fields' defaults.

    Raises ValueError (from the dataclasses' own checks) for values out of range.
    """
    given = {k: v for k, v in vars(args).items() if k not in ("verbose", "quiet")}
    service = {key.split(".", 1)[1]: v for key, v in given.items() if key.startswith("service.")}
    reward = {key.split(".", 1)[1]: v for key, v in given.items() if key.startswith("reward.")}
    if "token" not in service and os.environ.get(TOKEN_ENV):
        service["token"] = os.environ[TOKEN_ENV]
    defaults = ServiceConfig()
    if "queue_capacity" in service and "max_submissions" not in service:
        # Lowering the queue alone should work: cap the per-request limit to it.
        service["max_submissions"] = min(defaults.max_submissions, service["queue_capacity"])
    return ServiceConfig(**service, reward=RewardSettings(**reward))


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the service until SIGINT or SIGTERM.

    A flag value out of range or a port that cannot be bound raises :class:`UserError` (the
    command line reports it on one line); argparse's own errors exit with status 2 and the usage.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    verbosity = args.verbose - args.quiet
    if prog == PROG or verbosity:  # `effirl reward serve` has configured logging already
        configure_logging(verbosity)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise UserError(f"{exc}; fix the flag (`{prog} --help` lists them)") from exc
    from rewards.service import serve

    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
