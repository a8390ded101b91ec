"""The optional supervised warm start of `effirl train`: reference solutions, through the RL learner.

RL can only amplify what the policy already samples. The built-in 135M model writes the fast
solution of a synthetic task in about 1 of 500 samples, so an efficiency reward almost never fires.
A few supervised steps on the training tasks' references (the fast solutions) show it how first.

The steps run on the run's own learner, in whatever placement the recipe chose (in process, Ray,
split), as policy-gradient steps on the references with advantage 1 and ratio 1: the gradient of
``-ratio * advantage`` is then exactly that of the token-mean negative log-likelihood, so this is
supervised fine-tuning without a second model load or TRL and `datasets` (which `effirl sft`
uses, and which GPU hosts may lack). Afterwards the optimiser and schedule are reset, so RL step 1
starts from the warm adapter with fresh Adam moments, as it would from `lora.adapter_path`.

Like every learner pass, the log-probs (and so the NLL reported) are those of the sampling
distribution, at `rollout.temperature`: the warm start fits what RL will sample from.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rewards.datasets import check_training_tasks
from rewards.tasks import Task
from rlhf.algorithms import AlgorithmSpec
from rlhf.config import ExperimentConfig
from rlhf.distributed.placement import Placement
from rlhf.learner.updates import is_on_policy
from rlhf.rollout.generate_engine import left_pad, pad_token_id, right_pad
from rlhf.training.sft import sft_examples
from rlhf.types import Rollouts, TrainBatch


def reference_rollouts(
    examples: list[dict[str, str]], tasks: list[Task], tokenizer: Any, max_new_tokens: int
) -> Rollouts:
    """Prompt/completion pairs as a batch of rollouts (left-padded prompts, right-padded answers)."""
    pad = pad_token_id(tokenizer)
    prompt_ids, prompt_mask = left_pad(
        [tokenizer(e["prompt"], add_special_tokens=False).input_ids for e in examples], pad
    )
    completion_ids, completion_mask = right_pad(
        [tokenizer(e["completion"], add_special_tokens=False).input_ids[:max_new_tokens] for e in examples],
        pad,
    )
    return Rollouts(
        tasks=tasks,
        group_ids=torch.arange(len(examples)),
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        behaviour_logprobs=torch.zeros(completion_ids.shape),
        texts=[e["completion"] for e in examples],
        truncated=torch.zeros(len(examples), dtype=torch.bool),
    )


def supervised_batch(rollouts: Rollouts, old_logprobs: torch.Tensor) -> TrainBatch:
    """Advantage 1 on every answer token; old log-probs equal the current ones (ratio 1)."""
    mask = rollouts.completion_mask
    return TrainBatch(
        prompt_ids=rollouts.prompt_ids,
        prompt_mask=rollouts.prompt_mask,
        completion_ids=rollouts.completion_ids,
        completion_mask=mask,
        old_logprobs=old_logprobs,
        advantages=mask.float(),
    )


def mean_nll(logprobs: torch.Tensor, rollouts: Rollouts) -> float:
    """Token-mean negative log-likelihood of the answers given their log-probs."""
    mask = rollouts.completion_mask.float()
    return float(-(logprobs * mask).sum() / mask.sum().clamp(min=1))


def run_warm_start(
    config: ExperimentConfig, spec: AlgorithmSpec, placement: Placement, tasks: list[Task], tokenizer: Any
) -> dict[str, Any]:
    """``config.warm_start.sft_steps`` supervised steps on ``tasks``' references; writes a summary.

    Returns the summary (examples, steps, NLL of the first and the last batch, seconds). The
    placement's policy holds the warm adapter afterwards, its optimiser and schedule reset.
    """
    from tqdm.auto import tqdm

    settings = config.warm_start
    pool = tasks[: settings.examples] if settings.examples else list(tasks)
    check_training_tasks(pool)  # references of held-out tasks would leak them
    pairs = [
        (task, example)
        for task in pool
        for example in sft_examples([task], tokenizer, config.data.prompt_style)
    ]
    if not pairs:
        raise ValueError(
            f"warm_start.sft_steps={settings.sft_steps} but no training task of {config.data.dataset!r} "
            "has a usable reference solution; set warm_start.sft_steps=0 or train on tasks with references"
        )
    random.Random(config.train.seed).shuffle(pairs)
    fresh = placement.training_state()
    started = time.perf_counter()
    nll_first = nll_last = float("nan")
    last = settings.sft_steps - 1
    for step in tqdm(range(settings.sft_steps), desc="warm start", unit="step", file=sys.stderr):
        chosen = [pairs[(step * settings.batch_size + i) % len(pairs)] for i in range(settings.batch_size)]
        rollouts = reference_rollouts(
            [example for _, example in chosen], [task for task, _ in chosen], tokenizer,
            config.rollout.max_new_tokens,
        )  # fmt: skip
        # On-policy learners take the old log-probs from their own pass; the others need them given.
        given = step == 0 or not is_on_policy(config, spec)
        current = placement.learner_logprobs(rollouts) if given else None
        if step == 0:
            nll_first = mean_nll(current, rollouts)
        placement.train(
            supervised_batch(rollouts, rollouts.behaviour_logprobs if current is None else current)
        )
        if step == last:
            nll_last = mean_nll(placement.learner_logprobs(rollouts), rollouts)
    # RL starts as it would from a saved adapter: new Adam moments, the schedule at its first step.
    placement.load_training_state(placement.adapter_state(), fresh)
    placement.sync()
    summary = {
        "examples": len(pairs),
        "steps": settings.sft_steps,
        "batch_size": settings.batch_size,
        "nll_first_batch": nll_first,
        "nll_last_batch": nll_last,
        "seconds": time.perf_counter() - started,
    }
    out = Path(config.output_dir) / "warm_start"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
