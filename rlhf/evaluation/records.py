"""What an evaluation writes: one record per sample, per-task summaries and the metrics, as results.json."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.tasks import Task
from rlhf.evaluation.metrics import (
    ENAMEL_ALPHA,
    MEMORY_FLOOR_BYTES,
    SampleOutcome,
    TaskSummary,
    aggregate,
    summarise_task,
)

RESULTS_FILE = "results.json"
RESULTS_FORMAT = "effirl-eval/1"
# Task metadata an evaluation groups its metrics by, where tasks carry it (synthetic tasks do).
GROUP_KEYS = ("split", "family")
# The metrics kept per group (all of aggregate()'s would repeat the headline table per family).
GROUP_METRICS = ("tasks", "pass@1", "eff@1", "solved_tasks", "measured_tasks", "speedup_geomean")
# Smallest cost each measure resolves; costs are floored to it before they are divided.
COST_FLOORS = {"cpu": 1e-6, "python_events": 1.0, "instructions": 1.0, "callgrind": 1.0}


@dataclass
class SampleRecord:
    """One sampled solution and its verdict.

    index: the sample's number among its task's samples. code: what was extracted and run.
    passed / base_passed: all tests / the benchmark's base tests passed.
    cost, reference_cost: in the evaluation's cost measure (CPU seconds, Python events or
    instructions), None where not measured. memory_bytes: peak memory the run added.
    """

    task_id: str
    index: int
    completion: str
    code: str
    status: str
    passed: bool
    base_passed: bool
    tests_passed: int
    tests_total: int
    cost: float | None = None
    reference_cost: float | None = None
    memory_bytes: int | None = None
    reference_memory_bytes: int | None = None
    reward: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    cost_measure: str = "cpu"

    @property
    def cost_ratio(self) -> float | None:
        """Candidate cost over reference cost (EffiBench's normalised execution time), if passed."""
        if not self.passed or self.cost is None or self.reference_cost is None:
            return None
        floor = COST_FLOORS[self.cost_measure]
        return max(self.cost, floor) / max(self.reference_cost, floor)

    @property
    def memory_ratio(self) -> float | None:
        if not self.passed or self.memory_bytes is None or self.reference_memory_bytes is None:
            return None
        return max(self.memory_bytes, MEMORY_FLOOR_BYTES) / max(
            self.reference_memory_bytes, MEMORY_FLOOR_BYTES
        )

    @property
    def speedup(self) -> float | None:
        ratio = self.cost_ratio
        return None if ratio is None else 1.0 / ratio

    def outcome(self) -> SampleOutcome:
        return SampleOutcome(self.task_id, self.passed, self.base_passed, self.cost_ratio, self.memory_ratio)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "speedup": self.speedup}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def task_labels(tasks: Iterable[Task]) -> dict[str, dict[str, str]]:
    """Each task's split and family, from its metadata, for the per-group metrics."""
    labels = {}
    for task in tasks:
        found = {k: task.metadata[k] for k in GROUP_KEYS if isinstance(task.metadata.get(k), str)}
        if found:
            labels[task.id] = found
    return labels


def group_metrics(
    summaries: Sequence[TaskSummary], labels: Mapping[str, Mapping[str, str]]
) -> dict[str, list[dict[str, Any]]]:
    """Metrics per split and per (split, family) of the labelled tasks, sorted by name.

    ``{"split": [{"split": s, "tasks": ..., "pass@1": ...}, ...], "family": [{"split": s,
    "family": f, ...}, ...]}``; a key is absent when no task carries the label.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for depth, key in enumerate(GROUP_KEYS, 1):
        names = GROUP_KEYS[:depth]
        members: dict[tuple[str, ...], list[TaskSummary]] = defaultdict(list)
        for summary in summaries:
            label = labels.get(summary.task_id, {})
            if key in label:
                members[tuple(label.get(n, "") for n in names)].append(summary)
        if members:
            groups[key] = [
                {**dict(zip(names, group)), **_kept(aggregate(members[group]))} for group in sorted(members)
            ]
    return groups


def _kept(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in GROUP_METRICS}


@dataclass
class EvaluationResult:
    """Everything one evaluation found: its settings (``meta``), metrics, tasks and samples, and
    ``groups``: metrics per split and per family where the tasks say which (see group_metrics)."""

    meta: dict[str, Any]
    metrics: dict[str, Any]
    tasks: list[dict[str, Any]]
    samples: list[SampleRecord] = field(default_factory=list)
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        meta: dict[str, Any],
        samples: Sequence[SampleRecord],
        alpha: float = ENAMEL_ALPHA,
        labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> EvaluationResult:
        """Summarise ``samples`` per task (in first-seen order), per group of ``labels`` (task id
        -> split and family, see task_labels) and over the benchmark."""
        labels = labels or {}
        by_task: dict[str, list[SampleRecord]] = defaultdict(list)
        for sample in samples:
            by_task[sample.task_id].append(sample)
        summaries = [
            summarise_task(task_id, [s.outcome() for s in group], alpha) for task_id, group in by_task.items()
        ]
        statuses: dict[str, int] = defaultdict(int)
        for sample in samples:
            statuses[sample.status] += 1
        metrics: dict[str, Any] = dict(aggregate(summaries))
        metrics["reward_mean"] = sum(s.reward for s in samples) / max(len(samples), 1)
        metrics.update({f"status/{k}": v / max(len(samples), 1) for k, v in sorted(statuses.items())})
        tasks = []
        for summary in summaries:
            row = dataclasses.asdict(summary)
            row["enamel_scores"] = list(summary.enamel_scores)
            reference = next(
                (s.reference_cost for s in by_task[summary.task_id] if s.reference_cost is not None), None
            )
            row["reference_cost"] = reference
            row["cost"] = (
                None if summary.cost_ratio is None or reference is None else summary.cost_ratio * reference
            )
            row.update(labels.get(summary.task_id, {}))
            tasks.append(row)
        return cls(
            meta=dict(meta, enamel_alpha=alpha),
            metrics=metrics,
            tasks=tasks,
            samples=list(samples),
            groups=group_metrics(summaries, labels),
        )

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``results.json`` into ``folder`` (atomically: a temporary file renamed into place)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = {
            "format": RESULTS_FORMAT,
            "meta": self.meta,
            "metrics": self.metrics,
            "tasks": self.tasks,
            "groups": self.groups,
            "samples": [s.to_dict() for s in self.samples],
        }
        handle, temporary = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            json.dump(json_ready(data), f, indent=1)
        path = folder / RESULTS_FILE
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> EvaluationResult:
        """Read the results.json in ``folder`` (or the file itself); ValueError names what is wrong."""
        path = Path(folder)
        if path.is_dir():
            path = path / RESULTS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no evaluation results at {path}; point at a folder written by `effirl eval`"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
            raise ValueError(f"{path} is not an effirl evaluation result (format {RESULTS_FORMAT!r})")
        return cls(
            meta=data["meta"],
            metrics=data["metrics"],
            tasks=data["tasks"],
            samples=[SampleRecord.from_dict(s) for s in data["samples"]],
            groups=data.get("groups") or {},
        )

    def task_rows(self) -> dict[str, dict[str, Any]]:
        return {row["task_id"]: row for row in self.tasks}


def json_ready(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
