"""Decode steps replayed from CUDA graphs, one graph per (rows, context) bucket.

A decode step of a small model is hundreds of tiny kernels; launched one by one from Python the GPU
waits on the host most of the time. Captured once into a CUDA graph, the whole step is one launch.
A graph fixes its tensors' addresses and shapes, so the runner captures one graph per bucket of
(active cache rows, attended context length) and every graph reads the same persistent buffers:
the KV cache, the token and position of each row, and the weight buffers (refreshed in place).

On a CPU (or with graphs off) the same :func:`rlhf.rollout.decoder.decode_step` runs eagerly, so
tests on CPU exercise exactly the computation the graphs record.
"""

from __future__ import annotations

import time

import torch

from rlhf.rollout.decoder import EAGER_KERNELS, DecoderWeights, Kernels, decode_step


class DecodeRunner:
    """Logits of one decode step for the first ``rows`` cache rows, attending ``context`` positions.

    cache: [layers, 2, capacity_rows, kv_heads, capacity_context, head_dim].
    tokens / positions: [capacity_rows] long buffers the step reads (the caller updates them in place).
    cos / sin: rotary tables with at least ``capacity_context`` rows.
    use_graphs: capture and replay CUDA graphs (needs a CUDA cache).
    """

    def __init__(
        self,
        weights: DecoderWeights,
        cache: torch.Tensor,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        *,
        use_graphs: bool,
        kernels: Kernels = EAGER_KERNELS,
    ) -> None:
        if use_graphs and cache.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA cache, got one on {cache.device}")
        self.weights = weights
        self.cache = cache
        self.tokens = tokens
        self.positions = positions
        self.cos = cos
        self.sin = sin
        self.use_graphs = use_graphs
        self.kernels = kernels
        rows, kv_heads, context = cache.shape[2], cache.shape[3], cache.shape[4]
        self.head_rows = torch.arange(rows * kv_heads, device=cache.device) * context
        self.context_index = torch.arange(context, device=cache.device)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle() if use_graphs else None
        self.capture_s = 0.0

    def _step(self, rows: int, context: int) -> torch.Tensor:
        return decode_step(
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

    @torch.no_grad()
    def logits(self, rows: int, context: int) -> torch.Tensor:
        """[rows, vocab] float32 logits; with graphs, a view of the graph's static output buffer
        (valid until the next call)."""
        if not self.use_graphs:
            return self._step(rows, context)
        key = (rows, context)
        if key not in self.graphs:
            self.graphs[key] = self._capture(rows, context)
        graph, out = self.graphs[key]
        graph.replay()
        return out

    def _capture(self, rows: int, context: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        started = time.perf_counter()
        device = self.cache.device
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        # The warm-up runs the real step once: it writes exactly the keys and values the replay will
        # write (same tokens, positions and cache), so it is harmless, and it lets lazy library
        # initialisation (cuBLAS workspaces, compiled kernels) happen outside the capture.
        with torch.cuda.stream(side):
            self._step(rows, context)
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._step(rows, context)
        self.capture_s += time.perf_counter() - started
        return graph, out
