"""rewards/ stays below rlhf/: loading tasks pulls in neither torch nor rlhf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
import sys
import rewards.datasets, rewards.extraction, rewards.synthetic
from rewards.datasets import load_tasks
load_tasks("humaneval", limit=1)
load_tasks("synthetic", limit=3)
print(sorted(name for name in ("torch", "rlhf") if name in sys.modules))
"""


def test_loading_tasks_imports_neither_torch_nor_rlhf() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert done.stdout.strip() == "[]"
