"""Built-in recipes ship inside the package and are found by name: `effirl train quickstart` takes
the GPU variant when a GPU is present, and older `recipes/NAME.yaml` paths still work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rewards.console import configure_logging
from rlhf.cli import main
from rlhf.config import ConfigError, builtin_recipes, load_config, resolve_recipe
from rlhf.config.recipes import gpu_available, recipes_dir

REPO = Path(__file__).resolve().parents[3]


def test_names_resolve_to_the_packaged_files() -> None:
    known = builtin_recipes()
    assert {"quickstart", "quickstart_gpu", "smoke"} <= set(known)
    assert all(path.parent == recipes_dir() for path in known.values())
    assert resolve_recipe("quickstart", gpu=False) == known["quickstart"]
    assert resolve_recipe("quickstart", gpu=True) == known["quickstart_gpu"]
    # With its suffix, or by its old path, a recipe is exactly that file, GPU or not.
    assert resolve_recipe("quickstart.yaml", gpu=True) == known["quickstart"]
    assert resolve_recipe("recipes/quickstart.yaml", gpu=True) == known["quickstart"]
    assert resolve_recipe("smoke", gpu=True) == known["smoke"]  # no GPU variant


def test_the_gpu_variant_is_announced(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(0)  # what the command line does: notices reach stderr
    resolve_recipe("quickstart", gpu=True)
    assert "effirl: recipe quickstart: a GPU is present, so the built-in quickstart_gpu.yaml" in (
        capsys.readouterr().err
    )
    configure_logging(-1)  # -q: they do not
    resolve_recipe("quickstart", gpu=True)
    assert capsys.readouterr().err == ""
    configure_logging(0)


def test_a_file_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("base: smoke.yaml\n")  # not a recipe of the package
    assert resolve_recipe("quickstart.yaml") == Path("quickstart.yaml")


def test_unknown_names_list_the_builtins() -> None:
    with pytest.raises(ConfigError, match=r"recipe not found: quikstart; .*quickstart, quickstart_gpu"):
        resolve_recipe("quikstart")


def test_load_config_by_name_matches_the_file() -> None:
    by_name = load_config("quickstart")
    expected = "quickstart_gpu" if gpu_available() else "quickstart"
    assert by_name.run_name == expected
    assert by_name == load_config(builtin_recipes()[expected])


def test_config_recipes_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("quickstart ") and "CPU" in line for line in lines)
    assert len(lines) == len(builtin_recipes())


def test_a_name_works_outside_a_checkout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "config", "show", "smoke", "train.steps=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "name_or_path: tiny:llama" in done.stdout and "steps: 1" in done.stdout
