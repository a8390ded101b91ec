"""Reward streaming in process: completions are scored while the batch still decodes, and a step
reports how much reward time generation did not hide."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rewards.datasets import load_tasks
from rlhf.algorithms import resolve_algorithm
from rlhf.config import load_config
from rlhf.distributed.placement import InProcessPlacement
from rlhf.rollout.task_sampler import TaskSampler
from rlhf.scoring.reward_stage import RewardStage
from rlhf.training.controller import Controller

SMOKE = Path(__file__).resolve().parents[2].parent / "rlhf" / "recipes" / "smoke.yaml"
# One row decodes at a time, so sample 0 is finished before any other sample has begun.
ONE_ROW = ["rollout.engine=fast", "rollout.batch_size=1", "reward.workers=1"]


@pytest.fixture(scope="module")
def tasks():
    return load_tasks("synthetic", limit=8)


def test_finished_completions_are_scored_while_the_rest_still_decode(tmp_path, tasks) -> None:
    config = load_config(SMOKE, [f"output_dir={tmp_path}", *ONE_ROW, "rollout.max_new_tokens=24"])
    placement = InProcessPlacement(config, resolve_algorithm(config.algorithm.name))
    stage = RewardStage(config, backend="local")
    try:
        batch = tasks[:2]
        stream = stage.open_stream(batch, config.rollout.n_samples)

        def hand_over(sample: int, text: str) -> None:
            stream.add(sample, text)
            if sample == 0:
                # Hold the decode loop (bounded) until sample 0 is scored. A stream that started
                # scoring only after generation would never get there, and the test fails below.
                deadline = time.monotonic() + 60
                while 0 not in stream.backend.finished_at and time.monotonic() < deadline:
                    time.sleep(0.005)

        rollouts = placement.generate(batch, on_completion=hand_over)
        generation_returned = time.time()
        stage.score(rollouts, stream)
        scored_first = stream.backend.finished_at[0]
        assert scored_first < min(stream.handed_at[i] for i in range(1, len(rollouts)))
        assert scored_first < generation_returned
        assert stream.metrics["reward_stream/streamed_fraction"] == 1.0
        assert stream.metrics["reward_stream/scored_during_generation"] > 0
    finally:
        stage.close()


def test_steps_report_the_exposed_reward_time_with_and_without_streaming(tmp_path, tasks) -> None:
    config = load_config(SMOKE, [f"output_dir={tmp_path}", *ONE_ROW])
    spec = resolve_algorithm(config.algorithm.name)
    placement = InProcessPlacement(config, spec)
    stage = RewardStage(config, backend="local")
    controller = Controller(config, spec, placement, stage, TaskSampler(tasks, 2, seed=0))
    try:
        assert controller.streaming  # rollout.stream_rewards is on by default
        streamed = controller.step()
        controller.streaming = False
        after = controller.step()
        controller.streaming = True
        evaluated = controller.evaluate(tasks[:2])
    finally:
        stage.close()
    assert streamed["reward_stream/streamed_fraction"] == 1.0
    assert 0 < streamed["time_reward_exposed_s"] <= streamed["time_reward_s"]
    assert after["reward_stream/streamed_fraction"] == 0.0 == after["reward_stream/scored_during_generation"]
    assert after["time_reward_exposed_s"] == after["time_reward_s"] > 0
    assert evaluated["tasks"] == 2 and "reward" in evaluated
