"""Completion log-probs and entropies against a naive per-sample, unpadded computation."""

from __future__ import annotations

import pytest
import torch

from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import (
    completion_logprobs,
    completion_logprobs_and_entropy,
    position_ids_from_mask,
    reference_logprobs,
)

torch.set_num_threads(2)

PROMPT_LENGTHS = (5, 9, 1, 6)
COMPLETION_LENGTHS = (4, 7, 2, 1)


def _padded_batch(seed: int = 0):
    """Left-padded prompts and right-padded completions of different lengths, plus the raw rows."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 259, (n,), generator=gen) for n in PROMPT_LENGTHS]
    completions = [torch.randint(3, 259, (n,), generator=gen) for n in COMPLETION_LENGTHS]
    width_p, width_t = max(PROMPT_LENGTHS), max(COMPLETION_LENGTHS)
    b = len(prompts)
    # Pad ids are arbitrary on purpose: masked positions must not matter whatever they hold.
    prompt_ids = torch.randint(3, 259, (b, width_p), generator=gen)
    completion_ids = torch.randint(3, 259, (b, width_t), generator=gen)
    prompt_mask = torch.zeros(b, width_p, dtype=torch.long)
    completion_mask = torch.zeros(b, width_t, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        prompt_ids[i, width_p - len(p) :] = p
        prompt_mask[i, width_p - len(p) :] = 1
        completion_ids[i, : len(c)] = c
        completion_mask[i, : len(c)] = 1
    return (prompt_ids, prompt_mask, completion_ids, completion_mask), prompts, completions


def _naive(model, prompts, completions, temperature):
    """One unpadded forward pass per sample through the model's own forward()."""
    logps, entropies = [], []
    for p, c in zip(prompts, completions):
        logits = model(input_ids=torch.cat([p, c])[None]).logits[0].float() / temperature
        logp = logits.log_softmax(-1)[len(p) - 1 : -1]
        logps.append(logp.gather(-1, c[:, None])[:, 0])
        entropies.append(-(logp.exp() * logp).sum(-1))
    return logps, entropies


@pytest.fixture(scope="module")
def policy():
    model, _ = tiny_model_and_tokenizer(initializer_range=0.2, seed=1)
    model = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.normal_(std=0.2)
    return model


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_matches_naive_unpadded_computation(policy, temperature: float, chunk_size: int | None) -> None:
    batch, prompts, completions = _padded_batch()
    with torch.no_grad():
        logp, entropy = completion_logprobs_and_entropy(
            policy, *batch, temperature=temperature, chunk_size=chunk_size
        )
        only_logp = completion_logprobs(policy, *batch, temperature=temperature, chunk_size=chunk_size)
        want_logp, want_entropy = _naive(policy, prompts, completions, temperature)
    assert logp.dtype == torch.float32 and logp.shape == batch[2].shape
    assert torch.equal(logp, only_logp)
    for i, n in enumerate(COMPLETION_LENGTHS):
        assert (logp[i, :n] - want_logp[i]).abs().max() <= 1e-5
        assert (entropy[i, :n] - want_entropy[i]).abs().max() <= 1e-5
        assert torch.all(logp[i, n:] == 0) and torch.all(entropy[i, n:] == 0)
    assert (logp[batch[3].bool()] < 0).all()


def test_temperature_changes_the_numbers(policy) -> None:
    batch, _, _ = _padded_batch()
    with torch.no_grad():
        hot = completion_logprobs(policy, *batch, temperature=1.0)
        cold = completion_logprobs(policy, *batch, temperature=0.5)
    assert (hot - cold).abs().max() > 1e-2


def test_position_ids_count_real_tokens_only() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_left_padding_equals_no_padding(architecture: str) -> None:
    model, _ = tiny_model_and_tokenizer(architecture=architecture, initializer_range=0.2)
    batch, prompts, completions = _padded_batch(seed=4)
    with torch.no_grad():
        padded = completion_logprobs(model, *batch)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            alone = completion_logprobs(
                model,
                p[None],
                torch.ones(1, len(p), dtype=torch.long),
                c[None],
                torch.ones(1, len(c), dtype=torch.long),
            )
            assert (padded[i, : len(c)] - alone[0]).abs().max() <= 1e-5


def test_chunked_gradients_equal_unchunked_gradients(policy) -> None:
    batch, _, _ = _padded_batch(seed=2)
    grads = []
    for chunk_size in (None, 2):
        policy.zero_grad()
        logp, entropy = completion_logprobs_and_entropy(
            policy, *batch, temperature=0.8, chunk_size=chunk_size
        )
        (logp.sum() + 0.1 * entropy.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in adapter_parameters(policy).items()})
    policy.zero_grad()
    assert any(g.abs().sum() > 0 for g in grads[0].values())
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_reference_logprobs_is_the_base_model_without_grad(policy) -> None:
    batch, _, _ = _padded_batch()
    base, _ = tiny_model_and_tokenizer(initializer_range=0.2, seed=1)
    with torch.enable_grad():
        ref = reference_logprobs(policy, *batch)
    assert not ref.requires_grad
    with torch.no_grad():
        assert torch.allclose(ref, completion_logprobs(base, *batch), atol=1e-6)
        assert (ref - completion_logprobs(policy, *batch)).abs().max() > 1e-3
    with pytest.raises(TypeError, match="needs a PeftModel"):
        reference_logprobs(base, *batch)


def test_bad_inputs_are_named(policy) -> None:
    (prompt_ids, prompt_mask, completion_ids, completion_mask), _, _ = _padded_batch()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        completion_logprobs(policy, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=0)
    with pytest.raises(ValueError, match="equal shapes"):
        completion_logprobs(policy, prompt_ids, prompt_mask[:, 1:], completion_ids, completion_mask)
    right_padded = torch.flip(prompt_mask, dims=[1])
    with pytest.raises(ValueError, match="left-padded"):
        completion_logprobs(policy, prompt_ids, right_padded, completion_ids, completion_mask)
    with pytest.raises(ValueError, match="chunk_size"):
        completion_logprobs(policy, prompt_ids, prompt_mask, completion_ids, completion_mask, chunk_size=0)
