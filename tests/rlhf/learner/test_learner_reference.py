"""The real Learner's update against a plain-torch reference, off-policy, clipped and split.

The reference below is written from the formulas (docs/algorithms.md), not from the learner's code:
one unpadded forward pass per row, the clipped surrogate per token, the aggregation by hand, PPO's
clipped value loss as a token mean, AdamW from torch, gradient clipping per parameter set. The
batches come from ``make_train_batch`` (the real join) with old log-probs away from the current
policy's, so the ratios leave 1 and both clip bounds bite, and the learner runs several epochs and
mini-batches, split into micro-batches, with shared prompt passes: the parts the on-policy tests
never reach.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from rewards.tasks import Task
from rlhf.algorithms import AGGREGATION_MODES, resolve_algorithm
from rlhf.algorithms.advantage_step import make_train_batch
from rlhf.config import AlgorithmConfig, TrainConfig
from rlhf.learner.updates import Learner, LearnerOptions
from rlhf.models.critic import CRITIC_ADAPTER, add_critic, critic_parameters, policy_parameters
from rlhf.models.critic import values as critic_values
from rlhf.models.loading import adapters_disabled, apply_lora, tiny_model_and_tokenizer
from rlhf.types import Rollouts, Scored, TrainBatch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second thread buys nothing and only spins on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TEMPERATURE = 0.7
MAX_NEW_TOKENS = 7
PROMPT_LENGTHS = [6, 6, 3, 3, 5, 5, 1, 1]  # four prompts, two samples each
COMPLETION_LENGTHS = [7, 2, 4, 7, 1, 5, 6, 3]
REWARDS = [1.0, 0.0, 0.2, 0.9, 0.0, 1.0, 0.4, 0.4]  # the last group is uniform


# --- the model and the batch ---------------------------------------------------------------------


def _model(with_critic: bool) -> torch.nn.Module:
    """A tiny Llama with a policy adapter (and a critic) whose B matrices are not zero."""
    model, _ = tiny_model_and_tokenizer(initializer_range=0.2, seed=5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)  # peft draws the A matrices from the global generator
        model = apply_lora(model, rank=4, alpha=8)
        if with_critic:
            add_critic(model, rank=2, alpha=4, seed=6)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.requires_grad and "lora_B" in name:
                    parameter.normal_(std=0.05)
    return model


def _rollouts(vocab: int) -> Rollouts:
    gen = torch.Generator().manual_seed(11)
    rows = len(PROMPT_LENGTHS)
    width_p, width_c = max(PROMPT_LENGTHS), MAX_NEW_TOKENS
    prompt_ids = torch.zeros(rows, width_p, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for group in range(rows // 2):
        length = PROMPT_LENGTHS[2 * group]
        tokens = torch.randint(3, vocab, (length,), generator=gen)
        for row in (2 * group, 2 * group + 1):
            prompt_ids[row, width_p - length :] = tokens
            prompt_mask[row, width_p - length :] = 1
    completion_ids = torch.zeros(rows, width_c, dtype=torch.long)
    completion_mask = torch.zeros_like(completion_ids)
    for row, length in enumerate(COMPLETION_LENGTHS):
        completion_ids[row, :length] = torch.randint(3, vocab, (length,), generator=gen)
        completion_mask[row, :length] = 1
    return Rollouts(
        tasks=[Task(id=f"toy/{g}", prompt="p") for g in range(rows // 2)],
        group_ids=torch.arange(rows) // 2,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        behaviour_logprobs=torch.zeros(rows, width_c),  # filled in by _train_batch
        texts=[""] * rows,
        truncated=torch.tensor([n == MAX_NEW_TOKENS for n in COMPLETION_LENGTHS]),
    )


def _rows(batch: TrainBatch | Rollouts, row: int) -> tuple[torch.Tensor, int, int]:
    """The unpadded sequence of ``row``: (ids [1, L], prompt length, completion length)."""
    prompt = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
    length = int(batch.completion_mask[row].sum())
    ids = torch.cat([prompt, batch.completion_ids[row, :length]])[None]
    return ids, len(prompt), length


def reference_pass(model: torch.nn.Module, batch: TrainBatch | Rollouts, row: int, *, critic: bool = False):
    """(log-probs, entropies[, values]) of one row's completion tokens: a plain forward, no padding."""
    ids, start, length = _rows(batch, row)
    logits = model(input_ids=ids).logits[0, start - 1 : start - 1 + length].float() / TEMPERATURE
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(1, ids[0, start:, None]).squeeze(1)
    entropy = -(logp.exp() * logp).sum(-1)
    if not critic:
        return chosen, entropy
    values = critic_values(model, ids, torch.ones_like(ids))[0, start - 1 : start - 1 + length]
    return chosen, entropy, values


