"""Config sections for how the policy learns and where the work runs: algorithm, learner, placement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rlhf.config.schema import Section, setting


def algorithm_registry() -> Any:
    """``rlhf.algorithms`` (the registered algorithms and losses), or None without torch.

    The light install (`effirl config`, the reward service) has no torch, and the registry's
    functions are torch code; there the names are checked when `effirl train` resolves them.
    """
    try:
        import rlhf.algorithms as algorithms
    except ModuleNotFoundError:
        return None
    return algorithms


@dataclass
class AlgorithmConfig(Section):
    """The advantage estimator and the policy loss.

    `grpo`: group-normalised outcome rewards. `rloo`: leave-one-out group baseline. `reinforce_plus_plus`:
    batch-normalised returns with a per-token KL penalty. `reinforce_plus_plus_baseline`: the same with the
    group mean subtracted first. `ppo`: a learned value function (a critic) with GAE.
    """

    section = "algorithm"

    name: str = setting(
        "grpo",
        "Algorithm, looked up by name in the registry (rlhf/algorithms; docs/algorithms.md lists them): "
        "its advantage estimator, policy loss, whether it needs a critic and where its KL penalty goes.",
    )
    policy_loss: str | None = setting(
        None,
        "Registered policy loss to use instead of the algorithm's own (`ppo_clip` for every built-in "
        "algorithm): `ppo_clip` or `dual_clip`. null keeps the algorithm's.",
    )
    normalize_std: bool = setting(
        True, "Divide group-relative advantages by the group's standard deviation (GRPO); off is Dr. GRPO."
    )
    clip_low: float = setting(0.2, "PPO ratio clip below 1: the ratio is kept >= 1 - clip_low.")
    clip_high: float = setting(
        0.2,
        "PPO ratio clip above 1: the ratio is kept <= 1 + clip_high; above clip_low is DAPO's clip-higher.",
    )
    clip_ratio_c: float = setting(
        3.0,
        "Dual-clip bound (`policy_loss: dual_clip`): a token with a negative advantage loses at most "
        "clip_ratio_c times its advantage.",
    )
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = setting(
        "token-mean",
        "How per-token losses become one number: `token-mean` (every token of the batch weighs the same), "
        "`seq-mean-token-mean` (mean per sequence, then over sequences; the original GRPO), "
        "`seq-mean-token-sum-norm` (sum per sequence divided by `rollout.max_new_tokens`; Dr. GRPO).",
    )
    filter_uniform_groups: bool = setting(
        False,
        "Drop groups whose samples all got the same reward (they have zero advantage and only dilute the "
        "batch), as in DAPO's dynamic sampling.",
    )
    overlong_buffer: int = setting(
        0,
        "Soft overlong penalty (DAPO): completions longer than max_new_tokens - overlong_buffer lose reward "
        "linearly, up to `overlong_penalty` at max_new_tokens. 0 disables.",
    )
    overlong_penalty: float = setting(1.0, "Largest overlong penalty, reached at `rollout.max_new_tokens`.")
    kl_coef: float = setting(
        0.0,
        "Weight of the KL penalty towards the base model (the policy with the adapter turned off); "
        "0 disables.",
    )
    kl_metric_every: int = setting(
        5,
        "With `kl_coef` 0 the KL to the reference is only a metric: measure it every N steps (it costs "
        "a forward pass); other steps log null.",
    )
    kl_estimator: Literal["k1", "k3"] = setting(
        "k3", "KL estimator: `k1` (log-ratio; unbiased, noisy) or `k3` (non-negative, lower variance)."
    )
    entropy_coef: float = setting(0.0, "Weight of the entropy bonus; 0 disables.")
    gamma: float = setting(1.0, "Discount factor over completion tokens (PPO).")
    lam: float = setting(0.95, "GAE lambda (PPO).")
    ppo_epochs: int = setting(1, "Passes over each rollout batch; more than 1 reuses samples off-policy.")
    value_clip: float = setting(0.2, "Clip range of value updates around the old values (PPO).")
    critic_lr: float = setting(5e-5, "Learning rate of the critic (PPO).")

    def check_values(self) -> None:
        algorithms = algorithm_registry()
        if algorithms is not None:
            self.require_choice("name", list(algorithms.ALGORITHMS))
            self.require_choice("policy_loss", list(algorithms.POLICY_LOSSES))
        self.require_positive("clip_low", "clip_high", "ppo_epochs", "value_clip", "critic_lr")
        if self.clip_ratio_c <= 1.0:
            self.fail("clip_ratio_c", "must be > 1")
        self.require_range("clip_low", 0.0, 1.0, low_open=True, high_open=True)
        self.require_non_negative("overlong_buffer", "overlong_penalty", "kl_coef", "entropy_coef")
        self.require_positive("kl_metric_every")
        self.require_range("gamma", 0.0, 1.0)
        self.require_range("lam", 0.0, 1.0)


@dataclass
class TrainConfig(Section):
    """The learner: optimiser, schedule, batching and precision."""

    section = "train"

    steps: int = setting(100, "RL steps (one rollout batch and its updates each).")
    lr: float = setting(5e-5, "Peak learning rate of AdamW on the adapter.")
    lr_schedule: Literal["constant", "linear", "cosine"] = setting(
        "constant", "Learning-rate schedule after warm-up (`linear` and `cosine` decay to 0 at `steps`)."
    )
    warmup_steps: int = setting(0, "Steps of linear warm-up from 0 to `lr`.")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    max_grad_norm: float | None = setting(1.0, "Clip the gradient's global norm to this; null disables.")
    micro_batch_tokens: int = setting(
        4096,
        "Token budget of one forward/backward pass (prompt plus completion tokens, padding included); "
        "sequences are packed into micro-batches under it and gradients accumulate over them. With "
        "`share_prompts` a group of samples of one prompt stays whole while its prompt once plus its "
        "completions fit.",
    )
    mini_batches: int = setting(
        1, "Optimiser steps per rollout batch: the batch is split into this many mini-batches."
    )
    share_prompts: bool | None = setting(
        None,
        "Run each distinct prompt once per micro-batch and its samples' completions on its KV cache: "
        "the same log-probs and gradients (up to rounding) for `P + n*T` tokens instead of `n*(P + T)`. "
        "null turns it on when training on a CPU, where the learner is compute-bound (1.76x faster "
        "steps on the CPU quickstart's batch), and off on a GPU, where the second pass costs more "
        "than the tokens save (0.5-0.6x on an H200). Off under `model.gradient_checkpointing`.",
    )
    map_activations: bool | None = setting(
        None,
        "Give the learner forward pass's allocations of 256 KiB and more that the heap has no free room "
        "for pages of their own, returned to the kernel when freed (glibc's malloc only; elsewhere "
        "nothing changes): the activations kept for the backward pass then cannot fragment the heap, "
        "whose freed memory stays resident. "
        "Over three CPU quickstart steps: peak RSS 2.29 instead of 2.79 GiB, for 1.14x the learner's "
        "time (the kernel zeroes every page; docs/performance.md). null turns it on when training on "
        "a CPU.",
    )
    seed: int = setting(0, "Seed of sampling, initialisation and anything else random in the learner.")
    bf16: bool | None = setting(
        None, "Autocast the learner's forward pass to bfloat16; null turns it on when training on a GPU."
    )

    def check_values(self) -> None:
        self.require_positive("steps", "lr", "max_grad_norm", "micro_batch_tokens", "mini_batches")
        self.require_non_negative("warmup_steps", "weight_decay")
        if self.warmup_steps > self.steps:
            self.fail("warmup_steps", f"must not exceed `train.steps` ({self.steps})")


@dataclass
class WarmStartConfig(Section):
    """An optional supervised warm start run by `effirl train` before RL step 0 (`effirl sft`'s code).

    RL can only amplify what the policy already samples: a model that never writes the fast solution
    gets no efficiency reward to learn from. A few SFT steps on the training tasks' references (the
    fast solutions) show it how; RL then makes those attempts correct. The evaluation at the start
    of the run comes after the warm start, so the run's gain is RL's alone. The steps run on the
    run's learner at `train.lr` (see rlhf/training/warm_start.py).
    """

    section = "warm_start"

    sft_steps: int = setting(0, "Supervised steps on the training tasks' references; 0 skips the warm start.")
    batch_size: int = setting(8, "Examples per supervised step.")
    examples: int | None = setting(
        None, "Use the references of the first N training tasks (dataset order); null uses all."
    )

    def check_values(self) -> None:
        self.require_non_negative("sft_steps")
        self.require_positive("batch_size", "examples")


@dataclass
class PlacementConfig(Section):
    """Where rollout, reward and learner run, and how the adapter reaches the generators."""

    section = "placement"

    mode: Literal["in_process", "colocated", "split"] = setting(
        "in_process",
        "`in_process`: one process does everything (CPU and single-GPU runs). `colocated`: Ray workers "
        "share the GPUs between rollout and learning. `split`: rollout workers and the learner hold "
        "separate GPUs.",
    )
    async_rollout: bool = setting(
        False,
        "Generate step t+1 while the learner trains on step t (one step off-policy; the importance ratio "
        "corrects for it).",
    )
    rollout_workers: int = setting(1, "Rollout workers (Ray actors) in `colocated` and `split` modes.")
    learner_workers: int = setting(
        1,
        "Data-parallel learner replicas in `split` mode: each trains on a shard of the batch and their "
        "adapter gradients are all-reduced (torch.distributed, gloo on CPU, NCCL on GPUs), so the update "
        "equals a single learner's; rank 0 pushes the adapter to the rollout workers.",
    )
    num_gpus_per_worker: float | None = setting(
        None,
        "GPUs each rollout worker reserves from Ray (fractions share a GPU); null is 1 when the model's "
        "device is a GPU and 0 on CPU.",
    )
    ray_address: str | None = setting(
        None, "Ray cluster to join (`auto` or `ray://host:port`); null starts a local Ray instance."
    )
    sync: Literal["inplace", "object_store", "broadcast", "merged"] = setting(
        "inplace",
        "How the new adapter reaches the generators: `inplace` (they share the learner's model), "
        "`object_store` (adapter tensors through Ray's object store), `broadcast` (a collective from the "
        "learner to the workers), `merged` (the adapter is merged into a copy of the base weights).",
    )

    def check_values(self) -> None:
        self.require_positive("rollout_workers", "learner_workers")
        if self.learner_workers > 1 and self.mode != "split":
            self.fail("learner_workers", "can be more than 1 only when `placement.mode` is `split`")
        self.require_non_negative("num_gpus_per_worker")
        if self.mode == "in_process" and self.sync in ("object_store", "broadcast"):
            self.fail("sync", "must be `inplace` or `merged` when `placement.mode` is `in_process`")
        if self.mode != "in_process" and self.sync == "inplace":
            self.fail("sync", f"cannot be `inplace` when `placement.mode` is `{self.mode}` (no shared model)")
