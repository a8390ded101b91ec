"""`RewardSettings`: how completions are scored, as plain typed data; the one definition of them.

The trainer's ``reward`` config section is this class (``rlhf.config.RewardConfig`` subclasses it and
adds only the config machinery, so the keys, defaults and help texts of docs/config.md come from the
fields below), the reward service is started with it (``effirl reward serve`` has one flag per field),
and a client sends it with every ``/v1/score`` request. This module stands alone so that scoring code,
the HTTP service and Ray workers need nothing from the training stack.

The keys fall into three groups:

- ``SHAPING_KEYS`` only change how executed results become numbers: a scorer or service applies
  them per call without running anything again.
- ``EXECUTION_KEYS`` change how code runs and so what is measured: a service honours them per
  request where it can run that way and refuses the request where it cannot, never substituting
  its own values.
- ``PLACEMENT_KEYS`` say where and how the caller's own sandbox runs (its processes, their isolation
  level, or a service's URL instead); they change no reward and never travel to a service: a client
  cannot ask a service to weaken its isolation (``effirl reward serve --isolation`` sets it).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sandbox.config import ISOLATION_LEVELS, STRONG_LEVELS, SandboxConfig, weak_isolation_warning

CORRECTNESS_MODES = ("binary", "fraction")
EFFICIENCY_MODES = ("reference", "group", "both", "none")
COST_MEASURES = ("cpu", "instructions", "python_events")
# Measures read from outside the candidate's process (the kernel's CPU clock, a perf counter the
# monitor attaches), which the candidate cannot forge. `python_events` is counted by a tracer inside
# the candidate's own interpreter: `sys.settrace(None)` stops it, threads escape it.
TRUSTED_COST_MEASURES = ("cpu", "instructions")
UNTRUSTED_COST_WARNING = (
    "cost_measure python_events is not trusted: it is counted inside the candidate's process, which "
    "can switch the counter off (sys.settrace(None)) or hide work in threads, so a policy can learn "
    "to fake speedups; use cpu (or instructions) for rewards a policy optimises"
)

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
EXECUTION_KEYS = (
    "cost_measure",
    "repeats",
    "timeout_s",
    "timeout_factor",
    "min_timeout_s",
    "memory_mb",
    "allow_script_tests",
)
PLACEMENT_KEYS = ("workers", "isolation", "allow_weak_isolation", "service_url")
# What decides a reward: the settings a client sends a reward service.
SCORING_KEYS = SHAPING_KEYS + EXECUTION_KEYS


def setting(default: Any, help: str) -> Any:
    """A dataclass field with a help text.

    The help lives in the field's metadata under ``"help"``, where the config docs generator
    (``rlhf.config``) and the service's command line (``rewards.service.command``) read it.
    """
    return dataclasses.field(default=default, metadata={"help": " ".join(help.split())})


def cost_trusted(measure: str) -> bool:
    """Whether costs in ``measure`` come from outside the candidate (see TRUSTED_COST_MEASURES)."""
    return measure in TRUSTED_COST_MEASURES


class SettingError(ValueError):
    """A reward setting with a bad value; ``key`` names it and ``problem`` says what it must be."""

    def __init__(self, key: str, problem: str, value: Any) -> None:
        super().__init__(f"reward setting `{key}` {problem}, got {value!r}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class RewardSettings:
    """How completions are scored (docs/rewards.md has the formulas).

    The reward of a completion is its correctness plus `efficiency_weight` times its efficiency score
    (counted only when all tests pass) plus `format_weight` times its format score plus any penalty.
    """

    correctness: Literal["binary", "fraction"] = setting(
        "binary", "`binary`: 1 when every test passes, else 0. `fraction`: the fraction of tests passed."
    )
    efficiency_weight: float = setting(
        0.5,
        "Weight of the efficiency score in the reward; 0 trains for correctness only. Below 1 a correct "
        "but slow answer still earns `1 - efficiency_weight` (docs/rewards.md, the copy trap).",
    )
    efficiency_mode: Literal["reference", "group", "both", "none"] = setting(
        "reference",
        "Baseline a completion's cost is compared with: `reference` (the task's reference solution), "
        "`group` (the median correct completion of the same prompt), `both` (their mean score), `none`.",
    )
    speedup_clip: float = setting(
        4.0,
        "Largest speedup over the baseline that earns more reward; speedups are log-scaled, so 2x over "
        "1x earns as much as 4x over 2x. Must be > 1.",
    )
    cost_measure: Literal["cpu", "instructions", "python_events"] = setting(
        "cpu",
        "What a run costs: `cpu` (CPU seconds of the candidate's own work, read from the kernel outside "
        "the candidate; noisy, raise `repeats`), `instructions` (hardware instructions retired, read by "
        "the monitor; needs perf counters), `python_events` (Python line events; deterministic but NOT "
        "TRUSTED: counted inside the candidate's process, which can switch the counter off or hide work "
        "in threads, so a policy can fake speedups; results say `cost_trusted: false`).",
    )
    repeats: int = setting(1, "Measurements per completion (and per reference); the median counts.")
    timeout_penalty: float = setting(-0.5, "Added to the reward when the completion times out (<= 0).")
    syntax_error_penalty: float = setting(
        -1.0, "Added to the reward when the completion does not parse (<= 0)."
    )
    missing_entry_point_penalty: float = setting(
        -1.0, "Added to the reward when the completion does not define the function the tests call (<= 0)."
    )
    format_weight: float = setting(
        0.0,
        "Weight of the format score (the code came from a code fence and defines the entry point); "
        "0 disables it.",
    )
    workers: int | None = setting(None, "Sandbox processes scoring in parallel; null uses one per CPU core.")
    isolation: Literal["namespaces", "bwrap", "process", "none"] = setting(
        "namespaces",
        "How the sandbox boxes each completion: `namespaces` (user, pid, mount, network, IPC and UTS "
        "namespaces, a read-only minimal root, seccomp, rlimits), `bwrap` (the same built by "
        "bubblewrap), or the weak levels for containers without user namespaces, which do NOT contain "
        "untrusted code: `process` (seccomp and rlimits only) and `none` (rlimits only); those need "
        "`allow_weak_isolation` and warn at every start. `effirl sandbox check` says which work here. "
        "Never sent to a reward service, which uses its own (`effirl reward serve --isolation`).",
    )
    allow_weak_isolation: bool = setting(
        False,
        "Opt in to `isolation: process` or `none`: a completion can then read, write and reach what "
        "this user can. For code you trust, or inside a disposable container.",
    )
    timeout_s: float = setting(5.0, "Wall-clock limit for running one completion against all of its tests.")
    timeout_factor: float = setting(
        10.0,
        "A completion's time limit as a multiple of the wall time its task's reference took on the same "
        "tests, between `min_timeout_s` and `timeout_s` (as EvalPlus limits each test to a multiple of "
        "the ground truth's time): code stuck in a loop stops holding up the step's rewards after "
        "`min_timeout_s`. Tasks without a passing reference get `timeout_s`; 0 gives every completion "
        "`timeout_s`.",
    )
    min_timeout_s: float = setting(
        0.5, "The shortest time limit `timeout_factor` gives a completion (the reference's time is noisy)."
    )
    memory_mb: int = setting(1024, "Memory limit of one sandboxed run, in MiB.")
    allow_script_tests: bool = setting(
        False,
        "Score tasks whose only tests are an assertion script (trust level `script`). Such a script "
        "runs inside the candidate's own process, so a candidate can forge a pass; off, scoring such a "
        "task is an error. Turn on only for code you trust (docs/sandbox.md, trust levels).",
    )
    service_url: str | None = setting(
        None,
        "Score through a running reward service (`effirl reward serve`) at this URL instead of local "
        "sandbox workers, e.g. `http://10.0.0.5:8000`. Every request carries these settings; the "
        "service refuses those it cannot honour.",
    )

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`SettingError` naming the first key whose value is out of range or mistyped."""
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
            "timeout_factor",
            "min_timeout_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SettingError(name, "must be a finite number", value)
        for name in ("efficiency_weight", "format_weight"):
            if getattr(self, name) < 0:
                raise SettingError(name, "must be >= 0", getattr(self, name))
        if not self.speedup_clip > 1:
            raise SettingError("speedup_clip", "must be > 1", self.speedup_clip)
        for name in ("timeout_penalty", "syntax_error_penalty", "missing_entry_point_penalty"):
            if getattr(self, name) > 0:
                raise SettingError(
                    name, "must be <= 0 (a penalty is added to the reward)", getattr(self, name)
                )
        for name in ("repeats", "memory_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(name, "must be an integer >= 1", value)
        if not isinstance(self.allow_script_tests, bool):
            raise SettingError("allow_script_tests", "must be true or false", self.allow_script_tests)
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise SettingError("workers", "must be an integer >= 1 or null", self.workers)
        if self.timeout_s <= 0:
            raise SettingError("timeout_s", "must be > 0", self.timeout_s)
        if self.timeout_factor != 0 and self.timeout_factor < 1:
            raise SettingError(
                "timeout_factor",
                "must be 0 (off) or >= 1 (the reference itself must fit)",
                self.timeout_factor,
            )
        if self.min_timeout_s <= 0:
            raise SettingError("min_timeout_s", "must be > 0", self.min_timeout_s)
        if self.service_url is not None and (
            not isinstance(self.service_url, str) or not re.match(r"https?://\S+$", self.service_url)
        ):
            raise SettingError("service_url", "must be an http:// or https:// URL", self.service_url)
        _one_of("isolation", self.isolation, ISOLATION_LEVELS)
        if not isinstance(self.allow_weak_isolation, bool):
            raise SettingError("allow_weak_isolation", "must be true or false", self.allow_weak_isolation)
        if self.isolation not in STRONG_LEVELS and not self.allow_weak_isolation:
            raise SettingError(
                "isolation",
                f"does not contain untrusted code; to use it anyway also set allow_weak_isolation "
                f"(`reward.allow_weak_isolation: true` in a recipe, `--allow-weak-isolation` for "
                f"`effirl reward serve`), or choose {' or '.join(STRONG_LEVELS)} "
                "(`effirl sandbox check` says which work here)",
                self.isolation,
            )
        if self.service_url is not None and self.isolation != "namespaces":
            raise SettingError(
                "isolation",
                "applies to local sandbox workers; with service_url the service runs code with its own "
                "isolation (`effirl reward serve --isolation`), so leave it out",
                self.isolation,
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

    def scoring_dict(self) -> dict[str, Any]:
        """The keys that decide a reward (``SCORING_KEYS``): what a client sends a reward service."""
        return {key: getattr(self, key) for key in SCORING_KEYS}

    @property
    def cost_trusted(self) -> bool:
        """Whether ``cost_measure`` is read from outside the candidate (False for python_events)."""
        return cost_trusted(self.cost_measure)

    @property
    def isolation_warning(self) -> str | None:
        """What to tell the user when ``isolation`` does not contain untrusted code (else None)."""
        return None if self.isolation in STRONG_LEVELS else weak_isolation_warning(self.isolation)

    @property
    def uses_reference(self) -> bool:
        """Whether scoring needs each task's reference cost."""
        return self.efficiency_weight > 0 and self.efficiency_mode in ("reference", "both")

    def time_limit(self, reference_wall_s: float | None) -> float:
        """A completion's time limit when its task's reference took ``reference_wall_s`` (None: no
        passing reference): ``timeout_factor`` times that, within [``min_timeout_s``, ``timeout_s``]."""
        if not self.timeout_factor or reference_wall_s is None:
            return self.timeout_s
        return min(self.timeout_s, max(self.min_timeout_s, self.timeout_factor * reference_wall_s))

    def sandbox_config(self, **overrides: Any) -> SandboxConfig:
        """A :class:`SandboxConfig` that measures what these settings need (cost counters, limits)."""
        values: dict[str, Any] = {
            "isolation": self.isolation,
            "allow_weak_isolation": self.allow_weak_isolation,
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
        raise SettingError(name, f"must be one of {', '.join(choices)}", value)


def _did_you_mean(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"; did you mean `{close[0]}`?" if close else f"; known settings: {', '.join(sorted(known))}"
