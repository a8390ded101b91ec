"""RayRewardPool on a real local Ray cluster with two actors."""

from __future__ import annotations

import asyncio

import pytest

from rewards.ray_pool import RayRewardPool, shard_by_group
from rewards.settings import RewardSettings
from rewards.tasks import Task
from sandbox.types import FunctionTest

TASKS = [
    Task(
        id=f"toy/times{k}",
        prompt="",
        entry_point="times",
        function_tests=tuple(FunctionTest((x,), k * x) for x in range(4)),
        references=(f"def times(x):\n    return sum({k} for _ in range(x))\n",),
    )
    for k in range(2, 6)
]


def test_shards_keep_groups_whole_and_balanced() -> None:
    groups = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
    shards = shard_by_group(groups, 2)
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    for shard in shards:
        for group in {groups[i] for i in shard}:
            assert all(groups[i] != group for other in shards if other is not shard for i in other)
    assert sorted(len(s) for s in shards) == [5, 5]
    assert shard_by_group([7], 3) == [[0], [], []]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_pool_scores_across_two_actors(ray_cluster) -> None:
    settings = RewardSettings(efficiency_mode="both", timeout_s=5.0, memory_mb=256)
    tasks, codes, groups, expected = [], [], [], []
    for group, task in enumerate(TASKS):
        k = task.id[-1]
        for code, verdict in (
            (f"def times(x):\n    return {k} * x\n", "passed"),
            (f"def times(x):\n    return x * {k} + 0\n", "passed"),
            ("def times(x):\n    return x\n", "failed"),
        ):
            tasks.append(task)
            codes.append(code)
            groups.append(group)
            expected.append(verdict)
    with RayRewardPool(settings, actors=2, workers_per_actor=1) as pool:
        rewards = pool.score(tasks, codes, groups, extract=False)
        assert [r.evidence.status for r in rewards] == expected
        for reward in rewards:
            if reward.evidence.status == "passed":
                assert reward.correctness == 1.0
                assert reward.evidence.reference_cost is not None and reward.evidence.group_cost is not None
            else:
                assert reward.value == 0.0
        info = pool.info()
        assert len({actor["pid"] for actor in info}) == 2
        assert all(actor["executions"] > 0 for actor in info), "both actors did work"
        assert sum(actor["misses"] for actor in info) == len(codes)
        again = asyncio.run(pool.ascore(tasks[:3], codes[:3], groups[:3], extract=False))
        assert [r.evidence.status for r in again] == expected[:3]
