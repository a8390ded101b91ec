"""The work behind ``/v1/evaluate`` and ``/v1/score``: plan, wait until a deadline, shape, render.

Every submission ends with exactly one result: its verdict, or a ``sandbox_error`` saying why it has
none (its reference failed, the request's deadline passed). Work still running at the deadline is
left to finish and lands in the cache, so a retry of the same submission is answered from there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import pickle
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from rewards.cache import DEFAULT_MAX_BYTES, ExecutionCache, ResultFuture, code_digest
from rewards.scorer import Planned, RewardScorer, reference_cost
from rewards.service.schema import MISSING, Submission
from rewards.settings import RewardSettings
from rewards.shaping import Reward, shape_rewards
from rewards.tasks import Task
from sandbox.jobs import FunctionJob
from sandbox.types import ExecutionResult, FunctionTest, Status

MAX_FAILED_TESTS_SHOWN = 10
# Requests with at most this much code are planned on the event loop: a hop to a worker thread and
# back costs more CPU than the work (a cache key compiles the code: about 0.1 ms for a typical
# solution, and at most about 4 ms for 2 KiB written to be slow to compile). Larger ones go off it.
INLINE_CODE_CHARS = 2048


async def off_loop_if_large(chars: int, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``, on the event loop for up to :data:`INLINE_CODE_CHARS` of code,
    else in a worker thread so that the loop keeps answering meanwhile."""
    if chars <= INLINE_CODE_CHARS:
        return function(*args, **kwargs)
    return await asyncio.to_thread(function, *args, **kwargs)


def deadline_result(seconds: float) -> ExecutionResult:
    return ExecutionResult(
        Status.SANDBOX_ERROR,
        error=f"the request's deadline of {seconds:g} s passed before this submission ran; "
        "send it again (finished work is cached) or raise the service's request_timeout_s",
        error_kind="deadline",
    )


def bad_reference_result(result: ExecutionResult) -> ExecutionResult:
    return ExecutionResult(
        Status.SANDBOX_ERROR,
        error=f"the reference solution could not produce the expected outputs ({result.status.value}: "
        f"{result.error}); fix the reference or give `expected` values",
        error_kind="bad_reference",
    )


async def wait_until(futures: Sequence[concurrent.futures.Future[Any]], deadline: float) -> None:
    """Return when every future is done or the monotonic ``deadline`` has passed."""
    pending = [asyncio.wrap_future(f) for f in futures if not f.done()]
    if not pending:
        return
    # asyncio.wait leaves unfinished futures running: runs other requests share are not cancelled.
    await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))


def settled(future: ResultFuture | None, fallback: ExecutionResult | None) -> ExecutionResult | None:
    if future is None:
        return None
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return fallback


