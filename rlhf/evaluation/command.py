"""`effirl eval`: check the inputs, load the policy once, evaluate each target, write the outputs.

A target is the base model, an adapter folder, one checkpoint, or (``--run --all-checkpoints``) the
base as step 0 followed by every checkpoint of a run. Every input is checked before the model loads,
so a typo costs seconds, not a generation pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewards.tasks import Task
from rlhf.evaluation.compare import co_solved_pairs, compare_results, comparison_markdown
from rlhf.evaluation.generation import (
    EvaluatedPolicy,
    EvaluationInputError,
    GenerationOptions,
    generate_completions,
    load_policy,
    read_adapter_config,
    run_config,
)
from rlhf.evaluation.interleaved import DEFAULT_ROUNDS, measure_pairs
from rlhf.evaluation.metrics import DEFAULT_TOLERANCE
from rlhf.evaluation.records import RESULTS_FILE, EvaluationResult, SampleRecord, task_labels
from rlhf.evaluation.report import write_report, write_run_report
from rlhf.evaluation.scoring import COST_MODES, ScoringOptions, SolutionScorer
from rlhf.rollout import PROMPT_STYLES
from rlhf.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint

RUN_RESULTS_FORMAT = "effirl-eval-run/1"


@dataclasses.dataclass
class Target:
    """One thing to evaluate: a label, its training step (None for a standalone adapter or base)
    and the adapter tensors to load (None: the base model itself)."""

    label: str
    step: int | None
    adapter: dict[str, Any] | None
    checkpoint: str | None = None
    folder: str = "."


def run_evaluation(
    *,
    benchmark: str,
    out: str,
    model: str | None = None,
    adapter: str | None = None,
    checkpoint: str | None = None,
    run: str | None = None,
    all_checkpoints: bool = False,
    split: str | None = None,
    limit: int | None = None,
    n_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    prompt_style: str = "chat_fence",
    batch_size: int | None = None,
    engine: str = "auto",
    cost: str = "cpu",
    repeats: int = 1,
    timeout_s: float = 10.0,
    workers: int | None = None,
    seed: int = 0,
    device: str = "auto",
    compare: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    compare_rounds: int = DEFAULT_ROUNDS,
    rescore: str | None = None,
    generate_only: bool = False,
) -> int:
    """Evaluate a model, adapter, checkpoint or run on ``benchmark``; write results to ``out``.

    Returns 0. Raises EvaluationInputError (a ConfigError: the CLI prints it on one line and exits
    with status 2) for bad input. See docs/evaluation.md for the outputs and metrics.
    """
    _check_options(
        n_samples,
        temperature,
        prompt_style,
        cost,
        batch_size,
        repeats,
        tolerance,
        compare_rounds,
        adapter,
        checkpoint,
        run,
        all_checkpoints,
    )
    other = _load_comparison(compare)
    earlier = _load_rescored(rescore, model, adapter, checkpoint, run)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise EvaluationInputError(f"--out {out_dir} exists and is not a directory")
    if cost == "callgrind":
        from sandbox.callgrind import callgrind_unavailable_reason

        reason = callgrind_unavailable_reason()
        if reason is not None:
            raise EvaluationInputError(f"--cost callgrind is not available here: {reason}")
    if earlier is not None:
        model, run_dir, adapter_config = str(earlier.meta.get("model")), None, None
        targets = [
            Target(
                str(earlier.meta.get("label") or "rescored"),
                earlier.meta.get("step"),
                None,
                earlier.meta.get("checkpoint"),
            )
        ]
    else:
        model, run_dir, adapter_config, targets = _resolve_targets(
            model, adapter, checkpoint, run, all_checkpoints
        )
    # Completions need prompts only: perf inputs, derived by running references, wait for --rescore.
    tasks = _load_benchmark(benchmark, split, limit, perf_tests=not generate_only)
    generation = GenerationOptions(
        n_samples, temperature, top_p, max_new_tokens, batch_size, prompt_style, seed, engine
    )
    scoring = ScoringOptions(
        cost=cost, repeats=repeats, timeout_s=timeout_s, workers=workers, prompt_style=prompt_style
    )
    meta = {
        "model": model,
        "benchmark": benchmark,
        "split": split,
        "limit": limit,
        "n_samples": n_samples,
        "temperature": temperature,
        "top_p": top_p if temperature > 0 else 1.0,
        "max_new_tokens": max_new_tokens,
        "prompt_style": prompt_style,
        "engine": engine,
        "cost": cost,
        "repeats": repeats,
        "timeout_s": timeout_s,
        "seed": seed,
        "adapter": adapter,
        "run": run,
        # Costs (speedups, NET, eff@k) of these tasks come from their perf tests alone.
        "tasks_with_perf_tests": sum(1 for task in tasks if task.perf_tests),
    }
    if earlier is not None:
        _check_rescored(earlier, meta)
        meta.update(
            {"adapter": earlier.meta.get("adapter"), "run": earlier.meta.get("run"), "rescored": rescore}
        )
        policy = None
    else:
        policy = load_policy(run_config(run_dir, model, device), adapter_config)
    if generate_only and (earlier is not None or other is not None):
        raise EvaluationInputError(
            "--generate-only writes completions only: leave out --rescore and --compare"
        )
    results: list[tuple[Target, EvaluationResult]] = []
    with contextlib.nullcontext() if generate_only else SolutionScorer(scoring) as scorer:
        for target in targets:
            if policy is None:
                completions = _earlier_completions(earlier, tasks)  # type: ignore[arg-type]
                result = score_target(target, tasks, completions, scorer, meta)
            elif generate_only:
                result = unscored_target(policy, target, tasks, generation, meta)
                result.save(out_dir / target.folder)
                _say(f"effirl: {target.label}: completions written (not scored; score with --rescore)")
                continue
            else:
                result = evaluate_target(policy, target, tasks, generation, scorer, meta)
            folder = out_dir / target.folder
            result.save(folder)
            comparison = None
            if other is not None and target is targets[-1]:
                measurements = measure_pairs(
                    co_solved_pairs(result, other, {task.id: task for task in tasks}),
                    cost=cost,
                    rounds=compare_rounds,
                    tolerance=tolerance,
                    timeout_s=timeout_s,
                )
                comparison = compare_results(result, other, tolerance, measurements)
            write_report(folder, result, comparison=comparison, other=other if comparison else None)
            if comparison is not None:
                _write_json(folder / "compare.json", comparison.to_dict())
                print(comparison_markdown(comparison, max_rows=20))
            results.append((target, result))
            _say(f"effirl: {target.label}: {headline(result)} -> {folder / RESULTS_FILE}")
    if len(targets) > 1:
        steps = [
            {"step": t.step, "folder": t.folder, "checkpoint": t.checkpoint, "metrics": r.metrics}
            for t, r in results
        ]
        _write_json(out_dir / RESULTS_FILE, {"format": RUN_RESULTS_FORMAT, "meta": meta, "steps": steps})
        write_run_report(out_dir, steps, meta)
    return 0


def evaluate_target(
    policy: EvaluatedPolicy,
    target: Target,
    tasks: Sequence[Task],
    generation: GenerationOptions,
    scorer: SolutionScorer,
    meta: dict[str, Any],
) -> EvaluationResult:
    """Generate and score ``generation.n_samples`` solutions per task for one target."""
    if policy.has_adapter:
        if target.adapter is None:
            raise RuntimeError("a target without an adapter on a policy loaded with one")
        policy.set_adapter(target.adapter)
    return score_target(target, tasks, generate_completions(policy, tasks, generation), scorer, meta)


def unscored_target(
    policy: EvaluatedPolicy,
    target: Target,
    tasks: Sequence[Task],
    generation: GenerationOptions,
    meta: dict[str, Any],
) -> EvaluationResult:
    """The completions of one target, recorded as not scored (for ``--rescore`` elsewhere)."""
    completions = generate_completions(policy, tasks, generation)
    records = [
        SampleRecord(task.id, index, text, "", "not_scored", False, False, 0, 0)
        for task, group in zip(tasks, completions)
        for index, text in enumerate(group)
    ]
    return EvaluationResult.build(_target_meta(meta, target), records, labels=task_labels(tasks))


def score_target(
    target: Target,
    tasks: Sequence[Task],
    completions: Sequence[Sequence[str]],
    scorer: SolutionScorer,
    meta: dict[str, Any],
) -> EvaluationResult:
    """Score ``completions[i]`` (the samples of ``tasks[i]``) for one target."""
    flat_tasks = [task for task, group in zip(tasks, completions) for _ in group]
    flat_texts = [text for group in completions for text in group]
    indices = [i for group in completions for i in range(len(group))]
    records = scorer.score(flat_tasks, flat_texts, indices)
    return EvaluationResult.build(_target_meta(meta, target), records, labels=task_labels(tasks))


def _target_meta(meta: dict[str, Any], target: Target) -> dict[str, Any]:
    return dict(
        meta,
        label=target.label,
        step=target.step,
        checkpoint=target.checkpoint,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def headline(result: EvaluationResult) -> str:
    """One line: pass@1 (base), eff@1 and the speedup over the references."""
    m = result.metrics
    speed = "n/a" if m.get("speedup_geomean") is None else f"{m['speedup_geomean']:.2f}x"
    return (
        f"pass@1 {m['pass@1']:.3f} (base tests {m['base_pass@1']:.3f}), eff@1 {m['eff@1']:.3f}, "
        f"speedup geomean {speed} on {int(m['measured_tasks'])}/{int(m['tasks'])} tasks"
    )


def _check_options(
    n_samples: int,
    temperature: float,
    prompt_style: str,
    cost: str,
    batch_size: int | None,
    repeats: int,
    tolerance: float,
    compare_rounds: int,
    adapter: str | None,
    checkpoint: str | None,
    run: str | None,
    all_checkpoints: bool,
) -> None:
    given = [
        name
        for name, value in (("--adapter", adapter), ("--checkpoint", checkpoint), ("--run", run))
        if value
    ]
    if len(given) > 1:
        raise EvaluationInputError(
            f"give at most one of --adapter, --checkpoint and --run (got {', '.join(given)})"
        )
    if all_checkpoints and not run:
        raise EvaluationInputError("--all-checkpoints needs --run RUN_DIR")
    if n_samples < 1 or (batch_size is not None and batch_size < 1) or repeats < 1:
        raise EvaluationInputError("--n-samples, --batch-size and --repeats must be at least 1")
    if temperature < 0:
        raise EvaluationInputError(f"--temperature must be >= 0 (0 is greedy), got {temperature}")
    if temperature == 0 and n_samples > 1:
        raise EvaluationInputError(
            "--n-samples > 1 needs --temperature > 0 (greedy decoding repeats one completion); "
            "e.g. --n-samples 10 --temperature 0.8 for pass@10"
        )
    if prompt_style not in PROMPT_STYLES:
        raise EvaluationInputError(
            f"unknown --prompt-style {prompt_style!r}; use one of {', '.join(PROMPT_STYLES)}"
        )
    if cost not in COST_MODES:
        raise EvaluationInputError(f"unknown --cost {cost!r}; use one of {', '.join(COST_MODES)}")
    if tolerance < 0:
        raise EvaluationInputError(f"--tolerance must be >= 0, got {tolerance}")
    if compare_rounds < 1:
        raise EvaluationInputError(f"--compare-rounds must be at least 1, got {compare_rounds}")


def _load_rescored(
    rescore: str | None, model: str | None, adapter: str | None, checkpoint: str | None, run: str | None
) -> EvaluationResult | None:
    if rescore is None:
        return None
    if adapter or checkpoint or run or model:
        raise EvaluationInputError(
            "--rescore takes the completions of an earlier evaluation and loads no model; leave out "
            "--model, --adapter, --checkpoint and --run"
        )
    try:
        return EvaluationResult.load(rescore)
    except (OSError, ValueError, KeyError) as exc:
        raise EvaluationInputError(f"--rescore {rescore}: {exc}") from None


# What must match between an evaluation and the one whose completions it scores again.
RESCORE_SAME = ("benchmark", "split", "limit", "prompt_style", "n_samples")


def _check_rescored(earlier: EvaluationResult, meta: dict[str, Any]) -> None:
    for key in RESCORE_SAME:
        if earlier.meta.get(key) != meta.get(key):
            raise EvaluationInputError(
                f"--rescore: the earlier evaluation used {key} {earlier.meta.get(key)!r}, this one "
                f"{meta.get(key)!r}; pass the same --{key.replace('_', '-')} (a split or limit picks "
                "other tasks, a prompt style other completions)"
            )
    for key in ("temperature", "top_p", "max_new_tokens", "engine", "seed"):
        meta[key] = earlier.meta.get(key)  # how the completions were made, not how they are scored


def _earlier_completions(earlier: EvaluationResult, tasks: Sequence[Task]) -> list[list[str]]:
    by_task: dict[str, list[tuple[int, str]]] = {}
    for sample in earlier.samples:
        by_task.setdefault(sample.task_id, []).append((sample.index, sample.completion))
    missing = [task.id for task in tasks if task.id not in by_task]
    if missing:
        raise EvaluationInputError(
            f"--rescore: the earlier evaluation has no completions for {len(missing)} task(s) of this "
            f"benchmark, e.g. {missing[0]!r}"
        )
    return [[text for _, text in sorted(by_task[task.id])] for task in tasks]


def _load_comparison(compare: str | None) -> EvaluationResult | None:
    if compare is None:
        return None
    try:
        return EvaluationResult.load(compare)
    except (OSError, ValueError, KeyError) as exc:
        raise EvaluationInputError(f"--compare {compare}: {exc}") from None


def _resolve_targets(
    model: str | None, adapter: str | None, checkpoint: str | None, run: str | None, all_checkpoints: bool
) -> tuple[str, Path | None, dict[str, Any] | None, list[Target]]:
    """The base model, the run folder (for its config), the adapter shape and the targets."""
    if checkpoint is not None:
        path = Path(checkpoint)
        loaded = _checkpoint(path, model)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        target = Target(f"{path.name}", loaded.state.step, loaded.adapter, str(path))
        return loaded.state.base_model, run_dir, loaded.adapter_config, [target]
    if run is not None:
        run_dir = Path(run)
        found = list_checkpoints(run_dir)
        if not found:
            raise EvaluationInputError(
                f"--run {run_dir} has no complete checkpoints under {run_dir / 'checkpoints'}"
            )
        chosen = found if all_checkpoints else found[-1:]
        loaded = [_checkpoint(path, model) for path in chosen]
        base = loaded[0].state.base_model
        targets = [
            Target(p.name, c.state.step, c.adapter, str(p), folder=p.name if all_checkpoints else ".")
            for p, c in zip(chosen, loaded)
        ]
        if all_checkpoints:
            zero = {
                k: v.zero_() if k.endswith("lora_B.weight") else v
                for k, v in _clone(loaded[0].adapter).items()
            }
            targets.insert(0, Target("base (step 0)", 0, zero, None, folder="step-0"))
        return base, run_dir, loaded[0].adapter_config, targets
    if model is None:
        raise EvaluationInputError("--model is required unless --checkpoint or --run names the base model")
    if adapter is not None:
        folder = Path(adapter)
        adapter_config = read_adapter_config(folder)
        declared = adapter_config.get("base_model_name_or_path")
        from rlhf.models.loading import public_base_name  # an export names a built-in base by its Hub id

        if declared and declared not in (model, public_base_name(model)):
            raise EvaluationInputError(
                f"adapter {folder} was trained on {declared!r}, not --model {model!r}; "
                f"pass --model {declared}"
            )
        from safetensors.torch import load_file

        return (
            model,
            None,
            adapter_config,
            [Target(folder.name, None, load_file(str(folder / "adapter_model.safetensors")))],
        )
    return model, None, None, [Target(model, None, None)]


def _checkpoint(path: Path, model: str | None) -> Any:
    try:
        return load_checkpoint(path, expected_base_model=model)
    except CheckpointError as exc:
        raise EvaluationInputError(str(exc)) from None


def _clone(tensors: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() for k, v in tensors.items()}


def _load_benchmark(
    benchmark: str, split: str | None, limit: int | None, *, perf_tests: bool = True
) -> list[Task]:
    """The tasks of ``benchmark``; ``split`` may name several, comma-separated (``--limit`` applies
    to each), e.g. ``heldout,heldout_families`` for both held-out splits of ``synthetic``. Without
    ``perf_tests`` a dataset that derives them (HumanEval+, MBPP+) skips that (same tasks, same ids)."""
    from rewards.datasets import derives_perf_tests, evaluation_split, load_tasks

    options = {} if perf_tests or not derives_perf_tests(benchmark) else {"perf_tests": False}

    splits: list[str | None] = [evaluation_split(benchmark)]
    if split:
        splits = [s.strip() for s in split.split(",")]
        if not all(splits):
            raise EvaluationInputError(f"--split {split!r} names an empty split")
    tasks: list[Task] = []
    for name in dict.fromkeys(splits):
        try:
            found = load_tasks(benchmark, split=name, limit=limit, **options)
        except (ValueError, FileNotFoundError, TypeError) as exc:
            raise EvaluationInputError(f"--benchmark {benchmark}: {exc}") from None
        if not found:
            raise EvaluationInputError(
                f"--benchmark {benchmark} has no tasks (split {name!r}, limit {limit})"
            )
        tasks += found
    return tasks


def _write_json(path: Path, data: Any) -> None:
    import json

    from rlhf.evaluation.records import json_ready

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data), indent=1), encoding="utf-8")


def _say(text: str) -> None:
    """What the evaluation is doing, for the person at the terminal (hidden by -q)."""
    import logging

    from rewards.console import notice

    notice(logging.getLogger(__name__), text.removeprefix("effirl: "))
