"""`TrlReward`: effirl rewards as a reward function for TRL's ``GRPOTrainer``.

TRL calls each reward function with keyword arguments: ``prompts``, ``completions``,
``completion_ids``, every other dataset column (one value per completion), ``trainer_state``,
``log_metric`` and ``log_extra``; it wants one float per completion back. ::

    from trl import GRPOConfig, GRPOTrainer
    reward = TrlReward(RewardScorer(sandbox, settings), tasks)      # tasks: id -> Task
    dataset = Dataset.from_list(trl_rows(tasks.values()))           # columns: prompt, task_id
    GRPOTrainer(model, reward_funcs=[reward], args=GRPOConfig(...), train_dataset=dataset).train()

A row names its task by a ``task_id`` column (looked up in the tasks given, perf tests and all), or
carries the task itself in ``entry_point`` and ``tests`` columns (``tests`` as a list of
``{"input": [...], "expected": ...}`` or that list as tagged JSON text; optional ``perf_tests`` in
the same form, ``reference`` and ``atol`` columns), the schema of the service's ``/v1/evaluate``
submissions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from rewards.shaping import Reward
from rewards.tasks import Task
from sandbox import codec
from sandbox.types import FunctionTest

PARTS = ("correctness", "efficiency", "format", "penalty")


class BatchScorer(Protocol):
    """What :class:`TrlReward` scores with: ``RewardScorer``, ``RayRewardPool`` or ``RemoteScorer``."""

    def score(
        self, tasks: Sequence[Task], completions: Sequence[str], group_ids: Sequence[Hashable] | None = None
    ) -> list[Reward]: ...


class TrlReward:
    """A callable with TRL's reward-function signature, scoring with an effirl scorer.

    scorer: anything with ``score(tasks, completions, group_ids) -> list[Reward]``.
    tasks: the tasks ``task_id`` columns refer to (a mapping id -> Task, or Tasks); None when rows
        carry their tasks inline.
    task_id_column: name of the column holding task ids.
    name: how TRL labels this reward in its logs (``rewards/<name>/mean``).

    Each call logs the mean of every reward part (``effirl/correctness`` ...) through TRL's
    ``log_metric`` and each completion's verdict as the ``effirl_status`` column through ``log_extra``.
    Completions of the same prompt (and task) form one group for group-relative efficiency.
    """

    def __init__(
        self,
        scorer: BatchScorer,
        tasks: Mapping[str, Task] | Iterable[Task] | None = None,
        *,
        task_id_column: str = "task_id",
        name: str = "effirl_reward",
    ) -> None:
        self.scorer = scorer
        if tasks is None:
            self.tasks: Mapping[str, Task] = {}
        elif isinstance(tasks, Mapping):
            self.tasks = tasks  # not copied: a lazy mapping loads its dataset when first asked
        else:
            self.tasks = {task.id: task for task in tasks}
        self.task_id_column = task_id_column
        self.__name__ = name
        self.last_rewards: list[Reward] = []

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        *,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list[Any]], None] | None = None,
        **columns: Any,
    ) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(completions)} completions; TRL passes one each"
            )
        tasks = [self._task_of(i, columns) for i in range(len(completions))]
        texts = [completion_text(c) for c in completions]
        groups = group_ids(prompts, tasks)
        rewards = self.scorer.score(tasks, texts, groups)
        self.last_rewards = rewards
        if log_metric is not None and rewards:
            for part in PARTS:
                log_metric(f"effirl/{part}", sum(getattr(r, part) for r in rewards) / len(rewards))
            log_metric("effirl/pass_rate", sum(r.evidence.status == "passed" for r in rewards) / len(rewards))
        if log_extra is not None:
            log_extra("effirl_status", [r.evidence.status for r in rewards])
        return [float(r.value) for r in rewards]

    def _task_of(self, index: int, columns: Mapping[str, Sequence[Any]]) -> Task:
        if self.task_id_column in columns:
            ident = columns[self.task_id_column][index]
            task = self.tasks.get(ident)
            if task is None:
                raise KeyError(
                    f"row {index}: {self.task_id_column} {ident!r} is not among the {len(self.tasks)} tasks "
                    "given to TrlReward; pass the tasks the dataset was built from"
                )
            return task
        if "entry_point" in columns and "tests" in columns:
            return task_from_columns({key: values[index] for key, values in columns.items()})
        raise KeyError(
            f"rows need a `{self.task_id_column}` column (with tasks given to TrlReward) or "
            f"`entry_point` and `tests` columns; this dataset has {sorted(columns)}"
        )


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal content parts
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    raise TypeError(f"a completion must be text or a list of messages, got {type(completion).__name__}")


def group_ids(prompts: Sequence[Any], tasks: Sequence[Task]) -> list[int]:
    """Completions with the same prompt and task share a group id (TRL repeats each prompt in a row)."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for prompt, task in zip(prompts, tasks):
        key = (
            task.id,
            prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str),
        )
        out.append(seen.setdefault(key, len(seen)))
    return out


