"""Per-token KL estimators between the policy and a reference policy, from sampled tokens only.

With samples drawn from the policy ``p`` and the log-ratio ``log r = log q(x) - log p(x)`` against the
reference ``q``, three estimators of KL(p || q) (Schulman, "Approximating KL Divergence", 2020):

- ``"k1"``: ``-log r``. Unbiased, high variance, can be negative per token.
- ``"k2"``: ``(log r)^2 / 2``. Biased, low variance, never negative.
- ``"k3"``: ``(r - 1) - log r``. Unbiased and never negative, with low variance: the usual choice for
  a KL loss term (GRPO).
"""

from __future__ import annotations

import torch

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3")

# exp() of a log-ratio beyond this overflows float16/bfloat16 and is meaningless anyway.
_MAX_LOG_RATIO = 20.0


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3", clamp: float | None = 10.0
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) at the sampled tokens, same shape as the inputs.

    Args:
        logprobs: log-probs of the sampled tokens under the policy (the one that sampled them, or the
            one being trained).
        ref_logprobs: log-probs of the same tokens under the reference policy.
        kind: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring).
        clamp: for ``"k3"``, cap each token's value so one token the reference finds very unlikely
            cannot dominate the loss (its gradient is cut there). None disables the cap.

    Aggregate with :func:`rlhf.algorithms.reductions.aggregate_loss`; padded tokens are not zeroed here.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} must have "
            "the same shape (log-probs of the same sampled tokens)"
        )
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        log_ratio = log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        # Rounding can make (r - 1) - log r a hair below 0 for r near 1; the true value is >= 0.
        estimate = (torch.exp(log_ratio) - 1.0 - log_ratio).clamp(min=0.0)
        return estimate if clamp is None else estimate.clamp(max=clamp)
    raise ValueError(f"unknown KL estimator kind {kind!r}; choose one of {list(KL_KINDS)}")
