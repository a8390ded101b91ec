"""Config sections for what is trained and on what: model, LoRA adapter, data, rollout, reward."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rewards.settings import RewardSettings, SettingError
from rlhf.config.schema import Section, setting

BUILTIN_PREFIX = "builtin:"
TINY_PREFIX = "tiny:"
_DEVICE = re.compile(r"auto|cpu|cuda|cuda:\d+")


@dataclass
class ModelConfig(Section):
    """The policy's base model: where it comes from, its precision and where it runs.

    `name_or_path` accepts a Hugging Face hub id (`Qwen/Qwen2.5-Coder-1.5B-Instruct`), a local model
    directory, a `.gguf` file, `builtin:<name>` for a model shipped as a Python package
    (`builtin:smollm2-135m-instruct`, the default), or `tiny:<architecture>` (`tiny:llama`) for a tiny
    randomly initialised model built from a config, for tests and smoke runs that must not download.
    """

    section = "model"

    name_or_path: str = setting(
        "builtin:smollm2-135m-instruct",
        "Hub id, local directory, `.gguf` file, `builtin:<name>` or `tiny:<architecture>`.",
    )
    revision: str | None = setting(
        None, "Hub branch, tag or commit to load; null takes the default branch. Ignored for local paths."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting(
        "auto",
        "Precision the weights are loaded in. `auto` is bfloat16 on a GPU that supports it and float32 "
        "on CPU.",
    )
    device: str = setting(
        "auto",
        "Where the policy runs: `auto` (the first GPU if there is one, else CPU), `cpu`, `cuda`, `cuda:N`.",
    )
    trust_remote_code: bool = setting(
        False,
        "Allow hub models that ship their own Python code to run it. Only enable for sources you trust.",
    )
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in the backward pass: less memory for about a third more compute."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = setting(
        "auto", "Attention kernel passed to transformers; `auto` lets transformers pick (usually `sdpa`)."
    )

    def check_values(self) -> None:
        name = self.name_or_path.strip()
        if not name:
            self.fail("name_or_path", "must name a model")
        for prefix in (BUILTIN_PREFIX, TINY_PREFIX):
            if name.startswith(prefix) and not name[len(prefix) :]:
                self.fail("name_or_path", f"needs a name after `{prefix}` (e.g. `{prefix}llama`)")
        if not _DEVICE.fullmatch(self.device):
            self.fail("device", "must be one of auto, cpu, cuda, cuda:N (N a GPU index)")


@dataclass
class LoraConfig(Section):
    """The LoRA adapter: the only weights the learner updates and the only tensors weight sync moves."""

    section = "lora"

    rank: int = setting(16, "Rank r of the low-rank update matrices.")
    alpha: float = setting(
        32.0, "Scaling numerator: the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."
    )
    dropout: float = setting(
        0.0,
        "Dropout on the adapter input. Keep 0 for RL: dropout makes the learner's log-probs disagree with "
        "the ones the rollout sampled with, which biases importance ratios.",
    )
    target_modules: Literal["all-linear"] | list[str] = setting(
        "all-linear",
        "Module names to adapt (e.g. `[q_proj, v_proj]`), or `all-linear` for every linear layer except "
        "the output head.",
    )
    use_rslora: bool = setting(False, "Rank-stabilised LoRA: scale by alpha / sqrt(r) instead of alpha / r.")
    adapter_path: str | None = setting(
        None,
        "Start from a saved adapter (a checkpoint or an `effirl sft` output) instead of a fresh one; "
        "its rank and targets win over the keys above.",
    )

    def check_values(self) -> None:
        self.require_positive("rank", "alpha")
        self.require_range("dropout", 0.0, 1.0, high_open=True)
        if isinstance(self.target_modules, list) and not self.target_modules:
            self.fail("target_modules", "must list at least one module name, or be `all-linear`")


@dataclass
class DataConfig(Section):
    """Which tasks are trained on and evaluated on, and how they are drawn and rendered as prompts."""

    section = "data"

    dataset: str = setting(
        "synthetic",
        "Training tasks: a registered dataset (`synthetic`, `synthetic_optimise`, `humanevalplus`, "
        "`mbppplus`, `humaneval`), a Hub dataset whose layout effirl knows (`evalplus/humanevalplus`, "
        "`evalplus/mbppplus`, `Elfsong/Mercury`, `DONG19/EffiBench`), a task file or folder, or "
        "another Hub id with `columns`.",
    )
    columns: str | None = setting(
        None,
        "How the rows of `dataset` become tasks: a known layout (`evalplus_humanevalplus`, "
        "`evalplus_mbppplus`, `effibench`, `mercury`) or a column mapping such as "
        "`id=task_id,prompt=question,entry_point=fn_name,tests=test_cases` (docs/datasets.md); null "
        "uses the layout the dataset is registered with, else effirl's task schema.",
    )
    split: str | None = setting(
        None, "Split of `dataset` to train on; null is the dataset's default (`train` for synthetic)."
    )
    eval_dataset: str | None = setting(
        None, "Tasks to evaluate on (same forms as `dataset`); null uses `dataset`."
    )
    eval_columns: str | None = setting(
        None, "`columns` of `eval_dataset` (null: its registered layout); unused when `eval_dataset` is null."
    )
    eval_split: str | None = setting(
        None,
        "Split of the evaluation dataset; null is its held-out split (`heldout` for synthetic, the "
        "dataset's default otherwise).",
    )
    limit: int | None = setting(
        None, "Use only the first N training tasks (after the seeded shuffle); null uses all."
    )
    eval_limit: int | None = setting(None, "Evaluate on only the first N evaluation tasks; null uses all.")
    prompts_per_step: int = setting(4, "Distinct tasks per step; each is sampled `rollout.n_samples` times.")
    shuffle: bool = setting(True, "Shuffle the training tasks (with `seed`) before each pass over them.")
    seed: int = setting(0, "Seed of the task order.")
    prompt_style: Literal["chat", "chat_fence", "chat_prefill", "raw"] = setting(
        "chat_fence",
        "How a task becomes model input: `chat` applies the chat template; `chat_fence` also opens the "
        "assistant's answer with a Python code fence so even small models answer with code; "
        "`chat_prefill` opens it with the fence and the function's signature; `raw` feeds the code stub "
        "as is (base models).",
    )

    def check_values(self) -> None:
        if not self.dataset.strip():
            self.fail("dataset", "must not be empty")
        for name in ("split", "eval_split"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                self.fail(name, "must not be empty (use null for the dataset's default)")
        if self.eval_dataset is not None and not self.eval_dataset.strip():
            self.fail("eval_dataset", "must not be empty (use null to evaluate on `dataset`)")
        for name in ("columns", "eval_columns"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                self.fail(name, "must not be empty (use null for the dataset's own layout)")
        self.require_positive("limit", "eval_limit", "prompts_per_step")


@dataclass
class RolloutConfig(Section):
    """How completions are sampled from the policy during training and evaluation."""

    section = "rollout"

    engine: Literal["generate", "fast", "auto"] = setting(
        "auto",
        "`generate` uses transformers' generate (reference, any model); `fast` uses the batched KV-cache "
        "engine; `auto` picks `fast` on a GPU when the model supports it, else `generate`.",
    )
    n_samples: int = setting(4, "Completions per prompt (the group size of GRPO/RLOO baselines).")
    temperature: float = setting(
        1.0, "Sampling temperature while training; the log-probs use the same temperature."
    )
    top_p: float = setting(
        1.0, "Nucleus sampling: keep the smallest token set with this much probability; 1 disables."
    )
    top_k: int = setting(
        0,
        "Sample among the k most likely tokens only (both engines; before the `top_p` cut, as in "
        "transformers); 0 disables. The behaviour log-probs are taken before the cut, as with `top_p`.",
    )
    max_new_tokens: int = setting(256, "Longest completion; longer ones are cut and marked truncated.")
    stop: list[str] = setting(
        [],
        "Extra strings that end a completion (EOS always does); the prompt style adds its own, e.g. "
        "the closing code fence.",
    )
    batch_size: int | None = setting(
        None, "Sequences generated at once; null generates the whole step (prompts x samples) in one batch."
    )
    compile_kernels: bool = setting(
        True,
        "Fast engine on a GPU: compile each decoder layer's pieces and the sampler with torch.compile "
        "(about 1.5x the tokens/s of a small model; the first batch pays the compile, under a minute). "
        "No effect on a CPU or with the `generate` engine.",
    )
    steps_per_sync: int = setting(
        8,
        "Fast engine on a GPU: decode steps run (from one CUDA graph) between two reads of the tokens by "
        "the host. Larger hides more host work; a row that ends inside a block decodes to the block's end.",
    )
    stream_rewards: bool = setting(
        True,
        "Hand each completion to the reward stage as soon as it is finished, so its sandbox run (or "
        "its task's request to a reward service) goes on while the rest of the batch still decodes; "
        "the rewards are the same as without. Works in every placement and reward backend. The "
        "`generate` engine finishes a whole `batch_size` at once, so it gains only with a "
        "`batch_size` below the batch. Off: the batch is scored after generation.",
    )
    eval_temperature: float = setting(0.0, "Sampling temperature during evaluation; 0 is greedy decoding.")
    eval_n_samples: int = setting(
        1,
        "Completions per task during evaluation (pass@k needs k <= eval_n_samples); 1 with greedy decoding.",
    )

    def check_values(self) -> None:
        self.require_positive(
            "n_samples", "temperature", "max_new_tokens", "batch_size", "eval_n_samples", "steps_per_sync"
        )
        self.require_range("top_p", 0.0, 1.0, low_open=True)
        self.require_non_negative("top_k", "eval_temperature")
        if any(s == "" for s in self.stop):
            self.fail("stop", "must not contain an empty string")
        if self.eval_temperature == 0 and self.eval_n_samples > 1:
            self.fail(
                "eval_n_samples",
                "must be 1 when `rollout.eval_temperature` is 0 (greedy decoding repeats one completion)",
            )


@dataclass(frozen=True)
class RewardConfig(Section, RewardSettings):
    """How completions are scored: correctness, efficiency relative to a baseline, and penalties.

    The reward of a completion is its correctness plus `efficiency_weight` times its efficiency score
    (counted only when all tests pass) plus `format_weight` times its format score plus any penalty.
    The keys are the fields of `rewards.settings.RewardSettings`, the one definition the reward service
    (`effirl reward serve --help`) and its clients use too; this section is that class.
    """

    section = "reward"

    def check_values(self) -> None:
        try:
            self.check()
        except SettingError as exc:
            self.fail(exc.key, exc.problem)
