"""One prompt pass per GRPO group: the same log-probs, entropies and gradients as the full pass."""

from __future__ import annotations

import pytest
import torch

from rlhf.algorithms import resolve_algorithm
from rlhf.config import AlgorithmConfig, TrainConfig
from rlhf.learner.updates import Learner, LearnerOptions, pack_micro_batches, pack_prompt_groups
from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs_and_entropy, prompt_groups
from rlhf.models.policy_model import enable_activation_checkpointing
from rlhf.types import TrainBatch

torch.set_num_threads(2)
# Two distinct prompts (the second left-padded by 3), the first sampled twice, the second three
# times, and a prompt of its own: rows 0-1, 2-4 and 5 share a prompt pass.
GROUP_OF_ROW = [0, 0, 1, 1, 1, 2]
PROMPT_LEN, COMPLETION_LEN = 9, 6


def _policy(architecture: str = "llama", seed: int = 0) -> torch.nn.Module:
    model, _ = tiny_model_and_tokenizer(architecture=architecture, seed=seed)
    model = apply_lora(model, rank=4, alpha=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        for parameter in adapter_parameters(model).values():
            torch.nn.init.normal_(parameter, std=0.05)  # B != 0: the adapter takes part
    return model


def _rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    distinct = torch.randint(3, 250, (3, PROMPT_LEN), generator=gen)
    distinct_mask = torch.ones(3, PROMPT_LEN, dtype=torch.long)
    distinct_mask[1, :3] = 0
    distinct_mask[2, :5] = 0
    distinct[~distinct_mask.bool()] = 0  # pad id
    index = torch.tensor(GROUP_OF_ROW)
    completion_ids = torch.randint(3, 250, (len(GROUP_OF_ROW), COMPLETION_LEN), generator=gen)
    completion_mask = torch.ones(len(GROUP_OF_ROW), COMPLETION_LEN, dtype=torch.long)
    completion_mask[1, 4:] = 0
    completion_mask[3, 2:] = 0
    return distinct[index], distinct_mask[index], completion_ids, completion_mask


def _stats_and_grads(model: torch.nn.Module, share: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    model.train()
    prompt_ids, prompt_mask, completion_ids, completion_mask = _rows()
    logprobs, entropy = completion_logprobs_and_entropy(
        model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=0.7, share_prompts=share
    )
    (logprobs.sum() + 0.1 * entropy.sum()).backward()
    grads = {k: p.grad.clone() for k, p in adapter_parameters(model).items()}
    model.eval()
    return logprobs.detach(), entropy.detach(), grads


def test_prompt_groups_finds_equal_prompts_under_left_padding() -> None:
    prompt_ids, prompt_mask, _, _ = _rows()
    first, inverse = prompt_groups(prompt_ids, prompt_mask)
    assert sorted(first.tolist()) == [0, 2, 5]
    assert [first[g].item() for g in inverse.tolist()] == [0, 0, 2, 2, 2, 5]
    # the same tokens behind a different amount of padding are a different prompt
    unpadded = prompt_mask.clone()
    unpadded[3] = 1
    assert len(prompt_groups(prompt_ids, unpadded)[0]) == 4


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_shared_prompt_pass_equals_the_full_pass(architecture: str) -> None:
    model = _policy(architecture)
    full = _stats_and_grads(model, share=False)
    shared = _stats_and_grads(model, share=True)
    mask = _rows()[3].bool()
    assert float((full[0] - shared[0]).abs().max()) <= 1e-5
    assert float((full[1] - shared[1]).abs().max()) <= 1e-5
    assert bool((shared[0][~mask] == 0).all())  # padding stays exactly zero
    for key, grad in full[2].items():
        assert float((grad - shared[2][key]).norm()) <= 1e-5 * float(grad.norm()), key


def test_under_activation_checkpointing_the_full_pass_runs() -> None:
    model = _policy()
    plain = _stats_and_grads(model, share=False)
    enable_activation_checkpointing(model)
    checkpointed = _stats_and_grads(model, share=True)
    assert float((plain[0] - checkpointed[0]).abs().max()) <= 1e-5
    for key, grad in plain[2].items():
        assert float((grad - checkpointed[2][key]).norm()) <= 1e-5 * float(grad.norm()), key


def test_packing_keeps_a_group_together() -> None:
    prompts = [10, 8, 10, 8, 10, 8]
    completions = [20, 12, 5, 13, 6, 14]
    groups = [0, 1, 0, 1, 0, 1]
    # by padded length alone, group 0's long row shares a micro-batch with group 1's rows
    lengths = [p + c for p, c in zip(prompts, completions)]
    assert pack_micro_batches(lengths, budget=70) == [[0, 5], [3, 1, 4], [2]]
    # a shared pass computes each prompt once: group 0 is 10 + 3 x 20 = 70 tokens
    # a whole group fits where its padded rows (3 x 30 = 90) would not
    assert pack_prompt_groups(prompts, completions, groups, budget=70) == [[0, 4, 2], [5, 3, 1]]
    # two groups share a micro-batch only when their padded rows fit: 6 x 30 = 180 tokens
    assert pack_prompt_groups(prompts, completions, groups, budget=179) == [[0, 4, 2], [5, 3, 1]]
    assert pack_prompt_groups(prompts, completions, groups, budget=180) == [[0, 4, 2, 5, 3, 1]]


def test_packing_splits_only_a_group_larger_than_the_budget() -> None:
    prompts = [10] * 5 + [4] * 2
    completions = [10, 9, 8, 7, 6, 3, 2]
    groups = [0] * 5 + [1] * 2
    # group 0 alone is 10 + 5 x 10 = 60 tokens: split into rows that fit 40 (10 + 3 x 10, then
    # 10 + 2 x 7); group 1 beside the last part would pad 4 rows to 17 tokens: 68 > 40
    assert pack_prompt_groups(prompts, completions, groups, budget=40) == [[0, 1, 2], [3, 4], [5, 6]]
    # every row over the budget on its own still gets a micro-batch
    assert pack_prompt_groups([50, 50], [5, 5], [0, 1], budget=10) == [[0], [1]]


def _train_batch() -> TrainBatch:
    prompt_ids, prompt_mask, completion_ids, completion_mask = _rows(seed=1)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.25, -0.25, 0.0]).unsqueeze(1)
    return TrainBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        old_logprobs=torch.zeros(completion_ids.shape),
        advantages=advantages.expand(completion_ids.shape).clone(),
    )


