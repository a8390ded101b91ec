"""The output head a chunk at a time: the same log-probs, entropies and gradients as all at once, and
no CPU path (learner, reference, behaviour log-probs) builds full-vocabulary logits for every
completion token at once."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.algorithms import resolve_algorithm
from rlhf.config import AlgorithmConfig, TrainConfig
from rlhf.learner.updates import Learner, LearnerOptions
from rlhf.models.loading import adapter_parameters, apply_lora, byte_tokenizer
from rlhf.models.logprobs import completion_logprobs, reference_logprobs
from rlhf.models.output_head import CPU_LOGITS_CHUNK_BYTES, completion_token_stats, token_stats
from rlhf.rollout.fast_engine import FastRolloutEngine
from rlhf.types import TrainBatch
from tests.rlhf.vocab_wide import VocabWideTensors

torch.set_num_threads(2)


def _lm(vocab: int, seed: int = 0, tied: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    model.requires_grad_(False)
    return model.eval()


def _tokens(vocab: int, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, H] hidden states, the [1, N] ids they predict and the mask that keeps them all."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, 32, generator=gen)
    ids = torch.randint(0, vocab, (1, n), generator=gen)
    return hidden, ids, torch.ones(1, n, dtype=torch.bool)


def _stats_and_grad(lm, hidden, ids, keep, chunk, entropy_grad, weights):
    hidden = hidden.clone().requires_grad_(True)
    stats = completion_token_stats(lm, hidden, ids, keep, 0.7, chunk, True, entropy_grad)
    loss = (stats[0] * weights[0]).sum() + (stats[1] * weights[1]).sum()
    loss.backward()
    return stats.detach(), hidden.grad


@pytest.mark.parametrize("chunk", [None, 1, 5])
@pytest.mark.parametrize("entropy_grad", [True, False])
def test_chunks_give_the_numbers_and_gradients_of_one_pass(chunk: int | None, entropy_grad: bool) -> None:
    lm = _lm(vocab=300, tied=True)
    hidden, ids, keep = _tokens(300, 23)
    weights = torch.randn(2, 1, 23, generator=torch.Generator().manual_seed(3))
    # All at once through plain autograd: what a GPU does with chunk_size=None.
    h = hidden.clone().requires_grad_(True)
    want = token_stats(lm, h, ids[keep], 0.7, True)
    ((want[0] * weights[0, 0]).sum() + entropy_grad * (want[1] * weights[1, 0]).sum()).backward()
    stats, grad = _stats_and_grad(lm, hidden, ids, keep, chunk, entropy_grad, weights)
    assert (stats[:, 0] - want.detach()).abs().max() <= 1e-5
    assert (grad - h.grad).norm() <= 1e-5 * h.grad.norm()


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_a_transformed_head_gives_the_same_numbers_by_autograd(softcap: float | None) -> None:
    """Soft-capped logits (Gemma 2's) are not the plain matmul the hand-written gradients assume:
    those chunks take their gradients by autograd, with the same result as one pass."""
    lm = _lm(vocab=300)
    lm.config.final_logit_softcapping = softcap
    hidden, ids, keep = _tokens(300, 19)
    weights = torch.randn(2, 1, 19, generator=torch.Generator().manual_seed(3))
    h = hidden.clone().requires_grad_(True)
    want = token_stats(lm, h, ids[keep], 0.7, True)
    ((want[0] * weights[0, 0]).sum() + (want[1] * weights[1, 0]).sum()).backward()
    stats, grad = _stats_and_grad(lm, hidden, ids, keep, 4, True, weights)
    assert (stats[:, 0] - want.detach()).abs().max() <= 1e-5
    assert (grad - h.grad).norm() <= 1e-5 * h.grad.norm()
    if softcap is not None:
        capped = token_stats(lm, hidden, ids[keep], 0.7, True)
        lm.config.final_logit_softcapping = None
        assert (capped - token_stats(lm, hidden, ids[keep], 0.7, True)).abs().max() > 1e-3


def test_a_trainable_head_is_recomputed_and_gets_its_gradients() -> None:
    """An adapter on the output head itself: chunks under activation checkpointing, whose gradients
    reach the head's own parameters as well as the hidden states."""
    lm = apply_lora(_lm(vocab=300), rank=2, alpha=4, target_modules=["lm_head"])
    head = dict(adapter_parameters(lm))
    with torch.no_grad():
        for parameter in head.values():
            parameter.normal_(std=0.1, generator=torch.Generator().manual_seed(5))
    base = lm.get_base_model()
    hidden, ids, keep = _tokens(300, 17)
    weights = torch.randn(2, 1, 17, generator=torch.Generator().manual_seed(3))
    results = []
    for chunk in (10_000, 4):  # one chunk, and five
        lm.zero_grad(set_to_none=True)
        stats, grad = _stats_and_grad(base, hidden, ids, keep, chunk, True, weights)
        results.append((stats, grad, {k: p.grad.clone() for k, p in head.items()}))
    (stats_a, grad_a, head_a), (stats_b, grad_b, head_b) = results
    assert (stats_a - stats_b).abs().max() <= 1e-5
    assert (grad_a - grad_b).norm() <= 1e-5 * grad_a.norm()
    for key in head_a:
        assert head_a[key].abs().sum() > 0
        assert (head_a[key] - head_b[key]).norm() <= 1e-5 * head_a[key].norm(), key


# A vocabulary of 2**16 tokens: a CPU chunk is then 64 tokens (16 MiB of float32 logits), well
# under the completion tokens of the batch below.
VOCAB = 2**16
CPU_CHUNK = CPU_LOGITS_CHUNK_BYTES // (4 * VOCAB)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, 250, (3, 8), generator=gen)  # bytes: the engine's tokenizer
    completion_ids = torch.randint(3, 250, (3, 70), generator=gen)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[2, 50:] = 0
    return prompt_ids, torch.ones_like(prompt_ids), completion_ids, completion_mask


def _policy() -> torch.nn.Module:
    model = apply_lora(_lm(VOCAB), rank=4, alpha=8)
    with torch.no_grad():
        for parameter in adapter_parameters(model).values():
            parameter.normal_(std=0.05, generator=torch.Generator().manual_seed(2))
    return model


def _learner_step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> None:
    prompt_ids, prompt_mask, completion_ids, completion_mask = batch
    options = LearnerOptions(
        train=TrainConfig(micro_batch_tokens=4096),
        algorithm=AlgorithmConfig(),
        spec=resolve_algorithm("grpo"),
        temperature=1.0,
        max_new_tokens=completion_ids.shape[1],
    )
    learner = Learner(model, list(adapter_parameters(model).values()), options)
    advantages = torch.tensor([[1.0], [-1.0], [0.5]]).expand(completion_ids.shape).clone()
    old = torch.zeros(completion_ids.shape)
    learner.step(TrainBatch(prompt_ids, prompt_mask, completion_ids, completion_mask, old, advantages))


@pytest.mark.parametrize("path", ["learner", "reference", "behaviour", "fast engine"])
def test_no_cpu_path_builds_logits_for_every_completion_token_at_once(path: str) -> None:
    model, batch = _policy(), _batch()
    tokens = int(batch[3].sum())
    assert tokens > 2 * CPU_CHUNK
    made = VocabWideTensors(VOCAB)
    with made:
        if path == "learner":
            _learner_step(model, batch)
        elif path == "reference":
            reference_logprobs(model, *batch, chunk_size=1024)  # the policy worker's chunk
        elif path == "behaviour":
            with torch.no_grad():
                completion_logprobs(model, *batch)  # chunk_size None: the engines' default
        else:
            FastRolloutEngine(model, byte_tokenizer()).logprobs(*batch, temperature=1.0)
    assert 0 < made.most_rows <= CPU_CHUNK
