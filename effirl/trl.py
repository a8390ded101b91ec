"""effirl's reward for TRL: ``trl grpo --reward_funcs effirl.trl.efficiency_reward`` (docs/rewards.md).

See :mod:`rewards.trl` (``TrlReward``, ``trl_rows``) and :mod:`rewards.hook` (configuration).
"""

from rewards.trl import TrlReward, efficiency_reward, trl_rows

__all__ = ["TrlReward", "efficiency_reward", "trl_rows"]
