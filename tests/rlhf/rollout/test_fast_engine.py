"""The fast rollout engine on CPU: same tokens as the generate engine, valid sampling, stop strings,
learner-exact behaviour log-probs, adapter sync, and the model's weights left untouched."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch

from rewards.tasks import Task
from rlhf.models.loading import adapter_parameters, adapter_state_dict, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs
from rlhf.rollout import GenerateRolloutEngine, RolloutEngine, SamplingConfig, render_prompt
from rlhf.rollout.decoder import DecoderWeights, cpu_packing_works
from rlhf.rollout.fast_engine import FastRolloutEngine
from rlhf.rollout.generate_engine import completion_text
from rlhf.rollout.sampling import draw, sample_next, top_k_filter, top_p_filter
from rlhf.types import TaskBatch

torch.set_num_threads(2)

TASKS = [
    Task(id="t/0", prompt='def add(a, b):\n    """Add a and b."""\n', entry_point="add"),
    Task(id="t/1", prompt="Double x.", entry_point="dbl", references=("def dbl(x):\n    return 2 * x\n",)),
    Task(id="t/2", prompt="Print hello."),
]


def _policy(architecture: str = "llama", adapter_seed: int = 0, **lora):
    model, tok = tiny_model_and_tokenizer(architecture=architecture, initializer_range=0.2, seed=0)
    model = apply_lora(model, **{"rank": 4, "alpha": 8, **lora})
    gen = torch.Generator().manual_seed(adapter_seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.normal_(std=0.2, generator=gen)
    return model, tok


def _batch(tok, style: str = "raw") -> TaskBatch:
    return TaskBatch(tasks=TASKS, prompts=[render_prompt(tok, t, style) for t in TASKS])


def _greedy(max_new_tokens: int, stop: tuple[str, ...] = (), n: int = 1) -> SamplingConfig:
    return SamplingConfig(n_samples=n, temperature=0.0, max_new_tokens=max_new_tokens, stop=stop)


@pytest.fixture(scope="module")
def llama():
    return _policy("llama")


@pytest.fixture(scope="module")
def qwen2():
    return _policy("qwen2")


def _learner_logprobs(model, out, temperature: float) -> torch.Tensor:
    with torch.no_grad():
        return completion_logprobs(
            model,
            out.prompt_ids,
            out.prompt_mask,
            out.completion_ids,
            out.completion_mask,
            temperature=temperature,
        )


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("steps_per_sync", [1, 4])
def test_greedy_matches_generate_engine_token_for_token(
    architecture, batch_size, steps_per_sync, llama, qwen2
) -> None:
    model, tok = llama if architecture == "llama" else qwen2
    batch = _batch(tok)
    config = _greedy(20, stop=("e",), n=2)
    reference = GenerateRolloutEngine(model, tok).generate(batch, config)
    # Small blocks and prefill budget: several context buckets and prefill chunks; batch_size 2
    # refills rows as samples finish.
    # Blocks of 4 steps read the tokens once per block; rows that finish inside a block are
    # refilled after it, and what they decoded past their end is dropped.
    engine = FastRolloutEngine(
        model,
        tok,
        batch_size=batch_size,
        context_block=8,
        prefill_tokens=40,
        steps_per_sync=steps_per_sync,
    )
    assert isinstance(engine, RolloutEngine)
    out = engine.generate(batch, config)
    assert torch.equal(out.completion_ids, reference.completion_ids)
    assert torch.equal(out.completion_mask, reference.completion_mask)
    assert torch.equal(out.prompt_ids, reference.prompt_ids) and torch.equal(
        out.prompt_mask, reference.prompt_mask
    )
    assert out.texts == reference.texts
    assert torch.equal(out.truncated, reference.truncated) and out.truncated.any() and not out.truncated.all()
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert (out.behaviour_logprobs - _learner_logprobs(model, out, 1.0)).abs().max() <= 1e-5
    # The log-probs seen while decoding (merged weights) agree to float32 rounding.
    assert out.metrics["rollout/decode_logprob_max_abs_diff"] <= 1e-4
    assert out.metrics["rollout/prefill_calls"] >= 2


def test_sampled_rollouts_are_valid_and_logprobs_match_the_learner(llama) -> None:
    model, tok = llama
    engine = FastRolloutEngine(model, tok, batch_size=4, context_block=16)
    torch.manual_seed(0)
    config = SamplingConfig(n_samples=3, temperature=0.7, top_p=0.9, max_new_tokens=12, stop=("\n",))
    out = engine.generate(_batch(tok), config)
    assert len(out) == 9 and out.tasks == TASKS
    assert out.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i in range(len(out)):
        prompt = tok(_batch(tok).prompts[int(out.group_ids[i])], add_special_tokens=False).input_ids
        n = len(prompt)
        assert out.prompt_ids[i, -n:].tolist() == prompt
        assert out.prompt_mask[i].tolist() == [0] * (out.prompt_ids.shape[1] - n) + [1] * n
        length = int(out.completion_mask[i].sum())
        assert out.completion_mask[i].tolist() == [1] * length + [0] * (out.completion_mask.shape[1] - length)
        tokens = out.completion_ids[i, :length].tolist()
        assert out.texts[i] == completion_text(tokens, config.stop, tok)
        if out.truncated[i]:
            assert length == config.max_new_tokens and "\n" not in out.texts[i]
        else:
            assert out.texts[i].endswith("\n") or tokens[-1] == tok.eos_token_id
    assert len({tuple(r) for r in out.completion_ids.tolist()}) > 3
    assert out.behaviour_logprobs.dtype == torch.float32
    assert torch.all(out.behaviour_logprobs[out.completion_mask == 0] == 0)
    assert (out.behaviour_logprobs - _learner_logprobs(model, out, 0.7)).abs().max() <= 1e-5
    assert out.metrics["rollout/decode_logprob_max_abs_diff"] <= 1e-4


def test_first_tokens_follow_the_temperature_and_nucleus_distribution(llama) -> None:
    model, tok = llama
    prompt = tok(_batch(tok).prompts[0], add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    temperature, top_p, draws = 1.5, 0.95, 3000
    expected = torch.softmax(top_p_filter((logits / temperature)[None], top_p)[0], dim=-1)
    engine = FastRolloutEngine(model, tok)
    torch.manual_seed(3)
    config = SamplingConfig(n_samples=draws, temperature=temperature, top_p=top_p, max_new_tokens=1)
    sampled = engine.sample_token_ids([prompt], config)
    observed = torch.bincount(
        torch.tensor([t[0] for t in sampled.tokens]), minlength=expected.numel()
    ).float()
    kept = expected > 0
    assert 5 < int(kept.sum()) < expected.numel()  # the nucleus cuts, and leaves a real distribution
    assert bool((observed[~kept] == 0).all())
    # Pearson's chi-square over the nucleus: mean k - 1 if the engine samples from `expected`. At
    # temperature 1 instead of 1.5 it comes out about 4x the bound.
    k = int(kept.sum())
    chi2 = float(((observed[kept] - draws * expected[kept]) ** 2 / (draws * expected[kept])).sum())
    assert chi2 < (k - 1) + 6 * (2 * (k - 1)) ** 0.5


def test_top_p_cut_to_one_token_is_greedy_and_seeds_reproduce(llama) -> None:
    model, tok = llama
    engine = FastRolloutEngine(model, tok)
    batch = TaskBatch(tasks=TASKS[:1], prompts=_batch(tok).prompts[:1])
    greedy = engine.generate(batch, _greedy(4)).completion_ids[0].tolist()
    nucleus = engine.generate(
        batch, SamplingConfig(n_samples=4, temperature=1.0, top_p=1e-6, max_new_tokens=4)
    )
    assert all(row == greedy for row in nucleus.completion_ids.tolist())
    torch.manual_seed(7)
    first = engine.generate(batch, SamplingConfig(n_samples=4, max_new_tokens=5))
    torch.manual_seed(7)
    second = engine.generate(batch, SamplingConfig(n_samples=4, max_new_tokens=5))
    assert torch.equal(first.completion_ids, second.completion_ids)


@pytest.mark.parametrize("steps_per_sync", [1, 3])
def test_stop_string_cuts_like_the_generate_engine(llama, steps_per_sync) -> None:
    model, tok = llama
    engine = FastRolloutEngine(model, tok, batch_size=2, steps_per_sync=steps_per_sync)
    batch = _batch(tok)
    free = engine.generate(batch, _greedy(16))
    text = free.texts[0]
    stop = next(c for c in text[2:] if c.isascii() and c.isprintable())
    end = text.index(stop) + len(stop)
    config = _greedy(16, stop=(stop, "a stop string that never appears"))
    out = engine.generate(batch, config)
    assert out.texts[0] == text[:end] and not bool(out.truncated[0])
    length = int(out.completion_mask[0].sum())
    assert out.completion_ids[0, :length].tolist() == free.completion_ids[0, :length].tolist()
    assert torch.all(out.behaviour_logprobs[0, length:] == 0)
    reference = GenerateRolloutEngine(model, tok).generate(batch, config)
    assert out.texts == reference.texts and torch.equal(out.completion_mask, reference.completion_mask)


@pytest.mark.parametrize("steps_per_sync", [1, 4])
def test_early_eos_refills_and_compacts_rows_without_changing_results(llama, steps_per_sync) -> None:
    model, tok = llama
    batch = _batch(tok)
    free = GenerateRolloutEngine(model, tok).generate(batch, _greedy(24)).completion_ids.tolist()
    # Make a token that appears early in some completions an end token, so lengths differ a lot.
    ender = free[0][3]
    config = model.get_base_model().generation_config
    saved = config.eos_token_id
    config.eos_token_id = [tok.eos_token_id, ender]
    try:
        reference = GenerateRolloutEngine(model, tok).generate(batch, _greedy(24, n=3))
        options = {"context_block": 8, "steps_per_sync": steps_per_sync}
        whole = FastRolloutEngine(model, tok, **options).generate(batch, _greedy(24, n=3))
        refill = FastRolloutEngine(model, tok, batch_size=2, **options).generate(batch, _greedy(24, n=3))
    finally:
        config.eos_token_id = saved
    lengths = reference.completion_mask.sum(1)
    assert lengths.max() > 2 * lengths.min()
    for out in (whole, refill):
        assert torch.equal(out.completion_ids, reference.completion_ids)
        assert torch.equal(out.truncated, reference.truncated)
    # Static batching decodes every row for the longest completion; compaction and refill do less.
    static = float(lengths.sum()) / (len(lengths) * 24)
    assert whole.metrics["rollout/slot_utilisation"] > static
    assert refill.metrics["rollout/slot_utilisation"] > static


@pytest.mark.parametrize("steps_per_sync", [1, 8])
def test_samples_ending_on_their_first_token_free_their_row_at_once(llama, steps_per_sync) -> None:
    model, tok = llama
    batch = _batch(tok)
    first = GenerateRolloutEngine(model, tok).generate(batch, _greedy(1)).completion_ids[:, 0].tolist()
    config = model.get_base_model().generation_config
    saved = config.eos_token_id
    config.eos_token_id = [tok.eos_token_id, first[0]]  # prompt 0's first greedy token ends it
    try:
        reference = GenerateRolloutEngine(model, tok).generate(batch, _greedy(10, n=3))
        engine = FastRolloutEngine(model, tok, batch_size=2, steps_per_sync=steps_per_sync)
        out = engine.generate(batch, _greedy(10, n=3))
    finally:
        config.eos_token_id = saved
    assert reference.completion_mask[:3].sum(1).tolist() == [1, 1, 1]
    assert torch.equal(out.completion_ids, reference.completion_ids)
    assert torch.equal(out.truncated, reference.truncated)


def test_without_the_behaviour_pass_the_decode_logprobs_are_returned(llama) -> None:
    model, tok = llama
    engine = FastRolloutEngine(model, tok)
    engine.behaviour_logprobs = False  # what an on-policy trainer sets
    torch.manual_seed(0)
    out = engine.generate(_batch(tok), SamplingConfig(n_samples=2, temperature=0.8, max_new_tokens=8))
    assert "rollout/decode_logprob_max_abs_diff" not in out.metrics
    assert torch.all(out.behaviour_logprobs[out.completion_mask == 0] == 0)
    assert (out.behaviour_logprobs - _learner_logprobs(model, out, 0.8)).abs().max() <= 1e-4


@pytest.mark.parametrize("steps_per_sync", [1, 4])
def test_ignore_eos_decodes_exactly_the_budget(llama, steps_per_sync) -> None:
    model, tok = llama
    # 9 tokens in blocks of 4: the last block is cut to the one step the rows still need.
    engine = FastRolloutEngine(model, tok, batch_size=3, steps_per_sync=steps_per_sync)
    prompts = [
        tok("abc", add_special_tokens=False).input_ids,
        tok("hello world", add_special_tokens=False).input_ids,
    ]
    config = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=9)
    sampled = engine.sample_token_ids(prompts, config, ignore_eos=True)
    assert [len(t) for t in sampled.tokens] == [9] * 4
    assert all(len(lp) == 9 and max(lp) <= 0 for lp in sampled.logprobs)
    assert sampled.metrics["rollout/decode_steps"] == 18  # 2 rounds of 9, no step wasted


def test_adapter_updates_take_effect() -> None:
    learner, tok = _policy(adapter_seed=0)
    generator, _ = _policy(adapter_seed=1)
    batch = _batch(tok)
    target = GenerateRolloutEngine(learner, tok).generate(batch, _greedy(8))
    engine = FastRolloutEngine(generator, tok, keep_warm=True)
    before = engine.generate(batch, _greedy(8))
    assert not torch.equal(before.behaviour_logprobs, target.behaviour_logprobs)
    engine.set_adapter_state(adapter_state_dict(learner))
    synced = engine.generate(batch, _greedy(8))
    assert torch.equal(synced.completion_ids, target.completion_ids)
    assert (synced.behaviour_logprobs - target.behaviour_logprobs).abs().max() <= 1e-5
    # An in-place update (what the colocated learner's optimiser does) shows at the next batch,
    # with the merged buffers kept warm in between.
    engine.release_memory()
    assert engine._state is not None
    # On a CPU the merged buffers are packed (not rewritable in place): refresh builds them afresh.
    assert engine._state.weights.layers[0].qkv.is_mkldnn == cpu_packing_works()
    with torch.no_grad():
        for key, p in adapter_parameters(generator).items():
            if "lora_B" in key:  # negates B @ A
                p.mul_(-1.0)
    flipped = engine.generate(batch, _greedy(8))
    assert torch.equal(
        flipped.completion_ids,
        GenerateRolloutEngine(generator, tok).generate(batch, _greedy(8)).completion_ids,
    )
    assert not torch.equal(flipped.completion_ids, synced.completion_ids)


def test_model_weights_are_left_exactly_as_they_were(llama) -> None:
    model, tok = llama
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        engine = FastRolloutEngine(model, tok)
        engine.generate(_batch(tok), SamplingConfig(n_samples=2, max_new_tokens=6))
        assert model.training and model.active_adapter == "policy"
    finally:
        model.eval()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    engine.release_memory()
    assert engine._state is None


@pytest.mark.skipif(not cpu_packing_works(), reason="this torch build cannot pack weights for oneDNN")
def test_packed_cpu_weights_decode_like_the_plain_ones() -> None:
    # The head adapted too, so every packed weight is a merged copy; and a float64 model is left as is.
    model, tok = _policy(target_modules=["q_proj", "v_proj", "down_proj", "lm_head"])
    batch, greedy = _batch(tok), _greedy(12, n=2)
    plain = FastRolloutEngine(model, tok, pack_weights=False, keep_warm=True)
    packed = FastRolloutEngine(model, tok, keep_warm=True)
    expected, got = plain.generate(batch, greedy), packed.generate(batch, greedy)
    weights = packed._state.weights
    assert all(
        t.is_mkldnn for layer in weights.layers for t in (layer.qkv, layer.o, layer.gate_up, layer.down)
    )
    assert weights.lm_head.is_mkldnn and not plain._state.weights.lm_head.is_mkldnn
    assert torch.equal(got.completion_ids, expected.completion_ids)
    gap = (
        got.metrics["rollout/decode_logprob_max_abs_diff"],
        expected.metrics["rollout/decode_logprob_max_abs_diff"],
    )
    assert max(gap) <= 1e-4  # decode-time log-probs against the learner's pass, both ways
    # Sampled, the same seed draws the same tokens from the same distribution.
    sampling = SamplingConfig(n_samples=3, temperature=0.9, max_new_tokens=12)
    torch.manual_seed(4)
    expected = plain.generate(batch, sampling)
    torch.manual_seed(4)
    assert torch.equal(packed.generate(batch, sampling).completion_ids, expected.completion_ids)
    wide, _ = tiny_model_and_tokenizer(architecture="llama", seed=0)
    assert not DecoderWeights(wide.to(torch.float64), None, pack=True).pack


def test_merged_buffers_equal_peft_merge() -> None:
    model, tok = _policy(target_modules=["q_proj", "v_proj", "down_proj", "lm_head"])
    engine = FastRolloutEngine(model, tok, pack_weights=False)  # the plain buffers, to compare
    engine.generate(_batch(tok), _greedy(2))
    weights = engine._state.weights
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.merge_adapter()
    try:
        layer = model.get_base_model().model.layers[1]
        q_rows = layer.self_attn.q_proj.base_layer.weight.shape[0]
        k_rows = layer.self_attn.k_proj.weight.shape[0]
        qkv = weights.layers[1].qkv
        assert torch.equal(qkv[:q_rows], layer.self_attn.q_proj.base_layer.weight)
        assert torch.equal(qkv[q_rows : q_rows + k_rows], layer.self_attn.k_proj.weight)
        assert torch.equal(qkv[q_rows + k_rows :], layer.self_attn.v_proj.base_layer.weight)
        assert torch.equal(weights.layers[1].down, layer.mlp.down_proj.base_layer.weight)
        assert torch.equal(weights.lm_head, model.get_base_model().lm_head.base_layer.weight)
        # Unadapted layers are read in place, not copied.
        assert weights.layers[1].o is layer.self_attn.o_proj.weight
    finally:
        model.unmerge_adapter()
        model.load_state_dict(saved)
    out = engine.generate(_batch(tok), _greedy(6))
    reference = GenerateRolloutEngine(model, tok).generate(_batch(tok), _greedy(6))
    assert torch.equal(out.completion_ids, reference.completion_ids)


def test_release_memory_then_generate_again(qwen2) -> None:
    model, tok = qwen2
    engine = FastRolloutEngine(model, tok, batch_size=2, context_block=8)
    first = engine.generate(_batch(tok), _greedy(6, n=2))
    engine.release_memory()
    assert engine._state is None
    second = engine.generate(_batch(tok), _greedy(6, n=2))
    assert torch.equal(first.completion_ids, second.completion_ids)
    # A longer request than the cache holds reallocates it.
    context = engine._state.context
    longer = engine.generate(_batch(tok), _greedy(context))
    assert engine._state.context > context and longer.completion_ids.shape[1] <= context


def test_plain_model_and_errors() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model, tok = tiny_model_and_tokenizer()
    engine = FastRolloutEngine(model, tok)
    out = engine.generate(_batch(tok, "raw"), _greedy(3))
    assert out.completion_ids.shape == (3, 3)
    with pytest.raises(TypeError, match="without adapters"):
        engine.set_adapter_state({})
    for config, message in [
        (SamplingConfig(n_samples=0), "n_samples"),
        (SamplingConfig(top_p=0.0), "top_p"),
        (SamplingConfig(stop=("",)), "non-empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.generate(_batch(tok), config)
    with pytest.raises(ValueError, match="tokenize to nothing"):
        engine.generate(TaskBatch(tasks=TASKS[:1], prompts=[""]), _greedy(2))
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        FastRolloutEngine(model, tok, cuda_graphs=True)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        FastRolloutEngine(model, tok, batch_size=0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2))
    assert not FastRolloutEngine.supports(gpt2) and FastRolloutEngine.supports(model)
    with pytest.raises(ValueError, match=r"model type 'gpt2'.*rollout.engine=generate"):
        FastRolloutEngine(gpt2, tok)


def test_sliding_window_models_are_refused() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny_model_and_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=32, use_sliding_window=True, sliding_window=8,
        max_window_layers=1,
    )  # fmt: skip
    with pytest.raises(ValueError, match="sliding-window"):
        FastRolloutEngine(Qwen2ForCausalLM(config), tok)


def test_tied_embeddings_and_micro_batched_logprobs() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = tiny_model_and_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, intermediate_size=64, tie_word_embeddings=True, initializer_range=0.2,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = apply_lora(LlamaForCausalLM(config).eval(), rank=2, alpha=4)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.normal_(std=0.1)
    batch = _batch(tok)
    config = _greedy(10, n=2)
    reference = GenerateRolloutEngine(model, tok).generate(batch, config)
    # A tiny log-prob budget: one row per micro-batch, as a learner with a small budget would; and
    # padding-free packed micro-batches, for a learner that trains on those.
    for options in (
        {"logprob_tokens": 8, "logprob_chunk_size": 3},
        {"logprob_tokens": 40, "logprob_packed": True},
    ):
        out = FastRolloutEngine(model, tok, **options).generate(batch, config)
        assert torch.equal(out.completion_ids, reference.completion_ids)
        assert (out.behaviour_logprobs - reference.behaviour_logprobs).abs().max() <= 1e-5


def test_make_engine_builds_the_fast_engine() -> None:
    from rlhf.config import load_config
    from rlhf.rollout.recipe import make_engine

    config = load_config(None, ["model.name_or_path=tiny:llama", "model.device=cpu", "rollout.engine=fast"])
    model, tok = _policy()
    engine = make_engine(config, model, tok)
    assert isinstance(engine, FastRolloutEngine)
    auto = make_engine(replace(config, rollout=replace(config.rollout, engine="auto")), model, tok)
    assert isinstance(auto, GenerateRolloutEngine)  # auto picks the fast engine on GPUs only


def test_released_decode_state_is_freed_without_a_garbage_collection(llama) -> None:
    import gc
    import weakref

    model, tok = llama
    engine = FastRolloutEngine(model, tok)
    engine.generate(_batch(tok), _greedy(3))
    cache = weakref.ref(engine._state.cache)
    gc.disable()
    try:
        engine.release_memory()
        assert cache() is None  # freed by reference counting: no cycle keeps the KV cache alive
    finally:
        gc.enable()


@pytest.mark.parametrize("engine_class", [FastRolloutEngine, GenerateRolloutEngine])
def test_both_engines_sample_only_among_the_top_k_tokens(llama, engine_class) -> None:
    model, tok = llama
    batch = TaskBatch(tasks=TASKS[:1], prompts=_batch(tok).prompts[:1])
    prompt = tok(batch.prompts[0], add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    allowed = set(torch.topk(logits, 3).indices.tolist())
    engine = engine_class(model, tok)
    torch.manual_seed(5)
    # A high temperature spreads the draws, so without the cut they would leave the top 3.
    config = SamplingConfig(n_samples=64, temperature=3.0, top_k=3, max_new_tokens=1)
    first = set(engine.generate(batch, config).completion_ids[:, 0].tolist())
    assert first <= allowed and len(first) > 1
    wide = set(engine.generate(batch, dataclasses.replace(config, top_k=0)).completion_ids[:, 0].tolist())
    assert not wide <= allowed


def test_cpu_draws_follow_the_probabilities_and_never_pick_a_zero() -> None:
    # Zeros first, in the middle and last: the running sum repeats there, and the inverse CDF must
    # never land on them; a row whose whole mass is on its first or last token always draws it.
    probs = torch.tensor(
        [
            [0.0, 0.1, 0.0, 0.2, 0.0, 0.3, 0.4, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    generator = torch.Generator().manual_seed(0)
    draws = 20000
    tokens = torch.stack([draw(probs, generator) for _ in range(draws)])  # [draws, 3]
    assert bool((tokens[:, 1] == 0).all()) and bool((tokens[:, 2] == 7).all())
    observed = torch.bincount(tokens[:, 0], minlength=8).float()
    kept = probs[0] > 0
    assert bool((observed[~kept] == 0).all())
    expected = draws * probs[0][kept]
    chi2 = float(((observed[kept] - expected) ** 2 / expected).sum())
    assert chi2 < 3 + 6 * 6**0.5  # 3 degrees of freedom; a draw off by 1% in any token fails it


def test_top_k_1_samples_the_argmax_and_keeps_the_uncut_logprob() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.5, 0.2]])
    tokens, logps = sample_next(logits, 0.8, 1.0, top_k=1)
    assert tokens.tolist() == [1, 0]
    expected = torch.log_softmax(logits / 0.8, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    assert torch.allclose(logps, expected)
    assert torch.isinf(top_k_filter(logits, 2)).sum() == 4


def _with_early_ends(model, tok):
    """An end token that comes early in some greedy completions, so samples finish far apart."""
    free = GenerateRolloutEngine(model, tok).generate(_batch(tok), _greedy(24)).completion_ids.tolist()
    return [tok.eos_token_id, free[0][3]]


@pytest.mark.parametrize("batch_size", [None, 2])
def test_each_sample_is_handed_over_once_as_it_finishes_and_cut_as_in_the_rollouts(llama, batch_size) -> None:
    model, tok = llama
    batch = _batch(tok)
    stop = next(
        c for c in GenerateRolloutEngine(model, tok).generate(batch, _greedy(16)).texts[1][2:] if c.isalpha()
    )
    config = model.get_base_model().generation_config
    saved = config.eos_token_id
    config.eos_token_id = end_ids = _with_early_ends(model, tok)
    reports: list[tuple[int, list[int]]] = []
    try:
        engine = FastRolloutEngine(model, tok, batch_size=batch_size, context_block=8)
        sampling = _greedy(24, stop=(stop,), n=3)
        out = engine.generate(batch, sampling, on_finished=lambda i, tokens: reports.append((i, tokens)))
        plain = engine.generate(batch, sampling)
    finally:
        config.eos_token_id = saved
    assert torch.equal(out.completion_ids, plain.completion_ids)  # reporting changes nothing
    assert sorted(i for i, _ in reports) == list(range(len(out)))
    for sample, tokens in reports:
        length = int(out.completion_mask[sample].sum())
        assert tokens == out.completion_ids[sample, :length].tolist()
        assert completion_text(tokens, sampling.stop, tok) == out.texts[sample]
    # Samples that ended at an end token, at the stop string and at the budget were all handed over.
    by_eos = [tokens[-1] in end_ids for _, tokens in reports]
    by_stop = [stop in tok.decode(tokens) for _, tokens in reports]
    assert any(by_eos) and any(by_stop) and out.truncated.any()
    if batch_size is None:
        # All rows decode side by side, so samples are handed over in the order they finish, not in
        # the order of the batch: the shortest first, the longest last.
        lengths = [len(tokens) for _, tokens in reports]
        assert lengths[0] == min(lengths) < max(lengths) == lengths[-1]
        assert [i for i, _ in reports] != sorted(i for i, _ in reports)
