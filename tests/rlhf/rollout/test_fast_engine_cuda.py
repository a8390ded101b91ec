"""The fast rollout engine's GPU paths: CUDA graphs, compiled kernels, pinned host copies, bf16.

Skipped without a CUDA device. On float32 the graph-replayed engine must give the generate engine's
greedy tokens exactly; on bfloat16 the behaviour log-probs must be what the learner computes.
"""

from __future__ import annotations

import pytest
import torch

from rewards.tasks import Task
from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs
from rlhf.rollout import GenerateRolloutEngine, SamplingConfig
from rlhf.rollout.fast_engine import FastRolloutEngine
from rlhf.rollout.sampling import sample_next
from rlhf.types import TaskBatch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = ['def add(a, b):\n    """Add a and b."""\n', "Double x.", "Print hello.", "x" * 70]


def _policy(architecture: str, dtype: torch.dtype, adapter_seed: int = 0):
    model, tok = tiny_model_and_tokenizer(
        architecture=architecture, initializer_range=0.2, seed=0, dtype=dtype, device="cuda"
    )
    model = apply_lora(model, rank=4, alpha=8)
    gen = torch.Generator(device="cuda").manual_seed(adapter_seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.normal_(std=0.2, generator=gen)
    return model, tok


def _batch() -> TaskBatch:
    tasks = [Task(id=f"t/{i}", prompt=p) for i, p in enumerate(PROMPTS)]
    return TaskBatch(tasks=tasks, prompts=list(PROMPTS))


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("batch_size", [None, 3])
@pytest.mark.parametrize("fuse_kernels", [False, True])
@pytest.mark.parametrize("steps_per_sync", [1, 8])
def test_graph_replay_gives_the_generate_engines_greedy_tokens(
    architecture: str, batch_size: int | None, fuse_kernels: bool, steps_per_sync: int
) -> None:
    model, tok = _policy(architecture, torch.float32)
    config = SamplingConfig(n_samples=2, temperature=0.0, max_new_tokens=40, stop=("e",))
    reference = GenerateRolloutEngine(model, tok).generate(_batch(), config)
    # fp32 log-probs on both sides (the engine otherwise autocasts them to bf16, as the GPU learner does)
    engine = FastRolloutEngine(
        model,
        tok,
        batch_size=batch_size,
        context_block=16,
        prefill_tokens=64,
        fuse_kernels=fuse_kernels,
        steps_per_sync=steps_per_sync,
        logprob_autocast=False,
    )
    assert engine.cuda_graphs
    out = engine.generate(_batch(), config)
    assert out.metrics["rollout/graphs"] >= 2
    assert torch.equal(out.completion_ids, reference.completion_ids)
    assert out.texts == reference.texts and torch.equal(out.truncated, reference.truncated)
    assert (out.behaviour_logprobs - reference.behaviour_logprobs).abs().max() <= 1e-5
    assert out.metrics["rollout/decode_logprob_max_abs_diff"] <= 1e-3


@pytest.mark.parametrize("fuse_kernels", [False, True])
def test_bf16_sampling_with_refill_matches_the_learners_logprobs(fuse_kernels: bool) -> None:
    model, tok = _policy("qwen2", torch.bfloat16)
    engine = FastRolloutEngine(model, tok, batch_size=3, context_block=16, fuse_kernels=fuse_kernels)
    torch.manual_seed(0)
    config = SamplingConfig(n_samples=4, temperature=0.9, top_p=0.95, max_new_tokens=48, stop=("\n",))
    out = engine.generate(_batch(), config)
    assert len(out) == 16 and not out.behaviour_logprobs.isnan().any()
    lengths = out.completion_mask.sum(1)
    assert int(lengths.min()) >= 1 and int(lengths.max()) <= 48
    # The learner autocasts to bfloat16 on a GPU; the engine scored the whole batch in one
    # micro-batch of the same shape, so the numbers are the same.
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        learner = completion_logprobs(
            model,
            out.prompt_ids.cuda(),
            out.prompt_mask.cuda(),
            out.completion_ids.cuda(),
            out.completion_mask.cuda(),
            temperature=0.9,
        ).cpu()
    assert (learner - out.behaviour_logprobs).abs().max() <= 1e-6
    # Decoding runs on merged bf16 weights: close to, not equal to, the learner's numbers. This random
    # model (weights of std 0.2) spreads its logits over about 13 nats and amplifies rounding from layer
    # to layer: 0.56 measured on an H200. A stale adapter or a shifted position moves log-probs by
    # several nats.
    assert out.metrics["rollout/decode_logprob_max_abs_diff"] < 1.0


def test_kept_warm_graphs_see_adapter_updates() -> None:
    model, tok = _policy("llama", torch.float32)
    engine = FastRolloutEngine(model, tok, keep_warm=True, context_block=16)
    config = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=24)
    engine.generate(_batch(), config)
    engine.release_memory()
    graphs = len(engine._state.runner.graphs)
    with torch.no_grad():
        for key, p in adapter_parameters(model).items():
            if "lora_B" in key:
                p.mul_(-1.0)
    out = engine.generate(_batch(), config)
    assert out.metrics["rollout/graph_capture_s"] == 0.0 and len(engine._state.runner.graphs) == graphs
    reference = GenerateRolloutEngine(model, tok).generate(_batch(), config)
    assert torch.equal(out.completion_ids, reference.completion_ids)


