"""The generate-based rollout engine: shapes, stopping, sampling settings, log-probs, weight sync."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from rewards.tasks import Task
from rlhf.models.loading import adapter_parameters, adapter_state_dict, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs
from rlhf.rollout import GenerateRolloutEngine, RolloutEngine, SamplingConfig, render_prompt
from rlhf.rollout.generate_engine import completion_end, completion_text
from rlhf.types import TaskBatch

torch.set_num_threads(2)

TASKS = [
    Task(id="t/0", prompt='def add(a, b):\n    """Add a and b."""\n', entry_point="add"),
    Task(id="t/1", prompt="Double x.", entry_point="dbl", references=("def dbl(x):\n    return 2 * x\n",)),
    Task(id="t/2", prompt="Print hello."),
]


def _policy(adapter_seed: int = 0):
    model, tok = tiny_model_and_tokenizer(initializer_range=0.2, seed=0)
    model = apply_lora(model, rank=4, alpha=8)
    gen = torch.Generator().manual_seed(adapter_seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.normal_(std=0.2, generator=gen)
    return model, tok


def _batch(tok, style: str = "chat_prefill") -> TaskBatch:
    return TaskBatch(tasks=TASKS, prompts=[render_prompt(tok, t, style) for t in TASKS])


def _greedy(max_new_tokens: int, stop: tuple[str, ...] = ()) -> SamplingConfig:
    return SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=stop)


@pytest.fixture(scope="module")
def policy():
    return _policy()


def test_rollouts_layout_and_behaviour_logprobs(policy) -> None:
    model, tok = policy
    engine = GenerateRolloutEngine(model, tok)
    assert isinstance(engine, RolloutEngine)
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
    assert out.behaviour_logprobs.dtype == torch.float32
    assert torch.all(out.behaviour_logprobs[out.completion_mask == 0] == 0)
    assert (out.behaviour_logprobs[out.completion_mask.bool()] < 0).all()
    with torch.no_grad():
        learner = completion_logprobs(
            model, out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask, temperature=0.7
        )
    assert (learner - out.behaviour_logprobs).abs().max() <= 1e-5
    # Lengths are the controller's `completions/*` metrics, not logged a second time by the engine.
    assert out.metrics["rollout/tokens_per_s"] > 0 and not any("len" in key for key in out.metrics)


def _greedy_by_hand(model, prompt_ids: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, len(prompt_ids) :].tolist()


def test_greedy_ignores_checkpoint_generation_defaults(policy) -> None:
    model, tok = policy
    batch = _batch(tok)
    model.get_base_model().generation_config.repetition_penalty = 5.0
    try:
        out = GenerateRolloutEngine(model, tok).generate(batch, _greedy(8))
    finally:
        model.get_base_model().generation_config.repetition_penalty = None
    for i, prompt in enumerate(batch.prompts):
        expected = _greedy_by_hand(model, tok(prompt, add_special_tokens=False).input_ids, 8)
        assert out.completion_ids[i].tolist() == expected


def test_sampling_uses_the_whole_distribution_unless_top_p_cuts_it(policy) -> None:
    model, tok = policy
    engine = GenerateRolloutEngine(model, tok)
    batch = TaskBatch(tasks=TASKS[:1], prompts=_batch(tok).prompts[:1])
    greedy = engine.generate(batch, _greedy(3)).completion_ids[0].tolist()
    # A checkpoint default of top_k=1 would make every sample greedy; the engine must not inherit it.
    model.get_base_model().generation_config.top_k = 1
    try:
        torch.manual_seed(1)
        sampled = engine.generate(batch, SamplingConfig(n_samples=16, temperature=1.0, max_new_tokens=3))
    finally:
        model.get_base_model().generation_config.top_k = None
    assert len({tuple(row) for row in sampled.completion_ids.tolist()}) > 1
    torch.manual_seed(1)
    nucleus = engine.generate(
        batch, SamplingConfig(n_samples=4, temperature=1.0, top_p=1e-6, max_new_tokens=3)
    )
    assert all(row == greedy for row in nucleus.completion_ids.tolist())
    torch.manual_seed(7)
    first = engine.generate(batch, SamplingConfig(n_samples=4, max_new_tokens=5))
    torch.manual_seed(7)
    second = engine.generate(batch, SamplingConfig(n_samples=4, max_new_tokens=5))
    assert torch.equal(first.completion_ids, second.completion_ids)


def test_stop_string_cuts_text_and_masks_after_it(policy) -> None:
    model, tok = policy
    engine = GenerateRolloutEngine(model, tok)
    batch = _batch(tok)
    free = engine.generate(batch, _greedy(16))
    text = free.texts[0]
    # A printable character the greedy completion of prompt 0 produces after a few tokens.
    stop = next(c for c in text[2:] if c.isascii() and c.isprintable())
    end = text.index(stop) + len(stop)
    out = engine.generate(batch, _greedy(16, stop=(stop, "a stop string that never appears")))
    assert out.texts[0] == text[:end]
    assert not bool(out.truncated[0])
    length = int(out.completion_mask[0].sum())
    kept = out.completion_ids[0, :length].tolist()
    assert kept == free.completion_ids[0, :length].tolist()
    assert stop in tok.decode(kept) and stop not in tok.decode(kept[:-1])
    assert torch.all(out.behaviour_logprobs[0, length:] == 0)
    assert torch.allclose(out.behaviour_logprobs[0, :length], free.behaviour_logprobs[0, :length], atol=1e-5)


def test_configured_eos_ends_completions(policy) -> None:
    model, tok = policy
    batch = _batch(tok)
    free = GenerateRolloutEngine(model, tok).generate(batch, _greedy(10)).completion_ids[0].tolist()
    step = next(i for i in range(2, 10) if free[i] not in free[:i])
    config = model.get_base_model().generation_config
    saved = config.eos_token_id
    config.eos_token_id = [tok.eos_token_id, free[step]]  # e.g. Qwen's two end tokens
    try:
        out = GenerateRolloutEngine(model, tok).generate(batch, _greedy(10))
    finally:
        config.eos_token_id = saved
    assert out.completion_ids[0, : step + 1].tolist() == free[: step + 1]
    assert int(out.completion_mask[0].sum()) == step + 1
    assert not bool(out.truncated[0])
    assert out.behaviour_logprobs[0, step] < 0  # the EOS token itself is trained on


def test_micro_batching_changes_nothing(policy) -> None:
    model, tok = policy
    batch = _batch(tok)
    config = _greedy(6, stop=("e",))
    whole = GenerateRolloutEngine(model, tok).generate(batch, replace(config, n_samples=2))
    engine = GenerateRolloutEngine(
        model, tok, generation_batch_size=2, logprob_batch_size=1, logprob_chunk_size=2
    )
    split = engine.generate(batch, replace(config, n_samples=2))
    engine.release_memory()
    assert torch.equal(whole.completion_ids, split.completion_ids)
    assert torch.equal(whole.completion_mask, split.completion_mask)
    assert torch.equal(whole.prompt_ids, split.prompt_ids)
    assert whole.texts == split.texts
    assert (whole.behaviour_logprobs - split.behaviour_logprobs).abs().max() <= 1e-5


def test_set_adapter_state_syncs_a_separate_copy() -> None:
    learner, tok = _policy(adapter_seed=0)
    generator, _ = _policy(adapter_seed=1)  # same base weights, another adapter
    engine = GenerateRolloutEngine(generator, tok)
    batch = _batch(tok)
    target = GenerateRolloutEngine(learner, tok).generate(batch, _greedy(8))
    assert not torch.equal(engine.generate(batch, _greedy(8)).behaviour_logprobs, target.behaviour_logprobs)
    engine.set_adapter_state(adapter_state_dict(learner))
    synced = engine.generate(batch, _greedy(8))
    assert torch.equal(synced.completion_ids, target.completion_ids)
    assert torch.equal(synced.behaviour_logprobs, target.behaviour_logprobs)


def test_engine_restores_training_mode_and_adapter(policy) -> None:
    model, tok = policy
    model.train()
    try:
        GenerateRolloutEngine(model, tok).generate(_batch(tok), _greedy(2))
        assert model.training and model.active_adapter == "policy"
    finally:
        model.eval()


def test_plain_model_engine_and_errors() -> None:
    model, tok = tiny_model_and_tokenizer()
    engine = GenerateRolloutEngine(model, tok)
    out = engine.generate(_batch(tok, "raw"), _greedy(3))
    assert out.completion_ids.shape == (3, 3)
    with pytest.raises(TypeError, match="without adapters"):
        engine.set_adapter_state({})
    bad = [
        (SamplingConfig(n_samples=0), "n_samples"),
        (SamplingConfig(top_p=0.0), "top_p"),
        (SamplingConfig(temperature=-1.0), "temperature"),
        (SamplingConfig(max_new_tokens=0), "max_new_tokens"),
        (SamplingConfig(stop="\n"), "list of strings"),  # type: ignore[arg-type]
        (SamplingConfig(stop=("",)), "non-empty"),
    ]
    for config, message in bad:
        with pytest.raises(ValueError, match=message):
            engine.generate(_batch(tok), config)
    with pytest.raises(ValueError, match="tokenize to nothing"):
        engine.generate(TaskBatch(tasks=TASKS[:1], prompts=[""]), _greedy(2))


def test_completion_end_rules() -> None:
    _, tok = tiny_model_and_tokenizer()
    eos = tok.eos_token_id
    ids = lambda s: tok(s, add_special_tokens=False).input_ids
    assert completion_end([*ids("abc"), eos, *ids("zz")], {eos}, (), tok) == (4, True)
    assert completion_end(ids("ab\ncd"), {eos}, ("\n",), tok) == (3, True)
    # The stop string wins when it comes before EOS; EOS wins when the stop string only follows it.
    assert completion_end([*ids("a\nb"), eos], {eos}, ("\n",), tok) == (2, True)
    assert completion_end([*ids("ab"), eos, *ids("\n")], {eos}, ("\n",), tok) == (3, True)
    assert completion_end(ids("abcd"), {eos}, ("\n",), tok) == (4, False)
    # A stop string spread over several tokens ends at the token that completes it.
    assert completion_end(ids("x```py"), {eos}, ("```",), tok) == (4, True)
    assert completion_text(ids("x```py"), ("```",), tok) == "x```"


@pytest.mark.parametrize("generation_batch_size", [None, 2])
def test_each_sample_is_handed_over_once_cut_as_in_the_rollouts(policy, generation_batch_size) -> None:
    model, tok = policy
    batch = _batch(tok)
    engine = GenerateRolloutEngine(model, tok, generation_batch_size=generation_batch_size)
    stop = next(c for c in engine.generate(batch, _greedy(16)).texts[0][2:] if c.isascii() and c.isalpha())
    config = replace(_greedy(16, stop=(stop,)), n_samples=2)
    calls: list[int] = []
    real_generate = model.generate

    def counted_generate(*args, **kwargs):
        calls.append(len(reports))
        return real_generate(*args, **kwargs)

    reports: list[tuple[int, list[int]]] = []
    model.generate = counted_generate
    try:
        out = engine.generate(batch, config, on_finished=lambda i, tokens: reports.append((i, tokens)))
    finally:
        del model.generate
    # Rows of a sub-batch come back together: each is handed over then, before the next starts.
    assert [i for i, _ in reports] == list(range(len(out)))
    step = generation_batch_size or len(out)
    assert calls == list(range(0, len(out), step))
    for sample, tokens in reports:
        length = int(out.completion_mask[sample].sum())
        # generate pads rows that finished early; what is handed over is cut where the completion ends
        assert tokens == out.completion_ids[sample, :length].tolist()
        assert completion_text(tokens, config.stop, tok) == out.texts[sample]
    assert any(stop in text for text in out.texts) and out.completion_mask.sum(1).min() < 16
