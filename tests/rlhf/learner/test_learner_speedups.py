"""Opt-in learner speedups: padding-free packed micro-batches, gradient checkpointing, and the
output head chunked so that no vocab x sequence tensor is ever built or kept."""

from __future__ import annotations

import random

import pytest
import torch

from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs_and_entropy
from rlhf.models.packed_logprobs import pack_by_tokens, packed_completion_logprobs_and_entropy
from rlhf.models.policy_model import enable_activation_checkpointing
from tests.rlhf.vocab_wide import VocabWideTensors

torch.set_num_threads(2)


def _policy(architecture: str = "llama"):
    model, tok = tiny_model_and_tokenizer(architecture=architecture, initializer_range=0.2, seed=0)
    model = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in adapter_parameters(model).values():
            p.normal_(std=0.1, generator=gen)
    return model, len(tok)


def _rows(vocab: int, lengths: list[tuple[int, int]], seed: int = 0):
    """Left-padded prompts and right-padded completions with the given (prompt, completion) lengths."""
    gen = torch.Generator().manual_seed(seed)
    width_p, width_c = max(p for p, _ in lengths), max(c for _, c in lengths)
    prompt_ids = torch.zeros(len(lengths), width_p, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    completion_ids = torch.zeros(len(lengths), width_c, dtype=torch.long)
    completion_mask = torch.zeros_like(completion_ids)
    for i, (p, c) in enumerate(lengths):
        prompt_ids[i, width_p - p :] = torch.randint(3, vocab, (p,), generator=gen)
        prompt_mask[i, width_p - p :] = 1
        completion_ids[i, :c] = torch.randint(3, vocab, (c,), generator=gen)
        completion_mask[i, :c] = 1
    return prompt_ids, prompt_mask, completion_ids, completion_mask


# Long prompt + short answer next to short prompt + long answer: the padded rectangle is 2x the tokens.
LENGTHS = [(30, 4), (5, 28), (17, 17), (1, 9)]


def test_pack_by_tokens_respects_the_budget_and_keeps_every_sample() -> None:
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 100) for _ in range(rng.randint(1, 30))]
        budget = rng.randint(50, 300)
        batches = pack_by_tokens(lengths, budget)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for batch in batches:
            assert sum(lengths[i] for i in batch) <= budget or len(batch) == 1
        # First-fit decreasing needs at most 11/9 OPT + 1 bins; OPT >= total / budget.
        assert len(batches) <= 11 / 9 * (sum(lengths) / budget) + 1 + sum(n > budget for n in lengths)
    with pytest.raises(ValueError, match="budget"):
        pack_by_tokens([3], 0)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_packed_logprobs_and_gradients_equal_the_padded_ones(
    architecture: str, chunk_size: int | None
) -> None:
    model, vocab = _policy(architecture)
    batch = _rows(vocab, LENGTHS)
    mask = batch[3].float()
    weights = torch.randn(mask.shape, generator=torch.Generator().manual_seed(2)) * mask
    results = []
    for function in (completion_logprobs_and_entropy, packed_completion_logprobs_and_entropy):
        model.zero_grad(set_to_none=True)
        logprobs, entropy = function(model, *batch, temperature=0.8, chunk_size=chunk_size)
        ((logprobs * weights).sum() + 0.1 * (entropy * mask).sum()).backward()
        grads = {k: p.grad.clone() for k, p in adapter_parameters(model).items()}
        results.append((logprobs.detach(), entropy.detach(), grads))
    (lp_pad, ent_pad, g_pad), (lp_pack, ent_pack, g_pack) = results
    assert torch.all(lp_pack[batch[3] == 0] == 0)
    assert (lp_pad - lp_pack).abs().max() <= 1e-5
    assert (ent_pad - ent_pack).abs().max() <= 1e-5
    for key in g_pad:  # float32 sums in another order: equal to a few ulps of the gradient's size
        assert (g_pad[key] - g_pack[key]).norm() <= 1e-5 * g_pad[key].norm(), key


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model, vocab = _policy()
    batch = _rows(vocab, LENGTHS)
    grads = []
    for checkpointed in (False, True):
        if checkpointed:
            enable_activation_checkpointing(model)
        model.train()
        model.zero_grad(set_to_none=True)
        logprobs, _ = completion_logprobs_and_entropy(model, *batch)
        logprobs.sum().backward()
        grads.append({k: p.grad.clone() for k, p in adapter_parameters(model).items()})
    model.eval()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    for key in grads[0]:
        assert (grads[0][key] - grads[1][key]).norm() <= 1e-5 * grads[0][key].norm(), key


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_head_never_builds_or_keeps_sequence_by_vocab_logits(packed: bool) -> None:
    """Memory check without a GPU: count the rows of every vocab-wide tensor made in the forward and
    backward pass, and of every one autograd kept from the forward pass for the backward pass to
    read (the head's own weight aside: it exists anyway).

    No tensor has more than ``chunk`` rows of the vocabulary and none is kept: each chunk's gradient
    is taken in the forward pass (rlhf/models/output_head.py), so peak memory holds chunk x vocab,
    whatever the sequence length. (Unchunked, on a GPU, the logits of all N completion tokens, their
    log-softmax and its exp would be built and kept.)
    """
    model, vocab = _policy()
    assert vocab > 64  # the hidden size: vocab-wide tensors are told apart by their last dimension
    batch = _rows(vocab, [(8, 64), (3, 48), (12, 60)])
    tokens = int(batch[3].sum())
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    function = packed_completion_logprobs_and_entropy if packed else completion_logprobs_and_entropy
    observed = {}
    for chunk in (None, 16):
        kept: list[int] = []
        backward = [False]

        def unpack(
            tensor: torch.Tensor, kept: list[int] = kept, backward: list[bool] = backward
        ) -> torch.Tensor:
            vocab_wide = tensor.dim() >= 1 and tensor.shape[-1] == vocab
            if backward[0] and vocab_wide and tensor.untyped_storage().data_ptr() not in parameters:
                kept.append(tensor.numel() // vocab)
            return tensor

        made = VocabWideTensors(vocab)
        model.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack), made:
            logprobs, entropy = function(model, *batch, chunk_size=chunk)
            backward[0] = True
            (logprobs.sum() + entropy.sum()).backward()
        observed[chunk] = (made.most_rows, max(kept, default=0))
    # On a CPU None means chunks of 16 MiB of logits: these tokens are one chunk, built but not kept.
    assert observed[None] == (tokens, 0)
    assert observed[16] == (16, 0)
