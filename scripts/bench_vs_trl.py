#!/usr/bin/env python3
"""One GRPO step of effirl against one of TRL's GRPOTrainer, on the same GPU, side by side.

Both train the same model (a Qwen2.5 shape with random weights, saved once to a temporary
checkpoint both load; nothing is downloaded) with the same LoRA adapter (rank 16, alpha 32, all
linear layers), prompts, group size, completion budget, micro-batch size, optimiser and reward: a
cheap deterministic Python function of the completion text, so neither waits on a sandbox.
Neither uses vLLM. A step is everything between two optimiser updates:

  * effirl: :class:`rlhf.training.controller.Controller` ``step()`` on an in-process placement (the hybrid
    policy worker: fast rollout engine, behaviour and reference log-probs, advantages, learner,
    in-place weight sync) with the reward stage replaced by the Python reward;
  * TRL: ``GRPOTrainer.train()`` with ``max_steps`` steps, timed between successive ``on_step_end``
    callbacks (generation with ``model.generate``, rewards, loss and update all happen in between).

The first --warmup steps of each are not timed; the median of the next --steps is reported, with
the ratio TRL / effirl. The script also checks the rollouts effirl trains on: the largest
difference between the behaviour log-probs the engine returned and the log-probs the learner
computes for the same tokens (its micro-batching, training mode, autocast), which must be ~0.

TRL is imported only for its half: ``--skip-trl`` runs effirl alone, and --help works without trl.
TRL needs ``trl`` and its dependencies (``datasets``, ``pandas``) installed.

Time: about 3 minutes for qwen2.5-0.5b and 5 for qwen2.5-1.5b on one H100 at the defaults (TRL's
generate dominates); --tiny runs on a CPU in about a minute (a CI check that both halves run).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402
from benchmark_table import (  # noqa: E402
    add_table_flag,
    append_row,
    machine_description,
    reproduce_command,
    table_row,
)

from rewards.tasks import Task  # noqa: E402
from rlhf.algorithms import resolve_algorithm  # noqa: E402
from rlhf.config import ExperimentConfig, load_config  # noqa: E402
from rlhf.distributed.placement import InProcessPlacement  # noqa: E402
from rlhf.models.loading import lora_config, resolve_device  # noqa: E402
from rlhf.models.logprobs import completion_logprobs_and_entropy  # noqa: E402
from rlhf.models.shapes import MODEL_SHAPES, ascii_prompt, save_random_checkpoint  # noqa: E402
from rlhf.rollout import render_prompt  # noqa: E402
from rlhf.rollout.task_sampler import TaskSampler  # noqa: E402
from rlhf.training.controller import Controller  # noqa: E402
from rlhf.types import Rollouts, Scored  # noqa: E402

PROMPT_FRAME = 'def f():\n    """"""\n'  # the raw prompt style renders a task defining f exactly as written


def digit_share(text: str) -> float:
    """The reward both frameworks use: the share of characters that are digits (0 for empty text)."""
    return sum(c.isdigit() for c in text) / len(text) if text else 0.0


class PythonRewardStage:
    """The controller's reward stage with :func:`digit_share` instead of the sandbox."""

    def score(self, rollouts: Rollouts) -> Scored:
        rewards = torch.tensor([digit_share(t) for t in rollouts.texts], dtype=torch.float32)
        return Scored(
            rollouts=rollouts,
            rewards=rewards,
            parts={"correctness": rewards},
            evidence=[{} for _ in rollouts.texts],
            metrics={"reward": float(rewards.mean())},
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU, tiny batch (CI check)")
    parser.add_argument("--device", default="auto", help="auto (the GPU if there is one), cuda, cpu")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--n-samples", type=int, default=8, help="completions per prompt (the GRPO group)")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=512, help="completion budget (max_new_tokens)")
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward pass")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on for both frameworks")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument(
        "--engine", default="fast", choices=["fast", "generate"], help="effirl's rollout engine"
    )
    parser.add_argument("--skip-trl", action="store_true", help="run effirl only")
    parser.add_argument("--json", type=Path, help="write results here")
    add_table_flag(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.shape, args.device = "tiny", "cpu"
        args.prompts, args.n_samples, args.prompt_len, args.new_tokens = 2, 2, 32, 8
        args.micro_batch, args.lora_rank, args.warmup, args.steps, args.markdown = 2, 4, 1, 1, None
    args.device = str(resolve_device(args.device))
    if (args.prompts * args.n_samples) % args.micro_batch:
        raise SystemExit("--micro-batch must divide prompts x n-samples (TRL's accumulation steps)")
    if args.prompt_len <= len(PROMPT_FRAME):
        raise SystemExit(f"--prompt-len must exceed {len(PROMPT_FRAME)} (the prompt's frame)")
    return args


def make_tasks(args: argparse.Namespace) -> list[Task]:
    """Prompts of exactly ``prompt_len`` tokens (one byte per token) once rendered in the raw style."""
    body = args.prompt_len - len(PROMPT_FRAME)
    return [
        Task(id=f"bench/{i}", prompt=f'def f():\n    """{ascii_prompt(body, seed=i)}"""\n', entry_point="f")
        for i in range(args.prompts)
    ]


def effirl_config(args: argparse.Namespace, checkpoint: Path) -> ExperimentConfig:
    on_gpu = args.device.startswith("cuda")
    return load_config(
        None,
        [
            f"model.name_or_path={checkpoint}",
            f"model.dtype={'bfloat16' if on_gpu else 'float32'}",
            f"model.device={args.device}",
            "model.attn_implementation=sdpa",
            f"model.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
            f"lora.rank={args.lora_rank}",
            f"lora.alpha={2 * args.lora_rank}",
            f"data.prompts_per_step={args.prompts}",
            "data.prompt_style=raw",
            f"rollout.engine={args.engine}",
            f"rollout.n_samples={args.n_samples}",
            f"rollout.max_new_tokens={args.new_tokens}",
            "rollout.temperature=1.0",
            # TRL scores after generation; so does effirl here (its Python reward takes microseconds).
            "rollout.stream_rewards=false",
            "algorithm.name=grpo",
            "algorithm.kl_coef=0.0",
            f"train.micro_batch_tokens={args.micro_batch * (args.prompt_len + args.new_tokens)}",
            "train.lr=1e-6",
            f"train.steps={args.warmup + args.steps}",
            "placement.mode=in_process",
        ],
    )


def learner_view_logprobs(worker: Any, rollouts: Rollouts) -> torch.Tensor:
    """[B, T] log-probs of the rollouts' tokens exactly as the learner's first pass computes them:
    its micro-batches and trimming, training mode, gradients on, its autocast."""
    from rlhf.learner.updates import _select, pack_micro_batches
    from rlhf.types import TrainBatch

    learner, model = worker.learner, worker.model
    options = learner.options
    batch = TrainBatch(
        prompt_ids=rollouts.prompt_ids,
        prompt_mask=rollouts.prompt_mask,
        completion_ids=rollouts.completion_ids,
        completion_mask=rollouts.completion_mask,
        old_logprobs=rollouts.behaviour_logprobs,
        advantages=torch.zeros_like(rollouts.behaviour_logprobs),
    )
    lengths = (rollouts.prompt_mask.sum(1) + rollouts.completion_mask.sum(1)).tolist()
    out = torch.zeros(rollouts.completion_ids.shape, dtype=torch.float32)
    model.train()
    try:
        for micro in pack_micro_batches([int(n) for n in lengths], options.train.micro_batch_tokens):
            index = torch.tensor(micro)
            part = _select(batch, index, learner.device)
            with learner.autocast():
                logprobs, _ = completion_logprobs_and_entropy(
                    model,
                    part["prompt_ids"],
                    part["prompt_mask"],
                    part["completion_ids"],
                    part["completion_mask"],
                    temperature=options.temperature,
                    chunk_size=options.logprob_chunk_size,
                )
            out[index, : logprobs.shape[1]] = logprobs.detach().float().cpu()
    finally:
        model.eval()
    return out


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_effirl(args: argparse.Namespace, checkpoint: Path, tasks: list[Task]) -> dict[str, Any]:
    config = effirl_config(args, checkpoint)
    spec = resolve_algorithm(config.algorithm.name)
    placement = InProcessPlacement(config, spec)
    sampler = TaskSampler(tasks, args.prompts, seed=0, shuffle=False)
    controller = Controller(config, spec, placement, PythonRewardStage(), sampler)  # type: ignore[arg-type]
    step_s, steps = [], []
    for index in range(args.warmup + args.steps):
        synchronize(args.device)
        started = time.perf_counter()
        metrics = controller.step(last=index == args.warmup + args.steps - 1)
        synchronize(args.device)
        if index >= args.warmup:
            step_s.append(time.perf_counter() - started)
            steps.append(metrics)
    keys = ("time_generate_s", "time_reward_s", "time_train_s", "time_sync_s", "rollout/logprob_s")
    breakdown = {key: statistics.median(m.get(key, float("nan")) for m in steps) for key in keys}

    worker = placement.worker
    engine = worker.engine
    rollouts = worker.generate(tasks)
    learner = learner_view_logprobs(worker, rollouts)
    valid = rollouts.completion_mask.bool()
    tensors = (rollouts.prompt_ids, rollouts.prompt_mask, rollouts.completion_ids, rollouts.completion_mask)
    temperature = worker.learner.options.temperature
    gap = lambda logprobs: float((learner - logprobs)[valid].abs().max())
    # What the rollouts carry (recomputed, or the decode-time log-probs when the trainer runs
    # on-policy and skips that pass), and the engine's recompute pass with its default token budget
    # and with the learner's (make_engine passes only batch_size; see docs/performance.md).
    logprob_check = {
        "on_policy": not getattr(engine, "behaviour_logprobs", True),
        "returned_vs_learner": gap(rollouts.behaviour_logprobs),
        "engine_pass_vs_learner": gap(engine.logprobs(*tensors, temperature)),
    }
    if hasattr(engine, "logprob_tokens"):
        engine.logprob_tokens = config.train.micro_batch_tokens
        logprob_check["engine_pass_same_budget_vs_learner"] = gap(engine.logprobs(*tensors, temperature))
    result = {
        "engine": args.engine,
        "step_s": step_s,
        "median_step_s": statistics.median(step_s),
        "breakdown_s": breakdown,
        "completion_len_mean": statistics.mean(m["completions/mean_length"] for m in steps),
        "ratio_max": statistics.mean(m.get("loss/ratio_max", float("nan")) for m in steps),
        "logprob_max_abs_diff": logprob_check,
        "decode_vs_behaviour_max_abs_diff": rollouts.metrics.get("rollout/decode_logprob_max_abs_diff"),
    }
    del controller, placement, worker, engine
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def run_trl(
    args: argparse.Namespace, checkpoint: Path, tasks: list[Task], output_dir: Path
) -> dict[str, Any]:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        raise SystemExit(
            f"TRL's half needs trl and its dependencies ({exc}); install them or pass --skip-trl"
        ) from None
    from rlhf.models.loading import load_tokenizer

    tokenizer = load_tokenizer(checkpoint)
    prompts = [render_prompt(tokenizer, task, "raw") for task in tasks]
    on_gpu = args.device.startswith("cuda")
    rows = args.prompts * args.n_samples
    config = GRPOConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=rows // args.micro_batch,
        num_generations=args.n_samples,
        max_completion_length=args.new_tokens,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-6,
        beta=0.0,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=args.gradient_checkpointing,
        model_init_kwargs={"dtype": torch.bfloat16 if on_gpu else torch.float32},
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        shuffle_dataset=False,
        seed=0,
    )

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, *unused: Any, **kwargs: Any) -> None:
            synchronize(args.device)
            self.ends.append(time.perf_counter())

    clock = StepClock()
    # Enough rows that every step draws fresh prompts in order, as effirl's sampler does.
    dataset = Dataset.from_list(
        [{"prompt": prompts[i % len(prompts)]} for i in range(rows * (args.warmup + args.steps))]
    )
    trainer = GRPOTrainer(
        model=str(checkpoint),
        reward_funcs=[lambda completions, **_: [digit_share(c) for c in completions]],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(args.lora_rank, 2 * args.lora_rank, 0.0, "all-linear", False),
        callbacks=[clock],
    )
    synchronize(args.device)
    started = time.perf_counter()
    trainer.train()
    ends = [started, *clock.ends]
    step_s = [b - a for a, b in itertools.pairwise(ends)][args.warmup :]
    lengths = [
        entry["completions/mean_length"]
        for entry in trainer.state.log_history
        if "completions/mean_length" in entry
    ]
    result = {
        "step_s": step_s,
        "median_step_s": statistics.median(step_s),
        "completion_len_mean": statistics.mean(lengths[args.warmup :] or lengths)
        if lengths
        else float("nan"),
    }
    del trainer
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    tasks = make_tasks(args)
    results: dict[str, Any] = {
        "machine": machine_description(args.device),
        "command": reproduce_command(),
        "shape": args.shape,
        "rows": args.prompts * args.n_samples,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "micro_batch": args.micro_batch,
        "lora_rank": args.lora_rank,
        "gradient_checkpointing": args.gradient_checkpointing,
    }
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = save_random_checkpoint(
            args.shape,
            Path(scratch) / "model",
            dtype="bfloat16" if args.device.startswith("cuda") else "float32",
            device=args.device,
        )
        results["effirl"] = run_effirl(args, checkpoint, tasks)
        print(f"effirl: median step {results['effirl']['median_step_s']:.2f} s", flush=True)
        if not args.skip_trl:
            results["trl"] = run_trl(args, checkpoint, tasks, Path(scratch) / "trl")
            results["trl_over_effirl"] = results["trl"]["median_step_s"] / results["effirl"]["median_step_s"]
            print(f"TRL: median step {results['trl']['median_step_s']:.2f} s", flush=True)
            print(f"effirl is {results['trl_over_effirl']:.2f}x faster per GRPO step", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown and not args.skip_trl:
        e, t = results["effirl"], results["trl"]
        b, check = e["breakdown_s"], e["logprob_max_abs_diff"]
        dtype = "bf16" if args.device.startswith("cuda") else "fp32"
        summary = (
            f"GRPO step, {args.shape} {dtype} + LoRA r{args.lora_rank}, {results['rows']} samples "
            f"({args.prompt_len} prompt + {args.new_tokens} new tokens), micro-batch {args.micro_batch}: "
            f"effirl {e['median_step_s']:.2f} s (generate {b['time_generate_s']:.2f}, train "
            f"{b['time_train_s']:.2f}) vs TRL GRPOTrainer {t['median_step_s']:.2f} s = "
            f"{results['trl_over_effirl']:.1f}x; engine log-prob pass vs learner max diff "
            f"{check['engine_pass_vs_learner']:.1e}"
            + (
                f" ({check['engine_pass_same_budget_vs_learner']:.1e} with the learner's token budget)"
                if "engine_pass_same_budget_vs_learner" in check
                else ""
            )
        )
        line = table_row("GRPO step vs TRL", results["machine"], summary, results["command"])
        append_row(args.markdown, line)
    return results


if __name__ == "__main__":
    main()
