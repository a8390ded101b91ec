"""effirl: RL fine-tuning that teaches code LLMs to write code that is correct and efficient.

``import effirl`` is cheap and needs neither torch nor Ray: the names below are imported when first
used, from the packages that implement them (``sandbox``, ``rewards``, ``rlhf``)::

    import effirl

    effirl.__version__
    with effirl.Sandbox(effirl.SandboxConfig(workers=2)) as box:          # the sandbox
        scorer = effirl.RewardScorer(box, effirl.RewardSettings())         # rewards
        rewards = scorer.score(tasks, completions)
    config = effirl.load_config("quickstart", ["train.steps=4"])          # training (effirl[train])
    effirl.train(config)

``effirl.trl`` and ``effirl.verl`` hold reward functions those trainers name by path.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:
    __version__ = importlib.metadata.version("effirl")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

# name -> module that defines it. The reward layer needs only the base install (the service and its
# clients: effirl[service]); the rest needs effirl[train].
_EXPORTS = {
    # the sandbox
    "Sandbox": "sandbox.pool",
    "SandboxConfig": "sandbox.config",
    "FunctionTest": "sandbox.types",
    "ProgramTest": "sandbox.types",
    "Status": "sandbox.types",
    # tasks and rewards
    "Task": "rewards.tasks",
    "load_tasks": "rewards.datasets",
    "RewardSettings": "rewards.settings",
    "RewardScorer": "rewards.scorer",
    "Reward": "rewards.shaping",
    "Evidence": "rewards.shaping",
    "RayRewardPool": "rewards.ray_pool",
    # the reward service and its clients
    "RewardService": "rewards.service",
    "ServiceConfig": "rewards.service",
    "RewardClient": "rewards.client",
    "AsyncRewardClient": "rewards.client",
    "RemoteScorer": "rewards.client",
    # other trainers
    "TrlReward": "rewards.trl",
    "trl_rows": "rewards.trl",
    "efficiency_reward": "rewards.trl",
    "compute_score": "rewards.verl",
    # training, evaluation, export
    "ExperimentConfig": "rlhf.config",
    "load_config": "rlhf.config",
    "builtin_recipes": "rlhf.config",
    "train": "rlhf.training.trainer",
    "run_evaluation": "rlhf.evaluation",
    "export_checkpoint": "rlhf.training.export",
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        try:
            module = importlib.import_module(_EXPORTS[name])
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] in ("effirl", "rlhf", "rewards", "sandbox"):
                raise
            raise ModuleNotFoundError(
                f"effirl.{name} needs {exc.name}, which is not installed: pip install 'effirl[train]' "
                "(the reward service and its clients need only 'effirl[service]')",
                name=exc.name,
            ) from exc
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'effirl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
