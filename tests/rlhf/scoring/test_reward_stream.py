"""Reward streaming gives the rewards of scoring after generation, on every backend.

Completions are handed to a stream out of order, one is handed over with a text the rollouts do not
hold (it must be replaced), one is never handed over (it must be scored at the end); the Scored must
equal what a fresh stage gives without a stream. Costs are counted in python_events, which is
deterministic, and group efficiency is on, so a group shaped before all its samples were in would
differ.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rewards.scorer import TaskError
from rewards.service import RewardService, ServiceConfig
from rewards.settings import RewardSettings
from rewards.tasks import Task
from rlhf.config import load_config
from rlhf.scoring.reward_stage import RewardStage
from rlhf.scoring.reward_stream import busy_time
from rlhf.types import Rollouts, Scored
from tests.rewards.scoring_cases import DATASET, SETTINGS, TASKS, fenced, task_source

OVERRIDES = [
    "data.prompt_style=chat",  # no prefill: the completions below are the whole answers
    *[f"reward.{key}={value}" for key, value in SETTINGS.to_dict().items() if value is not None],
    "reward.efficiency_mode=both",
]
N_SAMPLES = 5


def completions_of(task: Task) -> list[str]:
    """Fast, slow, wrong, not Python, and the fast one again (the batch runs it once)."""
    name = task.entry_point
    fast = fenced(task.reference or "")
    return [
        fast,
        fenced(task.metadata["slow"]),
        fenced(f"def {name}(n):\n    return n\n"),
        fenced(f"def {name}(n) return n\n"),
        fast,
    ]


def rollouts_of(tasks: list[Task], texts: list[str]) -> Rollouts:
    """Rollouts holding ``texts`` (N_SAMPLES per task, in order); the token tensors play no part in
    scoring, so they are placeholders of the right shape."""
    count = len(texts)
    ones = torch.ones(count, 1, dtype=torch.long)
    return Rollouts(
        tasks=tasks,
        group_ids=torch.arange(len(tasks)).repeat_interleave(N_SAMPLES),
        prompt_ids=ones,
        prompt_mask=ones,
        completion_ids=ones,
        completion_mask=ones,
        behaviour_logprobs=torch.zeros(count, 1),
        texts=texts,
        truncated=torch.zeros(count, dtype=torch.bool),
    )


def batch() -> Rollouts:
    tasks = list(TASKS)
    return rollouts_of(tasks, [text for task in tasks for text in completions_of(task)])


def assert_same_scored(streamed: Scored, expected: Scored) -> None:
    assert torch.equal(streamed.rewards, expected.rewards)
    assert streamed.parts.keys() == expected.parts.keys()
    assert all(torch.equal(streamed.parts[k], expected.parts[k]) for k in expected.parts)
    assert streamed.evidence == expected.evidence
    assert streamed.metrics == expected.metrics


@pytest.fixture(scope="module")
def expected() -> Scored:
    stage = RewardStage(load_config(None, OVERRIDES), backend="local")
    try:
        scored = stage.score(batch())
    finally:
        stage.close()
    # Not a degenerate case: some samples pass, group costs were compared, rewards differ.
    assert {e["status"] for e in scored.evidence} >= {"passed", "failed", "syntax_error"}
    assert any(e["group_speedup"] is not None for e in scored.evidence)
    assert len(set(scored.rewards.tolist())) >= 3
    return scored


def stream_out_of_order(stage: RewardStage, rollouts: Rollouts) -> Scored:
    """Hand the samples over as an engine might finish them, then score the rollouts."""
    stream = stage.open_stream(rollouts.tasks, N_SAMPLES)
    order = [4, 7, 0, 9, 1, 6, 2, 5, 8]  # sample 3 never arrives early
    stream.add(1, "```python\ndef total(n):\n    return 0\n```\n")  # replaced below by the real text
    for sample in order:
        stream.add(sample, rollouts.texts[sample])
    scored = stage.score(rollouts, stream)
    assert stream.metrics["reward_stream/streamed_fraction"] == 9 / 10
    assert 0 <= stream.metrics["reward_stream/scored_during_generation"] <= 9 / 10
    return scored


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_local_backend_streams_to_the_same_rewards(expected) -> None:
    stage = RewardStage(load_config(None, OVERRIDES), backend="local")
    try:
        assert_same_scored(stream_out_of_order(stage, batch()), expected)
    finally:
        stage.close()


def test_ray_reward_actors_stream_to_the_same_rewards(expected, ray_cluster) -> None:
    stage = RewardStage(load_config(None, OVERRIDES), backend="ray", ray_actors=2)
    try:
        assert_same_scored(stream_out_of_order(stage, batch()), expected)
        assert (
            stage._scorer.info()[0]["misses"] > 0 and stage._scorer.info()[1]["misses"] > 0
        )  # both ran some
    finally:
        stage.close()


def test_a_reward_service_streams_to_the_same_rewards(expected) -> None:
    served = RewardSettings(cost_measure="python_events", memory_mb=512)
    with RewardService(ServiceConfig(port=0, workers=2, reward=served), task_source=task_source) as service:
        stage = RewardStage(load_config(None, [*OVERRIDES, f"reward.service_url={service.url}"]))
        assert stage.backend == "http"
        stage.register_tasks(TASKS, DATASET, None)
        try:
            assert_same_scored(stream_out_of_order(stage, batch()), expected)
        finally:
            stage.close()


def test_a_task_that_cannot_be_scored_fails_the_streamed_batch_too() -> None:
    untestable = Task(id="toy/none", prompt="Write f.", entry_point="f")
    rollouts = rollouts_of([untestable], ["```python\ndef f():\n    pass\n```\n"] * N_SAMPLES)
    stage = RewardStage(load_config(None, OVERRIDES), backend="local")
    try:
        stream = stage.open_stream(rollouts.tasks, N_SAMPLES)
        stream.add(0, rollouts.texts[0])  # the error waits for the batch's scoring
        with pytest.raises(TaskError, match="no function_tests"):
            stage.score(rollouts, stream)
    finally:
        stage.close()


def test_a_stream_takes_only_the_batch_it_was_opened_for() -> None:
    stage = RewardStage(load_config(None, OVERRIDES), backend="local")
    try:
        rollouts = batch()
        stream = stage.open_stream(list(reversed(rollouts.tasks)), N_SAMPLES)
        with pytest.raises(ValueError, match="not the batch the reward stream was opened for"):
            stage.score(rollouts, stream)
        stream = stage.open_stream(rollouts.tasks, N_SAMPLES - 1)
        with pytest.raises(ValueError, match="not the batch"):
            stage.score(dataclasses.replace(rollouts), stream)
        closed = stage.open_stream(rollouts.tasks, N_SAMPLES)
        closed.close()
        closed.add(0, rollouts.texts[0])  # a generation outliving its stream is not disturbed
        with pytest.raises(RuntimeError, match="closed"):
            stage.score(rollouts, closed)
    finally:
        stage.close()


def test_the_hidden_reward_time_counts_overlapping_runs_once() -> None:
    assert busy_time([(5.0, 6.0), (0.0, 2.0), (1.0, 3.0), (5.5, 5.7), (7.0, 7.0)]) == 4.0
    assert busy_time([]) == 0.0