def task_from_columns(row: Mapping[str, Any]) -> Task:
    """A task from a row's ``entry_point``, ``tests`` and optional ``perf_tests``/``reference``/
    ``atol``/``task_id`` (``perf_tests`` in the form of ``tests``; cost is measured on them alone)."""
    raw, tests = _column_tests(row, "tests")
    if not tests:
        raise ValueError("the `tests` column must hold a non-empty list of {'input': [...], 'expected': ...}")
    raw_perf, perf = _column_tests(row, "perf_tests") if row.get("perf_tests") is not None else ([], [])
    reference = row.get("reference")
    hashed = [row["entry_point"], raw, raw_perf] if raw_perf else [row["entry_point"], raw]
    ident = (
        row.get("task_id")
        or "inline/" + hashlib.blake2b(codec.dumps(hashed).encode(), digest_size=8).hexdigest()
    )
    return Task(
        id=str(ident),
        prompt=str(row.get("prompt", "")),
        entry_point=row["entry_point"],
        function_tests=tuple(tests),
        perf_tests=tuple(perf),
        references=(reference,) if reference else (),
        atol=row.get("atol"),
    )


def _column_tests(row: Mapping[str, Any], column: str) -> tuple[list[Any], list[FunctionTest]]:
    raw = row[column]
    raw = codec.loads(raw) if isinstance(raw, str) else codec.from_jsonable(raw)
    if not isinstance(raw, list):
        raise ValueError(f"the `{column}` column must hold a list of {{'input': [...], 'expected': ...}}")
    tests = []
    for index, test in enumerate(raw):
        if not isinstance(test, dict) or "input" not in test or "expected" not in test:
            raise ValueError(f"test {index} of the `{column}` column needs `input` and `expected`: {test!r}")
        tests.append(FunctionTest(tuple(test["input"]), test["expected"]))
    return raw, tests


def trl_rows(
    tasks: Iterable[Task],
    *,
    prompt: Callable[[Task], Any] | None = None,
    conversational: bool = False,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Dataset rows for TRL: ``{"prompt": ..., "task_id": ...}`` per task (``prompt`` renders it).

    conversational: the prompt as chat messages (``[{"role": "user", "content": ...}]``, after a
        system turn when ``system_prompt`` is given), so TRL applies the model's chat template and
        completions come back as messages; otherwise the rendered text as it is.
    """
    render = prompt or (lambda task: task.prompt)
    rows = []
    for task in tasks:
        text = render(task)
        if conversational:
            messages = [{"role": "user", "content": text}]
            if system_prompt is not None:
                messages.insert(0, {"role": "system", "content": system_prompt})
            text = messages
        rows.append({"prompt": text, "task_id": task.id})
    return rows


# ------------------------------------------------------------------- a reward function TRL can name

_reward: TrlReward | None = None


def efficiency_reward(
    prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
) -> list[float]:
    """effirl's reward (correctness plus efficiency) as a module-level TRL reward function.

    For command lines that name reward functions by import path, e.g. ``trl grpo --reward_funcs
    effirl.trl.efficiency_reward``. It is configured by the environment (``EFFIRL_REWARD_CONFIG``, a
    small YAML file, and ``EFFIRL_REWARD_<KEY>`` variables; see :mod:`rewards.hook`): rows name their
    task by ``task_id`` in the configured dataset, or carry ``entry_point`` and ``tests`` columns.
    Logs as :class:`TrlReward` does, under TRL's ``rewards/efficiency_reward/*``.
    """
    global _reward
    if _reward is None:
        from rewards.hook import shared_hook

        hook = shared_hook()
        _reward = TrlReward(_HookScorer(hook), _LazyTasks(hook), name="efficiency_reward")
    return _reward(prompts, completions, completion_ids, **kwargs)


class _HookScorer:
    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def score(
        self, tasks: Sequence[Task], completions: Sequence[str], group_ids: Sequence[Hashable] | None = None
    ) -> list[Reward]:
        return self.hook.score(tasks, completions, group_ids)


class _LazyTasks(Mapping[str, Task]):
    """The configured dataset's tasks, loaded when a row first names one by id."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook

    def __getitem__(self, key: str) -> Task:
        return self.hook.tasks()[key]

    def __iter__(self) -> Any:
        return iter(self.hook.tasks())

    def __len__(self) -> int:
        return len(self.hook.tasks())
