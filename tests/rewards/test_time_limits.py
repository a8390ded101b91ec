"""Time limits scaled by the reference: code stuck in a loop stops holding a step's rewards early.

A completion's limit is ``timeout_factor`` times its task's reference's wall time, between
``min_timeout_s`` and ``timeout_s``; real sandbox runs check that a loop ends at the short limit, that
code within the factor still passes, and that a reference-less task keeps the full limit.
"""

from __future__ import annotations

import time

import pytest

from rewards.scorer import RewardScorer
from rewards.settings import RewardSettings, SettingError
from rewards.tasks import Task
from sandbox import Sandbox
from sandbox.types import FunctionTest

LOOP = "def echo(x):\n    while True:\n        pass\n"
FAST = "def echo(x):\n    return x\n"


def _task(reference: str | None, name: str = "echo") -> Task:
    return Task(
        id=f"toy/{name}",
        prompt="def echo(x): ...",
        entry_point="echo",
        function_tests=(FunctionTest((1,), 1),),
        references=() if reference is None else (reference,),
    )


def _sleeper(seconds: float) -> str:
    return f"import time\n\ndef echo(x):\n    time.sleep({seconds})\n    return x\n"


@pytest.fixture(scope="module")
def box():
    with Sandbox(RewardSettings().sandbox_config(workers=2, timeout_s=10.0)) as sandbox:
        yield sandbox


def test_the_limit_is_the_factor_times_the_reference_within_the_bounds() -> None:
    settings = RewardSettings(timeout_s=5.0, timeout_factor=10.0, min_timeout_s=0.5)
    assert settings.time_limit(0.001) == 0.5
    assert settings.time_limit(0.2) == pytest.approx(2.0)
    assert settings.time_limit(3.0) == 5.0
    assert settings.time_limit(None) == 5.0
    assert settings.replace(timeout_factor=0.0).time_limit(0.001) == 5.0
    with pytest.raises(SettingError, match="timeout_factor"):
        RewardSettings(timeout_factor=0.5)
    with pytest.raises(SettingError, match="min_timeout_s"):
        RewardSettings(min_timeout_s=0.0)


def _timed(scorer: RewardScorer, task: Task, code: str) -> tuple[str, float]:
    started = time.perf_counter()
    (reward,) = scorer.score([task], [code], extract=False)
    return reward.evidence.status, time.perf_counter() - started


def test_a_loop_ends_at_the_short_limit_and_only_with_a_reference(box) -> None:
    scaled = RewardSettings(timeout_s=2.0, timeout_factor=10.0, min_timeout_s=0.3)
    scorer = RewardScorer(box, scaled, cache_size=0)
    task = _task(FAST)
    assert _timed(scorer, task, FAST)[0] == "passed"  # measures the reference
    status, seconds = _timed(scorer, task, LOOP)
    assert status == "timeout" and seconds < 1.2, seconds
    # Without a reference to scale, and with the factor off, the loop runs to timeout_s.
    status, seconds = _timed(scorer, _task(None, "bare"), LOOP)
    assert status == "timeout" and seconds >= 1.9, seconds
    off = RewardScorer(box, scaled.replace(timeout_factor=0.0), cache_size=0)
    status, seconds = _timed(off, task, LOOP)
    assert status == "timeout" and seconds >= 1.9, seconds


def test_code_within_the_factor_passes_and_slower_code_times_out(box) -> None:
    # The reference takes 0.1 s of wall time: with a factor of 3 the limit is 0.3 s.
    task = _task(_sleeper(0.1), "sleepy")
    scorer = RewardScorer(box, RewardSettings(timeout_s=5.0, timeout_factor=3.0, min_timeout_s=0.05))
    assert _timed(scorer, task, _sleeper(0.15))[0] == "passed"
    status, seconds = _timed(scorer, task, _sleeper(2.0))
    assert status == "timeout" and seconds < 1.0, seconds
    # The time limit is part of what the cache keys a verdict by.
    wider = RewardScorer(box, RewardSettings(timeout_s=5.0, timeout_factor=30.0, min_timeout_s=0.05))
    wider.cache = scorer.cache
    assert _timed(wider, task, _sleeper(2.0))[0] == "passed"


def test_a_loop_on_the_perf_tests_is_censored_at_the_scaled_limit(box) -> None:
    # Right on the small tests, endless on the perf input: it passes as slow as can be measured,
    # its cost the scaled limit (0.3 s here), never less than a run that finished.
    task = Task(
        id="toy/total",
        prompt="def total(n): ...",
        entry_point="total",
        function_tests=tuple(FunctionTest((n,), n * (n - 1) // 2) for n in range(6)),
        perf_tests=(FunctionTest((3000,), 3000 * 2999 // 2),),
        references=("def total(n):\n    return n * (n - 1) // 2\n",),
    )
    endless = "def total(n):\n    while n >= 1000:\n        pass\n    return n * (n - 1) // 2\n"
    settings = RewardSettings(timeout_s=5.0, timeout_factor=10.0, min_timeout_s=0.3, efficiency_weight=0.5)
    started = time.perf_counter()
    (reward,) = RewardScorer(box, settings, cache_size=0).score([task], [endless], extract=False)
    assert time.perf_counter() - started < 2.0
    assert reward.evidence.status == "passed" and reward.evidence.error_kind == "perf_timeout"
    assert reward.evidence.cost == pytest.approx(0.3) and reward.efficiency == -1.0
