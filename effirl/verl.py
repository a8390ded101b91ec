"""effirl's reward for verl's custom reward hook (docs/rewards.md)::

    custom_reward_function:
      path: <this file: python -c "import effirl.verl as m; print(m.__file__)">
      name: compute_score

verl loads this file by path; it only re-exports :func:`rewards.verl.compute_score`.
"""

from rewards.verl import compute_score

__all__ = ["compute_score"]
