"""`effirl reward serve` and `python -m rewards.service`: one command, a flag for every field."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from rewards.service.command import NOT_FLAGS, build_parser, config_from_args, flag_fields, flag_name
from rewards.service.config import ServiceConfig
from rewards.settings import RewardSettings
from rewards.user_error import UserError
from tests.rewards.service_fixtures import REPO, ServiceProcess, get


def help_flags(*command: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, cwd=REPO, check=True
    )
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", done.stdout))


def test_both_commands_list_the_same_flags_one_per_field() -> None:
    served = help_flags("-m", "rewards.service")
    assert served == help_flags("-m", "rlhf.cli", "reward", "serve")
    flags = flag_fields()
    for owner, cls in (("service", ServiceConfig), ("reward", RewardSettings)):
        for f in dataclasses.fields(cls):
            is_flag = f.name in {g.name for g in flags[owner]}
            assert is_flag != (f"{owner}.{f.name}" in NOT_FLAGS), f"{owner}.{f.name}: a flag, or say why not"
    expected = {flag_name(f) for fields in flags.values() for f in fields}
    negations = {
        "--no-" + flag_name(f)[2:] for fields in flags.values() for f in fields if f.type in (bool, "bool")
    }
    assert "--no-dataset-paths" in negations and "--no-allow-script-tests" in negations
    assert served == expected | negations | {"--help", "--verbose", "--quiet"}
    assert {"--cost-measure", "--efficiency-weight", "--max-run-timeout-s", "--timeout-s"} <= served


def test_flags_become_the_service_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFIRL_REWARD_TOKEN", "s3cret")
    args = build_parser().parse_args(
        [
            *("--port", "0", "--workers", "3", "--cost-measure", "python_events"),
            *("--efficiency-weight", "1", "--speedup-clip", "3", "--timeout-s", "2.5"),
            *("--dataset-paths", "--queue-capacity", "100"),
        ]
    )
    config = config_from_args(args)
    assert (config.port, config.workers, config.token, config.dataset_paths) == (0, 3, "s3cret", True)
    assert config.reward == RewardSettings(
        cost_measure="python_events", efficiency_weight=1.0, speedup_clip=3.0, timeout_s=2.5
    )
    assert (config.queue_capacity, config.max_submissions) == (100, 100)
    monkeypatch.delenv("EFFIRL_REWARD_TOKEN")
    assert config_from_args(build_parser().parse_args([])) == ServiceConfig()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cost-measure", "wall"], "invalid choice: 'wall'"),
        (["--timeout"], "unrecognized arguments: --timeout"),
    ],
)
def test_bad_flags_exit_2_and_say_why(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    from rewards.service.command import main

    with pytest.raises(SystemExit) as done:
        main(argv, prog="effirl reward serve")
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: effirl reward serve" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--speedup-clip", "1"], "reward setting `speedup_clip` must be > 1"),
        (["--workers", "0"], "workers must be at least 1"),
        (["--timeout-s", "90"], "reward.timeout_s (90.0) must not exceed max_run_timeout_s (60.0)"),
        (["--port", "65536"], "port must be between 0 and 65535, got 65536"),
    ],
)
def test_values_out_of_range_are_user_errors(argv: list[str], message: str) -> None:
    from rewards.service.command import main

    with pytest.raises(UserError) as raised:
        main(argv, prog="effirl reward serve")
    assert message in str(raised.value) and "effirl reward serve --help" in str(raised.value)


def test_effirl_reward_serve_runs_with_its_flags() -> None:
    service = ServiceProcess("--workers", "1", "--cost-measure", "python_events", "--efficiency-weight", "1")
    try:
        status, _, health = get(service.url + "/healthz")
        assert status == 200 and health["cost_trusted"] is False
        assert health["settings"]["efficiency_weight"] == 1.0
        assert health["settings"]["cost_measure"] == "python_events"
    finally:
        assert service.stop() == 0
    assert "WARNING: cost_measure python_events is not trusted" in service.process.stderr.read()