def _padded(per_row: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(per_row), width)
    for row, values in enumerate(per_row):
        out[row, : len(values)] = values
    return out


def _train_batch(model: torch.nn.Module, algorithm: AlgorithmConfig) -> TrainBatch:
    """The real Scored -> TrainBatch join, with behaviour log-probs of an older policy (noise of
    +-0.45 nats around the current ones, so ratios run from about 0.64 to 1.57)."""
    rollouts = _rollouts(vocab=model.config.vocab_size)
    gen = torch.Generator().manual_seed(13)
    with torch.no_grad():
        passes = [
            reference_pass(model, rollouts, r, critic=algorithm.name == "ppo") for r in range(len(rollouts))
        ]
        with adapters_disabled(model):
            reference = [reference_pass(model, rollouts, r)[0] for r in range(len(rollouts))]
    current = _padded([p[0] for p in passes], MAX_NEW_TOKENS)
    noise = (torch.rand(current.shape, generator=gen) - 0.5) * 0.9
    behaviour = (current + noise) * rollouts.completion_mask
    rollouts = dataclasses.replace(rollouts, behaviour_logprobs=behaviour)
    values = None
    if algorithm.name == "ppo":  # the critic one step behind too, so the value clip bites
        values = (_padded([p[2] for p in passes], MAX_NEW_TOKENS) + noise / 3) * rollouts.completion_mask
    scored = Scored(rollouts=rollouts, rewards=torch.tensor(REWARDS), parts={}, evidence=[{}] * len(REWARDS))
    batch = make_train_batch(
        scored,
        algorithm,
        resolve_algorithm(algorithm.name),
        max_new_tokens=MAX_NEW_TOKENS,
        ref_logprobs=_padded(reference, MAX_NEW_TOKENS),
        values=values,
    )
    assert batch is not None
    return batch


# --- the reference update ----------------------------------------------------------------------


def reference_loss(
    model: torch.nn.Module, batch: TrainBatch, rows: list[int], algorithm: AlgorithmConfig, kl_in_loss: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mini-batch's policy loss (+ entropy bonus, + k3 KL) under the aggregation, + value loss."""
    per_row, value_terms, clipped = [], [], {"low": 0, "high": 0, "tokens": 0}
    for row in rows:
        critic = batch.old_values is not None
        out = reference_pass(model, batch, row, critic=critic)
        logp, entropy = out[0], out[1]
        n = len(logp)
        advantage = batch.advantages[row, :n]
        ratio = torch.exp(logp - batch.old_logprobs[row, :n])
        low, high = 1 - algorithm.clip_low, 1 + algorithm.clip_high
        token = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(low, high))
        token = token - algorithm.entropy_coef * entropy
        if kl_in_loss and algorithm.kl_coef and batch.ref_logprobs is not None:
            log_r = batch.ref_logprobs[row, :n] - logp
            token = token + algorithm.kl_coef * (torch.exp(log_r) - 1 - log_r).clamp(0, 10)
        per_row.append(token)
        clipped["low"] += int(((ratio < low) & (advantage < 0)).sum())
        clipped["high"] += int(((ratio > high) & (advantage > 0)).sum())
        clipped["tokens"] += n
        if critic:
            v, old, target = out[2], batch.old_values[row, :n], batch.returns[row, :n]
            v_clip = old + (v - old).clamp(-algorithm.value_clip, algorithm.value_clip)
            value_terms.append(0.5 * torch.maximum((v - target) ** 2, (v_clip - target) ** 2))
    mode = algorithm.loss_aggregation
    if mode == "token-mean":
        loss = torch.cat(per_row).sum() / clipped["tokens"]
    elif mode == "seq-mean-token-mean":
        loss = torch.stack([t.mean() for t in per_row]).mean()
    elif mode == "seq-mean-token-sum":
        loss = torch.stack([t.sum() for t in per_row]).mean()
    else:
        loss = torch.stack([t.sum() / MAX_NEW_TOKENS for t in per_row]).mean()
    if value_terms:
        loss = loss + torch.cat(value_terms).sum() / clipped["tokens"]
    return loss, {k: v / clipped["tokens"] for k, v in clipped.items()}


