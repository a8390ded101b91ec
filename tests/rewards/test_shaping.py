"""Reward shaping: every formula checked with exact numbers."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest

from rewards.settings import EXECUTION_KEYS, PLACEMENT_KEYS, SHAPING_KEYS, RewardSettings
from rewards.shaping import (
    Reward,
    cost_value,
    efficiency_score,
    group_baselines,
    shape_rewards,
    speedup_of,
)
from rewards.tasks import Task
from sandbox.types import Cost, ExecutionResult, FunctionTest, Status

TASK = Task(id="t/0", prompt="", entry_point="f", function_tests=(FunctionTest((1,), 1),))
PROGRAM = Task(id="p/0", prompt="", program_tests=())


def ms(value: float) -> Cost:
    return Cost(cpu_ns=int(value * 1e6), wall_ns=0, peak_memory_bytes=0, instructions=7, python_events=None)


def passed(cost_ms: float | None = None, total: int = 4) -> ExecutionResult:
    return ExecutionResult(Status.PASSED, total, total, cost=None if cost_ms is None else ms(cost_ms))


def failed(n_passed: int, total: int = 4, status: Status = Status.FAILED, kind: str = "wrong_output"):
    return ExecutionResult(status, n_passed, total, cost=ms(1.0), error="x", error_kind=kind)


@dataclass
class Seen:
    had_fence: bool
    found_entry_point: bool


def test_efficiency_score_is_log_scaled_symmetric_and_clipped() -> None:
    assert efficiency_score(1.0, 4.0) == 0.0
    assert efficiency_score(2.0, 4.0) == pytest.approx(0.5)
    assert efficiency_score(0.5, 4.0) == pytest.approx(-0.5)
    assert efficiency_score(4.0, 4.0) == pytest.approx(1.0)
    assert efficiency_score(100.0, 4.0) == pytest.approx(1.0)
    assert efficiency_score(1e-9, 4.0) == pytest.approx(-1.0)
    # 2x over 1x earns what 4x over 2x earns (clip 16).
    assert efficiency_score(2, 16) - efficiency_score(1, 16) == pytest.approx(
        efficiency_score(4, 16) - efficiency_score(2, 16)
    )
    with pytest.raises(ValueError, match="speedup_clip"):
        efficiency_score(2.0, 1.0)


def test_speedup_floors_unmeasurably_small_costs() -> None:
    assert speedup_of(2e-3, 1e-3, "cpu") == pytest.approx(2.0)
    assert speedup_of(1e-3, 0.0, "cpu") == pytest.approx(1000.0)  # floor 1 µs, no division by zero
    assert speedup_of(10, 0, "python_events") == 10.0


def test_cost_value_per_measure() -> None:
    cost = Cost(cpu_ns=2_500_000, wall_ns=9, peak_memory_bytes=0, instructions=1234, python_events=None)
    assert cost_value(cost, "cpu") == pytest.approx(0.0025)
    assert cost_value(cost, "instructions") == 1234.0
    assert cost_value(cost, "python_events") is None
    assert cost_value(None, "cpu") is None
    with pytest.raises(ValueError, match="unknown cost measure"):
        cost_value(cost, "joules")


def test_reference_efficiency_exact_numbers() -> None:
    settings = RewardSettings(efficiency_weight=0.5, speedup_clip=4.0)
    results = [passed(1.0), passed(4.0), passed(0.1), failed(3)]
    rewards = shape_rewards(results, [TASK] * 4, None, settings, reference_costs=[ms(2.0)] * 4)
    # 2x faster: 1 + 0.5 * log 2 / log 4 = 1.25
    assert rewards[0].value == pytest.approx(1.25)
    assert rewards[0].evidence.speedup == pytest.approx(2.0)
    assert rewards[0].evidence.reference_cost == pytest.approx(0.002)
    assert rewards[0].evidence.cost == pytest.approx(0.001)
    # 2x slower: 1 - 0.25
    assert rewards[1].value == pytest.approx(0.75)
    assert rewards[1].efficiency == pytest.approx(-0.5)
    # 20x faster is clipped at 4x
    assert rewards[2].efficiency == pytest.approx(1.0)
    assert rewards[2].value == pytest.approx(1.5)
    # failing samples earn no efficiency, whatever their cost
    assert rewards[3].value == 0.0 and rewards[3].efficiency == 0.0 and rewards[3].evidence.speedup is None


def test_fraction_correctness_and_no_reference() -> None:
    settings = RewardSettings(correctness="fraction")
    rewards = shape_rewards([failed(3), passed(1.0), failed(0, total=0)], [TASK] * 3, None, settings)
    assert [r.correctness for r in rewards] == [0.75, 1.0, 0.0]
    # without a reference there is no reference speedup, hence no efficiency in `reference` mode
    assert rewards[1].efficiency == 0.0 and rewards[1].evidence.speedup is None


def test_group_relative_efficiency_uses_the_median_of_correct_samples() -> None:
    settings = RewardSettings(efficiency_mode="group", efficiency_weight=1.0, speedup_clip=4.0)
    results = [passed(1.0), passed(2.0), passed(3.0), failed(0), passed(5.0)]
    groups = [0, 0, 0, 0, 1]
    rewards = shape_rewards(results, [TASK] * 5, groups, settings)
    assert rewards[0].evidence.group_cost == pytest.approx(0.002)
    assert [r.efficiency for r in rewards[:3]] == pytest.approx([0.5, 0.0, math.log(2 / 3) / math.log(4)])
    assert rewards[2].value == pytest.approx(1 + math.log(2 / 3) / math.log(4))
    # a group with a single correct sample has no baseline
    assert rewards[4].efficiency == 0.0 and rewards[4].evidence.group_cost is None
    assert group_baselines(results, groups, "cpu") == {0: pytest.approx(0.002)}


def test_both_mode_averages_the_available_scores() -> None:
    settings = RewardSettings(efficiency_mode="both", efficiency_weight=1.0, speedup_clip=4.0)
    results = [passed(1.0), passed(4.0)]  # group median 2.5 ms
    rewards = shape_rewards(results, [TASK, TASK], [0, 0], settings, reference_costs=[ms(4.0), None])
    ref_score = efficiency_score(4.0, 4.0)
    group_score = efficiency_score(2.5, 4.0)
    assert rewards[0].efficiency == pytest.approx((ref_score + group_score) / 2)
    # no reference for the second sample: only its group score counts
    assert rewards[1].efficiency == pytest.approx(efficiency_score(2.5 / 4.0, 4.0))


def test_none_mode_and_zero_weight_ignore_cost() -> None:
    for settings in (RewardSettings(efficiency_mode="none"), RewardSettings(efficiency_weight=0.0)):
        (reward,) = shape_rewards([passed(1.0)], [TASK], None, settings, reference_costs=[ms(4.0)])
        assert reward.value == 1.0


def test_penalties_by_error_kind() -> None:
    settings = RewardSettings(
        timeout_penalty=-0.5, syntax_error_penalty=-1.0, missing_entry_point_penalty=-0.75
    )
    results = [
        failed(0, status=Status.TIMEOUT, kind="timeout"),
        failed(0, status=Status.SYNTAX_ERROR, kind="syntax"),
        failed(0, status=Status.RUNTIME_ERROR, kind="missing_entry_point"),
        failed(0, status=Status.RUNTIME_ERROR, kind="exception"),
        failed(0, status=Status.MEMORY_EXCEEDED, kind="memory"),
    ]
    rewards = shape_rewards(results, [TASK] * 5, None, settings)
    assert [r.penalty for r in rewards] == [-0.5, -1.0, -0.75, 0.0, 0.0]
    assert [r.value for r in rewards] == [-0.5, -1.0, -0.75, 0.0, 0.0]


def test_sandbox_errors_score_zero_everywhere() -> None:
    settings = RewardSettings(format_weight=1.0)
    result = ExecutionResult(Status.SANDBOX_ERROR, error="worker lost", error_kind="sandbox")
    (reward,) = shape_rewards([result], [TASK], None, settings, formats=[Seen(True, True)])
    assert reward.parts == {"correctness": 0.0, "efficiency": 0.0, "format": 0.0, "penalty": 0.0}
    assert reward.value == 0.0 and reward.evidence.status == "sandbox_error"


def test_format_score_and_weight() -> None:
    settings = RewardSettings(format_weight=0.2, efficiency_weight=0.0)
    seen = [Seen(True, True), Seen(True, False), Seen(False, False), None, Seen(True, False)]
    tasks = [TASK, TASK, TASK, TASK, PROGRAM]
    rewards = shape_rewards([passed(1.0)] * 5, tasks, None, settings, formats=seen)
    assert [r.format for r in rewards] == [1.0, 0.5, 0.0, 0.0, 1.0]  # programs have no entry point
    assert rewards[1].value == pytest.approx(1.1)


def test_other_cost_measures() -> None:
    settings = RewardSettings(cost_measure="instructions", efficiency_weight=1.0, speedup_clip=2.0)
    ref = Cost(cpu_ns=1, wall_ns=1, peak_memory_bytes=0, instructions=14)
    (reward,) = shape_rewards([passed(9.0)], [TASK], None, settings, reference_costs=[ref])
    assert reward.evidence.speedup == pytest.approx(2.0) and reward.efficiency == pytest.approx(1.0)
    settings = RewardSettings(cost_measure="python_events", efficiency_weight=1.0)
    (reward,) = shape_rewards([passed(9.0)], [TASK], None, settings, reference_costs=[ref])
    assert reward.evidence.cost is None and reward.efficiency == 0.0  # not counted: no signal


def test_length_mismatches_are_named() -> None:
    with pytest.raises(ValueError, match="2 results but 1 tasks"):
        shape_rewards([passed(), passed()], [TASK], None, RewardSettings())
    with pytest.raises(ValueError, match="1 group_ids"):
        shape_rewards([passed(), passed()], [TASK, TASK], [0], RewardSettings())


def test_reward_round_trips_through_its_dict() -> None:
    (reward,) = shape_rewards([passed(1.0)], [TASK], None, RewardSettings(), reference_costs=[ms(3.0)])
    assert Reward.from_dict(reward.to_dict()) == reward


def test_settings_validate_and_name_the_fix() -> None:
    with pytest.raises(ValueError, match="speedup_clip"):
        RewardSettings(speedup_clip=1.0)
    with pytest.raises(ValueError, match=r"timeout_penalty.*<= 0"):
        RewardSettings(timeout_penalty=0.5)
    with pytest.raises(ValueError, match=r"efficiency_mode.*reference, group, both, none"):
        RewardSettings(efficiency_mode="median")
    with pytest.raises(ValueError, match="did you mean `speedup_clip`"):
        RewardSettings.from_mapping({"speedup_clp": 2})
    config = RewardSettings(cost_measure="python_events", workers=3).sandbox_config()
    assert config.count_python_events and config.workers == 3 and config.cost_aggregate == "median"


def test_the_reward_config_section_is_reward_settings() -> None:
    """One definition: the trainer's `reward` section is RewardSettings, same keys, defaults and help."""
    sections = pytest.importorskip("rlhf.config.sections")
    assert issubclass(sections.RewardConfig, RewardSettings)
    assert [f.name for f in dataclasses.fields(sections.RewardConfig)] == [
        f.name for f in dataclasses.fields(RewardSettings)
    ]
    assert sections.RewardConfig().to_dict() == RewardSettings().to_dict()
    assert all(f.metadata["help"] for f in dataclasses.fields(RewardSettings))


def test_the_default_cost_measure_is_trusted() -> None:
    assert RewardSettings().cost_measure == "cpu" and RewardSettings().cost_trusted
    assert not RewardSettings(cost_measure="python_events").cost_trusted
    assert "NOT TRUSTED" in next(
        f.metadata["help"] for f in dataclasses.fields(RewardSettings) if f.name == "cost_measure"
    )


def test_every_setting_is_shaping_execution_or_placement() -> None:
    groups = (SHAPING_KEYS, EXECUTION_KEYS, PLACEMENT_KEYS)
    keys = [key for group in groups for key in group]
    assert sorted(keys) == sorted(f.name for f in dataclasses.fields(RewardSettings))
    assert RewardSettings().scoring_dict().keys() == set(SHAPING_KEYS + EXECUTION_KEYS)
