"""The whole configuration of a run: its sections plus the keys of the run itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.config.learning import (
    AlgorithmConfig,
    PlacementConfig,
    TrainConfig,
    WarmStartConfig,
    algorithm_registry,
)
from rlhf.config.schema import ConfigError, Section, setting
from rlhf.config.sections import DataConfig, LoraConfig, ModelConfig, RewardConfig, RolloutConfig


@dataclass
class ExperimentConfig(Section):
    """Keys of the run itself: where it writes, when it evaluates and saves, how it logs and resumes."""

    output_dir: str | None = setting(
        None, "Directory for checkpoints, metrics and logs; null is `runs/<run_name>`."
    )
    run_name: str = setting(
        "run",
        "Name of the run in logs and the default output directory; `effirl` sets it to the recipe's "
        "file name (`quickstart` for quickstart.yaml) unless the recipe sets it.",
    )
    eval_every: int = setting(
        0, "Evaluate every N steps; 0 evaluates only as `eval_at_start` and `eval_at_end` say."
    )
    eval_at_start: bool = setting(
        True, "Evaluate before the first step (the baseline the run is judged against)."
    )
    eval_at_end: bool = setting(True, "Evaluate after the last step.")
    save_every: int = setting(0, "Save a checkpoint every N steps; 0 saves only at the end.")
    keep_checkpoints: int | None = setting(
        3, "Keep only the newest N periodic checkpoints (the final one is always kept); null keeps all."
    )
    log_every: int = setting(1, "Print and record metrics every N steps.")
    log_tensorboard: bool = setting(True, "Write TensorBoard event files under `<output_dir>/tensorboard`.")
    log_wandb: bool = setting(False, "Log metrics to Weights & Biases (needs the `wandb` extra and a login).")
    wandb_project: str = setting("effirl", "Weights & Biases project of the run.")
    resume: str | None = setting(
        None,
        "null starts a new run; `auto` resumes from the newest checkpoint in `output_dir` (an error "
        "when it has none); a path resumes from that checkpoint (`effirl train --resume` sets `auto`).",
    )
    overwrite: bool = setting(
        False,
        "Start a new run in an `output_dir` that holds an earlier one, after moving the earlier run's "
        "files aside to `<output_dir>.old-<time>` (`effirl train --overwrite` sets it). Without it "
        "(or `resume`) such a folder is refused, so no run's records are lost or mixed.",
    )

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = dataclasses.field(default_factory=AlgorithmConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    placement: PlacementConfig = dataclasses.field(default_factory=PlacementConfig)
    warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)

    def check_values(self) -> None:
        if not self.run_name.strip() or "/" in self.run_name:
            self.fail("run_name", "must be a non-empty name without `/`")
        if self.output_dir is None:
            self.output_dir = str(Path("runs") / self.run_name)
        elif not self.output_dir.strip():
            self.fail("output_dir", "must not be empty (use null for `runs/<run_name>`)")
        self.require_non_negative("eval_every", "save_every")
        self.require_positive("keep_checkpoints", "log_every")
        if self.resume is not None and not self.resume.strip():
            self.fail("resume", "must be null, `auto` or a checkpoint path")
        if self.overwrite and self.resume == "auto":
            raise ConfigError(
                "`overwrite` and `resume=auto` contradict each other: pass --resume to continue the "
                "run or --overwrite to start over, not both",
                "overwrite",
            )
        for section in self.sections().values():
            section.validate()
        self._check_across_sections()

    def sections(self) -> dict[str, Section]:
        """The sections by key (``model``, ``lora``, ...), in declaration order."""
        return {f.name: getattr(self, f.name) for f in section_fields()}

    def _check_across_sections(self) -> None:
        rollout, algorithm, reward = self.rollout, self.algorithm, self.reward
        algorithms = algorithm_registry()
        spec = None if algorithms is None else algorithms.resolve_algorithm(algorithm.name)
        if spec is not None and spec.group_baseline and rollout.n_samples < 2:
            raise ConfigError(
                f"`rollout.n_samples` must be >= 2 for `algorithm.name` {algorithm.name} (its baseline "
                f"compares samples of the same prompt); got {rollout.n_samples}",
                "rollout.n_samples",
            )
        if reward.efficiency_mode in ("group", "both") and rollout.n_samples < 2:
            raise ConfigError(
                f"`rollout.n_samples` must be >= 2 when `reward.efficiency_mode` is {reward.efficiency_mode} "
                f"(costs are compared within a prompt's samples); got {rollout.n_samples}",
                "rollout.n_samples",
            )
        if algorithm.overlong_buffer >= rollout.max_new_tokens:
            raise ConfigError(
                f"`algorithm.overlong_buffer` ({algorithm.overlong_buffer}) must be smaller than "
                f"`rollout.max_new_tokens` ({rollout.max_new_tokens})",
                "algorithm.overlong_buffer",
            )
        if self.warm_start.sft_steps and self.lora.adapter_path is not None:
            raise ConfigError(
                "`warm_start.sft_steps` and `lora.adapter_path` both choose the starting adapter; set "
                "`warm_start.sft_steps=0` to start from the saved adapter, or drop `lora.adapter_path`",
                "warm_start.sft_steps",
            )
        batch = self.data.prompts_per_step * rollout.n_samples
        if self.train.mini_batches > batch:
            raise ConfigError(
                f"`train.mini_batches` ({self.train.mini_batches}) must not exceed the samples per step, "
                f"`data.prompts_per_step` x `rollout.n_samples` = {batch}",
                "train.mini_batches",
            )
        if self.model.device == "cpu" and (self.placement.num_gpus_per_worker or 0) > 0:
            raise ConfigError(
                "`placement.num_gpus_per_worker` must be 0 or null when `model.device` is cpu; "
                f"got {self.placement.num_gpus_per_worker}",
                "placement.num_gpus_per_worker",
            )


def section_fields() -> list[dataclasses.Field[Any]]:
    """The fields of ExperimentConfig that hold sections."""
    return [f for f in dataclasses.fields(ExperimentConfig) if _is_section_type(f)]


def top_level_fields() -> list[dataclasses.Field[Any]]:
    """The fields of ExperimentConfig that are plain keys (``output_dir``, ``eval_every``, ...)."""
    return [f for f in dataclasses.fields(ExperimentConfig) if not _is_section_type(f)]


def section_types() -> dict[str, type[Section]]:
    """Section key -> section class (``{"model": ModelConfig, ...}``)."""
    return {f.name: f.default_factory for f in section_fields()}  # type: ignore[misc]


def _is_section_type(f: dataclasses.Field[Any]) -> bool:
    factory = f.default_factory
    return isinstance(factory, type) and issubclass(factory, Section)
