"""The fast rollout engine: static KV cache, CUDA-graph decode steps, prefix sharing, slot refill.

What it does differently from ``model.generate`` (see docs/performance.md for the measurements):

- **Merged LoRA, fused projections.** Decoding reads :class:`~rlhf.rollout.decoder.DecoderWeights`:
  engine-owned buffers with the policy adapter merged in and q/k/v and gate/up fused, refreshed in
  place before every batch. The model's own weights are never modified, so nothing has to be
  unmerged for training and the learner sees bit-identical weights.
- **Static KV cache and CUDA graphs.** One cache of ``batch_size`` rows is allocated per batch
  shape; decoding runs in blocks of ``steps_per_sync`` steps, each block (forward passes, sampling,
  position updates) replayed from a CUDA graph captured for its (rows, context, steps) bucket
  (:class:`~rlhf.rollout.decode_graphs.DecodeRunner`), so a block costs one launch and one read
  of its tokens instead of hundreds of launches and a host round trip per token. On CPU the same
  steps run eagerly, one per block.
- **Prefix sharing.** Each prompt is prefilled once; its keys and values are copied into the cache
  rows of its ``n_samples`` samples and its last logits give each sample's first token.
- **Slot refill.** A row whose sample finishes (EOS, stop string, budget) takes the next waiting
  sample after its block; when none are left, live rows are compacted into a smaller graph bucket,
  so no block decodes padding for long. A row that finishes inside a block decodes on to the
  block's end and those tokens are dropped: the price of reading tokens once per block.

Behaviour log-probs are recomputed after sampling with the learner's own function
(:func:`rlhf.models.logprobs.completion_logprobs`), on micro-batches packed exactly as the learner packs
them, under the learner's autocast. The log-probs seen while decoding are kept to report their
largest difference from those (``rollout/decode_logprob_max_abs_diff``), and are returned instead
when ``behaviour_logprobs`` is False (an on-policy learner, which uses its own first pass).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase

from rlhf.learner.updates import pack_micro_batches
from rlhf.models.loading import POLICY_ADAPTER, load_adapter_state_dict
from rlhf.models.logprobs import causal_lm_of, completion_logprobs
from rlhf.models.packed_logprobs import pack_by_tokens, packed_completion_logprobs_and_entropy
from rlhf.rollout.decode_graphs import DecodeRunner, SamplingRule
from rlhf.rollout.decode_state import DecodeState, HostCopy, PrefixStore, bucket_rows, round_up
from rlhf.rollout.decoder import (
    EAGER_KERNELS,
    DecoderWeights,
    Kernels,
    fused_kernels,
    new_cache,
    unsupported_reason,
)
from rlhf.rollout.engine import FinishedCallback, SamplingOptions, check_sampling
from rlhf.rollout.generate_engine import (
    _generation_mode,
    encode_prompts,
    make_rollouts,
    pad_samples,
    pad_token_id,
    reporting_cut_completions,
)
from rlhf.rollout.sampling import logprob_temperature, sample_next
from rlhf.types import Rollouts, TaskBatch

# The share of the GPU's memory a kept-warm decode state (KV cache, merged weights) may hold.
WARM_SHARE = 0.15


@dataclass
class SampledTokens:
    """Raw decoding output: per sample, its tokens up to where decoding stopped for it, and the
    log-probs the sampler saw for them."""

    tokens: list[list[int]]
    logprobs: list[list[float]]
    metrics: dict[str, float] = field(default_factory=dict)


class FastRolloutEngine:
    """A :class:`~rlhf.rollout.engine.RolloutEngine` for Llama/Qwen2-style models; see the module doc.

    model: the policy (a PeftModel from :func:`rlhf.models.loading.apply_lora`, or a plain causal LM);
        shared with the learner when colocated. Its weights are read, never written.
    batch_size: cache rows decoded at once (None: every sample of the batch).
    prefill_tokens: padded prompt tokens per prefill forward pass.
    context_block: attended context lengths are rounded up to multiples of this (None: 256 with CUDA
        graphs, where each multiple is one graph per row bucket; 32 without, where every attended
        position is read for every row: on the CPU quickstart, prompts of 215-262 tokens plus 96
        rounded up to 256 or 512 cost 1 s of a 16 s generation).
    cuda_graphs: replay decode steps from CUDA graphs (None: on a CUDA device).
    fuse_kernels: compile each decoder layer's two halves around its attention with
        ``torch.compile`` (CUDA only; the first batch pays the compile time, about a minute).
    steps_per_sync: decode steps per block, i.e. per read of the tokens by the host (None: 8 on a
        CUDA device, where a host round trip costs more than a small model's step, 1 on a CPU).
    logprob_tokens: token budget of a behaviour log-prob micro-batch; set it to the learner's
        ``train.micro_batch_tokens`` so both pack rows identically.
    logprob_chunk_size: completion tokens per output-head chunk in that pass (the learner's).
    logprob_autocast: compute behaviour log-probs under bfloat16 autocast, as the learner does with
        ``train.bf16`` (None: on a CUDA device, the learner's default).
    logprob_packed: score padding-free packed micro-batches
        (:mod:`rlhf.models.packed_logprobs`), for a learner that trains on them.
    keep_warm: ``release_memory`` keeps the KV cache, weight buffers and graphs (faster next batch,
        more memory held while training). None: on a CUDA device, while they take at most
        ``WARM_SHARE`` of its memory (capturing a batch's graphs again costs tens of milliseconds a
        graph); never on a CPU.
    pack_weights: on a CPU, keep the float32 decode weights in oneDNN's packed layout
        (:func:`rlhf.rollout.decoder.pack_for_cpu`: 1.6x faster products at decode batch sizes,
        products equal to ``F.linear``'s to about 1e-6); elsewhere, or where this torch build
        cannot pack, nothing changes.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int | None = None,
        prefill_tokens: int = 8192,
        context_block: int | None = None,
        cuda_graphs: bool | None = None,
        fuse_kernels: bool = False,
        steps_per_sync: int | None = None,
        logprob_tokens: int = 4096,
        logprob_chunk_size: int | None = None,
        logprob_autocast: bool | None = None,
        logprob_packed: bool = False,
        keep_warm: bool | None = None,
        pack_weights: bool = True,
        adapter: str = POLICY_ADAPTER,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; completions could never finish")
        for name, value in (
            ("batch_size", batch_size),
            ("prefill_tokens", prefill_tokens),
            ("context_block", context_block),
            ("logprob_tokens", logprob_tokens),
            ("steps_per_sync", steps_per_sync),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter if isinstance(model, PeftModel) else None
        reason = unsupported_reason(model, self.adapter)
        if reason is not None:
            raise ValueError(
                f"the fast rollout engine cannot run this model: {reason}; use rollout.engine=generate"
            )
        self.batch_size = batch_size
        self.prefill_tokens = prefill_tokens
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else bool(cuda_graphs)
        if self.cuda_graphs and not on_cuda:
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        self.context_block = context_block or (256 if self.cuda_graphs else 32)
        self.kernels: Kernels = fused_kernels() if fuse_kernels and on_cuda else EAGER_KERNELS
        self.steps_per_sync = steps_per_sync or (8 if on_cuda else 1)
        self.logprob_tokens = logprob_tokens
        self.logprob_chunk_size = logprob_chunk_size
        self.logprob_autocast = on_cuda if logprob_autocast is None else bool(logprob_autocast)
        self.logprob_packed = logprob_packed
        self.keep_warm = keep_warm
        self.pack_weights = pack_weights
        # Set False when the learner is on-policy (one update per batch, in process): it takes the
        # old log-probs from its own first pass, so the rollouts carry the log-probs seen while
        # decoding instead of a recomputed copy.
        self.behaviour_logprobs = True
        self.pad_id = pad_token_id(tokenizer)
        configured = causal_lm_of(model).generation_config.eos_token_id
        configured = [] if configured is None else [configured] if isinstance(configured, int) else configured
        self.eos_ids = sorted({tokenizer.eos_token_id, *configured})
        self._state: DecodeState | None = None

    @staticmethod
    def supports(model: nn.Module, adapter: str = POLICY_ADAPTER) -> bool:
        """Whether the engine can run ``model`` (else use the generate engine)."""
        return unsupported_reason(model, adapter if isinstance(model, PeftModel) else None) is None

    @property
    def device(self) -> torch.device:
        return causal_lm_of(self.model).get_input_embeddings().weight.device

    # ------------------------------------------------------------------------------ the protocol

    def set_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy a policy adapter state (from :func:`rlhf.models.loading.adapter_state_dict`) into the model;
        the merged decode weights follow at the next batch."""
        if self.adapter is None:
            raise TypeError("this engine holds a model without adapters; there is no adapter state to set")
        load_adapter_state_dict(self.model, state, self.adapter)

    def release_memory(self) -> None:
        """Free the KV cache, merged weight buffers and graphs (unless ``keep_warm``).

        The decode state holds no reference cycles, so dropping it frees its tensors at once; no
        ``gc.collect()`` (a tenth of a second or more in a process with transformers loaded, paid
        every step).
        """
        if not self._keeps_warm():
            self._state = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _keeps_warm(self) -> bool:
        if self.keep_warm is not None or self._state is None:
            return bool(self.keep_warm)
        if self.device.type != "cuda":
            return False
        total = torch.cuda.get_device_properties(self.device).total_memory
        return self._state.device_bytes() <= WARM_SHARE * total

    def generate(
        self, batch: TaskBatch, config: SamplingOptions, *, on_finished: FinishedCallback | None = None
    ) -> Rollouts:
        """Sample ``config.n_samples`` completions per prompt; see :class:`rlhf.types.Rollouts`.

        Prompts are tokenized as given (``add_special_tokens=False``). All tensors are on the CPU.
        ``on_finished`` hears of each sample the moment its row is found finished, while the other
        rows go on decoding (see :meth:`sample_token_ids`).
        """
        check_sampling(config)
        n = int(config.n_samples)
        encoded = encode_prompts(self.tokenizer, batch)
        stop = tuple(config.stop)

        started = time.perf_counter()
        sampled = self.sample_token_ids(encoded, config, on_finished=on_finished)
        generation_s = time.perf_counter() - started

        prompts = [ids for ids in encoded for _ in range(n)]
        padded = pad_samples(prompts, sampled.tokens, self.tokenizer, self.eos_ids, self.pad_id, stop)

        started = time.perf_counter()
        temperature = logprob_temperature(config.temperature)
        seen = torch.zeros(padded.completion_ids.shape, dtype=torch.float32)
        for row, (logps, length) in enumerate(zip(sampled.logprobs, padded.lengths)):
            seen[row, :length] = torch.tensor(logps[:length], dtype=torch.float32)
        valid = padded.completion_mask.bool()
        extra: dict[str, float] = {}
        if self.behaviour_logprobs:
            behaviour = self.logprobs(*padded.sequences(), temperature)
            gap = (seen - behaviour)[valid].abs()
            extra["rollout/decode_logprob_max_abs_diff"] = float(gap.max()) if valid.any() else 0.0
        else:  # an on-policy learner takes the old log-probs from its own first pass
            behaviour = seen
        logprob_s = time.perf_counter() - started
        return make_rollouts(
            batch,
            n,
            padded,
            behaviour,
            generation_s=generation_s,
            logprob_s=logprob_s,
            metrics={**extra, **sampled.metrics},
        )

    # ------------------------------------------------------------------------------- log-probs

    def logprobs(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        """[B, T] behaviour log-probs (CPU, float32) by the learner's function and batching.

        Rows are packed with :func:`rlhf.learner.updates.pack_micro_batches` under ``logprob_tokens`` and
        their all-padding columns trimmed, as the learner does, so with the learner's budget (and
        one mini-batch) each row goes through the same forward pass shapes in both. With
        ``logprob_packed`` the rows go through :func:`rlhf.models.packed_logprobs.pack_by_tokens` and
        the padding-free forward pass instead.
        """
        lengths = [int(n) for n in (prompt_mask.sum(1) + completion_mask.sum(1)).tolist()]
        out = torch.zeros(completion_ids.shape, dtype=torch.float32)
        device = self.device
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if self.logprob_autocast else nullcontext()
        )
        pack = pack_by_tokens if self.logprob_packed else pack_micro_batches
        with torch.no_grad(), _generation_mode(self.model, self.adapter), autocast:
            for micro in pack(lengths, self.logprob_tokens):
                index = torch.tensor(micro)
                p_mask, c_mask = prompt_mask[index], completion_mask[index]
                p_keep = max(1, int(p_mask.sum(1).max()))
                t_keep = max(1, int(c_mask.sum(1).max()))
                args = (
                    self.model,
                    prompt_ids[index, -p_keep:].to(device),
                    p_mask[:, -p_keep:].to(device),
                    completion_ids[index, :t_keep].to(device),
                    c_mask[:, :t_keep].to(device),
                )
                if self.logprob_packed:
                    lp, _ = packed_completion_logprobs_and_entropy(
                        *args, temperature=temperature, chunk_size=self.logprob_chunk_size
                    )
                else:
                    lp = completion_logprobs(
                        *args, temperature=temperature, chunk_size=self.logprob_chunk_size
                    )
                out[index, :t_keep] = lp.float().cpu()
        return out

    # -------------------------------------------------------------------------------- decoding

    def _to_device(self, values: Sequence[int] | Sequence[Sequence[int]]) -> torch.Tensor:
        """A long tensor on the model's device without stalling the host on queued GPU work."""
        host = torch.tensor(values, dtype=torch.long)
        if self.device.type != "cuda":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    def _ensure_state(self, rows: int, context: int) -> DecodeState:
        state = self._state
        if (
            state is not None
            and state.rows >= rows
            and state.context >= context
            and state.runner.max_steps >= self.steps_per_sync
        ):
            state.weights.refresh()
            return state
        self._state = None  # drop the old cache and graphs before allocating new ones
        weights = (
            state.weights
            if state is not None
            else DecoderWeights(self.model, self.adapter, pack=self.pack_weights)
        )
        if state is not None:
            weights.refresh()
        rows = max(rows, state.rows if state is not None else 0)
        context = max(context, state.context if state is not None else 0)
        device = self.device
        cache = new_cache(weights, rows, context)
        cos, sin = weights.rotary_tables(context)
        row_buffer = lambda dtype: torch.zeros(rows, dtype=dtype, device=device)
        runner = DecodeRunner(
            weights,
            cache,
            tokens=row_buffer(torch.long),
            logprobs=row_buffer(torch.float32),
            positions=row_buffer(torch.long),
            cos=cos,
            sin=sin,
            max_steps=self.steps_per_sync,
            use_graphs=self.cuda_graphs,
            kernels=self.kernels,
        )
        self._state = DecodeState(runner, HostCopy(self.steps_per_sync, rows, device))
        return self._state

    @torch.no_grad()
    def sample_token_ids(
        self,
        prompts: Sequence[Sequence[int]],
        config: SamplingOptions,
        *,
        ignore_eos: bool = False,
        on_finished: FinishedCallback | None = None,
    ) -> SampledTokens:
        """Decode ``config.n_samples`` samples of each prompt (token ids); sample ``i`` answers
        prompt ``i // n_samples``.

        A sample stops at EOS (unless ``ignore_eos``), at a stop string or at ``max_new_tokens``.
        ``on_finished(i, tokens)`` is called once per sample when its row is marked finished, with
        its tokens cut as :func:`~rlhf.rollout.generate_engine.pad_samples` will cut them.
        """
        check_sampling(config)
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        report = (
            None
            if on_finished is None
            else reporting_cut_completions(on_finished, self.eos_ids, tuple(config.stop), self.tokenizer)
        )
        # Streams and events below belong to the current device: make it the model's.
        with torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext():
            return self._decode(prompts, config, ignore_eos, report)

    def _decode(
        self,
        prompts: Sequence[Sequence[int]],
        config: SamplingOptions,
        ignore_eos: bool,
        report: Callable[[int, Sequence[int]], None] | None = None,
    ) -> SampledTokens:
        n, budget = int(config.n_samples), int(config.max_new_tokens)
        temperature, top_p, top_k = float(config.temperature), float(config.top_p), int(config.top_k)
        stop = tuple(config.stop)
        window = 4 * max(len(s) for s in stop) + 2 if stop else 0
        eos = set() if ignore_eos else set(self.eos_ids)
        total = len(prompts) * n
        rows = min(self.batch_size or total, total)
        longest = max(len(p) for p in prompts)
        context = round_up(longest + budget, self.context_block)
        state = self._ensure_state(rows, context)
        captured_before = state.runner.capture_s
        capacity = state.context
        runner = state.runner
        store = PrefixStore(
            state.weights, prompts, n, self.prefill_tokens, runner.cos, runner.sin, self._to_device
        )
        owner = [-1] * rows
        position = [0] * rows  # position of the token each row feeds next
        tokens: list[list[int]] = [[] for _ in range(total)]
        logps: list[list[float]] = [[] for _ in range(total)]
        waiting = iter(range(total))
        pending = [next(waiting, None)]

        def admit(slots: list[int]) -> None:
            picks = []
            for slot in slots:
                if pending[0] is None:
                    break
                picks.append((slot, pending[0]))
                pending[0] = next(waiting, None)
            if not picks:
                return
            first_logits = []
            for prompt, group in itertools.groupby(picks, key=lambda pick: pick[1] // n):
                group = list(group)
                prefix = store.take(prompt, len(group))
                index = self._to_device([slot for slot, _ in group])
                state.cache[:, :, index, :, : prefix.length] = prefix.kv.unsqueeze(2)
                first_logits.append(prefix.logits.expand(len(group), -1))
                for slot, sample in group:
                    owner[slot], position[slot] = sample, prefix.length
            index = self._to_device([slot for slot, _ in picks])
            first, first_logp = sample_next(torch.cat(first_logits), temperature, top_p, top_k)
            state.tokens.index_copy_(0, index, first)
            state.logprobs.index_copy_(0, index, first_logp)
            state.positions.index_copy_(0, index, self._to_device([position[slot] for slot, _ in picks]))

        admit(list(range(rows)))
        active = rows
        steps = slot_steps = 0
        rule = SamplingRule(temperature, top_p, top_k)
        while True:
            live = [slot for slot in range(active) if owner[slot] >= 0]
            if not live:
                break
            # A whole block, unless every live row needs fewer tokens: then the power of two that
            # covers them (few distinct block lengths, so few graphs).
            needed = max(budget - len(tokens[owner[slot]]) for slot in live)
            block = min(self.steps_per_sync, 1 << (needed - 1).bit_length())
            furthest = max(position[slot] for slot in live) + block
            attended = min(capacity, round_up(furthest, self.context_block))
            launched = owner[:active]
            fed, fed_logps = state.host.read(*state.runner.run_block(active, attended, block, rule))
            steps += block
            slot_steps += block * active
            finished, check = [], []
            for slot in live:
                sample = launched[slot]
                position[slot] += block
                row_tokens = fed[slot][: budget - len(tokens[sample])]
                if not eos.isdisjoint(row_tokens):
                    row_tokens = row_tokens[: next(i for i, t in enumerate(row_tokens) if t in eos) + 1]
                tokens[sample] += row_tokens
                logps[sample] += fed_logps[slot][: len(row_tokens)]
                if row_tokens[-1] in eos or len(tokens[sample]) >= budget:
                    finished.append(slot)
                elif stop:
                    check.append(slot)
            if check:
                tails = self.tokenizer.batch_decode(
                    [tokens[launched[slot]][-(window + block) :] for slot in check],
                    skip_special_tokens=False,
                )
                finished += [slot for slot, tail in zip(check, tails) if any(s in tail for s in stop)]
            for slot in finished:
                owner[slot] = -1
                if report is not None:  # hand the finished sample over while the others decode
                    report(launched[slot], tokens[launched[slot]])
            if pending[0] is not None:
                admit(sorted(finished))
            else:
                active = self._compact(state, owner, position, active)

        generated = sum(len(t) for t in tokens)
        return SampledTokens(
            tokens=tokens,
            logprobs=logps,
            metrics={
                "rollout/decode_steps": float(steps),
                "rollout/slot_utilisation": generated / max(slot_steps, 1),
                "rollout/prefill_calls": float(store.prefill_calls),
                "rollout/graph_capture_s": state.runner.capture_s - captured_before,
                "rollout/graphs": float(len(state.runner.graphs)),
            },
        )

    def _compact(self, state: DecodeState, owner: list[int], position: list[int], active: int) -> int:
        """Move live rows below the smallest bucket that holds them; returns the new active rows."""
        live = [slot for slot in range(active) if owner[slot] >= 0]
        target = bucket_rows(len(live), active)
        if not live or target >= active:
            return active
        movers = [slot for slot in live if slot >= target]
        holes = [slot for slot in range(target) if owner[slot] < 0][: len(movers)]
        if movers:
            src, dst = self._to_device(movers), self._to_device(holes)
            state.cache[:, :, dst] = state.cache[:, :, src]
            for buffer in (state.tokens, state.logprobs, state.positions):
                buffer[dst] = buffer[src]
            for a, b in zip(movers, holes):
                owner[b], position[b], owner[a] = owner[a], position[a], -1
        return target
