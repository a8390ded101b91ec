"""Checkpoints: everything needed to continue a run exactly, written atomically.

Layout of ``<output_dir>/checkpoints/step-N/``::

    adapter/adapter_config.json        the policy adapter as a standard PEFT adapter folder
    adapter/adapter_model.safetensors  (loadable with PeftModel.from_pretrained, used by export)
    critic.safetensors                 PPO only: the critic adapter and value head
    optimizer.pt, scheduler.pt         learner state
    rng.pt                             python, numpy and torch (and CUDA) generator states, of this
                                       process and (``workers``) of each Ray policy actor
    pending_rollouts.pt                async rollout only: the samples generated ahead for the next step
    trainer_state.json                 step, data position, base model identity, final metrics,
                                       the run id (``extra.run_id``; see rlhf/training/run_folder.py)

A checkpoint is written into a temporary sibling directory and renamed into place, so a crash never
leaves a half-written ``step-N``; readers ignore temporary directories.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rewards.tasks import Task
from rewards.user_error import UserError
from rlhf.training.run_folder import RUN_FILE, read_run_id
from rlhf.types import Rollouts

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
REQUIRED_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "trainer_state.json")
PENDING_FILE = "pending_rollouts.pt"
_ROLLOUT_TENSORS = (
    "group_ids", "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "behaviour_logprobs",
    "truncated",
)  # fmt: skip


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, incomplete or does not fit the run."""


@dataclass
class TrainerState:
    """The JSON part of a checkpoint."""

    step: int
    data_position: dict[str, Any]
    base_model: str
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LearnerState:
    """The learner's part of a checkpoint, as the policy worker gives and takes it.

    ``optimizer`` and ``scheduler`` are the policy's; with a critic (PPO) ``critic`` holds its adapter
    and value head tensors and ``critic_optimizer`` its optimizer. A fresh learner's state (all
    optimizers empty, the schedule at its start) resets a learner to it.
    """

    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    critic: dict[str, torch.Tensor] | None = None
    critic_optimizer: dict[str, Any] | None = None


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    state: TrainerState
    adapter: dict[str, torch.Tensor]
    adapter_config: dict[str, Any]
    learner: LearnerState
    rng: dict[str, Any] | None
    pending_rollouts: dict[str, Any] | None = None


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step}"


def save_checkpoint(
    output_dir: str | Path,
    state: TrainerState,
    *,
    adapter: dict[str, torch.Tensor],
    adapter_config: dict[str, Any],
    learner: LearnerState | None = None,
    worker_rng: list[dict[str, Any]] | None = None,
    pending_rollouts: Rollouts | None = None,
    keep: int | None = None,
    protect: tuple[int, ...] = (),
) -> Path:
    """Write ``checkpoints/step-<state.step>`` atomically; prune to the newest ``keep`` afterwards.

    ``learner``: optimiser, scheduler and critic state (``Placement.training_state``).
    ``worker_rng``: the generator states of the placement's actors (``Placement.rng_states``).
    ``pending_rollouts``: a rollout generated ahead for the next step (``Controller.pending_rollouts``).
    Steps in ``protect`` (e.g. the final step) are never pruned.
    """
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(output_dir, state.step)
    staging = Path(tempfile.mkdtemp(prefix=f".step-{state.step}-", dir=root))
    try:
        (staging / "adapter").mkdir()
        save_file(_contiguous(adapter), str(staging / "adapter" / "adapter_model.safetensors"))
        (staging / "adapter" / "adapter_config.json").write_text(
            json.dumps(adapter_config, indent=2, default=str)
        )
        learner = learner or LearnerState()
        if learner.critic is not None:
            save_file(_contiguous(learner.critic), str(staging / "critic.safetensors"))
        optimizer = learner.optimizer
        if learner.critic_optimizer is not None:
            optimizer = {"policy": optimizer, "critic": learner.critic_optimizer}
        if optimizer is not None:
            torch.save(optimizer, staging / "optimizer.pt")
        if learner.scheduler is not None:
            torch.save(learner.scheduler, staging / "scheduler.pt")
        rng = capture_rng()
        if worker_rng:
            rng["workers"] = worker_rng
        torch.save(rng, staging / "rng.pt")
        if pending_rollouts is not None:
            torch.save(rollouts_state(pending_rollouts), staging / PENDING_FILE)
        (staging / "trainer_state.json").write_text(json.dumps(state.__dict__, indent=2, default=str))
        _fsync_tree(staging)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if keep is not None:
        prune_checkpoints(output_dir, keep, protect=(*protect, state.step))
    return final


