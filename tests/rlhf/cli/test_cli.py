"""The `effirl` command line: config commands, exit codes, and dispatch to the command modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlhf.cli import main
from rlhf.cli.entry_points import ENTRY_POINTS, EntryPoint
from rlhf.config import load_config
from rlhf.config.docs import render_config_docs

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "rlhf" / "recipes" / "smoke.yaml")

# A real module standing in for the command implementations other packages provide: it records
# each call so the tests can check what the CLI passes along.
RECORDING_MODULE = """
CALLS = []

def _record(name, *args, **kwargs):
    CALLS.append((name, args, kwargs))
    return 0

def train(config): return _record("train", config)
def sft(config): return _record("sft", config)
def run_evaluation(**options): return _record("eval", **options)
def export_checkpoint(checkpoint, *, out, merge, dtype, base, with_base):
    return _record("export", checkpoint, out=out, merge=merge, dtype=dtype, base=base, with_base=with_base)
def main(argv, *, prog):
    return _record("reward serve", list(argv), prog=prog)
"""


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point every entry point at a freshly written recording module; yields that module."""
    name = f"effirl_recorder_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(RECORDING_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for command, entry in ENTRY_POINTS.items():
        monkeypatch.setitem(ENTRY_POINTS, command, EntryPoint(name, entry.function, entry.signature))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


def test_config_show_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", SMOKE, "rollout.n_samples=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["rollout"]["n_samples"] == 3
    assert shown["model"]["name_or_path"] == "tiny:llama"
    assert shown["run_name"] == "smoke"


def test_config_show_as_a_real_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "config", "show", "recipes/smoke.yaml", "rollout.n_samples=3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,  # only a guard against a hang: a loaded machine imports torch slowly
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["rollout"]["n_samples"] == 3


def test_config_show_without_a_recipe_starts_from_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "train.steps=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["steps"] == 7
    assert shown["model"]["name_or_path"] == "builtin:smollm2-135m-instruct"


def test_config_error_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", SMOKE, "rollout.temprature=0.5"]) == 2
    err = capsys.readouterr().err
    assert err == "effirl: error: unknown key `rollout.temprature`; did you mean `rollout.temperature`?\n"


def test_debug_anywhere_on_the_line_adds_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EFFIRL_DEBUG", raising=False)
    for argv in (
        ["--debug", "config", "show", SMOKE, "a.b=1"],
        ["config", "show", SMOKE, "a.b=1", "--debug"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last)") and "ConfigError" in err
        assert err.splitlines()[-1].startswith("effirl: error: unknown key `a.b`; sections are model")
    monkeypatch.setenv("EFFIRL_DEBUG", "1")
    assert main(["config", "show", SMOKE, "a.b=1"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_config_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  steps: many\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "train", str(recipe)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,  # only a guard against a hang: a loaded machine imports torch slowly
    )
    assert result.returncode == 2
    assert result.stderr == f"effirl: error: `train.steps` expects int, got 'many' (str) (from {recipe})\n"


def test_config_docs_prints_and_writes_the_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "docs"]) == 0
    assert capsys.readouterr().out == render_config_docs()
    out = tmp_path / "config.md"
    assert main(["config", "docs", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_config_docs()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["config"]) == 2
    with pytest.raises(SystemExit) as missing_recipe:
        main(["train"])
    assert missing_recipe.value.code == 2
    with pytest.raises(SystemExit) as unknown_option:
        main(["train", SMOKE, "--nope"])
    assert unknown_option.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["sft", "--help"],
        ["eval", "--help"],
        ["export", "--help"],
        ["reward", "serve", "--help"],
        ["data", "--help"],
        ["data", "download", "--help"],
        ["data", "show", "--help"],
        ["config", "show", "--help"],
        ["config", "docs", "--help"],
    ],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage: effirl" in capsys.readouterr().out


def test_missing_command_module_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(ENTRY_POINTS, "train", EntryPoint("rlhf.no_such_module", "train", ""))
    assert main(["train", SMOKE]) == 1
    assert capsys.readouterr().err == (
        "effirl: error: `effirl train` is not available in this build: "
        "module `rlhf.no_such_module` is not installed\n"
    )
    monkeypatch.setitem(ENTRY_POINTS, "export", EntryPoint("rlhf.config", "no_such_function", ""))
    assert main(["export", "ckpt", "--out", "x"]) == 1
    assert "`rlhf.config` has no `no_such_function`" in capsys.readouterr().err


