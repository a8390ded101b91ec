"""Merged-weight sync: the same weights peft's merge gives, without touching the learner's model."""

from __future__ import annotations

import torch

from rlhf.distributed.weight_sync import load_merged_weights, merged_weights
from rlhf.models.loading import adapter_parameters, apply_lora, tiny_model_and_tokenizer

torch.set_num_threads(2)


def _policy(dtype: torch.dtype):
    model, _ = tiny_model_and_tokenizer(dtype=dtype, seed=0)
    model = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.normal_(std=0.1)
    return model


def test_merged_weights_leave_a_bf16_model_untouched_and_equal_peft_merge() -> None:
    model = _policy(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = [merged_weights(model) for _ in range(3)]
    # peft's merge followed by unmerge would have moved every adapted bf16 weight by rounding.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.merge_adapter()
    peft_merged = {
        name.removeprefix("base_model.model.") + ".weight": module.base_layer.weight
        for name, module in model.named_modules()
        if hasattr(module, "base_layer")
    }
    assert weights[0].keys() == peft_merged.keys() and len(peft_merged) == 14
    assert all(torch.equal(weights[0][k], peft_merged[k].cpu()) for k in peft_merged)
    assert all(torch.equal(w[k], weights[0][k]) for w in weights[1:] for k in w)


def test_merged_weights_make_a_plain_model_compute_the_policy() -> None:
    model = _policy(torch.float32)
    plain, _ = tiny_model_and_tokenizer(seed=0)
    probe = torch.arange(3, 20)[None]
    with torch.no_grad():
        assert not torch.allclose(plain(input_ids=probe).logits, model(input_ids=probe).logits, atol=1e-4)
        load_merged_weights(plain, merged_weights(model))
        assert torch.allclose(plain(input_ids=probe).logits, model(input_ids=probe).logits, atol=1e-5)