def load_checkpoint(path: str | Path, *, expected_base_model: str | None = None) -> Checkpoint:
    """Read a checkpoint; raises CheckpointError naming what is missing or mismatched."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    state = TrainerState(**json.loads((path / "trainer_state.json").read_text()))
    _check_run_id(path, state)
    if expected_base_model is not None and state.base_model != expected_base_model:
        raise CheckpointError(
            f"checkpoint {path} was trained on base model {state.base_model!r}, not {expected_base_model!r}; "
            "load it with the model it was trained on (model.name_or_path)"
        )

    def optional(name: str) -> Any:
        file = path / name
        return torch.load(file, map_location="cpu", weights_only=False) if file.is_file() else None

    critic_file = path / "critic.safetensors"
    optimizer, critic_optimizer = optional("optimizer.pt"), None
    if optimizer is not None and "policy" in optimizer and "state" not in optimizer:
        # With a critic the file holds both optimizers (a plain optimizer state has "state").
        optimizer, critic_optimizer = optimizer["policy"], optimizer.get("critic")
    return Checkpoint(
        path=path,
        state=state,
        adapter=load_file(str(path / "adapter" / "adapter_model.safetensors")),
        adapter_config=json.loads((path / "adapter" / "adapter_config.json").read_text()),
        learner=LearnerState(
            optimizer=optimizer,
            scheduler=optional("scheduler.pt"),
            critic=load_file(str(critic_file)) if critic_file.is_file() else None,
            critic_optimizer=critic_optimizer,
        ),
        rng=optional("rng.pt"),
        pending_rollouts=optional(PENDING_FILE),
    )


def rollouts_state(rollouts: Rollouts) -> dict[str, Any]:
    """A picklable record of ``rollouts``; tasks are kept as ids (see :func:`rollouts_from_state`)."""
    state: dict[str, Any] = {name: getattr(rollouts, name).detach().cpu() for name in _ROLLOUT_TENSORS}
    state.update(
        task_ids=[t.id for t in rollouts.tasks], texts=list(rollouts.texts), metrics=rollouts.metrics
    )
    return state


def rollouts_from_state(state: dict[str, Any], tasks: Sequence[Task]) -> Rollouts:
    """The Rollouts of :func:`rollouts_state`, their tasks looked up by id among ``tasks``."""
    by_id = {task.id: task for task in tasks}
    missing = [i for i in state["task_ids"] if i not in by_id]
    if missing:
        raise CheckpointError(
            f"the checkpoint's pending rollouts answer tasks this run does not have ({missing[:3]}); "
            "resume with the same data"
        )
    tensors = {name: state[name] for name in _ROLLOUT_TENSORS}
    return Rollouts(
        tasks=[by_id[i] for i in state["task_ids"]],
        texts=list(state["texts"]),
        metrics=state["metrics"],
        **tensors,
    )


def _check_run_id(path: Path, state: TrainerState) -> None:
    """Refuse a checkpoint that another run wrote into this run's folder (see rlhf/training/run_folder.py)."""
    if path.parent.name != CHECKPOINTS:
        return
    run_dir = path.parent.parent
    folder_run, checkpoint_run = read_run_id(run_dir), state.extra.get("run_id")
    if folder_run is not None and checkpoint_run is not None and folder_run != checkpoint_run:
        raise CheckpointError(
            f"checkpoint {path} was written by run {checkpoint_run}, but {run_dir} holds run {folder_run} "
            f"({RUN_FILE}): the folder mixes two runs; move that checkpoint out, or use the run folder "
            "it came from"
        )


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and all((child / name).is_file() for name in REQUIRED_FILES):
            found.append((int(match.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(output_dir: str | Path, keep: int, *, protect: tuple[int, ...] = ()) -> None:
    checkpoints = list_checkpoints(output_dir)
    removable = [p for p in checkpoints if int(p.name.split("-")[1]) not in protect]
    for path in removable[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _fsync_tree(directory: Path) -> None:
    for file in directory.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
