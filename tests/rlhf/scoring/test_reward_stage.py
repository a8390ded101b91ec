"""The trainer's reward stage scores with the recipe's `reward` settings whichever backend it uses."""

from __future__ import annotations

import pytest

from rewards.client import ServiceError
from rewards.service import RewardService, ServiceConfig
from rewards.settings import RewardSettings
from rlhf.config import load_config
from rlhf.scoring.reward_stage import RewardStage, reward_settings
from tests.rewards.scoring_cases import DATASET, SETTINGS, completions, task_source

# The recipe's reward section: every key of SETTINGS (none is a default), completions taken as text.
OVERRIDES = ["data.prompt_style=chat"] + [
    f"reward.{key}={value}" for key, value in SETTINGS.to_dict().items() if value is not None
]


def test_the_recipe_section_is_the_settings_the_backends_get() -> None:
    config = load_config(None, OVERRIDES)
    assert reward_settings(config) == SETTINGS
    assert type(reward_settings(config)) is RewardSettings


def test_a_service_scores_with_the_recipes_settings_or_refuses() -> None:
    tasks, texts, groups = completions()
    local = RewardStage(load_config(None, OVERRIDES), backend="local")
    try:
        expected = local.score_texts(tasks, texts, groups)
    finally:
        local.close()
    served = RewardSettings(cost_measure="python_events", memory_mb=512)  # defaults otherwise
    with RewardService(ServiceConfig(port=0, workers=2, reward=served), task_source=task_source) as service:
        stage = RewardStage(load_config(None, [*OVERRIDES, f"reward.service_url={service.url}"]))
        assert stage.backend == "http"
        stage.register_tasks(tasks, DATASET, None)
        try:
            assert stage.score_texts(tasks, texts, groups) == expected
        finally:
            stage.close()
    cpu_service = ServiceConfig(port=0, workers=1, reward=RewardSettings(memory_mb=512))
    with RewardService(cpu_service, task_source=task_source) as service:
        stage = RewardStage(load_config(None, [*OVERRIDES, f"reward.service_url={service.url}"]))
        stage.register_tasks(tasks, DATASET, None)
        with pytest.raises(
            ServiceError, match="start the service with --cost-measure python_events"
        ) as refused:
            stage.score_texts(tasks, texts, groups)
        assert refused.value.status == 409
        stage.close()
