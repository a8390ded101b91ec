"""`RewardSettings`: how completions are scored, as plain typed data.

The field names and meanings are those of the ``reward`` config section (``reward.efficiency_mode`` is
``RewardSettings.efficiency_mode``); the trainer converts its config with
``RewardSettings.from_mapping(dataclasses.asdict(config.reward))``. This module stands alone so that
scoring code, the HTTP service and Ray workers need nothing from the training stack.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sandbox.config import SandboxConfig

CORRECTNESS_MODES = ("binary", "fraction")
EFFICIENCY_MODES = ("reference", "group", "both", "none")
COST_MEASURES = ("cpu", "instructions", "python_events")

# Keys that only change how executed results are turned into numbers: a caller may vary them per
# request without re-running anything. The others change how code is executed.
SHAPING_KEYS = (
    "correctness",
    "efficiency_weight",
    "efficiency_mode",
    "speedup_clip",
    "timeout_penalty",
    "syntax_error_penalty",
    "missing_entry_point_penalty",
    "format_weight",
)


@dataclass(frozen=True)
class RewardSettings:
    """Reward options (see docs/rewards.md for the formulas).

    correctness: ``binary`` (1 when every test passes, else 0) or ``fraction`` (tests passed / total).
    efficiency_weight: weight of the efficiency score; 0 trains for correctness only.
    efficiency_mode: baseline a correct completion's cost is compared with: ``reference`` (the task's
        reference solution), ``group`` (the median cost of the correct completions of the same prompt),
        ``both`` (the mean of the scores that are available) or ``none``.
    speedup_clip: speedups are log-scaled and clipped to [1/speedup_clip, speedup_clip]; must be > 1.
    cost_measure: ``cpu`` (CPU seconds, the default), ``instructions`` (hardware counters) or
        ``python_events`` (deterministic count of executed Python lines).
    repeats: measurements per completion (and per reference); the median counts.
    timeout_penalty / syntax_error_penalty / missing_entry_point_penalty: added (<= 0) on that failure.
    format_weight: weight of the format score (a code fence was found, the entry point is defined).
    workers: sandbox processes (None: one per CPU core).
    timeout_s: wall-clock limit of one completion's run over all its tests.
    memory_mb: memory limit of one sandboxed run.
    service_url: score through a running reward service instead of local sandbox workers.
    """

    correctness: Literal["binary", "fraction"] = "binary"
    efficiency_weight: float = 0.5
    efficiency_mode: Literal["reference", "group", "both", "none"] = "reference"
    speedup_clip: float = 4.0
    cost_measure: Literal["cpu", "instructions", "python_events"] = "cpu"
    repeats: int = 1
    timeout_penalty: float = -0.5
    syntax_error_penalty: float = -1.0
    missing_entry_point_penalty: float = -1.0
    format_weight: float = 0.0
    workers: int | None = None
    timeout_s: float = 5.0
    memory_mb: int = 1024
    service_url: str | None = None

    def __post_init__(self) -> None:
        _one_of("correctness", self.correctness, CORRECTNESS_MODES)
        _one_of("efficiency_mode", self.efficiency_mode, EFFICIENCY_MODES)
        _one_of("cost_measure", self.cost_measure, COST_MEASURES)
        for name in (
            "efficiency_weight",
            "speedup_clip",
            "timeout_penalty",
            "syntax_error_penalty",
            "missing_entry_point_penalty",
            "format_weight",
            "timeout_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"reward setting `{name}` must be a finite number, got {value!r}")
        for name in ("efficiency_weight", "format_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"reward setting `{name}` must be >= 0, got {getattr(self, name)}")
        if not self.speedup_clip > 1:
            raise ValueError(f"reward setting `speedup_clip` must be > 1, got {self.speedup_clip}")
        for name in ("timeout_penalty", "syntax_error_penalty", "missing_entry_point_penalty"):
            if getattr(self, name) > 0:
                raise ValueError(
                    f"reward setting `{name}` must be <= 0 (it is added on failure), "
                    f"got {getattr(self, name)}"
                )
        for name in ("repeats", "memory_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"reward setting `{name}` must be an integer >= 1, got {value!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ValueError(
                f"reward setting `workers` must be an integer >= 1 or None, got {self.workers!r}"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"reward setting `timeout_s` must be > 0, got {self.timeout_s}")
        if self.service_url is not None and not re.match(r"https?://\S+$", self.service_url):
            raise ValueError(
                f"reward setting `service_url` must be an http:// or https:// URL, got {self.service_url!r}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RewardSettings:
        """Build settings from a mapping of reward keys (e.g. ``asdict`` of the ``reward`` config section).

        Unknown keys are an error that names the closest known key.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"unknown reward setting `{key}`{_did_you_mean(key, known)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> RewardSettings:
        """A copy with ``changes`` applied (validated like a new instance)."""
        return RewardSettings.from_mapping({**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_reference(self) -> bool:
        """Whether scoring needs each task's reference cost."""
        return self.efficiency_weight > 0 and self.efficiency_mode in ("reference", "both")

    def sandbox_config(self, **overrides: Any) -> SandboxConfig:
        """A :class:`SandboxConfig` that measures what these settings need (cost counters, limits)."""
        values: dict[str, Any] = {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "repeats": self.repeats,
            "cost_aggregate": "median",
            "count_python_events": self.cost_measure == "python_events",
            "count_instructions": self.cost_measure == "instructions",
        }
        if self.workers is not None:
            values["workers"] = self.workers
        values.update(overrides)
        return SandboxConfig(**values)


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"reward setting `{name}` must be one of {', '.join(choices)}; got {value!r}")


def _did_you_mean(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean `{close[0]}`?" if close else f"; known settings: {', '.join(sorted(known))}"
