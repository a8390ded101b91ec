"""Typed configuration of an effirl run: sections, recipe loading with overrides, and YAML dumps.

    from rlhf.config import load_config
    config = load_config("quickstart", ["rollout.n_samples=8"])  # a built-in recipe, or a file
    config.rollout.n_samples  # 8

Keys match names in code: ``rollout.n_samples`` is ``RolloutConfig.n_samples``. The reference of
every key is docs/config.md, generated from these dataclasses by scripts/gen_config_docs.py.
"""

from rlhf.config.experiment import ExperimentConfig
from rlhf.config.learning import AlgorithmConfig, PlacementConfig, TrainConfig, WarmStartConfig
from rlhf.config.loading import (
    config_from_dict,
    config_to_dict,
    dump_config,
    known_keys,
    load_config,
    parse_override,
)
from rlhf.config.recipes import builtin_recipes, resolve_recipe
from rlhf.config.schema import ConfigError
from rlhf.config.sections import (
    BUILTIN_PREFIX,
    TINY_PREFIX,
    DataConfig,
    LoraConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
)

__all__ = [
    "BUILTIN_PREFIX",
    "TINY_PREFIX",
    "AlgorithmConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LoraConfig",
    "ModelConfig",
    "PlacementConfig",
    "RewardConfig",
    "RolloutConfig",
    "TrainConfig",
    "WarmStartConfig",
    "builtin_recipes",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "known_keys",
    "load_config",
    "parse_override",
    "resolve_recipe",
]
