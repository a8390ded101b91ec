"""The learner: turns a TrainBatch into adapter updates.

Micro-batches are packed under a token budget and gradients accumulate over them, weighted so that
the accumulated gradient equals the gradient of the whole mini-batch's loss under the configured
aggregation (token-mean weights by tokens, the sequence means by sequences). Each rollout batch is
split into ``mini_batches`` optimiser steps and passed over ``ppo_epochs`` times. The learning-rate
schedule advances once per RL step. With PPO the critic's LoRA adapter and value head learn from the
same micro-batches with their own optimiser; the value loss is a token mean whatever
``loss_aggregation`` says (it regresses every token's value on its return), so its micro-batch terms
are weighted by tokens. Either way the update does not depend on how the batch is split.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from rlhf.algorithms import (
    AlgorithmSpec,
    aggregate_loss,
    entropy_bonus,
    get_policy_loss,
    kl_penalty,
    value_loss,
)
from rlhf.config import AlgorithmConfig, ExperimentConfig, TrainConfig
from rlhf.learner.host_heap import HEAP
from rlhf.models.loading import use_bf16
from rlhf.models.logprobs import completion_logprobs_and_entropy, prompt_groups
from rlhf.types import TrainBatch

SEQUENCE_MODES = ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
# The loss functions' metrics that TRL's GRPOTrainer logs too, under TRL's names (the others are
# logged as loss/<name>). The fractions count masked tokens the clip cut off in the advantage's
# direction, as TRL's do.
LOSS_METRIC_NAMES = {
    "clip_frac": "clip_ratio/region_mean",
    "clip_frac_low": "clip_ratio/low_mean",
    "clip_frac_high": "clip_ratio/high_mean",
}


@dataclass(frozen=True)
class LearnerOptions:
    """What the learner needs besides the model: the train and algorithm sections, the resolved
    algorithm (its policy loss; where its KL penalty goes) plus sampling facts."""

    train: TrainConfig
    algorithm: AlgorithmConfig
    spec: AlgorithmSpec
    temperature: float
    max_new_tokens: int
    on_policy: bool = False
    logprob_chunk_size: int | None = None


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at RL step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def pack_micro_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Greedy packing of sample indices into micro-batches whose padded size fits ``budget`` tokens.

    Padded size = rows x longest row. Samples are taken longest first so rows in a micro-batch have
    similar lengths (little padding); a sample longer than the budget gets a micro-batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        candidate_longest = max(longest, lengths[index])
        if current and candidate_longest * (len(current) + 1) > budget:
            batches.append(current)
            current, candidate_longest = [], lengths[index]
        current.append(index)
        longest = candidate_longest
    if current:
        batches.append(current)
    return batches


def pack_prompt_groups(
    prompt_lengths: list[int], completion_lengths: list[int], groups: list[int], budget: int
) -> list[list[int]]:
    """Micro-batches for shared prompt passes (:func:`rlhf.models.logprobs.shared_prompt_hidden_states`)
    that keep each group of samples of one prompt whole.

    A group split over two micro-batches has its prompt computed twice, so a group stays whole while
    its passes fit the budget: its prompt once plus every completion, ``prompt + rows x longest
    completion`` tokens; only a group too large for that is split, into as many rows as fit (a row
    larger than the budget gets a micro-batch of its own). Groups are taken longest first, and the
    next group joins a micro-batch only while the micro-batch's padded size (``rows x longest row``,
    as without sharing) fits: every row attends to its own copy of its prompt's keys and values, so
    several groups cost memory in proportion to rows x prompt length, not only to the tokens computed.
    """
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)

    def longest(rows: list[int]) -> int:
        return max(prompt_lengths[i] + completion_lengths[i] for i in rows)

    def one_prompt(rows: list[int]) -> int:
        return max(prompt_lengths[i] for i in rows) + len(rows) * max(completion_lengths[i] for i in rows)

    batches: list[list[int]] = []
    current: list[int] = []
    for group in sorted(members, key=lambda g: (-longest(members[g]), g)):
        rows = sorted(members[group], key=lambda i: -completion_lengths[i])
        if current and (len(current) + len(rows)) * longest([*current, *rows]) <= budget:
            current += rows
            continue
        if current:
            batches.append(current)
        current = []
        for index in rows:
            if current and one_prompt([*current, index]) > budget:
                batches.append(current)
                current = []
            current.append(index)
    if current:
        batches.append(current)
    return batches


class Learner:
    """Owns the optimiser(s) and scheduler of a policy (and optional critic)."""

    def __init__(
        self,
        model: torch.nn.Module,
        policy_parameters: list[torch.nn.Parameter],
        options: LearnerOptions,
        *,
        critic_parameters: list[torch.nn.Parameter] | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self.critic_parameters = critic_parameters
        # Data-parallel replicas (set by the placement): their process group and how many there are.
        self.group: object = None
        self.replicas = 1
        train = options.train
        self.policy_parameters = policy_parameters
        self.optimizer = torch.optim.AdamW(policy_parameters, lr=train.lr, weight_decay=train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_lambda(
                step, warmup=train.warmup_steps, total=train.steps, schedule=train.lr_schedule
            ),
        )
        self.critic_optimizer = None
        if critic_parameters is not None:
            self.critic_optimizer = torch.optim.AdamW(critic_parameters, lr=options.algorithm.critic_lr)
        self.loss_fn = get_policy_loss(options.spec.policy_loss)
        # Options of the configured loss beyond the shared signature (dual_clip's clip_ratio_c).
        self.loss_options = {
            key: getattr(options.algorithm, key)
            for key in ("clip_ratio_c",)
            if key in inspect.signature(self.loss_fn).parameters
        }
        device = next(model.parameters()).device
        self.share_prompts = train.share_prompts if train.share_prompts is not None else device.type == "cpu"
        mapped = train.map_activations if train.map_activations is not None else device.type == "cpu"
        # The activations kept for the backward pass go to pages of their own (rlhf/learner/host_heap.py).
        self.forward_heap = HEAP.mapped if mapped else nullcontext
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if use_bf16(train.bf16, device)
            else (lambda: nullcontext())
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def step(self, batch: TrainBatch) -> dict[str, float]:
        """One RL step's updates from ``batch``; returns averaged metrics."""
        algorithm = self.options.algorithm
        sums: dict[str, float] = {}
        updates = 0
        self.model.train()
        for _ in range(algorithm.ppo_epochs):
            for mini in _split(len(batch), self.options.train.mini_batches, exact=self.replicas > 1):
                metrics = self._optimizer_step(batch, mini)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
        self.model.eval()
        self.scheduler.step()
        averaged = {key: value / max(updates, 1) for key, value in sums.items()}
        averaged["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        averaged["optimizer_steps"] = float(updates)
        return averaged

    def _optimizer_step(self, batch: TrainBatch, rows: list[int]) -> dict[str, float]:
        options, algorithm = self.options, self.options.algorithm
        mask = batch.completion_mask[rows]
        prompt_lengths = batch.prompt_mask[rows].sum(1).tolist() if rows else []
        completion_lengths = mask.sum(1).tolist() if rows else []
        total_tokens = float(mask.sum())
        # The sequence means leave rows without a completion token out (aggregate_loss), so count as
        # they do: rows that have one.
        total_rows = float((mask.sum(1) > 0).sum()) if rows else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic_optimizer is not None:
            self.critic_optimizer.zero_grad(set_to_none=True)
        if self.replicas > 1:
            # Data-parallel replicas: weight every micro-batch by the *global* token (or row) count, so
            # the all-reduced sum of gradients is exactly the gradient of the whole mini-batch.
            totals = torch.tensor([total_tokens, total_rows], dtype=torch.float64)
            torch.distributed.all_reduce(totals, group=self.group)
            total_tokens, total_rows = float(totals[0]), float(totals[1])
        metrics: dict[str, float] = {}
        budget = options.train.micro_batch_tokens
        if self.share_prompts and rows:
            groups = prompt_groups(batch.prompt_ids[rows], batch.prompt_mask[rows])[1].tolist()
            packed = pack_prompt_groups(prompt_lengths, completion_lengths, groups, budget)
        else:
            packed = pack_micro_batches([p + c for p, c in zip(prompt_lengths, completion_lengths)], budget)
        for micro in packed:
            index = torch.tensor([rows[i] for i in micro])
            part = _select(batch, index, self.device)
            micro_mask = part["completion_mask"]
            token_weight = float(micro_mask.sum()) / max(total_tokens, 1.0)
            row_weight = float((micro_mask.sum(1) > 0).sum()) / max(total_rows, 1.0)
            weight = token_weight if algorithm.loss_aggregation == "token-mean" else row_weight
            with self.autocast(), self.forward_heap():
                loss, critic_loss, micro_metrics = self._loss(part)
            total = loss * weight
            if critic_loss is not None:
                # A token mean, so weighted by tokens under every aggregation of the policy loss.
                total = total + critic_loss * token_weight
            total.backward()
            for key, value in micro_metrics.items():
                share = token_weight if key.startswith(("value/", "loss/value")) else weight
                metrics[key] = metrics.get(key, 0.0) + float(value) * share
        if self.replicas > 1:
            _all_reduce_gradients(self.policy_parameters, self.group)
            if self.critic_parameters is not None:
                _all_reduce_gradients(self.critic_parameters, self.group)
        grad_norm = _clip(self.policy_parameters, options.train.max_grad_norm)
        critic_norm = None
        if self.critic_optimizer is not None:
            critic_norm = _clip(self.critic_parameters, options.train.max_grad_norm)
            metrics["value/grad_norm"] = critic_norm
        # One inf/NaN gradient (a bf16 overflow, a degenerate batch) applied to the adapter turns every
        # later sample into garbage and the run never recovers: skip that update instead, as mixed-
        # precision loss scalers do. Replicas all-reduced their gradients, so they all skip together.
        finite = math.isfinite(grad_norm) and (critic_norm is None or math.isfinite(critic_norm))
        if finite:
            self.optimizer.step()
            if self.critic_optimizer is not None:
                self.critic_optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            if self.critic_optimizer is not None:
                self.critic_optimizer.zero_grad(set_to_none=True)
        metrics["grad_norm"] = grad_norm
        metrics["skipped_nonfinite_updates"] = 0.0 if finite else 1.0
        return metrics

    def _loss(
        self, part: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
        """(policy loss under ``loss_aggregation``, the critic's token-mean value loss or None, metrics)."""
        options, algorithm = self.options, self.options.algorithm
        mask = part["completion_mask"]
        logprobs, entropy = completion_logprobs_and_entropy(
            self.model,
            part["prompt_ids"],
            part["prompt_mask"],
            part["completion_ids"],
            mask,
            temperature=options.temperature,
            chunk_size=options.logprob_chunk_size,
            share_prompts=self.share_prompts,
            # Without an entropy bonus the entropy is a metric: no gradient, less work in the head.
            entropy_grad=bool(algorithm.entropy_coef),
        )
        # On-policy (one update per batch, no async rollout): the policy that sampled is the one being
        # updated, so the old log-probs are this pass's own, detached (ratio exactly 1, no extra pass).
        old = logprobs.detach() if options.on_policy else part["old_logprobs"]
        loss, metrics = self.loss_fn(
            logprobs,
            old,
            part["advantages"],
            mask,
            clip_low=algorithm.clip_low,
            clip_high=algorithm.clip_high,
            aggregation=algorithm.loss_aggregation,
            max_len=options.max_new_tokens,
            **self.loss_options,
        )
        metrics = {LOSS_METRIC_NAMES.get(k, f"loss/{k}"): float(v) for k, v in metrics.items()}
        metrics["loss/policy"] = float(loss.detach())
        mask_f = mask.float()
        metrics["entropy"] = float((entropy.detach() * mask_f).sum() / mask_f.sum().clamp(min=1))
        if algorithm.entropy_coef:
            # entropy_bonus is already the term to add (-coef * entropy): minimising it raises entropy.
            loss = loss + entropy_bonus(
                entropy, mask, algorithm.entropy_coef, aggregation=algorithm.loss_aggregation,
                max_len=options.max_new_tokens,
            )  # fmt: skip
        if part.get("ref_logprobs") is not None:
            kl = kl_penalty(logprobs, part["ref_logprobs"], kind=algorithm.kl_estimator)
            kl_term = aggregate_loss(kl, mask, algorithm.loss_aggregation, max_len=options.max_new_tokens)
            if not options.spec.kl_in_reward and algorithm.kl_coef:
                loss = loss + algorithm.kl_coef * kl_term
            metrics["kl"] = float(kl_term.detach())
        if self.critic_parameters is not None and part.get("returns") is not None:
            from rlhf.models.critic import completion_values

            values = completion_values(
                self.model, part["prompt_ids"], part["prompt_mask"], part["completion_ids"], mask
            )
            v_loss, v_metrics = value_loss(
                values, part["old_values"], part["returns"], mask, clip_range=algorithm.value_clip
            )
            metrics["loss/value"] = float(v_loss.detach())
            metrics.update({f"value/{k}": float(v) for k, v in v_metrics.items()})
            return loss, v_loss, metrics
        return loss, None, metrics


def _split(size: int, parts: int, *, exact: bool = False) -> Iterator[list[int]]:
    """Row indices of ``parts`` mini-batches. ``exact`` yields exactly ``parts`` (some maybe empty):
    data-parallel replicas must take the same number of optimiser steps whatever their shard size."""
    if not exact:
        parts = max(1, min(parts, size))
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    for start, end in itertools.pairwise(bounds):
        if end > start or exact:
            yield list(range(start, end))


def _select(batch: TrainBatch, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    fields = {
        "prompt_ids": batch.prompt_ids,
        "prompt_mask": batch.prompt_mask,
        "completion_ids": batch.completion_ids,
        "completion_mask": batch.completion_mask,
        "old_logprobs": batch.old_logprobs,
        "advantages": batch.advantages,
        "returns": batch.returns,
        "old_values": batch.old_values,
        "ref_logprobs": batch.ref_logprobs,
    }
    picked: dict[str, torch.Tensor] = {}
    completion_keep = max(1, int(batch.completion_mask[index].sum(1).max()))
    prompt_keep = max(1, int(batch.prompt_mask[index].sum(1).max()))
    for key, tensor in fields.items():
        if tensor is None:
            continue
        rows = tensor[index]
        # Trim columns that are padding for every row: prompts are left-padded, completions right.
        rows = rows[:, -prompt_keep:] if key.startswith("prompt") else rows[:, :completion_keep]
        picked[key] = rows.to(device)
    return picked


def _all_reduce_gradients(parameters: list[torch.nn.Parameter], group: object) -> None:
    """Sum gradients over the replicas, one flat buffer per call (a missing grad counts as zero)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat, group=group)
    offset = 0
    for param, grad in zip(parameters, grads):
        size = grad.numel()
        param.grad = flat[offset : offset + size].view_as(grad).clone()
        offset += size


def _clip(parameters: list[torch.nn.Parameter], max_norm: float | None) -> float:
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm is None:
        return float(torch.norm(torch.stack([p.grad.detach().norm() for p in grads])))
    return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))


def is_on_policy(config: ExperimentConfig, spec: AlgorithmSpec) -> bool:
    """One update per rollout batch from the policy that sampled it, so the learner's own first pass
    gives the old log-probs (no extra pass). Not with async rollout, several epochs or mini-batches,
    or a KL penalty folded into the reward (which needs the behaviour log-probs)."""
    algorithm = config.algorithm
    return (
        config.placement.mode == "in_process"
        and not config.placement.async_rollout
        and algorithm.ppo_epochs == 1
        and config.train.mini_batches == 1
        and not (spec.kl_in_reward and algorithm.kl_coef)
    )
