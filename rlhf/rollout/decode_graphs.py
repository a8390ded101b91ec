"""Blocks of decode steps replayed from CUDA graphs, one graph per (rows, context, steps) bucket.

A decode step of a small model is hundreds of tiny kernels; launched one by one from Python the GPU
waits on the host most of the time. Captured once into a CUDA graph, a whole block of steps --
each step's forward pass, its sampling and the update of every row's token and position -- is one
launch, and the host reads the block's tokens back once, not once per step. A graph fixes its
tensors' addresses and shapes, so the runner captures one graph per bucket of (active cache rows,
attended context length, steps) and every graph reads the same persistent buffers: the KV cache,
the token, log-prob and position of each row, the weight buffers (refreshed in place) and the
block's token history.

On a CPU (or with graphs off) the same :func:`run_block` runs eagerly, so tests on CPU exercise
exactly the computation the graphs record.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from rlhf.rollout.decoder import EAGER_KERNELS, DecoderWeights, Kernels, decode_step
from rlhf.rollout.sampling import sample_next


@dataclass(frozen=True)
class SamplingRule:
    """How a block picks each next token (fixed inside a graph, so part of its key)."""

    temperature: float
    top_p: float
    top_k: int


class DecodeRunner:
    """Runs blocks of decode steps on the first ``rows`` cache rows, attending ``context`` positions.

    cache: [layers, 2, capacity_rows, kv_heads, capacity_context, head_dim].
    tokens / logprobs / positions: [capacity_rows] buffers holding, for each row, the token it feeds
        next, that token's log-prob and its position (the caller writes them in place to admit a
        sample; a block advances them).
    cos / sin: rotary tables with at least ``capacity_context`` rows.
    max_steps: the most steps a block may run.
    use_graphs: capture and replay CUDA graphs (needs a CUDA cache).
    """

    def __init__(
        self,
        weights: DecoderWeights,
        cache: torch.Tensor,
        tokens: torch.Tensor,
        logprobs: torch.Tensor,
        positions: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *,
        max_steps: int,
        use_graphs: bool,
        kernels: Kernels = EAGER_KERNELS,
    ) -> None:
        if use_graphs and cache.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA cache, got one on {cache.device}")
        self.weights = weights
        self.cache = cache
        self.tokens = tokens
        self.logprobs = logprobs
        self.positions = positions
        self.cos = cos
        self.sin = sin
        self.use_graphs = use_graphs
        self.kernels = kernels
        rows, kv_heads, context = cache.shape[2], cache.shape[3], cache.shape[4]
        self.head_rows = torch.arange(rows * kv_heads, device=cache.device) * context
        self.context_index = torch.arange(context, device=cache.device)
        self.fed_tokens = torch.zeros((max_steps, rows), dtype=torch.long, device=cache.device)
        self.fed_logprobs = torch.zeros((max_steps, rows), dtype=torch.float32, device=cache.device)
        self.graphs: dict[tuple[int, int, int, SamplingRule], torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None
        self.capture_s = 0.0

    @property
    def max_steps(self) -> int:
        return int(self.fed_tokens.shape[0])

    def _step(self, rows: int, context: int, rule: SamplingRule) -> None:
        """One decode step: feed each row's token, sample the next, advance its position."""
        logits = decode_step(
            self.weights,
            self.cache,
            self.tokens[:rows],
            self.positions[:rows],
            context,
            self.cos,
            self.sin,
            self.head_rows,
            self.context_index,
            self.kernels,
        )
        next_tokens, next_logprobs = sample_next(logits, rule.temperature, rule.top_p, rule.top_k)
        self.tokens[:rows].copy_(next_tokens)
        self.logprobs[:rows].copy_(next_logprobs)
        # A row that finished during the block keeps stepping until it is refilled; the clamp keeps
        # its writes inside the cache.
        self.positions[:rows].add_(1).clamp_(max=self.cache.shape[4] - 1)

    def _block(self, rows: int, context: int, steps: int, rule: SamplingRule) -> None:
        for step in range(steps):
            self.fed_tokens[step, :rows].copy_(self.tokens[:rows])
            self.fed_logprobs[step, :rows].copy_(self.logprobs[:rows])
            self._step(rows, context, rule)

    @torch.no_grad()
    def run_block(
        self, rows: int, context: int, steps: int, rule: SamplingRule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``steps`` decode steps; returns the tokens each row fed at each step and their
        log-probs, [steps, rows] views of the runner's history buffers (valid until the next block).

        Every row's position must stay below ``context`` for the whole block.
        """
        if not 1 <= steps <= self.max_steps:
            raise ValueError(f"a block runs 1 to {self.max_steps} steps, got {steps}")
        if not self.use_graphs:
            self._block(rows, context, steps, rule)
        else:
            key = (rows, context, steps, rule)
            if key not in self.graphs:
                self.graphs[key] = self._capture(rows, context, steps, rule)
            self.graphs[key].replay()
        return self.fed_tokens[:steps, :rows], self.fed_logprobs[:steps, :rows]

    def _restore(self, saved: list[torch.Tensor]) -> None:
        for buffer, value in zip((self.tokens, self.logprobs, self.positions), saved):
            buffer.copy_(value)

    def _capture(self, rows: int, context: int, steps: int, rule: SamplingRule) -> torch.cuda.CUDAGraph:
        started = time.perf_counter()
        device = self.cache.device
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        # One real step first, so lazy library initialisation (cuBLAS workspaces, compiled kernels)
        # happens outside the capture. It writes keys and values at the rows' current positions,
        # which the replay rewrites from the same tokens; the rows' tokens, log-probs and positions
        # are put back, so the replay starts where the warm-up did.
        saved = [t.clone() for t in (self.tokens, self.logprobs, self.positions)]
        with torch.cuda.stream(side):
            try:
                self._step(rows, context, rule)
            except Exception as exc:  # compiled kernels are a speed-up: never let them stop a run
                if self.kernels is EAGER_KERNELS:
                    raise
                warnings.warn(
                    f"compiled decode kernels failed ({type(exc).__name__}: {str(exc)[:200]}); "
                    "decoding with eager kernels (set rollout.compile_kernels: false to skip them)",
                    stacklevel=2,
                )
                self.kernels = EAGER_KERNELS
                self._restore(saved)
                self._step(rows, context, rule)
            self._restore(saved)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._block(rows, context, steps, rule)
        self.capture_s += time.perf_counter() - started
        return graph