def reference_step(
    model: torch.nn.Module,
    batch: TrainBatch,
    algorithm: AlgorithmConfig,
    train: TrainConfig,
    kl_in_loss: bool,
) -> tuple[list[dict[str, float]], dict[str, list[float]]]:
    """Every optimiser step of the learner, written out; returns the clip fractions and the gradient
    norms (before clipping) of each step."""
    policy = policy_parameters(model)
    critic = critic_parameters(model) if batch.old_values is not None else []
    lr = train.lr * (1 / train.warmup_steps if train.warmup_steps else 1.0)  # step 0 of the warm-up
    optimizers = [torch.optim.AdamW(policy, lr=lr, weight_decay=train.weight_decay)]
    if critic:
        optimizers.append(torch.optim.AdamW(critic, lr=algorithm.critic_lr))
    rows = len(batch)
    bounds = [round(i * rows / train.mini_batches) for i in range(train.mini_batches + 1)]
    clip_fractions, norms = [], {"policy": [], "critic": []}
    for _ in range(algorithm.ppo_epochs):
        for start, end in itertools.pairwise(bounds):
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss, fractions = reference_loss(model, batch, list(range(start, end)), algorithm, kl_in_loss)
            loss.backward()
            for name, parameters in (("policy", policy), ("critic", critic)):
                if parameters:
                    norms[name].append(float(torch.nn.utils.clip_grad_norm_(parameters, train.max_grad_norm)))
            for optimizer in optimizers:
                optimizer.step()
            clip_fractions.append(fractions)
    return clip_fractions, norms


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


