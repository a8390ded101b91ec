"""Algorithms as data: advantage estimators and policy losses registered by name.

A trainer holds only names from its config (``algorithm.advantage_estimator: grpo``) and looks the
functions up here; adding an algorithm means writing one pure function and decorating it.

Advantage estimators are called through :func:`compute_advantages`, which hands each estimator the
batch tensors it declares (see :data:`ESTIMATOR_INPUTS`) and checks the options against its signature.
Policy losses share one signature::

    loss_fn(logprobs, old_logprobs, advantages, mask, *, aggregation="token-mean", max_len=None,
            **options) -> (loss, metrics)

An algorithm (``algorithm.name``) is an :class:`AlgorithmSpec`: an estimator, a policy loss and the
flags the rest of a run branches on, read from the estimator's own signature so they cannot disagree
with what it computes. ``register_algorithm`` beside the estimator is all a new algorithm needs.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

AdvantageEstimator = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]

ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
POLICY_LOSSES: dict[str, PolicyLoss] = {}
ALGORITHMS: dict[str, AlgorithmSpec] = {}

# The batch tensors an estimator may read, by parameter name. Anything else in its signature is an
# option the user sets from config (gamma, normalize_std, ...).
ESTIMATOR_INPUTS: dict[str, str] = {
    "rewards": "outcome rewards [B] (Scored.rewards)",
    "mask": "completion mask [B, T] (Rollouts.completion_mask)",
    "group_ids": "prompt index of each sample [B] (Rollouts.group_ids)",
    "values": "critic values of the sampled states [B, T] (needs a value head)",
    "kl": "per-token KL penalty to fold into the reward [B, T] (e.g. kl_penalty(old, ref, 'k1'))",
}

_F = TypeVar("_F", bound=Callable[..., Any])


class UnknownAlgorithmError(KeyError):
    """A name that is not in a registry; the message lists the known names and the closest one."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of the message, quotes and escapes included.
        return str(self.args[0])


def _unknown_name_error(kind: str, name: str, known: dict[str, Any]) -> UnknownAlgorithmError:
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnknownAlgorithmError(f"unknown {kind} {name!r}{hint} Known names: {names}")


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[_F], _F]:
    def decorate(fn: _F) -> _F:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__qualname__})")
        table[name] = fn
        return fn

    return decorate


