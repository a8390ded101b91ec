"""`RewardHook`: effirl's reward inside another trainer that names a function (TRL's
``--reward_funcs``, verl's ``custom_reward_function``) and so cannot be handed a scorer.

Such a function is configured by the environment or a small YAML file, read once per process::

    EFFIRL_REWARD_CONFIG=effirl_reward.yaml     # optional; the file:

        dataset: synthetic_optimise   # where task ids are looked up (left out: rows carry their tests)
        split: train                  # optional
        reward:                       # RewardSettings keys (docs/config.md, `reward`)
          efficiency_weight: 1.0
          workers: 4
          service_url: null           # set: score through `effirl reward serve` instead

    EFFIRL_REWARD_DATASET=humanevalplus        # each key also as a variable, which wins over the file:
    EFFIRL_REWARD_EFFICIENCY_WEIGHT=1.0        # EFFIRL_REWARD_<KEY> for any RewardSettings key
    EFFIRL_REWARD_TOKEN=...                    # the service's bearer token, if it has one

The scorer is built on first use: local sandbox workers (closed when the process exits) or a
:class:`rewards.client.RemoteScorer` when ``service_url`` is set. Tasks of a dataset are loaded once.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.settings import SHAPING_KEYS, RewardSettings
from rewards.shaping import Reward
from rewards.tasks import Task
from rewards.user_error import UserError

CONFIG_ENV = "EFFIRL_REWARD_CONFIG"
ENV_PREFIX = "EFFIRL_REWARD_"
TOKEN_ENV = "EFFIRL_REWARD_TOKEN"
TOP_LEVEL_KEYS = ("dataset", "split", "reward")


@dataclass(frozen=True)
class HookConfig:
    """What a reward hook scores with: the dataset task ids refer to, and the reward settings."""

    dataset: str | None = None
    split: str | None = None
    reward: RewardSettings = field(default_factory=RewardSettings)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> HookConfig:
        """The config of ``$EFFIRL_REWARD_CONFIG`` (if set) with ``EFFIRL_REWARD_<KEY>`` variables
        applied over it. Raises UserError naming the file or variable at fault."""
        import yaml

        environ = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        where = "the environment"
        path = environ.get(CONFIG_ENV)
        if path:
            where = f"{CONFIG_ENV}={path}"
            try:
                loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise UserError(f"{where}: cannot read it: {exc}") from None
            if not isinstance(loaded, dict) or not set(loaded) <= set(TOP_LEVEL_KEYS):
                raise UserError(f"{where}: expected a mapping with the keys {', '.join(TOP_LEVEL_KEYS)}")
            data = dict(loaded)
        reward = dict(data.pop("reward", None) or {})
        known = {f.name for f in dataclasses.fields(RewardSettings)}
        for name, value in environ.items():
            key = name[len(ENV_PREFIX) :].lower() if name.startswith(ENV_PREFIX) else ""
            if key in ("dataset", "split"):
                data[key] = value
            elif key in known:
                reward[key] = yaml.safe_load(value)
        try:
            settings = RewardSettings.from_mapping(reward)
            return cls(dataset=data.get("dataset"), split=data.get("split"), reward=settings)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: {exc}") from None


class RewardHook:
    """A scorer and the tasks it scores, built from a :class:`HookConfig` on first use."""

    def __init__(self, config: HookConfig | None = None) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._scorer: Any = None
        self._sandbox: Any = None
        self._tasks: dict[tuple[str, str | None], dict[str, Task]] = {}

    @property
    def config(self) -> HookConfig:
        if self._config is None:
            self._config = HookConfig.from_environment()
        return self._config

    def tasks(self, dataset: str | None = None, split: str | None = None) -> dict[str, Task]:
        """Task id -> Task of ``dataset`` (default: the configured one), loaded once."""
        config = self.config
        name = dataset or config.dataset
        if name is None:
            raise UserError(
                f"a row names its task by id, but no dataset is configured: set {ENV_PREFIX}DATASET "
                f"(or `dataset:` in ${CONFIG_ENV}), or give rows their own tests"
            )
        key = (name, split if dataset else config.split)
        with self._lock:
            if key not in self._tasks:
                from rewards.datasets import load_tasks

                self._tasks[key] = {task.id: task for task in load_tasks(key[0], split=key[1])}
            return self._tasks[key]

    def score(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
        *,
        shaping: Mapping[str, Any] | None = None,
    ) -> list[Reward]:
        """Rewards for ``completions`` (raw model text) answering ``tasks``; ``shaping`` changes
        shaping keys (``rewards.settings.SHAPING_KEYS``) for this call."""
        shaping = dict(shaping or {})
        unknown = sorted(set(shaping) - set(SHAPING_KEYS))
        if unknown:
            raise UserError(
                f"per-call reward settings may only change {', '.join(SHAPING_KEYS)}; "
                f"got {', '.join(unknown)}"
            )
        settings = self.config.reward
        if settings.service_url:
            from rewards.client import RemoteScorer, RewardClient

            dataset = self.config.dataset
            if dataset is None or any(self.tasks().get(t.id) is not t for t in tasks):
                raise UserError(
                    "scoring through reward.service_url looks tasks up by id in the configured dataset; "
                    "rows that carry their own tests are scored locally (leave service_url out)"
                )
            with self._lock:
                if self._scorer is None:
                    self._scorer = RewardClient(settings.service_url, token=os.environ.get(TOKEN_ENV))
            remote = RemoteScorer(
                self._scorer, dataset, split=self.config.split, settings=settings.replace(**shaping)
            )
            return remote.score(tasks, completions, group_ids)
        return self._local_scorer().score(tasks, completions, group_ids, shaping=shaping or None)

    def _local_scorer(self) -> Any:
        with self._lock:
            if self._scorer is None:
                from rewards.scorer import RewardScorer
                from sandbox import Sandbox

                settings = self.config.reward
                self._sandbox = Sandbox(settings.sandbox_config())
                self._scorer = RewardScorer(self._sandbox, settings)
                atexit.register(self.close)
            return self._scorer

    def close(self) -> None:
        """Stop the sandbox workers (if any were started); the next call starts them again."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
            self._sandbox = self._scorer = None


_shared: RewardHook | None = None
_shared_lock = threading.Lock()


def shared_hook() -> RewardHook:
    """The process's hook, configured from the environment (see the module docstring)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RewardHook()
        return _shared


def reset_shared_hook() -> None:
    """Close the process's hook; the next :func:`shared_hook` reads the environment again."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
        _shared = None
