"""The sandbox's isolation level as a reward setting: chosen in a recipe (`reward.isolation`) or with
`effirl reward serve --isolation`, weak levels only with an explicit opt-in and a loud warning, never
sent to (or accepted by) a reward service; and `effirl sandbox check` saying which levels work here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from rewards.scorer import RewardScorer
from rewards.service import RewardService, ServiceConfig
from rewards.service.command import build_parser, config_from_args
from rewards.settings import PLACEMENT_KEYS, RewardSettings, SettingError
from rewards.tasks import Task
from sandbox import Sandbox
from sandbox.types import FunctionTest
from tests.rewards.service_fixtures import REPO, post

ADD = Task(id="toy/add", prompt="", entry_point="add", function_tests=(FunctionTest((1, 2), 3),))
ANSWER = "def add(a, b):\n    return a + b\n"


def test_weak_levels_need_the_opt_in_and_say_so() -> None:
    assert RewardSettings().isolation == "namespaces" and RewardSettings().isolation_warning is None
    with pytest.raises(SettingError, match="allow_weak_isolation") as caught:
        RewardSettings(isolation="none")
    assert caught.value.key == "isolation" and "effirl sandbox check" in str(caught.value)
    with pytest.raises(SettingError, match="must be one of"):
        RewardSettings(isolation="chroot")
    weak = RewardSettings(isolation="none", allow_weak_isolation=True)
    assert "does NOT contain untrusted code" in weak.isolation_warning
    assert weak.sandbox_config().isolation == "none" and weak.sandbox_config().allow_weak_isolation
    assert RewardSettings(isolation="bwrap").sandbox_config().isolation == "bwrap"


def test_isolation_never_travels_to_a_service() -> None:
    assert {"isolation", "allow_weak_isolation"} <= set(PLACEMENT_KEYS)
    assert "isolation" not in RewardSettings().scoring_dict()
    with pytest.raises(SettingError, match="the service runs code with its own isolation"):
        RewardSettings(service_url="http://127.0.0.1:1", isolation="bwrap")


def test_a_request_cannot_choose_the_services_isolation() -> None:
    with RewardService(ServiceConfig(port=0, workers=1)) as service:
        item = {"task_id": "x", "completion": ANSWER}
        request = {"dataset": "synthetic", "items": [item], "settings": {"isolation": "none"}}
        status, _, body = post(service.url + "/v1/score", request)
    assert status == 400 and "`settings.isolation`" in body["error"]


def test_reward_serve_flags_choose_the_level() -> None:
    parser = build_parser()
    with pytest.raises(ValueError, match="allow_weak_isolation"):
        config_from_args(parser.parse_args(["--isolation", "none"]))
    config = config_from_args(parser.parse_args(["--isolation", "none", "--allow-weak-isolation"]))
    assert config.sandbox_config().isolation == "none"
    assert config_from_args(parser.parse_args(["--isolation", "bwrap"])).sandbox_config().isolation == "bwrap"


def test_a_recipe_chooses_the_level() -> None:
    from rlhf.config import ConfigError, load_config
    from rlhf.scoring.reward_stage import reward_settings

    with pytest.raises((ConfigError, ValueError), match="allow_weak_isolation"):
        load_config("smoke", ["reward.isolation=process"])
    config = load_config("smoke", ["reward.isolation=process", "reward.allow_weak_isolation=true"])
    assert reward_settings(config).sandbox_config().isolation == "process"


def test_none_scores_for_real_and_warns_loudly(capfd: pytest.CaptureFixture[str]) -> None:
    settings = RewardSettings(isolation="none", allow_weak_isolation=True, workers=1)
    with Sandbox(settings.sandbox_config()) as box:
        [reward] = RewardScorer(box, settings).score([ADD], [ANSWER])
    assert reward.evidence.status == "passed"
    assert (
        "WARNING: effirl sandbox isolation 'none' does NOT contain untrusted code" in capfd.readouterr().err
    )


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_bwrap_scores_for_real() -> None:
    settings = RewardSettings(isolation="bwrap", workers=1)
    with Sandbox(settings.sandbox_config()) as box:
        assert box.config.isolation == "bwrap"
        [reward] = RewardScorer(box, settings).score([ADD], [ANSWER])
    assert reward.evidence.status == "passed"


def test_sandbox_check_says_which_levels_work() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "sandbox", "check"], capture_output=True, text=True, cwd=REPO
    )
    lines = done.stdout.splitlines()
    for level in ("namespaces (worker scope)", "bwrap", "process", "none"):
        assert any(line[4:].startswith(level) for line in lines), done.stdout
    summary = next(line for line in lines if line.startswith("isolation levels that work here:"))
    working = summary.split(":", 1)[1].strip()
    strong = any(level in working for level in ("namespaces", "bwrap"))
    assert done.returncode == (0 if strong else 1)
    assert ("reward.isolation:" in done.stdout) and ("--isolation" in done.stdout)
