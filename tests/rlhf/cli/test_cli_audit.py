"""`effirl sandbox audit`: its table, its JSON and its exit codes (0 contained, 1 not, 2 usage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewards.service import RewardService, ServiceConfig
from rlhf.cli import main
from sandbox import Sandbox, SandboxConfig

TOKEN = "cli-audit-token-93ab"


def test_contained_classes_exit_0_with_a_table_and_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "audit.json"
    assert main(["sandbox", "audit", "--only", "exit_status", "--only", "memory", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "isolation in use: namespaces (worker scope)" in text and "probe_isolation" in text
    assert " 7. program exit status from text" in text and "contained         os_exit" in text
    assert (
        text.rstrip()
        .splitlines()[-1]
        .startswith("audit passed (nothing NOT CONTAINED or inconclusive): 5 contained")
    )
    data = json.loads(out.read_text())
    assert data["exit_code"] == 0 and {f["class"] for f in data["findings"]} == {"exit_status", "memory"}


def test_a_weak_level_exits_1(capsys) -> None:
    assert main(["sandbox", "audit", "--isolation", "process", "--only", "escapes"]) == 1
    text = capsys.readouterr().out
    assert "isolation in use: process" in text and "NOT CONTAINED     host_processes" in text


def test_usage_errors_exit_2_on_one_line(capsys) -> None:
    assert main(["sandbox", "audit", "--only", "nope"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("effirl: error: unknown attack class 'nope'") and error.count("\n") == 1
    assert main(["sandbox", "audit", "--url", "http://127.0.0.1:1"]) == 2
    error = capsys.readouterr().err
    assert "no reward service answers at http://127.0.0.1:1" in error and error.count("\n") == 1
    for wrong in (
        ["--url", "http://127.0.0.1:1", "--scope", "run"],
        ["--isolation", "bwrap", "--scope", "run"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(["sandbox", "audit", *wrong])
        assert exited.value.code == 2


def test_a_service_audit_with_and_without_its_token(capsys, monkeypatch) -> None:
    with (
        Sandbox(SandboxConfig(workers=1)) as box,
        RewardService(ServiceConfig(port=0, token=TOKEN), sandbox=box) as service,
    ):
        audit = ["sandbox", "audit", "--url", service.url, "--only", "json_depth"]
        assert main([*audit, "--token", "wrong"]) == 2
        assert "refused the token" in capsys.readouterr().err
        monkeypatch.setenv("EFFIRL_REWARD_TOKEN", TOKEN)  # the default token, as `reward serve` reads it
        assert main(audit) == 0
    text = capsys.readouterr().out
    assert f"effirl sandbox audit of {service.url}" in text and "contained         deep_bodies" in text
