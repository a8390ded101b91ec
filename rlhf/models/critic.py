"""The PPO critic, sharing the policy's frozen base weights.

The critic is a second LoRA adapter, ``"critic"``, on the policy's PeftModel, plus a value head (one
linear layer on the final hidden state) stored on the same PeftModel as ``value_head``. A value pass
switches the active adapter to ``"critic"`` and back, so the policy path never sees the critic's
adapter and the critic never sees the policy's; the base weights exist once.

Train the two with separate optimizers or param groups: :func:`policy_parameters` and
:func:`critic_parameters` split them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from peft import PeftModel
from torch import nn

from rlhf.models.loading import (
    POLICY_ADAPTER,
    adapter_parameters,
    adapter_state_dict,
    load_adapter_state_dict,
    lora_config,
    use_adapter,
)
from rlhf.models.logprobs import causal_lm_of, completion_hidden_states, position_ids_from_mask

CRITIC_ADAPTER = "critic"
VALUE_HEAD = "value_head"


def add_critic(
    model: PeftModel,
    *,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    use_rslora: bool = False,
    seed: int = 0,
) -> None:
    """Add the ``"critic"`` LoRA adapter and a value head to the policy's PeftModel, in place.

    Both are trainable; the active adapter stays the policy's. The head is a float32
    ``Linear(hidden, 1)`` with small weights (std 0.1/sqrt(hidden)) and zero bias, so the first
    values are near zero yet the critic adapter receives gradients from the first step.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"add_critic needs the policy's PeftModel (see apply_lora), got {type(model).__name__}"
        )
    if CRITIC_ADAPTER in model.peft_config:
        raise ValueError(f"model already has a {CRITIC_ADAPTER!r} adapter")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.add_adapter(CRITIC_ADAPTER, lora_config(rank, alpha, dropout, target_modules, use_rslora))
    # add_adapter re-applies peft's "only the active adapter trains" rule; keep the policy's flags.
    for param, flag in flags:
        param.requires_grad_(flag)
    for param in adapter_parameters(model, CRITIC_ADAPTER).values():
        param.requires_grad_(True)
    lm = causal_lm_of(model)
    hidden = lm.config.get_text_config().hidden_size
    device = lm.get_output_embeddings().weight.device
    head = nn.Linear(hidden, 1, device=device, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        head.weight.normal_(std=0.1 / hidden**0.5)
        head.bias.zero_()
    model.add_module(VALUE_HEAD, head)


def _value_head(model: PeftModel) -> nn.Linear:
    head = getattr(model, VALUE_HEAD, None) if isinstance(model, PeftModel) else None
    if not isinstance(head, nn.Linear) or CRITIC_ADAPTER not in model.peft_config:
        raise ValueError("model has no critic; call rlhf.models.critic.add_critic(model, ...) first")
    return head


def values(model: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] float32 value estimates at every position of a (left-padded) sequence batch.

    Runs with the critic adapter active and restores the previously active adapter after.
    """
    head = _value_head(model)
    with use_adapter(model, CRITIC_ADAPTER):
        out = causal_lm_of(model).get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
    return head(out.last_hidden_state.float()).squeeze(-1)


def completion_values(
    model: PeftModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """[B, T] values aligned with completion tokens: entry ``t`` is V(state before token ``t``).

    That is the hidden state that also predicts token ``t``, so values line up with
    :func:`rlhf.models.logprobs.completion_logprobs` for GAE. 0 where ``completion_mask`` is 0.
    """
    head = _value_head(model)
    with use_adapter(model, CRITIC_ADAPTER):
        hidden = completion_hidden_states(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    return head(hidden.float()).squeeze(-1) * completion_mask.to(torch.float32)


def policy_parameters(model: PeftModel) -> list[nn.Parameter]:
    """The policy adapter's trainable tensors (for the policy optimizer or param group)."""
    return list(adapter_parameters(model, POLICY_ADAPTER).values())


def critic_parameters(model: PeftModel) -> list[nn.Parameter]:
    """The critic adapter's tensors plus the value head's (for the critic optimizer or param group)."""
    return [*adapter_parameters(model, CRITIC_ADAPTER).values(), *_value_head(model).parameters()]


def critic_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """Detached copies of the critic's tensors (adapter keys as peft saves them, plus ``value_head.*``)."""
    state = adapter_state_dict(model, CRITIC_ADAPTER)
    for key, tensor in _value_head(model).state_dict().items():
        state[f"{VALUE_HEAD}.{key}"] = tensor.detach().clone()
    return state


def load_critic_state_dict(model: PeftModel, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`critic_state_dict` back into the model's critic, in place (keys must match)."""
    head = _value_head(model)
    prefix = f"{VALUE_HEAD}."
    head_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    adapter_state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    want = head.state_dict()
    if set(head_state) != set(want) or any(head_state[k].shape != want[k].shape for k in want):
        shapes = {k: tuple(v.shape) for k, v in head_state.items()}
        raise ValueError(
            f"critic state needs {prefix}weight {tuple(want['weight'].shape)} and {prefix}bias; got {shapes}"
        )
    load_adapter_state_dict(model, adapter_state, CRITIC_ADAPTER)
    head.load_state_dict(head_state)