def test_learner_gradients_agree_with_and_without_sharing() -> None:
    gradients = []
    for share in (False, True):
        model = _policy(seed=4)
        params = list(adapter_parameters(model).values())
        options = LearnerOptions(
            train=TrainConfig(lr=1e-2, share_prompts=share, micro_batch_tokens=40),
            algorithm=AlgorithmConfig(),
            temperature=1.0,
            max_new_tokens=COMPLETION_LEN,
            spec=resolve_algorithm("grpo"),
            on_policy=True,
        )
        metrics = Learner(model, params, options).step(_train_batch())
        assert metrics["skipped_nonfinite_updates"] == 0.0
        # Compared before Adam: its first step is lr * sign(gradient), which turns rounding-level
        # differences of near-zero gradients into full-size steps.
        gradients.append(torch.cat([p.grad.reshape(-1) for p in params]))
    full, shared = gradients
    assert float(full.norm()) > 0
    assert float((full - shared).norm()) <= 1e-5 * float(full.norm())


def test_sharing_is_on_by_default_on_a_cpu_only() -> None:
    model = _policy()
    params = list(adapter_parameters(model).values())

    def learner(share: bool | None) -> Learner:
        options = LearnerOptions(
            train=TrainConfig(share_prompts=share),
            algorithm=AlgorithmConfig(),
            temperature=1.0,
            max_new_tokens=COMPLETION_LEN,
            spec=resolve_algorithm("grpo"),
        )
        return Learner(model, params, options)

    assert learner(None).share_prompts and not learner(False).share_prompts
