"""Synthetic efficiency tasks: parameterised problems with a fast and a slow (naive) algorithm.

    from rewards.synthetic import synthetic_tasks
    train = synthetic_tasks("train")                      # 25 training families x 200 tasks
    heldout = synthetic_tasks("heldout", n=100)           # unseen names, phrasings, variants/constants
    unseen = synthetic_tasks("heldout_families", n=100)   # 9 whole families no other split shows

Each task's references hold the fast solution only; the naive one is ``metadata["slow_reference"]``
(for tests and benchmarks, never for the model). Function tests are small correctness cases (the
first ``n_base_tests``) followed by stress inputs on which the slow solution costs at least 5x the
fast one (checked by ``scripts/check_synthetic_costs.py``).

``optimisation_tasks`` gives the same tasks with the slow solution shown in the prompt and a request
to make it faster (dataset ``synthetic_optimise``): code optimisation rather than code writing.
"""

from rewards.synthetic.family import Family, Pool, Variant
from rewards.synthetic.generate import (
    DEFAULT_PER_FAMILY,
    FAMILIES,
    HELDOUT_FAMILIES,
    family_names,
    register_family,
    synthetic_tasks,
)
from rewards.synthetic.optimisation import optimisation_task, optimisation_tasks

__all__ = [
    "DEFAULT_PER_FAMILY",
    "FAMILIES",
    "HELDOUT_FAMILIES",
    "Family",
    "Pool",
    "Variant",
    "family_names",
    "optimisation_task",
    "optimisation_tasks",
    "register_family",
    "synthetic_tasks",
]