class Evaluator:
    """Runs ``/v1/evaluate`` submissions: tasks built from the request, expected values from references."""

    def __init__(
        self,
        scorer: RewardScorer,
        *,
        outputs_cache_size: int = 4096,
        outputs_cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.scorer = scorer
        self.outputs = ExecutionCache(outputs_cache_size, outputs_cache_bytes)

    def reference_outputs(self, submission: Submission, settings: RewardSettings) -> ResultFuture:
        """The run of the submission's reference that returns its outputs on the test inputs, perf
        inputs after them (cached)."""
        assert submission.reference is not None
        tests = tuple(FunctionTest(tuple(args)) for args in (*submission.inputs, *submission.perf_inputs))
        job = FunctionJob(
            submission.reference,
            submission.entry_point,
            tests,
            None,
            settings.timeout_s,
            settings.repeats,
            want_outputs=True,
        )
        key = (
            _digest((submission.entry_point, submission.inputs, submission.perf_inputs)),
            code_digest(submission.reference),
            settings.repeats,
            settings.timeout_s,
        )
        future, _ = self.outputs.get_or_submit(key, lambda: self.scorer.sandbox.submit(job))
        return future

    async def evaluate(
        self,
        submissions: Sequence[Submission],
        settings: RewardSettings,
        deadline: float,
        timeout_s: float,
    ) -> tuple[list[dict[str, Any]], list[ResultFuture | None]]:
        """One rendered result per submission, and the futures each one's slot waits on."""
        chars = sum(len(s.code) + len(s.reference or "") for s in submissions)
        outputs: list[ResultFuture | None] = [None] * len(submissions)
        if any(s.needs_reference_outputs for s in submissions):
            # Digests of every reference's code are computed before anything runs.
            outputs = await off_loop_if_large(
                chars,
                lambda: [
                    self.reference_outputs(s, settings) if s.needs_reference_outputs else None
                    for s in submissions
                ],
            )
            await wait_until([f for f in outputs if f is not None], deadline)
        tasks: list[Task | None] = []
        early: list[ExecutionResult | None] = []
        for submission, future in zip(submissions, outputs):
            ran = settled(future, deadline_result(timeout_s))
            if ran is not None and ran.status is not Status.PASSED:
                tasks.append(None)
                early.append(ran if ran.error_kind == "deadline" else bad_reference_result(ran))
                continue
            task = task_of(submission, None if ran is None else ran.outputs)
            if ran is not None and not task.perf_tests:
                # That run's cost is the reference cost on the tests; with perf tests it must be
                # measured on them alone, which the scorer does.
                self.scorer.seed_reference(task, ran, settings=settings)
            tasks.append(task)
            early.append(None)
        runnable = [i for i, task in enumerate(tasks) if task is not None]
        plan = await off_loop_if_large(
            chars,
            self.scorer.plan,
            [tasks[i] for i in runnable],
            [submissions[i].code for i in runnable],
            extract=False,
            settings=settings,
        )
        results, references = await collect(plan, deadline, timeout_s)
        by_index = dict(zip(runnable, zip(plan, results, references)))
        all_results: list[ExecutionResult] = []
        all_references: list[ExecutionResult | None] = []
        placeholder = Task(id="", prompt="")
        for i in range(len(submissions)):
            if i in by_index:
                _, result, reference = by_index[i]
                all_results.append(result)
                all_references.append(reference)
            else:
                all_results.append(early[i])  # type: ignore[arg-type]
                all_references.append(None)
        all_tasks = [task or placeholder for task in tasks]
        rewards = shape_rewards(
            all_results,
            all_tasks,
            [task.id for task in all_tasks],
            settings,
            reference_costs=[None if r is None else reference_cost(r) for r in all_references],
        )
        cached = {i: by_index[i][0].cached for i in by_index}
        rendered = [
            render_evaluation(s, result, reference, reward, cached.get(i, False))
            for i, (s, result, reference, reward) in enumerate(
                zip(submissions, all_results, all_references, rewards)
            )
        ]
        holds = [by_index[i][0].result if i in by_index else None for i in range(len(submissions))]
        return rendered, holds


async def collect(
    plan: Sequence[Planned], deadline: float, timeout_s: float
) -> tuple[list[ExecutionResult], list[ExecutionResult | None]]:
    """Each planned sample's verdict and reference run, a deadline result where time ran out."""
    futures = [p.result for p in plan] + [p.reference for p in plan if p.reference is not None]
    await wait_until(futures, deadline)
    late = deadline_result(timeout_s)
    results = [settled(p.result, late) for p in plan]
    references = [settled(p.reference, None) for p in plan]
    return results, references  # type: ignore[return-value]


def task_of(submission: Submission, reference_outputs: list[Any] | None) -> Task:
    """A task for the submission, its missing expected values taken from the reference's outputs
    (those of the tests first, then those of the perf tests).

    The id is a digest of everything that decides a verdict, so equal problems share cached runs.
    """
    values = [*submission.expected, *submission.perf_expected]
    filled = [
        reference_outputs[i] if value is MISSING and reference_outputs is not None else value
        for i, value in enumerate(values)
    ]
    split = len(submission.expected)
    tests = tuple(FunctionTest(tuple(a), v) for a, v in zip(submission.inputs, filled[:split]))
    perf = tuple(FunctionTest(tuple(a), v) for a, v in zip(submission.perf_inputs, filled[split:]))
    references = (submission.reference,) if submission.reference else ()
    ident = _digest((submission.entry_point, tests, perf, submission.atol, references))
    return Task(
        id=f"evaluate/{ident}",
        prompt="",
        entry_point=submission.entry_point,
        function_tests=tests,
        perf_tests=perf,
        references=references,
        atol=submission.atol,
    )


def render_evaluation(
    submission: Submission,
    result: ExecutionResult,
    reference: ExecutionResult | None,
    reward: Reward,
    cached: bool,
) -> dict[str, Any]:
    """The JSON result of one ``/v1/evaluate`` submission (costs in CPU seconds)."""
    failed = [
        {"index": i, "error": outcome.error} for i, outcome in enumerate(result.tests) if not outcome.passed
    ]
    reference_cpu = None
    if reference is not None and reference.status is Status.PASSED and reference.cost is not None:
        reference_cpu = reference.cost.cpu_s
    return {
        "id": submission.id,
        "status": result.status.value,
        "passed": result.passed,
        "total": result.total,
        "cost": None if result.cost is None else result.cost.cpu_s,
        "reference_cost": reference_cpu,
        "speedup": reward.evidence.speedup,
        "reward": reward.value,
        "details": {
            "parts": reward.parts,
            "error": result.error,
            "error_kind": result.error_kind,
            "failed_tests": failed[:MAX_FAILED_TESTS_SHOWN],
            "failed_count": len(failed),
            "cost_measure": reward.evidence.cost_measure,
            "cost_trusted": reward.evidence.cost_trusted,
            "measured": None if result.cost is None else result.to_dict()["cost"],
            "repeats": len(result.costs),
            "cached": cached,
        },
    }


def render_score(task_id: str, reward: Reward, cached: bool) -> dict[str, Any]:
    """The JSON result of one ``/v1/score`` item: :meth:`Reward.to_dict` plus the task id, whether it
    came from the cache, and whether its cost measure is trusted (False for python_events, which the
    candidate can switch off)."""
    return {
        "task_id": task_id,
        **reward.to_dict(),
        "cached": cached,
        "cost_trusted": reward.evidence.cost_trusted,
    }


async def score_items(
    scorer: RewardScorer,
    tasks: Sequence[Task],
    completions: Sequence[str],
    groups: Sequence[Hashable],
    *,
    extract: bool,
    settings: RewardSettings,
    deadline: float,
    timeout_s: float,
) -> tuple[list[dict[str, Any]], list[ResultFuture]]:
    # Extracting and fingerprinting code (linear, but pure Python) runs off the event loop when large.
    chars = sum(len(completion) for completion in completions)
    plan = await off_loop_if_large(chars, scorer.plan, tasks, completions, extract=extract, settings=settings)
    results, references = await collect(plan, deadline, timeout_s)
    rewards = shape_rewards(
        results,
        list(tasks),
        groups,
        settings,
        reference_costs=[None if r is None else reference_cost(r) for r in references],
        formats=[p.signals for p in plan],
    )
    rendered = [render_score(task.id, reward, p.cached) for task, reward, p in zip(tasks, rewards, plan)]
    return rendered, [p.result for p in plan]


def _digest(value: Any) -> str:
    return hashlib.blake2b(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), digest_size=12).hexdigest()
