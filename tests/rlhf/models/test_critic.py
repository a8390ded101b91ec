"""The PPO critic shares the base weights and keeps its adapter apart from the policy's."""

from __future__ import annotations

import pytest
import torch

from rlhf.models.critic import (
    CRITIC_ADAPTER,
    add_critic,
    completion_values,
    critic_parameters,
    critic_state_dict,
    load_critic_state_dict,
    policy_parameters,
    values,
)
from rlhf.models.loading import POLICY_ADAPTER, adapter_parameters, apply_lora, tiny_model_and_tokenizer
from rlhf.models.logprobs import completion_logprobs, reference_logprobs

torch.set_num_threads(2)


def _actor_critic():
    model, _ = tiny_model_and_tokenizer(initializer_range=0.2, seed=2)
    base_pointers = {p.data_ptr() for p in model.parameters()}
    base_numel = sum(p.numel() for p in model.parameters())
    model = apply_lora(model, rank=4, alpha=8)
    add_critic(model, rank=2, alpha=4)
    return model, base_pointers, base_numel


def _batch():
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, 259, (3, 6), generator=gen)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1]])
    completion_ids = torch.randint(3, 259, (3, 4), generator=gen)
    completion_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def _perturb(params) -> None:
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.3)


def test_one_copy_of_the_base_weights() -> None:
    model, base_pointers, base_numel = _actor_critic()
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert {p.data_ptr() for p in frozen} == base_pointers
    assert sum(p.numel() for p in frozen) == base_numel
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in policy_parameters(model) + critic_parameters(model)}
    assert not {id(p) for p in policy_parameters(model)} & {id(p) for p in critic_parameters(model)}
    assert model.active_adapter == POLICY_ADAPTER


def test_each_output_depends_only_on_its_own_adapter() -> None:
    model, _, _ = _actor_critic()
    batch = _batch()
    with torch.no_grad():
        logp = completion_logprobs(model, *batch)
        vals = completion_values(model, *batch)
        _perturb(critic_parameters(model))
        assert torch.equal(completion_logprobs(model, *batch), logp)
        new_vals = completion_values(model, *batch)
        assert (new_vals - vals).abs().max() > 1e-3
        _perturb(policy_parameters(model))
        assert torch.equal(completion_values(model, *batch), new_vals)
        assert (completion_logprobs(model, *batch) - logp).abs().max() > 1e-3


def test_critic_adapter_is_active_only_inside_values() -> None:
    model, _, _ = _actor_critic()
    # The policy adapter is fresh (LoRA B = 0), so the policy path equals the base model exactly,
    # while a perturbed critic adapter would change it if it leaked into that path.
    _perturb(adapter_parameters(model, CRITIC_ADAPTER).values())
    prompt_ids, prompt_mask, completion_ids, completion_mask = _batch()
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    with torch.no_grad():
        with model.disable_adapter():
            base_logits = model(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, base_logits)
        values(model, ids, mask)
        assert model.active_adapter == POLICY_ADAPTER
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, base_logits)


def test_values_shapes_and_alignment() -> None:
    model, _, _ = _actor_critic()
    prompt_ids, prompt_mask, completion_ids, completion_mask = _batch()
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    with torch.no_grad():
        full = values(model, ids, mask)
        aligned = completion_values(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    assert full.shape == ids.shape and aligned.shape == completion_ids.shape
    assert full.dtype == aligned.dtype == torch.float32
    # completion value t is the value at the position that predicts token t.
    p = prompt_ids.shape[1]
    keep = completion_mask.bool()
    assert torch.allclose(aligned[keep], full[:, p - 1 : p - 1 + completion_ids.shape[1]][keep], atol=1e-6)
    assert torch.all(aligned[~keep] == 0)


def test_gradients_reach_the_right_parameters() -> None:
    model, _, _ = _actor_critic()
    _perturb(critic_parameters(model))  # LoRA B starts at zero; give every tensor a gradient path
    _perturb(policy_parameters(model))
    batch = _batch()
    policy_opt = torch.optim.SGD(policy_parameters(model), lr=0.1)
    critic_opt = torch.optim.SGD(critic_parameters(model), lr=0.1)

    completion_values(model, *batch).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic_parameters(model))
    assert all(p.grad is None for p in policy_parameters(model))
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    critic_opt.step()
    critic_opt.zero_grad(set_to_none=True)

    # Policy forward, then a critic forward, then the policy's backward: the critic pass in between
    # must not have frozen the policy's adapter.
    logp = completion_logprobs(model, *batch)
    with torch.no_grad():
        completion_values(model, *batch)
    logp.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy_parameters(model))
    assert all(p.grad is None for p in critic_parameters(model))
    before = [p.detach().clone() for p in policy_parameters(model)]
    policy_opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, policy_parameters(model)))


def test_a_reference_pass_leaves_both_adapters_trainable() -> None:
    """peft's disable_adapter re-freezes every adapter but the active one on exit: after the first
    KL measurement the critic's adapter got no gradient for the rest of a PPO run."""
    model, _, _ = _actor_critic()
    _perturb(critic_parameters(model))
    batch = _batch()
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    reference_logprobs(model, *batch)
    assert [id(p) for p in model.parameters() if p.requires_grad] == trainable
    completion_values(model, *batch).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic_parameters(model))


def test_critic_state_round_trip() -> None:
    model, _, _ = _actor_critic()
    other, _, _ = _actor_critic()
    _perturb(critic_parameters(model))
    load_critic_state_dict(other, critic_state_dict(model))
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(completion_values(model, *batch), completion_values(other, *batch))
    state = critic_state_dict(model)
    state["value_head.weight"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"value_head\.weight"):
        load_critic_state_dict(other, state)


def test_critic_errors() -> None:
    model, _, _ = _actor_critic()
    with pytest.raises(ValueError, match="already has a 'critic' adapter"):
        add_critic(model)
    plain = apply_lora(tiny_model_and_tokenizer()[0], rank=2)
    with pytest.raises(ValueError, match=r"call rlhf\.models\.critic\.add_critic"):
        values(plain, torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="PeftModel"):
        add_critic(tiny_model_and_tokenizer()[0])
