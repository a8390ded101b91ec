"""`effirl train`: set a run up, evaluate, step the controller, checkpoint, resume, report."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

from rewards.console import notice
from rewards.datasets import check_training_tasks, evaluation_split, load_tasks
from rewards.settings import UNTRUSTED_COST_WARNING
from rewards.tasks import Task
from rewards.user_error import one_line
from rlhf.algorithms import AlgorithmSpec, resolve_algorithm
from rlhf.config import ConfigError, ExperimentConfig, config_to_dict, dump_config
from rlhf.distributed.placement import Placement, make_placement
from rlhf.models.policy_model import policy_tokenizer
from rlhf.rollout.task_sampler import TaskSampler
from rlhf.scoring.reward_stage import RewardStage
from rlhf.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    rollouts_from_state,
    save_checkpoint,
)
from rlhf.training.controller import Controller
from rlhf.training.run_folder import (
    RunFolder,
    continue_run_folder,
    read_run_id,
    refuse_used_folder,
    start_run_folder,
)
from rlhf.training.run_log import RunLog
from rlhf.training.warm_start import run_warm_start

logger = logging.getLogger(__name__)
HEADLINE = ("pass_rate", "speedup_mean", "reward")


def task_sources(config: ExperimentConfig) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """(dataset, split) of the training tasks and of the evaluation tasks."""
    data = config.data
    eval_source = data.eval_dataset or data.dataset
    eval_split = evaluation_split(eval_source, data.eval_split)
    return (data.dataset, data.split), (eval_source, eval_split)


def load_run_tasks(config: ExperimentConfig) -> tuple[list[Task], list[Task]]:
    """Training tasks and evaluation tasks of a recipe (never tasks of a held-out split).

    A dataset that cannot be loaded (files missing, an unknown name, rows that do not fit the
    column mapping) is a ConfigError naming the key at fault.
    """
    data = config.data
    (train_source, train_split), (eval_source, eval_split) = task_sources(config)
    refuse_heldout_tasks((), train_source, train_split)
    train_tasks = load_source_tasks("data.dataset", train_source, train_split, data.limit, data.columns)
    refuse_heldout_tasks(train_tasks)
    eval_key, eval_columns = (
        ("data.eval_dataset", data.eval_columns) if data.eval_dataset else ("data.dataset", data.columns)
    )
    eval_tasks = load_source_tasks(eval_key, eval_source, eval_split, data.eval_limit, eval_columns)
    return train_tasks, eval_tasks


def load_source_tasks(
    key: str, source: str, split: str | None, limit: int | None, columns: str | None
) -> list[Task]:
    """The tasks of one dataset of the config (``key`` names it); a ConfigError when they cannot load."""
    options = {} if columns is None else {"columns": columns}
    try:
        return load_tasks(source, split=split, limit=limit, **options)
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"`{key}` {source}: {one_line(exc)}", key=key) from exc


def check_model_source(config: ExperimentConfig) -> None:
    """ConfigError when the base model or the starting adapter can be seen to be missing."""
    from rlhf.models.loading import check_source

    name = config.model.name_or_path
    try:
        check_source(name)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"`model.name_or_path` {name}: {one_line(exc)}", key="model.name_or_path") from exc
    adapter = config.lora.adapter_path
    if adapter and not (Path(adapter) / "adapter_model.safetensors").is_file():
        raise ConfigError(
            f"`lora.adapter_path` {adapter} has no adapter_model.safetensors; point it at a PEFT adapter "
            "folder (a checkpoint's adapter/, `effirl sft` output or `effirl export` output)",
            key="lora.adapter_path",
        )


def refuse_heldout_tasks(
    tasks: list[Task] | tuple[()], source: str | None = None, split: str | None = None
) -> None:
    """ConfigError if training would see tasks of a split held out for evaluation."""
    try:
        check_training_tasks(tasks, source, split)
    except ValueError as exc:
        raise ConfigError(str(exc), key="data.split") from None


def resolve_resume(config: ExperimentConfig) -> Path | None:
    """The checkpoint to resume from: None for a new run; an error when there is none to resume."""
    if config.resume is None:
        return None
    if config.resume == "auto":
        found = latest_checkpoint(config.output_dir)
        if found is None:
            raise CheckpointError(
                f"--resume: output_dir {config.output_dir} has no checkpoint to resume from; start a new "
                "run without --resume (with --overwrite if the folder holds an earlier run)"
            )
        return found
    path = Path(config.resume)
    if not path.is_dir():
        raise CheckpointError(f"resume={config.resume}: no such checkpoint directory")
    return path


def _continues_own_run(config: ExperimentConfig, checkpoint: Checkpoint | None) -> bool:
    """Whether the run resumes from a checkpoint in its own output_dir (so continues that run)."""
    return (
        checkpoint is not None
        and checkpoint.path.resolve().parent.parent == Path(config.output_dir).resolve()
    )


def prepare_output_dir(config: ExperimentConfig, checkpoint: Checkpoint | None) -> RunFolder:
    """The run folder, ready for this run: continued when resuming from one of its own checkpoints,
    else a new run (a folder holding an earlier run needs ``overwrite``; see rlhf/training/run_folder.py)."""
    output_dir = Path(config.output_dir)
    if _continues_own_run(config, checkpoint):
        return continue_run_folder(output_dir)
    resumed_from = None
    if checkpoint is not None:
        resumed_from = {"checkpoint": str(checkpoint.path), "run_id": checkpoint.state.extra.get("run_id")}
    folder = start_run_folder(output_dir, overwrite=config.overwrite, resumed_from=resumed_from)
    if folder.moved_to is not None:
        _say(f"effirl: --overwrite: moved the earlier run in {output_dir} to {folder.moved_to}")
    return folder


def train(config: ExperimentConfig) -> int:
    """Run a recipe to the end; returns the process exit code."""
    output_dir = Path(config.output_dir)
    resume_from = resolve_resume(config)
    checkpoint = (
        load_checkpoint(resume_from, expected_base_model=config.model.name_or_path) if resume_from else None
    )
    start_step = checkpoint.state.step if checkpoint else 0
    check_model_source(config)
    train_tasks, eval_tasks = load_run_tasks(config)
    if not _continues_own_run(config, checkpoint):
        refuse_used_folder(output_dir, overwrite=config.overwrite)
    _say(f"effirl: {len(train_tasks)} training tasks, {len(eval_tasks)} evaluation tasks -> {output_dir}")

    sampler = TaskSampler(
        train_tasks, config.data.prompts_per_step, seed=config.data.seed, shuffle=config.data.shuffle
    )
    # The algorithm is resolved here, once; every stage below gets this spec, not the name.
    spec = resolve_algorithm(config.algorithm.name, config.algorithm.policy_loss)
    placement = _make_placement(config, spec)
    rewards = None
    log = None
    try:
        rewards = RewardStage(config)
        settings = rewards.settings
        logger.info(
            "rewards: %s backend, cost %s, isolation %s, efficiency weight %g (%s)",
            rewards.backend,
            settings.cost_measure,
            settings.isolation if rewards.backend != "http" else "the service's",
            settings.efficiency_weight,
            settings.efficiency_mode,
        )
        if not rewards.settings.cost_trusted:
            logger.warning("reward.%s", UNTRUSTED_COST_WARNING)
        if rewards.settings.isolation_warning is not None and rewards.backend != "http":
            logger.warning("reward.isolation: this run's %s", rewards.settings.isolation_warning)
        for tasks, (source, split) in zip((train_tasks, eval_tasks), task_sources(config)):
            rewards.register_tasks(tasks, source, split)
        # The folder is touched only now that the model and the tasks are loaded.
        folder = prepare_output_dir(config, checkpoint)
        (output_dir / "config.yaml").write_text(dump_config(dataclasses.replace(config, overwrite=False)))
        _say(f"effirl: run {folder.run_id} in {output_dir}")
        log = RunLog(
            output_dir,
            tensorboard=config.log_tensorboard,
            wandb=config.log_wandb,
            wandb_project=config.wandb_project,
            run_name=config.run_name,
            config=config_to_dict(config),
            resume_step=start_step if checkpoint else None,
        )
        controller = Controller(config, spec, placement, rewards, sampler)
        if checkpoint is not None:
            placement.load_training_state(checkpoint.adapter, checkpoint.learner)
            sampler.load_state_dict(checkpoint.state.data_position)
            if checkpoint.pending_rollouts is not None:
                controller.restore_pending(rollouts_from_state(checkpoint.pending_rollouts, train_tasks))
            controller.steps_done = start_step  # the KL metric's cadence continues too
            if checkpoint.rng is not None:
                placement.load_rng_states(checkpoint.rng.get("workers", []))
                restore_rng(checkpoint.rng)
            _say(f"effirl: resumed from {checkpoint.path} at step {start_step}")
        if checkpoint is None and config.warm_start.sft_steps:
            _warm_start(config, spec, placement, train_tasks)
        baseline = None
        if config.eval_at_start and start_step == 0:
            baseline = _evaluate(controller, eval_tasks, log, 0, "start")
        final_metrics = _loop(config, controller, placement, log, start_step, eval_tasks)
        final_eval = None
        if config.eval_at_end:
            final_eval = _evaluate(controller, eval_tasks, log, config.train.steps, "end")
        _save(config, placement, controller, config.train.steps, final_metrics, final=True)
        if baseline and final_eval:
            _report(baseline, final_eval)
    finally:
        if log is not None:
            log.close()
        if rewards is not None:
            rewards.close()
        placement.close()
    return 0


def _make_placement(config: ExperimentConfig, spec: AlgorithmSpec) -> Placement:
    """The placement; a base model that cannot be loaded (a Hub id that does not exist, no network
    and no cached copy) is a ConfigError."""
    try:
        return make_placement(config, spec)
    except OSError as exc:
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        module = frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""
        if not module.startswith(("transformers", "huggingface_hub")):
            raise
        name = config.model.name_or_path
        raise ConfigError(
            f"`model.name_or_path` {name}: cannot load it ({one_line(exc)}); check the name, or put the "
            "model in a local folder and give its path",
            key="model.name_or_path",
        ) from exc


def _warm_start(
    config: ExperimentConfig, spec: AlgorithmSpec, placement: Placement, train_tasks: list[Task]
) -> None:
    settings = config.warm_start
    _say(f"effirl: warm start: {settings.sft_steps} supervised steps on the training tasks' references")
    summary = run_warm_start(config, spec, placement, train_tasks, policy_tokenizer(config))
    _say(
        f"effirl: warm start done in {summary['seconds']:.0f} s on {summary['examples']} references: "
        f"NLL {summary['nll_first_batch']:.3f} -> {summary['nll_last_batch']:.3f} (first/last batch)"
    )


def _loop(
    config: ExperimentConfig,
    controller: Controller,
    placement: Placement,
    log: RunLog,
    start: int,
    eval_tasks: list[Task],
) -> dict[str, float]:
    from tqdm.auto import tqdm

    metrics: dict[str, float] = {}
    shown: dict[str, str] = {}
    steps = config.train.steps
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", unit="step", dynamic_ncols=True)
    for index in bar:
        step = index + 1
        step_started = time.perf_counter()
        metrics = controller.step(last=step == steps)
        metrics["time_step_s"] = time.perf_counter() - step_started
        if step % config.log_every == 0 or step == steps:
            log.log(step, metrics)
        if _finite(metrics.get("kl")):
            shown["kl"] = f"{metrics['kl']:.4f}"  # the newest measured value (algorithm.kl_metric_every)
        bar.set_postfix(
            reward=f"{metrics['reward']:.3f}",
            passed=f"{metrics['pass_rate']:.2f}",
            speedup=_fmt(metrics.get("speedup_mean")),
            **shown,
        )
        if config.eval_every and step % config.eval_every == 0 and step != steps:
            _evaluate(controller, eval_tasks, log, step, f"step {step}")
        if config.save_every and step % config.save_every == 0 and step != steps:
            _save(config, placement, controller, step, metrics, final=False)
    bar.close()
    return metrics


def _evaluate(
    controller: Controller, tasks: list[Task], run_log: RunLog, step: int, label: str
) -> dict[str, float]:
    metrics = controller.evaluate(tasks, label=f"eval at {label}")
    run_log.log(step, metrics, kind="eval")
    _say(
        f"effirl: eval at {label}: pass rate {metrics['pass_rate']:.3f}, mean speedup "
        f"{_fmt(metrics.get('speedup_mean'))}, reward {metrics['reward']:.3f} on {len(tasks)} tasks"
    )
    return metrics


def _save(
    config: ExperimentConfig,
    placement: Placement,
    controller: Controller,
    step: int,
    metrics: dict,
    *,
    final: bool,
) -> Path:
    pending = controller.pending_rollouts()  # waited for first: the actors' generators move on with it
    state = TrainerState(
        step=step,
        data_position=controller.data_position(),
        base_model=config.model.name_or_path,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
        extra={
            "run_name": config.run_name,
            "algorithm": config.algorithm.name,
            "final": final,
            "run_id": read_run_id(config.output_dir),
        },
    )
    logger.info("saving the checkpoint of step %d in %s", step, Path(config.output_dir) / "checkpoints")
    return save_checkpoint(
        config.output_dir,
        state,
        adapter=placement.adapter_state(),
        adapter_config=placement.adapter_config(),
        learner=placement.training_state(),
        worker_rng=placement.rng_states(),
        pending_rollouts=pending,
        keep=config.keep_checkpoints,
        protect=(config.train.steps,),
    )


def _report(start: dict[str, float], end: dict[str, float]) -> None:
    _say("effirl: held-out evaluation, start -> end")
    for key in HEADLINE:
        _say(f"  {key:14s} {_fmt(start.get(key))} -> {_fmt(end.get(key))}")


def _fmt(value: float | None) -> str:
    return f"{value:.3f}" if _finite(value) else "n/a"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _say(text: str) -> None:
    """What the run is doing, for the person at the terminal (hidden by -q; rewards/console.py)."""
    notice(logger, text.removeprefix("effirl: "))
