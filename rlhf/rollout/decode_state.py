"""What the fast engine's decode loop works on: the KV cache and per-row buffers, prompts prefilled
ahead of need, and a pinned host copy of each step's tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rlhf.rollout.decode_graphs import DecodeRunner
from rlhf.rollout.decoder import DecoderWeights, prefill


@dataclass
class _Prefix:
    kv: torch.Tensor  # [layers, 2, kv_heads, length, head_dim], a view into its prefill chunk
    logits: torch.Tensor  # [vocab] float32
    length: int
    remaining: int


class PrefixStore:
    """Prompts prefilled ahead of need, each kept until its last sample has been admitted.

    Prompts are prefilled in order, in right-padded chunks of at most ``token_budget`` padded tokens.
    """

    def __init__(
        self,
        weights: DecoderWeights,
        prompts: Sequence[Sequence[int]],
        uses: int,
        token_budget: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        to_device: Callable[[Sequence[int] | Sequence[Sequence[int]]], torch.Tensor],
    ) -> None:
        self.weights = weights
        self.prompts = prompts
        self.uses = uses
        self.token_budget = token_budget
        self.cos, self.sin = cos, sin
        self.to_device = to_device
        self.ready: dict[int, _Prefix] = {}
        self.next_prompt = 0
        self.prefill_calls = 0

    def take(self, prompt: int, count: int) -> _Prefix:
        """The prefix of ``prompt`` for ``count`` more of its samples."""
        if prompt not in self.ready:
            self._prefill_from(prompt)
        entry = self.ready[prompt]
        entry.remaining -= count
        if entry.remaining <= 0:
            del self.ready[prompt]
        return entry

    def _prefill_from(self, first: int) -> None:
        if first != self.next_prompt:
            raise RuntimeError(
                f"prompts must be prefilled in order: asked for {first}, next is {self.next_prompt}"
            )
        chunk = [first]
        longest = len(self.prompts[first])
        while chunk[-1] + 1 < len(self.prompts):
            candidate = max(longest, len(self.prompts[chunk[-1] + 1]))
            if candidate * (len(chunk) + 1) > self.token_budget:
                break
            chunk.append(chunk[-1] + 1)
            longest = candidate
        rows = [list(self.prompts[i]) + [0] * (longest - len(self.prompts[i])) for i in chunk]
        lengths = [len(self.prompts[i]) for i in chunk]
        kv, logits = prefill(
            self.weights,
            self.to_device(rows),
            self.to_device(lengths),
            self.cos,
            self.sin,
        )
        for row, (prompt, length) in enumerate(zip(chunk, lengths)):
            self.ready[prompt] = _Prefix(kv[:, :, row, :, :length], logits[row], length, self.uses)
        self.next_prompt = chunk[-1] + 1
        self.prefill_calls += 1


class HostCopy:
    """A pinned host copy of a block's fed tokens and log-probs, read once the GPU has written them."""

    def __init__(self, steps: int, rows: int, device: torch.device) -> None:
        pinned = device.type == "cuda"
        self.tokens = torch.empty((steps, rows), dtype=torch.long, pin_memory=pinned)
        self.logprobs = torch.empty((steps, rows), dtype=torch.float32, pin_memory=pinned)
        self.event = torch.cuda.Event() if pinned else None

    def read(self, tokens: torch.Tensor, logprobs: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
        """``tokens`` and ``logprobs`` [steps, rows] as lists of each row's steps, copied through the
        pinned buffers."""
        steps, rows = tokens.shape
        self.tokens[:steps, :rows].copy_(tokens, non_blocking=True)
        self.logprobs[:steps, :rows].copy_(logprobs, non_blocking=True)
        if self.event is not None:
            self.event.record()
            self.event.synchronize()
        return self.tokens[:steps, :rows].t().tolist(), self.logprobs[:steps, :rows].t().tolist()


@dataclass
class DecodeState:
    """Everything a batch shape needs on the device (the runner's buffers and graphs, the pinned
    host copy); kept between calls while the shape fits."""

    runner: DecodeRunner
    host: HostCopy

    @property
    def weights(self) -> DecoderWeights:
        return self.runner.weights

    @property
    def cache(self) -> torch.Tensor:
        return self.runner.cache

    @property
    def tokens(self) -> torch.Tensor:
        return self.runner.tokens

    @property
    def logprobs(self) -> torch.Tensor:
        return self.runner.logprobs

    @property
    def positions(self) -> torch.Tensor:
        return self.runner.positions

    def device_bytes(self) -> int:
        """Bytes of the KV cache and the engine's own weight buffers."""
        return self.cache.numel() * self.cache.element_size() + self.weights.owned_bytes()

    @property
    def rows(self) -> int:
        return int(self.cache.shape[2])

    @property
    def context(self) -> int:
        return int(self.cache.shape[4])


def round_up(value: int, block: int) -> int:
    return -(-value // block) * block


def bucket_rows(live: int, rows: int) -> int:
    """Rows a step decodes for ``live`` live rows: the next power of two, at most ``rows``."""
    return min(rows, 1 << max(0, live - 1).bit_length())
