"""One set of reward settings, three backends: in-process, Ray reward actors and the HTTP service.

The same completions must get the same rewards whichever backend scores them, for every efficiency
mode, with settings unlike the service's defaults; and a service asked for settings it cannot honour
must refuse with the key and the fix instead of scoring with its own.
"""

from __future__ import annotations

import asyncio

import pytest

from rewards.client import AsyncRewardClient, RemoteScorer, RewardClient, ServiceError
from rewards.scorer import RewardScorer
from rewards.service import RewardService, ServiceConfig
from rewards.settings import EFFICIENCY_MODES, RewardSettings
from sandbox import Sandbox
from tests.rewards.scoring_cases import DATASET, SETTINGS, completions, task_source
from tests.rewards.service_fixtures import get, post

# The service's own settings: defaults but for what its sandbox fixes (counters, memory limit).
SERVED = RewardSettings(cost_measure="python_events", memory_mb=512)


@pytest.fixture(scope="module")
def service():
    config = ServiceConfig(port=0, workers=2, reward=SERVED)
    with RewardService(config, task_source=task_source) as running:
        yield running


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_backends_score_alike_in_every_efficiency_mode(service, ray_cluster) -> None:
    from rewards.ray_pool import RayRewardPool

    tasks, texts, groups = completions()
    # In-process and Ray: the scorers hold the `reference` mode; the others travel as per-call
    # shaping. HTTP: every request carries the complete settings.
    with Sandbox(SETTINGS.sandbox_config()) as box:
        scorer = RewardScorer(box, SETTINGS)
        local = {
            mode: scorer.score(tasks, texts, groups, shaping={"efficiency_mode": mode})
            for mode in EFFICIENCY_MODES
        }
    with RayRewardPool(SETTINGS, actors=2, workers_per_actor=1) as pool:
        ray = {
            mode: pool.score(tasks, texts, groups, shaping={"efficiency_mode": mode})
            for mode in EFFICIENCY_MODES
        }
        assert all(actor["executions"] > 0 for actor in pool.info()), "both actors scored"
    with RewardClient(service.url) as client:
        remote = {
            mode: RemoteScorer(client, DATASET, settings=SETTINGS.replace(efficiency_mode=mode)).score(
                tasks, texts, groups
            )
            for mode in EFFICIENCY_MODES
        }
    for mode in EFFICIENCY_MODES:
        assert ray[mode] == local[mode], mode
        assert remote[mode] == local[mode], mode

    statuses = [r.evidence.status for r in local["reference"]]
    kinds = ["passed", "passed", "failed", "syntax_error"]
    # The sleeper passes under the service's default 5 s: a timeout here is the request's 1 s.
    assert statuses == [*kinds, "timeout", *kinds]
    fast, slow, wrong, syntax, late = local["reference"][:5]
    # efficiency_weight 1, speedup_clip 3, format_weight 0.25: not the service's 0.5, 4 and 0.
    assert slow.evidence.speedup < 1 / 3 and slow.efficiency == -1.0
    assert slow.value == pytest.approx(1.0 - 1.0 + 0.25 * 1.0)
    assert fast.value == pytest.approx(1.0 + 0.25)
    assert wrong.value == pytest.approx(0.25) and syntax.penalty == -1.0 and late.penalty == -0.25
    group = local["group"]
    # The group's baseline is the median (here the mean) of its two passing costs.
    assert group[0].evidence.group_cost == (fast.evidence.cost + slow.evidence.cost) / 2
    assert group[0].efficiency > 0 > group[1].efficiency
    assert not fast.evidence.cost_trusted


def test_the_service_answers_with_the_settings_it_used(service) -> None:
    tasks, texts, groups = completions()
    items = [{"task_id": t.id, "completion": c, "group": g} for t, c, g in zip(tasks, texts, groups)]
    body = {"dataset": DATASET, "items": items[:2], "settings": SETTINGS.scoring_dict()}
    status, _, answer = post(service.url + "/v1/score", body)
    assert status == 200, answer
    assert answer["settings"] == SETTINGS.scoring_dict()
    assert [r["cost_trusted"] for r in answer["results"]] == [False, False]
    assert answer["results"][0]["evidence"]["cost_measure"] == "python_events"
    # Keys a request leaves out are the service's own, and the answer says so.
    body["settings"] = {"efficiency_weight": 1.0}
    status, _, answer = post(service.url + "/v1/score", body)
    assert answer["settings"] == {**SERVED.scoring_dict(), "efficiency_weight": 1.0}
    status, _, health = get(service.url + "/healthz")
    assert health["settings"] == SERVED.scoring_dict() and health["cost_trusted"] is False


