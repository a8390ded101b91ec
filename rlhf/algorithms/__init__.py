"""RL algorithms as data: advantage estimators and policy losses are pure tensor functions, registered
by name, so a trainer looks them up from its config instead of branching on the algorithm.

    advantages, returns = compute_advantages("grpo", rewards=r, mask=m, group_ids=g, normalize_std=False)
    loss, metrics = get_policy_loss("ppo_clip")(logprobs, old_logprobs, advantages, m, clip_high=0.28)

See docs/algorithms.md for each estimator and loss, its options and its paper.
"""

# The estimator and loss modules register themselves on import; import them before anyone looks up.
from rlhf.algorithms.advantages import (
    discounted_returns,
    gae_advantages,
    generalized_advantage_estimation,
    grpo_advantages,
    outcome_to_token_rewards,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    rloo_advantages,
)
from rlhf.algorithms.groups import GroupStats, group_stats, uniform_group_mask
from rlhf.algorithms.kl import KL_KINDS, kl_penalty
from rlhf.algorithms.logits import entropy_from_logits, token_logprobs
from rlhf.algorithms.losses import dual_clip_ppo_loss, entropy_bonus, ppo_clip_loss, value_loss
from rlhf.algorithms.penalties import overlong_penalty
from rlhf.algorithms.reductions import (
    AGGREGATION_MODES,
    aggregate_loss,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)
from rlhf.algorithms.registry import (
    ADVANTAGE_ESTIMATORS,
    ALGORITHMS,
    ESTIMATOR_INPUTS,
    POLICY_LOSSES,
    AlgorithmSpec,
    UnknownAlgorithmError,
    compute_advantages,
    estimator_inputs,
    estimator_options,
    get_advantage_estimator,
    get_policy_loss,
    register_advantage_estimator,
    register_algorithm,
    register_policy_loss,
    resolve_algorithm,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATION_MODES",
    "ALGORITHMS",
    "ESTIMATOR_INPUTS",
    "KL_KINDS",
    "POLICY_LOSSES",
    "AlgorithmSpec",
    "GroupStats",
    "UnknownAlgorithmError",
    "aggregate_loss",
    "compute_advantages",
    "discounted_returns",
    "dual_clip_ppo_loss",
    "entropy_bonus",
    "entropy_from_logits",
    "estimator_inputs",
    "estimator_options",
    "gae_advantages",
    "generalized_advantage_estimation",
    "get_advantage_estimator",
    "get_policy_loss",
    "group_stats",
    "grpo_advantages",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "outcome_to_token_rewards",
    "overlong_penalty",
    "ppo_clip_loss",
    "register_advantage_estimator",
    "register_algorithm",
    "register_policy_loss",
    "reinforce_plus_plus_advantages",
    "reinforce_plus_plus_baseline_advantages",
    "resolve_algorithm",
    "rloo_advantages",
    "token_logprobs",
    "uniform_group_mask",
    "value_loss",
]
