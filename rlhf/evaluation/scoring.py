"""Run sampled solutions in the sandbox through the reward layer and turn verdicts into records.

Each completion becomes ``response_prefix(task, style) + completion`` (the part of the answer the
prompt already wrote, e.g. an opening code fence), code is extracted and run against all of the
task's tests by :class:`rewards.scorer.RewardScorer`, and each task's reference solution is
measured once, by the same sandbox, with the same repeats. Tasks with perf tests are measured on
those alone, after the correctness tests pass, so speedups, NET and eff@k compare costs there. With
``cost="callgrind"`` the passing samples and the references are measured again, exactly, by
:mod:`sandbox.callgrind` (on the perf tests where a task has them).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from dataclasses import dataclass

from rewards.scorer import RewardScorer, cost_job_for, reference_cost
from rewards.settings import RewardSettings
from rewards.shaping import PERF_TIMEOUT, cost_value, shape_rewards
from rewards.tasks import Task
from rlhf.evaluation.records import SampleRecord
from rlhf.rollout import response_prefix
from sandbox.types import ExecutionResult, Status

COST_MODES = ("cpu", "python_events", "instructions", "callgrind")


@dataclass(frozen=True)
class ScoringOptions:
    """How solutions are run and measured.

    cost: ``cpu`` (CPU seconds measured by the kernel), ``python_events`` (executed Python lines;
        deterministic), ``instructions`` (hardware counters, where the kernel allows them) or
        ``callgrind`` (instructions counted by valgrind; exact, slow; see sandbox/callgrind.py).
    repeats: runs per solution and per reference; the median cost counts.
    timeout_s / memory_mb: limits of one solution's run over all its tests.
    workers: sandbox processes (None: one per CPU core).
    prompt_style: how the prompts were rendered (which prefix completions continue).
    """

    cost: str = "cpu"
    repeats: int = 1
    timeout_s: float = 10.0
    memory_mb: int = 1024
    workers: int | None = None
    prompt_style: str = "chat_fence"
    callgrind_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.cost not in COST_MODES:
            raise ValueError(f"unknown cost measure {self.cost!r}; use one of {', '.join(COST_MODES)}")

    @property
    def sandbox_measure(self) -> str:
        """What the sandbox itself counts (callgrind re-measures CPU-judged passes afterwards)."""
        return "cpu" if self.cost == "callgrind" else self.cost

    def reward_settings(self) -> RewardSettings:
        return RewardSettings(
            cost_measure=self.sandbox_measure,  # type: ignore[arg-type]
            repeats=self.repeats,
            timeout_s=self.timeout_s,
            # One fixed limit, as the published benchmarks judge correctness (a slow correct solution
            # passes); the reference-scaled limit is for the training loop's latency.
            timeout_factor=0.0,
            memory_mb=self.memory_mb,
            workers=self.workers,
            efficiency_mode="reference",
            # Evaluation measures a model for its user; nothing is trained on these verdicts, so
            # HumanEval's few script-only tasks are run too (docs/sandbox.md, trust levels).
            allow_script_tests=True,
        )


class SolutionScorer:
    """Owns one sandbox pool for a whole evaluation, so references are measured once per task."""

    def __init__(self, options: ScoringOptions) -> None:
        from sandbox import Sandbox

        self.options = options
        self.settings = options.reward_settings()
        self.sandbox = Sandbox(self.settings.sandbox_config())
        self.scorer = RewardScorer(self.sandbox, self.settings, cache_size=1 << 16)
        self._callgrind_references: dict[str, float | None] = {}

    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> SolutionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score(
        self, tasks: Sequence[Task], completions: Sequence[str], indices: Sequence[int]
    ) -> list[SampleRecord]:
        """Records for ``completions[i]`` answering ``tasks[i]`` (sample number ``indices[i]``)."""
        from tqdm.auto import tqdm

        style = self.options.prompt_style
        answers = [response_prefix(task, style) + text for task, text in zip(tasks, completions)]
        plan = self.scorer.plan(tasks, answers)
        results: list[ExecutionResult] = []
        for item in tqdm(plan, desc="execute", unit="sample", dynamic_ncols=True, leave=False):
            results.append(item.result.result())
        references = [None if p.reference is None else p.reference.result() for p in plan]
        rewards = shape_rewards(
            results,
            list(tasks),
            [f"{task.id}" for task in tasks],
            self.settings,
            reference_costs=[None if r is None else reference_cost(r) for r in references],
            formats=[p.signals for p in plan],
        )
        records = [
            self._record(task, completion, index, item.code, result, reference, reward.value)
            for task, completion, index, item, result, reference, reward in zip(
                tasks, completions, indices, plan, results, references, rewards
            )
        ]
        if self.options.cost == "callgrind":
            self._measure_with_callgrind(tasks, records)
        return records

    def _record(
        self,
        task: Task,
        completion: str,
        index: int,
        code: str,
        result: ExecutionResult,
        reference: ExecutionResult | None,
        reward: float,
    ) -> SampleRecord:
        measure = self.options.sandbox_measure
        passed = result.status is Status.PASSED
        reference_ok = reference is not None and reference.status is Status.PASSED
        return SampleRecord(
            task_id=task.id,
            index=index,
            completion=completion,
            code=code,
            status=result.status.value,
            passed=passed,
            base_passed=base_tests_passed(task, result),
            tests_passed=result.passed,
            tests_total=result.total,
            cost=cost_value(result.cost, measure) if passed else None,
            reference_cost=cost_value(reference.cost, measure) if reference_ok else None,  # type: ignore[union-attr]
            memory_bytes=result.cost.peak_memory_bytes if passed and result.cost else None,
            reference_memory_bytes=(
                reference.cost.peak_memory_bytes if reference_ok and reference.cost else None  # type: ignore[union-attr]
            ),
            reward=reward,
            error_kind=result.error_kind,
            error=result.error,
            cost_measure=self.options.cost,
        )

    def _measure_with_callgrind(self, tasks: Sequence[Task], records: list[SampleRecord]) -> None:
        """Replace the costs of passing samples and their references with callgrind counts."""
        from tqdm.auto import tqdm

        from sandbox.callgrind import CallgrindConfig, CallgrindFailed, count_instructions

        config = CallgrindConfig(timeout_s=self.options.callgrind_timeout_s)

        def measure(task: Task, code: str) -> float | None:
            try:
                return float(count_instructions(cost_job_for(task, code), config=config))
            except CallgrindFailed:
                return None

        jobs: dict[tuple[str, str], tuple[Task, str]] = {}
        for task, record in zip(tasks, records):
            record.cost = record.reference_cost = None
            if record.passed and record.error_kind != PERF_TIMEOUT:  # past the limit: not worth 50x
                jobs[(task.id, record.code)] = (task, record.code)
                if task.id not in self._callgrind_references and task.reference:
                    jobs[(task.id, "\0reference")] = (task, task.reference)
        workers = self.options.workers or os.cpu_count() or 1
        counts: dict[tuple[str, str], float | None] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(measure, *job): key for key, job in jobs.items()}
            done = concurrent.futures.as_completed(futures)
            for future in tqdm(done, total=len(futures), desc="callgrind", unit="run", leave=False):
                counts[futures[future]] = future.result()
        for key, count in counts.items():
            if key[1] == "\0reference":
                self._callgrind_references[key[0]] = count
        for record in records:
            if record.passed and record.error_kind != PERF_TIMEOUT:
                record.cost = counts.get((record.task_id, record.code))
                record.reference_cost = self._callgrind_references.get(record.task_id)


def base_tests_passed(task: Task, result: ExecutionResult) -> bool:
    """Whether the benchmark's base tests (the first ``task.n_base_tests``) all passed.

    Tests that ran report their own outcomes even when a later (extra) test failed or timed out, so
    a solution that is only wrong or slow on the extra inputs still passes the base tests.
    """
    if result.status is Status.PASSED:
        return True
    n_base = task.n_base_tests
    if n_base is None or not task.function_tests or n_base >= len(task.function_tests):
        return False
    if result.status in (Status.SYNTAX_ERROR, Status.SANDBOX_ERROR) or len(result.tests) < n_base:
        return False
    return all(outcome.passed for outcome in result.tests[:n_base])