CASES = {
    "grpo": dict(name="grpo", kl_coef=0.05, entropy_coef=0.01, loss_aggregation="seq-mean-token-mean"),
    "dapo": dict(
        name="grpo",
        clip_high=0.28,
        filter_uniform_groups=True,
        overlong_buffer=3,
        overlong_penalty=0.5,
        normalize_std=False,
        loss_aggregation="token-mean",
    ),
    "dr-grpo": dict(name="grpo", normalize_std=False, loss_aggregation="seq-mean-token-sum-norm"),
    "rloo": dict(name="rloo", kl_coef=0.05, loss_aggregation="token-mean"),
    "reinforce_plus_plus": dict(name="reinforce_plus_plus", kl_coef=0.1, gamma=0.9),
    "reinforce_plus_plus_baseline": dict(name="reinforce_plus_plus_baseline", kl_coef=0.1),
    "ppo": dict(name="ppo", kl_coef=0.1, lam=0.9, value_clip=0.05, critic_lr=2e-3, entropy_coef=0.01),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_off_policy_update_equals_the_plain_torch_reference(case: str) -> None:
    algorithm = AlgorithmConfig(ppo_epochs=2, clip_low=0.2, **CASES[case])
    train = TrainConfig(
        lr=2e-3, warmup_steps=2, weight_decay=0.01, max_grad_norm=0.5, mini_batches=2, micro_batch_tokens=24
    )
    spec = resolve_algorithm(algorithm.name)
    kl_in_loss = not spec.kl_in_reward
    with_critic = spec.needs_critic
    learner_model, reference_model = _model(with_critic), _model(with_critic)
    batch = _train_batch(learner_model, algorithm)
    start = _trainable(learner_model)

    options = LearnerOptions(
        train=train,
        algorithm=algorithm,
        temperature=TEMPERATURE,
        max_new_tokens=MAX_NEW_TOKENS,
        spec=spec,
        on_policy=False,
    )
    learner = Learner(
        learner_model,
        policy_parameters(learner_model),
        options,
        critic_parameters=critic_parameters(learner_model) if with_critic else None,
    )
    assert learner.share_prompts  # on a CPU: the shared-prompt path is the one under test
    metrics = learner.step(batch)
    fractions, norms = reference_step(reference_model, batch, algorithm, train, kl_in_loss)

    assert metrics["optimizer_steps"] == 4.0 and metrics["skipped_nonfinite_updates"] == 0.0
    # The test means something only if the ratios left 1 on both sides of the clip.
    assert any(f["low"] > 0 for f in fractions) and any(f["high"] > 0 for f in fractions), fractions
    assert metrics["clip_ratio/region_mean"] > 0  # TRL's name for the clipped share
    # Adam and the gradient clip are blind to a constant factor in the loss; the norms are not.
    assert metrics["grad_norm"] == pytest.approx(sum(norms["policy"]) / 4, rel=1e-5)
    if with_critic:
        assert metrics["value/grad_norm"] == pytest.approx(sum(norms["critic"]) / 4, rel=1e-5)
    learned, expected = _trainable(learner_model), _trainable(reference_model)
    assert learned.keys() == expected.keys()
    moved = max(float((expected[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3, "the reference update did not move the adapter"
    worst = max(float((learned[k] - expected[k]).abs().max()) for k in start)
    # fp32 rounding in another order, amplified where Adam divides a small gradient by its own size:
    # about 3e-6 at most here; a wrong sign or scale of any term shows up at the size of a step.
    assert worst <= 1e-5, f"{case}: the learner's adapter differs from the reference's by {worst}"
    if with_critic:
        critic_moved = max(
            float((expected[k] - start[k]).abs().max())
            for k in start
            if CRITIC_ADAPTER in k or "value_head" in k
        )
        assert critic_moved > 1e-3, "the critic did not move"


# --- the micro-batch split does not change the update ------------------------------------------


def _gradients(
    with_critic: bool, mode: str, micro_batch_tokens: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    model = _model(with_critic)
    if with_critic:
        algorithm = AlgorithmConfig(name="ppo", kl_coef=0.1, entropy_coef=0.01, value_clip=0.05)
    else:
        algorithm = AlgorithmConfig(name="grpo", kl_coef=0.05, entropy_coef=0.01)
    # The config offers the modes recipes use; the learner and aggregate_loss take every one.
    object.__setattr__(algorithm, "loss_aggregation", mode)
    batch = _train_batch(model, algorithm)
    options = LearnerOptions(
        train=TrainConfig(lr=1e-3, micro_batch_tokens=micro_batch_tokens, max_grad_norm=None),
        algorithm=algorithm,
        temperature=TEMPERATURE,
        max_new_tokens=MAX_NEW_TOKENS,
        spec=resolve_algorithm(algorithm.name),
    )
    critic = critic_parameters(model) if with_critic else None
    Learner(model, policy_parameters(model), options, critic_parameters=critic).step(batch)
    # Compared before Adam: its first step is lr * sign(gradient), which would hide a wrong scale.
    flat = lambda params: torch.cat([p.grad.reshape(-1) for p in params])
    return flat(policy_parameters(model)), flat(critic) if critic else None


@pytest.mark.parametrize("with_critic", [False, True], ids=["no-critic", "critic"])
@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_the_update_does_not_depend_on_the_micro_batch_split(mode: str, with_critic: bool) -> None:
    whole_policy, whole_critic = _gradients(with_critic, mode, micro_batch_tokens=10_000)
    split_policy, split_critic = _gradients(with_critic, mode, micro_batch_tokens=14)  # 1-2 rows each
    assert float(whole_policy.norm()) > 0
    assert float((whole_policy - split_policy).norm()) <= 1e-5 * float(whole_policy.norm())
    if with_critic:
        assert float(whole_critic.norm()) > 0
        assert float((whole_critic - split_critic).norm()) <= 1e-5 * float(whole_critic.norm())


def test_several_micro_batches_are_really_used() -> None:
    from rlhf.learner.updates import pack_micro_batches

    lengths = [p + c for p, c in zip(PROMPT_LENGTHS, COMPLETION_LENGTHS)]
    assert len(pack_micro_batches(lengths, 14)) >= 5
    assert len(pack_micro_batches(lengths, 10_000)) == 1