def test_config_is_checked_before_the_command_module_is_looked_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(ENTRY_POINTS, "train", EntryPoint("rlhf.no_such_module", "train", ""))
    assert main(["train", SMOKE, "rollout.n_samples=zero"]) == 2
    assert "`rollout.n_samples` expects int" in capsys.readouterr().err


def test_import_errors_inside_a_command_module_are_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "effirl_broken_command.py").write_text("import effirl_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(ENTRY_POINTS, "sft", EntryPoint("effirl_broken_command", "sft", ""))
    with pytest.raises(ModuleNotFoundError, match="effirl_dependency_that_is_missing"):
        main(["sft", SMOKE])


def test_train_passes_the_resolved_config(recorder: Any) -> None:
    assert main(["train", SMOKE, "train.steps=3", "--resume", "rollout.n_samples=5"]) == 0
    [(name, (config,), _)] = recorder.CALLS
    assert name == "train"
    assert config == load_config(SMOKE, ["train.steps=3", "rollout.n_samples=5", "resume=auto"])
    assert main(["train", SMOKE]) == 0
    assert recorder.CALLS[-1][1][0].resume is None


def test_other_commands_pass_their_arguments(recorder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["sft", SMOKE, "train.steps=4"]) == 0
    assert recorder.CALLS[-1][1][0].train.steps == 4
    assert main(["eval", "--checkpoint", "runs/x/step-3", "--benchmark", "synthetic", "--out", "r"]) == 0
    options = recorder.CALLS[-1][2]
    assert (options["checkpoint"], options["benchmark"], options["out"]) == (
        "runs/x/step-3",
        "synthetic",
        "r",
    )
    assert options["run"] is None and options["n_samples"] == 1 and options["cost"] == "cpu"
    assert main(["eval", "--run", "runs/x", "--all-checkpoints", "--benchmark", "b", "--out", "r"]) == 0
    assert recorder.CALLS[-1][2]["run"] == "runs/x" and recorder.CALLS[-1][2]["all_checkpoints"]
    assert main(["export", "runs/x/final", "--out", "exported", "--merge", "--dtype", "bf16"]) == 0
    assert recorder.CALLS[-1][1:] == (
        ("runs/x/final",),
        {"out": "exported", "merge": True, "dtype": "bf16", "base": None, "with_base": False},
    )
    # `reward serve` hands every argument to the service's own command line (its one parser).
    assert main(["reward", "serve", "--port", "9001", "--workers", "3", "--help"]) == 0
    assert recorder.CALLS[-1] == (
        "reward serve",
        (["--port", "9001", "--workers", "3", "--help"],),
        {"prog": "effirl reward serve"},
    )


def test_a_command_returning_nonzero_sets_the_exit_code(recorder: Any) -> None:
    recorder.train = lambda config: 3
    assert main(["train", SMOKE]) == 3


@pytest.mark.slow
def test_a_training_run_says_more_with_v_and_less_with_q(tmp_path: Path) -> None:
    def run(*flags: str) -> str:
        argv = ["train", "smoke", f"output_dir={tmp_path / str(len(flags))}", "train.steps=1", *flags]
        # Every update drawn: an evaluation quicker than tqdm's default 0.1 s would show only 0/4.
        env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_MININTERVAL": "0"}
        env.pop("TQDM_DISABLE", None)
        done = subprocess.run(
            [sys.executable, "-m", "rlhf.cli", *argv], capture_output=True, text=True, cwd=REPO, env=env
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    verbose = run("-v")
    assert "effirl: rewards: local backend, cost cpu, isolation namespaces" in verbose
    assert "effirl: saving the checkpoint of step 1" in verbose and "effirl: eval at end:" in verbose
    assert "| 4/4 [" in verbose and "task/s]" in verbose  # the evaluation's progress bar (4 tasks)
    quiet = run("-q", "--quiet")
    assert "eval at end" not in quiet and "train:" not in quiet and "rewards:" not in quiet