def test_a_sampler_replayed_from_a_graph_draws_fresh_noise_from_the_right_distribution() -> None:
    """Sampling runs inside the decode graphs: every replay must draw new noise (the generator's
    offset advances per replay) and the draws must follow softmax(logits / temperature)."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0], device="cuda").repeat(512, 1)
    drawn = torch.zeros(512, dtype=torch.long, device="cuda")

    def draw() -> None:
        tokens, _ = sample_next(logits, 0.8, 1.0, 0)
        drawn.copy_(tokens)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        draw()  # warm-up (and compilation) outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        draw()
    counts = torch.zeros(5, dtype=torch.long)
    previous = None
    for _ in range(40):
        graph.replay()
        current = drawn.cpu()
        assert previous is None or not torch.equal(current, previous)
        previous = current
        counts += torch.bincount(current, minlength=5)
    expected = torch.softmax(logits[0].cpu() / 0.8, dim=0)
    observed = counts.double() / counts.sum()
    # 20480 draws: the standard error of each frequency is under 0.004.
    assert (observed - expected.double()).abs().max() < 0.02
    assert counts[4] == 0


def test_a_small_decode_state_stays_warm_on_a_gpu_and_a_large_one_is_freed(monkeypatch) -> None:
    """By default the graphs (and the cache they are bound to) survive ``release_memory`` while they
    take at most WARM_SHARE of the GPU: capturing a batch's graphs again would cost every step."""
    from rlhf.rollout import fast_engine

    model, tok = _policy("qwen2", torch.float32)
    engine = FastRolloutEngine(model, tok, context_block=16)
    config = SamplingConfig(n_samples=2, temperature=0.0, max_new_tokens=12)
    engine.generate(_batch(), config)
    engine.release_memory()
    assert engine._state is not None
    again = engine.generate(_batch(), config)
    assert again.metrics["rollout/graph_capture_s"] == 0.0
    monkeypatch.setattr(fast_engine, "WARM_SHARE", 0.0)
    engine.release_memory()
    assert engine._state is None


def test_compiled_kernels_that_fail_fall_back_to_eager_ones() -> None:
    """Compiled kernels are only a speed-up: if they fail on a machine, decoding goes on eagerly
    (with a warning), with the same tokens."""
    from rlhf.rollout.decoder import EAGER_KERNELS, Kernels

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    model, tok = _policy("qwen2", torch.float32)
    config = SamplingConfig(n_samples=2, temperature=0.0, max_new_tokens=20)
    reference = GenerateRolloutEngine(model, tok).generate(_batch(), config)
    engine = FastRolloutEngine(model, tok, context_block=16, logprob_autocast=False)
    engine.kernels = Kernels(broken, EAGER_KERNELS.attention_output_and_mlp)
    with pytest.warns(UserWarning, match="compiled decode kernels failed"):
        out = engine.generate(_batch(), config)
    assert engine._state.runner.kernels is EAGER_KERNELS
    assert torch.equal(out.completion_ids, reference.completion_ids)