def test_both_clients_send_the_settings(service) -> None:
    tasks, texts, groups = completions()
    items = [{"task_id": t.id, "completion": c, "group": g} for t, c, g in zip(tasks, texts, groups)]

    async def score_async():
        async with AsyncRewardClient(service.url) as client:
            return await client.score(DATASET, items, settings=SETTINGS)

    with RewardClient(service.url) as client:
        blocking = client.score(DATASET, items, settings=SETTINGS)
    assert asyncio.run(score_async()) == blocking
    assert blocking == RemoteScorer(RewardClient(service.url), DATASET, settings=SETTINGS).score(
        tasks, texts, groups
    )
    assert blocking[1].value == pytest.approx(0.25), "the slow copy: 1 - 1.0 + 0.25 * format"


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            {"cost_measure": "cpu"},
            409,
            "`settings.cost_measure` is cpu but this service runs code with cost_measure python_events "
            "and cannot change it per request; start the service with --cost-measure cpu",
        ),
        ({"memory_mb": 2048}, 409, "start the service with --memory-mb 2048"),
        (
            {"repeats": 50},
            409,
            "`settings.repeats` is 50, over this service's limit of 20; start the service with "
            "--max-repeats 50",
        ),
        ({"timeout_s": 90.0}, 409, "start the service with --max-run-timeout-s 90"),
        ({"allow_script_tests": True}, 409, "start the service with --allow-script-tests"),
        ({"speedup_clip": 1.0}, 400, "`settings.speedup_clip` must be > 1, got 1.0"),
        ({"workers": 4}, 400, "`settings.workers` says where the caller scores and changes no reward"),
        ({"speedup_clp": 2}, 400, "unknown key `speedup_clp`; did you mean `speedup_clip`?"),
    ],
)
def test_settings_a_service_cannot_honour_are_refused(
    service, change: dict, status: int, message: str
) -> None:
    tasks, texts, _ = completions()
    settings = {**SETTINGS.scoring_dict(), **change}
    before = service.sandbox.executions
    for route, body in (
        ("/v1/score", {"dataset": DATASET, "items": [{"task_id": tasks[0].id, "completion": texts[0]}]}),
        (
            "/v1/evaluate",
            {
                "submissions": [
                    {
                        "id": "a",
                        "code": "def f(x):\n    return x\n",
                        "entry_point": "f",
                        "tests": [{"input": [1], "expected": 1}],
                    }
                ]
            },
        ),
    ):
        got, _, answer = post(service.url + route, {**body, "settings": settings})
        assert got == status, answer
        assert message in answer["error"] and "\n" not in answer["error"]
    assert service.sandbox.executions == before, "nothing ran"
    if status == 409:
        with RewardClient(service.url) as client, pytest.raises(ServiceError, match="start the service with"):
            RemoteScorer(
                client, DATASET, settings=RewardSettings.from_mapping({**SETTINGS.to_dict(), **change})
            ).score(tasks[:1], texts[:1])


def test_a_service_reports_the_limits_its_sandbox_runs_with(box) -> None:
    with pytest.raises(ValueError, match=r"reward.memory_mb \(512\) differs from the sandbox's memory_mb"):
        RewardService(ServiceConfig(port=0, reward=SERVED), sandbox=box)


def test_every_execution_key_is_honoured_or_fixed() -> None:
    from rewards.service.schema import FIXED_BY_SANDBOX, HONOURED, HONOURED_UP_TO, OPT_IN_BY_SERVICE
    from rewards.settings import EXECUTION_KEYS

    assert sorted([*FIXED_BY_SANDBOX, *HONOURED_UP_TO, *HONOURED, *OPT_IN_BY_SERVICE]) == sorted(
        EXECUTION_KEYS
    )
