from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxConfig

# The EvalPlus release files live outside the repository: $EFFIRL_DATA_DIR, else ../shared/data.
DATA_DIR = Path(
    os.environ.get("EFFIRL_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)
HUMANEVALPLUS_FILE = DATA_DIR / "humanevalplus" / "HumanEvalPlus.jsonl.gz"
MBPPPLUS_FILE = DATA_DIR / "mbppplus" / "MbppPlus.jsonl.gz"


def release_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(
            f"{path.name} not found: set EFFIRL_DATA_DIR to a folder holding {path.parent.name}/{path.name}"
        )
    return path


@pytest.fixture(scope="session")
def humanevalplus_file() -> Path:
    return release_file(HUMANEVALPLUS_FILE)


@pytest.fixture(scope="session")
def mbppplus_file() -> Path:
    return release_file(MBPPPLUS_FILE)


@pytest.fixture(scope="session")
def box() -> Iterator[Sandbox]:
    """A shared sandbox for reference runs and ground-truth checks."""
    sandbox = Sandbox(SandboxConfig(workers=2, timeout_s=60.0))
    yield sandbox
    sandbox.close()
