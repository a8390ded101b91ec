"""`compute_score`: effirl's reward (correctness and efficiency) for verl's custom reward hook.

verl loads a reward function from a file by path and name::

    custom_reward_function:
      path: <the file of effirl.verl: python -c "import effirl.verl as m; print(m.__file__)">
      name: compute_score

and calls it once per sample (``reward_model.reward_manager=naive``, the default) as
``compute_score(data_source, solution_str, ground_truth, extra_info)``, or once per batch
(``reward_manager=batch``) as ``compute_score(data_sources=..., solution_strs=..., ground_truths=...,
extra_infos=...)``. Both work. A sample's task is

- ``ground_truth`` = a task id of the configured dataset (``EFFIRL_REWARD_DATASET`` or
  ``$EFFIRL_REWARD_CONFIG``, see :mod:`rewards.hook`), or of the dataset named by ``data_source`` when
  none is configured; or
- ``ground_truth`` = a task as JSON: ``{"entry_point": "f", "tests": [{"input": [...], "expected":
  ...}, ...], "reference": "..."}``, the schema of the reward service's ``/v1/evaluate``.

The result is a dict: ``score`` (the reward, what verl trains on) and its parts ``correctness``,
``efficiency``, ``format``, ``penalty``, ``passed`` (0 or 1), which verl logs. In batch mode the
samples of one task form a group for group-relative efficiency (``efficiency_mode: group``).
Keyword arguments from ``custom_reward_function.reward_kwargs`` change shaping settings
(``efficiency_weight``, ``speedup_clip``, ...) for every call.

Unlike verl's ``sandbox_fusion`` reward, which asks ``/run_code`` whether each test passed, this
measures the cost against the task's reference, so faster correct code earns more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rewards.shaping import Reward
from rewards.tasks import Task
from rewards.trl import PARTS, task_from_columns
from rewards.user_error import UserError

__all__ = ["compute_score"]


def compute_score(
    data_source: str | None = None,
    solution_str: str | None = None,
    ground_truth: Any = None,
    extra_info: Any = None,
    *,
    data_sources: Sequence[str] | None = None,
    solution_strs: Sequence[str] | None = None,
    ground_truths: Sequence[Any] | None = None,
    extra_infos: Sequence[Any] | None = None,
    **shaping: Any,
) -> dict[str, float] | list[dict[str, float]]:
    """effirl's reward of one sample (verl's naive reward manager) or of a batch (its batch manager)."""
    from rewards.hook import shared_hook

    hook = shared_hook()
    if solution_strs is not None:
        texts = list(solution_strs)
        sources = list(data_sources) if data_sources is not None else [None] * len(texts)
        truths = list(ground_truths) if ground_truths is not None else [None] * len(texts)
        if not len(sources) == len(truths) == len(texts):
            raise ValueError(
                f"got {len(texts)} solution_strs, {len(sources)} data_sources and {len(truths)} ground_truths"
            )
        tasks = [task_of(hook, source, truth) for source, truth in zip(sources, truths)]
        rewards = hook.score(tasks, texts, [task.id for task in tasks], shaping=shaping)
        return [result_of(reward) for reward in rewards]
    if solution_str is None:
        raise TypeError("compute_score needs solution_str (one sample) or solution_strs (a batch)")
    task = task_of(hook, data_source, ground_truth)
    return result_of(hook.score([task], [solution_str], shaping=shaping)[0])


def task_of(hook: Any, data_source: str | None, ground_truth: Any) -> Task:
    """The task a sample answers: ``ground_truth`` as a task id, or as an inline task (JSON/dict)."""
    inline = ground_truth
    if isinstance(ground_truth, str) and ground_truth.lstrip().startswith("{"):
        try:
            inline = json.loads(ground_truth)
        except json.JSONDecodeError as exc:
            raise UserError(f"ground_truth looks like JSON but does not parse: {exc}") from None
    if isinstance(inline, dict):
        if "entry_point" not in inline or "tests" not in inline:
            raise UserError(
                "an inline ground_truth needs `entry_point` and `tests` ([{'input': [...], 'expected': ...}])"
            )
        return task_from_columns(inline)
    if not isinstance(ground_truth, str):
        raise UserError(
            f"ground_truth must be a task id or an inline task, got {type(ground_truth).__name__}"
        )
    configured = hook.config.dataset is not None
    tasks = hook.tasks() if configured else hook.tasks(data_source)
    task = tasks.get(ground_truth)
    if task is None:
        where = hook.config.dataset if configured else data_source
        raise UserError(f"ground_truth {ground_truth!r} is not a task id of {where} ({len(tasks)} tasks)")
    return task


def result_of(reward: Reward) -> dict[str, float]:
    """What verl gets for one sample: the score and the parts it logs."""
    result = {"score": float(reward.value)}
    result.update({part: float(getattr(reward, part)) for part in PARTS})
    result["passed"] = float(reward.evidence.status == "passed")
    return result
