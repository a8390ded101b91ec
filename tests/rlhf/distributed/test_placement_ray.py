"""Ray placements on a real local Ray cluster (2 CPUs): colocated and split, every sync mode, async."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from rewards.datasets import load_tasks  # noqa: E402
from rlhf.algorithms import resolve_algorithm  # noqa: E402
from rlhf.config import load_config  # noqa: E402
from rlhf.distributed.placement import InProcessPlacement, RayPlacement, concat_rollouts  # noqa: E402
from rlhf.rollout.task_sampler import TaskSampler  # noqa: E402
from rlhf.scoring.reward_stage import RewardStage  # noqa: E402
from rlhf.training.controller import Controller  # noqa: E402
from rlhf.training.run_log import read_metrics  # noqa: E402
from rlhf.training.trainer import train  # noqa: E402

SMOKE = Path(__file__).resolve().parents[3] / "rlhf" / "recipes" / "smoke.yaml"
MOVING = ["algorithm.entropy_coef=0.05", "train.lr=1e-2", "reward.workers=1"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config_for(tmp_path: Path, *overrides: str):
    return load_config(SMOKE, [f"output_dir={tmp_path}", *MOVING, *overrides])


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b)[mask.bool()].abs().max())


def reshard_check(config) -> tuple[float, float, int]:
    """Train one step; compare rollout-side and learner-side log-probs before and after a sync."""
    spec = resolve_algorithm(config.algorithm.name)
    in_process = config.placement.mode == "in_process"
    placement = InProcessPlacement(config, spec) if in_process else RayPlacement(config, spec)
    rewards = RewardStage(config, backend="local")
    tasks = load_tasks("synthetic", limit=4)
    try:
        sampler = TaskSampler(tasks, 2, seed=0)
        rollouts = placement.generate(tasks[:2])
        scored = rewards.score(rollouts)
        from rlhf.algorithms.advantage_step import make_train_batch

        batch = make_train_batch(scored, config.algorithm, spec, max_new_tokens=config.rollout.max_new_tokens)
        placement.train(batch)
        probe = placement.generate(tasks[2:4])
        learner = placement.learner_logprobs(probe)
        before = min(max_diff(r, learner, probe.completion_mask) for r in placement.rollout_logprobs(probe))
        report = placement.sync()
        after = max(max_diff(r, learner, probe.completion_mask) for r in placement.rollout_logprobs(probe))
        del sampler
        return before, after, report.bytes
    finally:
        rewards.close()
        placement.close()


@pytest.mark.parametrize("sync", ["object_store", "broadcast", "merged"])
def test_split_placement_reshards_exactly(tmp_path, sync):
    before, after, moved = reshard_check(
        config_for(tmp_path, "placement.mode=split", f"placement.sync={sync}")
    )
    assert before > 1e-4, "the learner's update did not change its log-probs; the test would prove nothing"
    assert after <= 1e-5
    assert moved > 0


def test_colocated_placement_shares_one_model(tmp_path):
    before, after, moved = reshard_check(
        config_for(tmp_path, "placement.mode=colocated", "placement.sync=object_store")
    )
    assert before <= 1e-5 and after <= 1e-5 and moved == 0


def test_lora_sync_moves_far_fewer_bytes_than_merged_weights(tmp_path):
    lora = reshard_check(config_for(tmp_path / "a", "placement.mode=split", "placement.sync=object_store"))[2]
    merged = reshard_check(config_for(tmp_path / "b", "placement.mode=split", "placement.sync=merged"))[2]
    assert merged > 4 * lora


@pytest.mark.parametrize(
    "overrides",
    [
        ["placement.mode=colocated", "placement.sync=object_store"],
        [
            "placement.mode=split",
            "placement.sync=object_store",
            "placement.async_rollout=true",
            "train.steps=3",
            # off-policy learner in another actor: the warm start must hand it the old log-probs
            "warm_start.sft_steps=2",
            "warm_start.batch_size=2",
            "warm_start.examples=2",  # the same two references each step: their NLL must fall
        ],
    ],
    ids=["colocated", "split-async-warm-start"],
)
def test_training_runs_on_ray_with_ray_reward_workers(tmp_path, overrides):
    config = config_for(tmp_path, *overrides, "eval_at_end=false")
    assert train(config) == 0
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, config.train.steps + 1))
    assert all(r["time_generate_s"] >= 0 and r["reward"] <= 1.5 for r in rows)
    # Every completion reached the reward actors from the policy actors while generating (async: the
    # next step's, during this step's training).
    assert all(r["reward_stream/streamed_fraction"] == 1.0 for r in rows)
    assert all(0 < r["time_reward_exposed_s"] <= r["time_reward_s"] for r in rows)
    if config.placement.mode == "split":
        assert all(r["sync_bytes"] > 0 for r in rows[1:])
    if config.warm_start.sft_steps:
        summary = json.loads((tmp_path / "warm_start" / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["nll_last_batch"] < summary["nll_first_batch"]


def test_controller_async_step_generates_ahead(tmp_path):
    config = config_for(
        tmp_path, "placement.mode=split", "placement.sync=object_store", "placement.async_rollout=true"
    )
    spec = resolve_algorithm(config.algorithm.name)
    placement = RayPlacement(config, spec)
    rewards = RewardStage(config, backend="local")
    sampler = TaskSampler(load_tasks("synthetic", limit=8), 2, seed=0)
    controller = Controller(config, spec, placement, rewards, sampler)
    try:
        controller.step()
        assert controller._pending is not None  # the next rollout is already running
        # A checkpoint now keeps that rollout (waited for) and the data position after its tasks.
        pending = controller.pending_rollouts()
        assert len(pending.tasks) == 2 and len(pending) == 2 * config.rollout.n_samples
        assert controller.data_position()["index"] == 4
        controller.step(last=True)  # trains on it
        assert controller._pending is None and controller.pending_rollouts() is None
        assert controller.data_position()["index"] == 4
    finally:
        rewards.close()
        placement.close()


def test_policy_actors_stream_completions_to_the_reward_actors_while_generating(tmp_path):
    """Two rollout actors, one row decoding at a time: completions reach the Ray reward actors under
    their index in the whole batch, the first are scored before generation returns, and the rewards
    are those of scoring afterwards (python_events costs: deterministic)."""
    config = config_for(
        tmp_path,
        "placement.mode=split",
        "placement.sync=object_store",
        "placement.rollout_workers=2",
        "rollout.engine=fast",
        "rollout.batch_size=1",
        "rollout.n_samples=3",
        "rollout.max_new_tokens=48",
        "reward.cost_measure=python_events",
    )
    placement = RayPlacement(config, resolve_algorithm(config.algorithm.name))
    streamed = RewardStage(config, backend="ray")
    afterwards = RewardStage(config, backend="local")
    tasks = load_tasks("synthetic", limit=4)
    try:
        stream = streamed.open_stream(tasks, config.rollout.n_samples)
        rollouts = placement.generate(tasks, on_completion=stream.add)
        generation_returned = time.time()
        scored = streamed.score(rollouts, stream)
        expected = afterwards.score(rollouts)
    finally:
        streamed.close()
        afterwards.close()
        placement.close()
    assert sorted(stream.handed_at) == list(range(len(rollouts))) == list(range(4 * 3))
    assert stream.metrics["reward_stream/streamed_fraction"] == 1.0  # every text arrived under its own index
    assert min(stream.backend.finished_at.values()) < generation_returned
    half = len(rollouts) // 2  # each rollout actor's shard: 2 tasks x 3 samples, decoded one by one
    for shard in (range(0, half), range(half, len(rollouts))):
        # The shard's first completion was scored before its actor had finished the shard's last.
        assert stream.backend.finished_at[shard[0]] < stream.handed_at[shard[-1]]
    assert torch.equal(scored.rewards, expected.rewards)
    assert scored.evidence == expected.evidence


def test_concat_rollouts_renumbers_groups_and_pads(tmp_path):
    config = config_for(tmp_path)
    placement = InProcessPlacement(config, resolve_algorithm(config.algorithm.name))
    tasks = load_tasks("synthetic", limit=3)
    a, b = placement.generate(tasks[:1]), placement.generate(tasks[1:3])
    joined = concat_rollouts([a, b])
    assert joined.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert joined.texts == a.texts + b.texts
    assert joined.prompt_ids.shape[1] == max(a.prompt_ids.shape[1], b.prompt_ids.shape[1])


def test_data_parallel_learners_update_exactly_like_one_learner(tmp_path):
    """Two learner replicas with all-reduced gradients take the same step as a single learner."""
    from rlhf.algorithms.advantage_step import make_train_batch

    tasks = load_tasks("synthetic", limit=2)
    batch = None
    adapters, initial, moved_logprobs, grad_norms = {}, {}, {}, {}
    for replicas in (1, 2):
        config = config_for(
            tmp_path / str(replicas),
            "placement.mode=split",
            "placement.sync=broadcast",
            f"placement.learner_workers={replicas}",
            "rollout.n_samples=3",
        )
        spec = resolve_algorithm(config.algorithm.name)
        placement = RayPlacement(config, spec)
        rewards = RewardStage(config, backend="local")
        try:
            if batch is None:  # one batch for both runs
                rollouts = placement.generate(tasks)
                scored = rewards.score(rollouts)
                scored.rewards = torch.arange(len(rollouts), dtype=torch.float32)  # a real, varied signal
                batch = make_train_batch(
                    scored, config.algorithm, spec, max_new_tokens=config.rollout.max_new_tokens
                )
            initial[replicas] = ray.get(placement.learner.adapter_state.remote())
            probe = placement.generate(tasks[:1])
            rollout_before = placement.rollout_logprobs(probe)[0]
            grad_norms[replicas] = placement.train(batch)["grad_norm"]
            adapters[replicas] = [ray.get(w.adapter_state.remote()) for w in placement.learners]
            placement.sync()
            rollout_side = placement.rollout_logprobs(probe)[0]
            assert max_diff(rollout_side, placement.learner_logprobs(probe), probe.completion_mask) <= 1e-5
            moved_logprobs[replicas] = max_diff(rollout_side, rollout_before, probe.completion_mask)
        finally:
            rewards.close()
            placement.close()
    # Adam's first step is about lr * sign(gradient), blind to the gradient's scale: the norm of the
    # all-reduced gradient checks the scale (a shard weighted by its own token count would change it).
    assert grad_norms[2] == pytest.approx(grad_norms[1], rel=1e-5)
    (single,), (first, second) = adapters[1], adapters[2]
    for key in single:
        assert torch.equal(initial[1][key], initial[2][key]), "the runs must start from one adapter"
        assert torch.equal(first[key], second[key]), "replicas diverged"
        # The same step of +-lr = 0.01 per entry, up to rounding that Adam magnifies for entries whose
        # gradient is near zero (seen: 1.4e-6).
        assert float((first[key] - single[key]).abs().max()) <= 1e-5, key
    # Equal adapters prove nothing if neither moved: the update must be far larger than the tolerance,
    # and it must have reached the rollout side.
    assert max(float((single[k] - initial[1][k]).abs().max()) for k in single) > 1e-3
    assert min(moved_logprobs.values()) > 1e-4, moved_logprobs


@pytest.mark.parametrize(
    "overrides",
    [
        ["placement.mode=colocated", "placement.sync=object_store"],
        ["placement.mode=split", "placement.sync=object_store", "placement.async_rollout=true"],
    ],
    ids=["colocated", "split-async"],
)
def test_ray_runs_resume_exactly(tmp_path, overrides):
    """Four steps straight equal two + resume + two, with generation in Ray actors (and, async, a
    rollout in flight when the checkpoint is written)."""
    from tests.rlhf.training.test_trainer import adapter_of, assert_same_tensors, straight_and_resumed

    straight, resumed, start = straight_and_resumed(
        tmp_path, *overrides, "eval_at_end=false", config=config_for
    )
    assert_same_tensors(adapter_of(straight), adapter_of(resumed), adapter_of(start), "adapter")
