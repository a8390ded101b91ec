"""The distribution: the `effirl` import package, the split of dependencies into installs, the
licence, and the recipes and type markers that ship as package data."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import effirl

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TRAINING_STACK = ("torch", "ray", "transformers", "peft", "trl", "accelerate", "numpy", "datasets")


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_import_effirl_is_light_and_gives_the_version_and_api() -> None:
    program = (
        "import sys, effirl\n"
        "print(effirl.__version__)\n"
        "print(sorted(m for m in ('torch', 'ray', 'rlhf', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, check=True
    )
    version, loaded = done.stdout.splitlines()
    assert version == PYPROJECT["project"]["version"] and loaded == "[]"
    for name in effirl.__all__:
        assert getattr(effirl, name) is not None, name
    assert effirl.RewardSettings.__module__ == "rewards.settings"
    assert effirl.load_config("smoke").model.name_or_path == "tiny:llama"
    from effirl.trl import efficiency_reward
    from effirl.verl import compute_score

    assert efficiency_reward.__name__ == "efficiency_reward" and callable(compute_score)


def test_the_service_install_holds_no_training_stack() -> None:
    project = PYPROJECT["project"]
    light = _names(project["dependencies"]) | _names(project["optional-dependencies"]["service"])
    assert not light & set(TRAINING_STACK)
    assert {"aiohttp", "prometheus-client"} <= light
    train = _names(project["optional-dependencies"]["train"])
    assert {"torch", "ray", "transformers", "peft", "trl"} <= train and "effirl" in train
    assert '".[train,dev]"' in (REPO / "scripts" / "setup.sh").read_text()


def test_licence_and_classifiers() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert (
        "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    )
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the SPDX field
    assert "Programming Language :: Python :: 3" in project["classifiers"]


def test_recipes_and_type_markers_are_package_data() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert "effirl*" in setuptools["packages"]["find"]["include"]
    recipes = sorted((REPO / "rlhf" / "recipes").glob("*.yaml"))
    assert recipes and setuptools["package-data"]["rlhf"] == ["recipes/*.yaml"]
    assert not (REPO / "recipes").exists()  # one copy, inside the package
    for package in ("effirl", "rlhf", "rewards", "sandbox"):
        assert (REPO / package / "py.typed").is_file()


def test_the_wheel_carries_the_packages_recipes_and_licence(tmp_path: Path) -> None:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building needs setuptools >= 77 (PEP 639 licence fields)")
    source = tmp_path / "src"  # built from a copy: building leaves build/ and *.egg-info behind
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("effirl", "rlhf", "rewards", "sandbox"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("effirl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"effirl/__init__.py", "effirl/trl.py", "effirl/verl.py", "rlhf/recipes/quickstart.yaml"} <= names
    assert {f"rlhf/recipes/{p.name}" for p in (REPO / "rlhf" / "recipes").glob("*.yaml")} <= names
    perf_recipes = REPO / "rewards" / "datasets" / "perf_recipes"
    assert {f"rewards/datasets/perf_recipes/{p.name}" for p in perf_recipes.glob("*.json")} <= names
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Provides-Extra: service" in metadata and "Provides-Extra: train" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
