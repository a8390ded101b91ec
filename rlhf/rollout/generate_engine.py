"""A rollout engine on transformers' ``generate``, colocated with the learner.

The engine holds the learner's own PeftModel: with one copy of the weights the learner's update is
already what the engine samples from, so weight sync for this engine is a no-op (``set_adapter_state``
still works, for an engine that holds a copy). Behaviour log-probs are recomputed after sampling by
:func:`rlhf.models.logprobs.completion_logprobs`, the function the learner uses, so the two agree exactly
up to batch composition.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from rlhf.models.loading import POLICY_ADAPTER, load_adapter_state_dict, use_adapter
from rlhf.models.logprobs import causal_lm_of, completion_logprobs
from rlhf.rollout.engine import FinishedCallback, SamplingOptions, check_sampling
from rlhf.rollout.sampling import logprob_temperature
from rlhf.types import Rollouts, TaskBatch


class StopOnStrings(StoppingCriteria):
    """Marks a sequence done once its generated text (after ``prompt_length``) contains a stop string.

    Only a window of recent tokens is decoded each step: a stop string of ``k`` characters spans at
    most ``4 k`` tokens (a UTF-8 character has at most 4 bytes, a token at least one), plus slack for
    a partial character at the window's start.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.prompt_length = prompt_length
        self.window = 4 * max(len(s) for s in self.stop) + 2

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:].tolist(), skip_special_tokens=False)
        done = [any(s in tail for s in self.stop) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def completion_end(
    tokens: Sequence[int],
    eos_ids: set[int],
    stop: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[int, bool]:
    """``(length, finished)`` of a generated token list.

    The completion ends at the first EOS (kept) or at the first token whose text completes a stop
    string (kept), whichever comes first. ``finished`` is False when neither occurs: the budget ran out.
    """
    eos_at = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
    limit = len(tokens) if eos_at is None else eos_at

    def has_stop(n: int) -> bool:
        text = tokenizer.decode(list(tokens[:n]), skip_special_tokens=False)
        return any(s in text for s in stop)

    if stop and has_stop(limit):
        # "a stop string occurs in the first n tokens" is monotone in n: binary search the first n.
        low, high = 1, limit
        while low < high:
            mid = (low + high) // 2
            if has_stop(mid):
                high = mid
            else:
                low = mid + 1
        return low, True
    if eos_at is not None:
        return eos_at + 1, True
    return len(tokens), False


def cut_completion(
    generated: Sequence[int],
    eos_ids: Sequence[int],
    stop: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[list[int], bool]:
    """A sample's generated tokens up to where its completion ends (:func:`completion_end`), and
    whether it finished (False: it ran out of budget)."""
    length, finished = completion_end(generated, set(eos_ids), stop, tokenizer)
    return list(generated[:length]), finished


def reporting_cut_completions(
    on_finished: FinishedCallback,
    eos_ids: Sequence[int],
    stop: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
) -> Callable[[int, Sequence[int]], None]:
    """``report(sample, generated)`` that hands ``on_finished`` the sample's completion cut as
    :func:`pad_samples` cuts it, so what is handed over early is what the Rollouts will hold."""

    def report(sample: int, generated: Sequence[int]) -> None:
        on_finished(sample, cut_completion(generated, eos_ids, stop, tokenizer)[0])

    return report


def completion_text(tokens: Sequence[int], stop: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> str:
    """The decoded completion without special tokens, cut right after its first stop string."""
    text = tokenizer.decode(list(tokens), skip_special_tokens=True)
    ends = [text.find(s) + len(s) for s in stop if s in text]
    return text[: min(ends)] if ends else text


@contextmanager
def _generation_mode(model: nn.Module, adapter: str | None) -> Iterator[None]:
    """Eval mode (no dropout) and the policy adapter active for the block; both restored after."""
    was_training = model.training
    model.eval()
    try:
        with use_adapter(model, adapter) if adapter is not None else nullcontext():
            yield
    finally:
        model.train(was_training)


@contextmanager
def _neutral_generation_defaults(model: nn.Module) -> Iterator[None]:
    """Hide the checkpoint's generation_config while sampling.

    ``generate`` fills every setting we leave unset from the checkpoint's defaults (a hub model may
    ship top_k=20 or a repetition penalty); those would change the sampling distribution behind
    the behaviour log-probs' back.
    """
    lm = causal_lm_of(model)
    saved = lm.generation_config
    lm.generation_config = GenerationConfig()
    try:
        yield
    finally:
        lm.generation_config = saved


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id that pads batches: the tokenizer's pad token, else its EOS token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as [B, W] ids and mask, padded on the left (prompts)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as [B, W] ids and mask, padded on the right (completions)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
    return ids, mask


def encode_prompts(tokenizer: PreTrainedTokenizerBase, batch: TaskBatch) -> list[list[int]]:
    """Token ids of each prompt of ``batch``, tokenized as given (``add_special_tokens=False``:
    rendered prompts carry their own special tokens); a ValueError unless every task has a prompt
    with at least one token."""
    if len(batch.prompts) != len(batch.tasks) or not batch.prompts:
        raise ValueError(
            f"TaskBatch needs one prompt per task and at least one: {len(batch.tasks)} tasks, "
            f"{len(batch.prompts)} prompts"
        )
    encoded = tokenizer(list(batch.prompts), add_special_tokens=False).input_ids
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"prompts {empty} tokenize to nothing; every prompt needs at least one token")
    return encoded


@dataclass
class PaddedSamples:
    """Sampled token lists cut where each completion ends, padded into the Rollouts layout."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    truncated: torch.Tensor
    #: tokens each completion keeps (the decoded tokens up to its end)
    lengths: list[int]

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prompt_ids, prompt_mask, completion_ids, completion_mask), as log-prob functions take them."""
        return self.prompt_ids, self.prompt_mask, self.completion_ids, self.completion_mask


def pad_samples(
    prompts: Sequence[Sequence[int]],
    generated: Sequence[Sequence[int]],
    tokenizer: PreTrainedTokenizerBase,
    eos_ids: Sequence[int],
    pad_id: int,
    stop: tuple[str, ...],
) -> PaddedSamples:
    """Each sample's prompt and generated tokens (one entry per sample) cut at EOS or a stop string
    and padded: prompts on the left, completions on the right."""
    cuts = [cut_completion(g, eos_ids, stop, tokenizer) for g in generated]
    completions = [tokens for tokens, _ in cuts]
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    completion_ids, completion_mask = right_pad(completions, pad_id)
    return PaddedSamples(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=[completion_text(c, stop, tokenizer) for c in completions],
        truncated=torch.tensor([not finished for _, finished in cuts], dtype=torch.bool),
        lengths=[len(tokens) for tokens in completions],
    )


def make_rollouts(
    batch: TaskBatch,
    n_samples: int,
    padded: PaddedSamples,
    behaviour: torch.Tensor,
    *,
    generation_s: float,
    logprob_s: float,
    metrics: dict[str, float] | None = None,
) -> Rollouts:
    """The Rollouts of ``batch`` (``n_samples`` per prompt) with the rollout metrics both engines log."""
    tokens = float(padded.completion_mask.sum())
    return Rollouts(
        tasks=list(batch.tasks),
        group_ids=torch.arange(len(batch.tasks)).repeat_interleave(n_samples),
        prompt_ids=padded.prompt_ids,
        prompt_mask=padded.prompt_mask,
        completion_ids=padded.completion_ids,
        completion_mask=padded.completion_mask,
        behaviour_logprobs=behaviour,
        texts=padded.texts,
        truncated=padded.truncated,
        metrics={
            "rollout/generation_s": generation_s,
            "rollout/logprob_s": logprob_s,
            "rollout/tokens_per_s": tokens / max(generation_s, 1e-9),
            **(metrics or {}),
        },
    )


class GenerateRolloutEngine:
    """Samples with ``model.generate`` and recomputes behaviour log-probs with the learner's function.

    model: the policy (a PeftModel from :func:`rlhf.models.loading.apply_lora`, or a plain causal LM for
        evaluation); shared with the learner when colocated.
    generation_batch_size: sequences per ``generate`` call (None: the whole batch at once).
    logprob_batch_size: sequences per log-prob forward pass (None: the whole batch at once).
    logprob_chunk_size: completion tokens per output-head chunk in that pass (None: all at once).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        generation_batch_size: int | None = None,
        logprob_batch_size: int | None = None,
        logprob_chunk_size: int | None = None,
        adapter: str = POLICY_ADAPTER,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; completions could never finish")
        for name, value in (
            ("generation_batch_size", generation_batch_size),
            ("logprob_batch_size", logprob_batch_size),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        self.model = model
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size
        self.logprob_batch_size = logprob_batch_size
        self.logprob_chunk_size = logprob_chunk_size
        # Set False when the learner is on-policy (one update per batch): it then takes the old
        # log-probs from its own forward pass and this extra pass would be wasted.
        self.behaviour_logprobs = True
        self.adapter = adapter if isinstance(model, PeftModel) else None
        self.pad_id = pad_token_id(tokenizer)
        configured = causal_lm_of(model).generation_config.eos_token_id
        configured = [] if configured is None else [configured] if isinstance(configured, int) else configured
        self.eos_ids = sorted({tokenizer.eos_token_id, *configured})

    @property
    def device(self) -> torch.device:
        return causal_lm_of(self.model).get_output_embeddings().weight.device

    def set_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a policy adapter state (:func:`rlhf.models.loading.adapter_state_dict`) into the model."""
        if self.adapter is None:
            raise TypeError("this engine holds a model without adapters; there is no adapter state to set")
        load_adapter_state_dict(self.model, state, self.adapter)

    def release_memory(self) -> None:
        """Return cached allocator blocks (the KV cache of the last ``generate``) to the device."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(
        self, batch: TaskBatch, config: SamplingOptions, *, on_finished: FinishedCallback | None = None
    ) -> Rollouts:
        """Sample ``config.n_samples`` completions per prompt; see :class:`rlhf.types.Rollouts`.

        Prompts are tokenized as given (``add_special_tokens=False``: rendered prompts carry their
        own special tokens). All tensors of the result are on the CPU. ``generate`` returns a
        sub-batch (``generation_batch_size``) only when all of its rows are done, so
        ``on_finished`` hears of its samples then, before the next sub-batch starts.
        """
        check_sampling(config)
        n = int(config.n_samples)
        encoded = encode_prompts(self.tokenizer, batch)
        prompts = [ids for ids in encoded for _ in range(n)]
        stop = tuple(config.stop)
        report = (
            None
            if on_finished is None
            else reporting_cut_completions(on_finished, self.eos_ids, stop, self.tokenizer)
        )

        started = time.perf_counter()
        generated: list[list[int]] = []
        step = self.generation_batch_size or len(prompts)
        with _generation_mode(self.model, self.adapter), _neutral_generation_defaults(self.model):
            for start in range(0, len(prompts), step):
                generated.extend(self._sample(prompts[start : start + step], config, stop))
                if report is not None:
                    for sample in range(start, len(generated)):
                        report(sample, generated[sample])
        generation_s = time.perf_counter() - started

        padded = pad_samples(prompts, generated, self.tokenizer, self.eos_ids, self.pad_id, stop)

        started = time.perf_counter()
        temperature = logprob_temperature(config.temperature)
        if self.behaviour_logprobs:
            behaviour = self.logprobs(*padded.sequences(), temperature)
        else:  # on-policy learners take the old log-probs from their own first pass instead
            behaviour = torch.zeros(padded.completion_ids.shape, dtype=torch.float32)
        logprob_s = time.perf_counter() - started
        return make_rollouts(batch, n, padded, behaviour, generation_s=generation_s, logprob_s=logprob_s)

    def _sample(
        self, prompts: Sequence[Sequence[int]], config: SamplingOptions, stop: tuple[str, ...]
    ) -> list[list[int]]:
        """Generated token lists (pads after a finished sequence included) for one micro-batch."""
        ids, mask = left_pad(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        greedy = config.temperature == 0
        generation_config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else float(config.temperature),
            top_p=None if greedy else float(config.top_p),
            top_k=None if greedy else int(config.top_k),
            max_new_tokens=int(config.max_new_tokens),
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        criteria = StoppingCriteriaList([StopOnStrings(self.tokenizer, stop, ids.shape[1])] if stop else [])
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=generation_config,
            stopping_criteria=criteria,
        )
        return out[:, ids.shape[1] :].tolist()

    def logprobs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        """[B, T] behaviour log-probs (CPU, float32) under the engine's policy, in no-grad eval mode."""
        step = self.logprob_batch_size or prompt_ids.shape[0]
        parts = []
        with torch.no_grad(), _generation_mode(self.model, self.adapter):
            for start in range(0, prompt_ids.shape[0], step):
                rows = slice(start, start + step)
                p_mask, c_mask = prompt_mask[rows], completion_mask[rows]
                # Trim columns that are padding for every row of this micro-batch.
                p_keep = int(p_mask.sum(dim=1).max())
                t_keep = max(1, int(c_mask.sum(dim=1).max()))
                lp = completion_logprobs(
                    self.model,
                    prompt_ids[rows, -p_keep:].to(self.device),
                    p_mask[:, -p_keep:].to(self.device),
                    completion_ids[rows, :t_keep].to(self.device),
                    c_mask[:, :t_keep].to(self.device),
                    temperature=temperature,
                    chunk_size=self.logprob_chunk_size,
                )
                full = torch.zeros(lp.shape[0], completion_ids.shape[1], dtype=torch.float32)
                full[:, :t_keep] = lp.cpu()
                parts.append(full)
        return torch.cat(parts)