def register_advantage_estimator(name: str) -> Callable[[_F], _F]:
    """Decorator: make an advantage estimator available under ``name``.

    Its parameters named in :data:`ESTIMATOR_INPUTS` receive batch tensors; every other parameter is
    an option and needs a default.
    """
    return _register(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def register_policy_loss(name: str) -> Callable[[_F], _F]:
    """Decorator: make a policy loss available under ``name``."""
    return _register(POLICY_LOSSES, "policy loss", name)


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as ``name``.

    An unknown name raises :class:`UnknownAlgorithmError` (a KeyError) listing the known names.
    """
    if name not in ADVANTAGE_ESTIMATORS:
        raise _unknown_name_error("advantage estimator", name, ADVANTAGE_ESTIMATORS)
    return ADVANTAGE_ESTIMATORS[name]


def get_policy_loss(name: str) -> PolicyLoss:
    """The policy loss registered as ``name``.

    An unknown name raises :class:`UnknownAlgorithmError` (a KeyError) listing the known names.
    """
    if name not in POLICY_LOSSES:
        raise _unknown_name_error("policy loss", name, POLICY_LOSSES)
    return POLICY_LOSSES[name]


def estimator_inputs(name: str) -> frozenset[str]:
    """The batch tensors estimator ``name`` reads, e.g. ``{"rewards", "mask", "values"}`` for GAE.

    A trainer uses this to know whether it needs a critic (``"values"``) or group ids.
    """
    parameters = inspect.signature(get_advantage_estimator(name)).parameters
    return frozenset(p for p in parameters if p in ESTIMATOR_INPUTS)


def estimator_options(name: str) -> dict[str, Any]:
    """The options of estimator ``name`` with their defaults, e.g. ``{"gamma": 1.0, "lam": 0.95}``."""
    parameters = inspect.signature(get_advantage_estimator(name)).parameters
    return {p: parameters[p].default for p in parameters if p not in ESTIMATOR_INPUTS}


def compute_advantages(
    name: str,
    *,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    kl: torch.Tensor | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run estimator ``name`` on a batch: ``(advantages [B, T], returns [B, T] or None)``.

    Pass every batch tensor you have; the estimator receives the ones it declares. A tensor it needs
    but did not get, a ``kl`` it cannot use, or an option it does not have raises a ValueError that
    says what to change.
    """
    estimator = get_advantage_estimator(name)
    parameters = inspect.signature(estimator).parameters
    available = {"rewards": rewards, "mask": mask, "group_ids": group_ids, "values": values, "kl": kl}
    call: dict[str, Any] = {}
    for input_name, tensor in available.items():
        if input_name in parameters:
            required = parameters[input_name].default is inspect.Parameter.empty
            if tensor is None and required:
                raise ValueError(
                    f"advantage estimator {name!r} needs `{input_name}`: {ESTIMATOR_INPUTS[input_name]}"
                )
            if tensor is not None:
                call[input_name] = tensor
        elif input_name == "kl" and tensor is not None:
            raise ValueError(
                f"advantage estimator {name!r} does not fold a KL penalty into the reward; "
                "drop `kl` here and add the KL term to the loss instead (kl_penalty + aggregate_loss)"
            )
    known_options = estimator_options(name)
    for option in options:
        if option not in known_options:
            close = difflib.get_close_matches(option, list(known_options), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"advantage estimator {name!r} has no option {option!r}{hint} "
                f"Its options: {sorted(known_options)}"
            )
    return estimator(**call, **options)


@dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm as data: what computes its advantages, what turns them into a loss, and the flags
    a run needs to know before it has a batch. Names only, so it pickles into Ray workers."""

    name: str
    #: registered advantage estimator
    estimator: str
    #: registered policy loss
    policy_loss: str
    #: the estimator reads critic values: the run adds a critic adapter and value head
    needs_critic: bool
    #: the estimator folds the KL penalty into the per-token reward (the others add it to the loss)
    kl_in_reward: bool
    #: the estimator's baseline compares samples of the same prompt (needs ``rollout.n_samples >= 2``)
    group_baseline: bool


def register_algorithm(
    name: str, *, estimator: str | None = None, policy_loss: str = "ppo_clip"
) -> AlgorithmSpec:
    """Make algorithm ``name`` selectable as ``algorithm.name``: estimator ``estimator`` (default: the
    estimator registered under ``name``) with ``policy_loss``. Its flags come from the estimator's
    signature (``values``: a critic; ``kl``: KL in the reward; ``group_ids``: a group baseline)."""
    estimator = estimator or name
    inputs = estimator_inputs(estimator)
    spec = AlgorithmSpec(
        name=name,
        estimator=estimator,
        policy_loss=policy_loss,
        needs_critic="values" in inputs,
        kl_in_reward="kl" in inputs,
        group_baseline="group_ids" in inputs,
    )
    if name in ALGORITHMS and ALGORITHMS[name] != spec:
        raise ValueError(f"algorithm {name!r} is already registered ({ALGORITHMS[name]})")
    ALGORITHMS[name] = spec
    return spec


def resolve_algorithm(name: str, policy_loss: str | None = None) -> AlgorithmSpec:
    """The spec of algorithm ``name``, with its policy loss replaced by ``policy_loss`` when given.

    An unknown algorithm or loss raises :class:`UnknownAlgorithmError` (a KeyError) listing the known
    names.
    """
    if name not in ALGORITHMS:
        raise _unknown_name_error("algorithm", name, ALGORITHMS)
    spec = ALGORITHMS[name]
    if policy_loss is not None:
        spec = dataclasses.replace(spec, policy_loss=policy_loss)
    get_policy_loss(spec.policy_loss)
    return spec
