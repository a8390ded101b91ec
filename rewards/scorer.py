"""`RewardScorer`: score a batch of (task, completion) pairs with a :class:`sandbox.Sandbox`.

For each pair: extract the code from the completion, turn the task's tests into a sandbox job, run
all jobs of the batch in parallel (identical pairs once, through :class:`ExecutionCache`), measure each
task's reference once, and shape the rewards (:func:`rewards.shaping.shape_rewards`).

A task with ``perf_tests`` runs in two steps (:func:`submit_run`): its correctness tests once, then,
only if they all pass, its perf tests with the configured repeats. The perf run is judged like any
other (a wrong output fails the sample) and its cost is the sample's cost; the reference is measured
the same way, so speedups compare costs on the perf tests only.

A batch that arrives one sample at a time (completions handed over as a rollout engine finishes
them) goes through a :class:`ScoringStream`: each sample runs as soon as it arrives, and the rewards
are shaped once all are in, exactly as :meth:`RewardScorer.score` would shape them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewards.cache import DEFAULT_MAX_BYTES, ExecutionCache, ResultFuture, code_digest, task_fingerprint
from rewards.extraction import extract_code, with_prompt_imports
from rewards.settings import SHAPING_KEYS, RewardSettings
from rewards.shaping import PERF_TIMEOUT, FormatSignals, Reward, shape_rewards
from rewards.tasks import Task
from sandbox.jobs import FunctionJob, Job, ProgramJob, ScriptJob
from sandbox.types import Cost, ExecutionResult, FunctionTest, Status

log = logging.getLogger(__name__)
FINGERPRINTS_KEPT = 65536


class TaskError(ValueError):
    """A task that cannot be scored as given (no tests, no entry point for function tests)."""


def job_for(
    task: Task,
    code: str,
    *,
    timeout_s: float | None = None,
    repeats: int | None = None,
    allow_script: bool = True,
) -> Job:
    """The sandbox job that checks ``code`` against ``task``'s tests.

    Function tests win over program tests, which win over a test script (the weakest trust level: the
    verdict comes from inside the candidate's process). With ``allow_script=False`` a task that has
    only a script is refused with :class:`TaskError`, as reward scoring does unless opted in.
    """
    if task.function_tests:
        if not task.entry_point:
            raise TaskError(f"task {task.id!r} has function tests but no entry_point; set the function name")
        return FunctionJob(code, task.entry_point, tuple(task.function_tests), task.atol, timeout_s, repeats)
    if task.program_tests:
        return ProgramJob(code, tuple(task.program_tests), timeout_s, repeats)
    if task.test_script:
        if not allow_script:
            raise TaskError(
                f"task {task.id!r} has only an assertion script, whose verdict comes from inside the "
                "candidate's process (a candidate can forge a pass), so it is not scored for rewards; "
                "give it function or program tests, or set reward.allow_script_tests=true "
                "(--allow-script-tests for a service) for code you trust"
            )
        return ScriptJob(code, task.test_script, task.entry_point, timeout_s)
    raise TaskError(
        f"task {task.id!r} has no function_tests, program_tests or test_script; "
        "give it tests to score against"
    )


def perf_job_for(
    task: Task, code: str, *, timeout_s: float | None = None, repeats: int | None = None
) -> Job | None:
    """The sandbox job that measures ``code`` on ``task``'s perf tests (judged too); None without any."""
    if not task.perf_tests:
        return None
    if isinstance(task.perf_tests[0], FunctionTest):
        if not task.entry_point:
            raise TaskError(f"task {task.id!r} has function perf_tests but no entry_point")
        return FunctionJob(code, task.entry_point, tuple(task.perf_tests), task.atol, timeout_s, repeats)  # type: ignore[arg-type]
    return ProgramJob(code, tuple(task.perf_tests), timeout_s, repeats)  # type: ignore[arg-type]


def cost_job_for(task: Task, code: str, *, timeout_s: float | None = None) -> Job:
    """The job whose cost counts for ``code`` on ``task``: its perf tests if any, else its tests."""
    return perf_job_for(task, code, timeout_s=timeout_s) or job_for(task, code, timeout_s=timeout_s)


def submit_run(
    sandbox: Any,
    task: Task,
    code: str,
    *,
    timeout_s: float | None = None,
    repeats: int | None = None,
    allow_script: bool = True,
) -> ResultFuture:
    """Run ``code`` against ``task`` on ``sandbox``: one future for the verdict and the cost.

    Without perf tests this is the task's job (:func:`job_for`) with ``repeats``. With them, the
    correctness tests run once; a sample that fails them gets that verdict (its perf tests never run).
    One that passes runs the perf tests ``repeats`` times: their verdict decides (a wrong output there
    fails the sample) and their cost is the sample's cost. A run past the time limit there is
    right-censored, as ENAMEL treats it: the sample passes (its correctness was judged on the
    correctness tests) with ``error_kind`` :data:`PERF_TIMEOUT` and a CPU cost of the limit, so it
    ranks as slow as can be measured. ``passed``/``total`` and ``tests`` cover both runs, correctness
    tests first.
    """
    perf = perf_job_for(task, code, timeout_s=timeout_s, repeats=repeats)
    check = job_for(
        task, code, timeout_s=timeout_s, repeats=1 if perf is not None else repeats, allow_script=allow_script
    )
    config = getattr(sandbox, "config", None)
    limit_s = timeout_s if timeout_s is not None else getattr(config, "timeout_s", None)
    first = sandbox.submit(check)
    if perf is None:
        return first
    combined: ResultFuture = concurrent.futures.Future()

    def after_check(done: ResultFuture) -> None:
        try:
            result = done.result()
            if result.status is not Status.PASSED:
                _settle(combined, result)
                return
            second = sandbox.submit(perf)
        except BaseException as exc:  # the sandbox closed or failed: the combined run fails alike
            _settle(combined, exc)
            return
        second.add_done_callback(lambda ran: _finish_perf(combined, result, ran, limit_s))

    first.add_done_callback(after_check)
    return combined


def then(first: ResultFuture, next_run: Any) -> ResultFuture:
    """One future for ``next_run(result of first)``, a run submitted once ``first`` is done."""
    combined: ResultFuture = concurrent.futures.Future()

    def start(done: ResultFuture) -> None:
        try:
            second = next_run(done.result())
        except BaseException as exc:  # the sandbox closed or failed: the chained run fails alike
            _settle(combined, exc)
            return
        second.add_done_callback(lambda ran: _settle(combined, _outcome(ran)))

    first.add_done_callback(start)
    return combined


def _outcome(future: ResultFuture) -> ExecutionResult | BaseException:
    try:
        return future.result()
    except BaseException as exc:
        return exc


def _settle(future: ResultFuture, outcome: ExecutionResult | BaseException) -> None:
    # A waiter may have cancelled the combined future meanwhile; the runs themselves still finish.
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except concurrent.futures.InvalidStateError:
        pass


def _finish_perf(
    combined: ResultFuture, check: ExecutionResult, ran: ResultFuture, limit_s: float | None
) -> None:
    try:
        perf = ran.result()
    except BaseException as exc:
        _settle(combined, exc)
        return
    if perf.status is Status.TIMEOUT and limit_s is not None:
        # Right-censored: correct on the correctness tests, slower than the limit on the perf tests.
        limit_ns = int(limit_s * 1e9)
        _settle(
            combined,
            ExecutionResult(
                status=Status.PASSED,
                passed=check.passed + perf.passed,
                total=check.total + perf.total,
                tests=[*check.tests, *perf.tests],
                cost=Cost(cpu_ns=limit_ns, wall_ns=limit_ns, peak_memory_bytes=0),
                error=f"ran past the time limit ({limit_s:g} s) on the perf tests; cost taken as the limit",
                error_kind=PERF_TIMEOUT,
            ),
        )
        return
    _settle(
        combined,
        ExecutionResult(
            status=perf.status,
            passed=check.passed + perf.passed,
            total=check.total + perf.total,
            tests=[*check.tests, *perf.tests],
            cost=perf.cost,
            costs=perf.costs,
            stdout=perf.stdout,
            stderr=perf.stderr,
            error=None if perf.error is None else f"on a perf test: {perf.error}",
            error_kind=perf.error_kind,
        ),
    )


@dataclass
class Planned:
    """One sample on its way through the sandbox."""

    task: Task
    code: str
    result: ResultFuture
    cached: bool
    reference: ResultFuture | None
    signals: FormatSignals | None


class RewardScorer:
    """Scores completions for tasks; thread-safe, with a blocking and an asyncio API.

    sandbox: runs the code (its config should come from ``settings.sandbox_config()`` so that it
        counts what ``settings.cost_measure`` needs).
    cache_size: distinct (task, normalised code) results kept; 0 runs every pair.
    cache_max_bytes: most bytes of results the caches keep (see rewards.cache.footprint).
    reference_cache_size: reference measurements kept (one per task).
    completion_prefix: text the prompt already opened the answer with (e.g. a code fence) that the
        model's completion continues; handed to code extraction.
    """

    def __init__(
        self,
        sandbox: Any,
        settings: RewardSettings | None = None,
        *,
        cache_size: int = 4096,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        reference_cache_size: int = 65536,
        completion_prefix: str = "",
    ) -> None:
        self.sandbox = sandbox
        self.settings = settings or RewardSettings()
        self.completion_prefix = completion_prefix
        self.cache = ExecutionCache(cache_size, cache_max_bytes)
        self.references = ExecutionCache(reference_cache_size, cache_max_bytes)
        self._fingerprints: OrderedDict[int, tuple[Task, str]] = OrderedDict()
        self._fingerprint_lock = threading.Lock()
        self._check_measure()

    def _check_measure(self) -> None:
        config = getattr(self.sandbox, "config", None)
        measure = self.settings.cost_measure
        if config is None or self.settings.efficiency_weight == 0 or self.settings.efficiency_mode == "none":
            return
        if measure == "python_events" and not config.count_python_events:
            raise ValueError(
                "reward cost_measure 'python_events' needs a sandbox that counts them; build it with "
                "SandboxConfig(count_python_events=True) (RewardSettings.sandbox_config() does)"
            )
        if measure == "instructions" and not config.count_instructions:
            raise ValueError(
                "reward cost_measure 'instructions' needs a sandbox that counts them; build it with "
                "SandboxConfig(count_instructions=True) (RewardSettings.sandbox_config() does)"
            )
        if measure != "python_events" and config.count_python_events:
            # The tracer runs inside the candidate: it inflates CPU time several-fold, and a candidate
            # that switches it off (sys.settrace(None)) would look that much faster.
            raise ValueError(
                f"reward cost_measure {measure!r} on a sandbox that counts Python events: the tracer "
                "inflates the cost and the candidate can switch it off; build the sandbox with "
                "RewardSettings.sandbox_config() (count_python_events only for python_events)"
            )

    def fingerprint(self, task: Task) -> str:
        """:func:`task_fingerprint`, remembered per Task object: hashing all of a HumanEval+ task's
        tests takes milliseconds, and the same task objects come back batch after batch."""
        key = id(task)
        with self._fingerprint_lock:
            known = self._fingerprints.get(key)
            if known is not None and known[0] is task:
                self._fingerprints.move_to_end(key)
                return known[1]
        value = task_fingerprint(task)
        with self._fingerprint_lock:
            # Holding the task keeps its id from being reused by another object while remembered.
            self._fingerprints[key] = (task, value)
            while len(self._fingerprints) > FINGERPRINTS_KEPT:
                self._fingerprints.popitem(last=False)
        return value

    # ------------------------------------------------------------------------------------- scoring

    def score(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
        *,
        extract: bool = True,
        shaping: Mapping[str, Any] | None = None,
    ) -> list[Reward]:
        """Rewards for ``completions[i]`` answering ``tasks[i]``, in order; blocks until all have run.

        group_ids[i] names the prompt sample i answers (for group-relative efficiency); None groups
        by task id. With ``extract=False`` completions are taken as code as they are. ``shaping``
        overrides shaping-only settings (``rewards.settings.SHAPING_KEYS``) for this call.
        """
        settings = self._settings_for(shaping)
        plan = self.plan(tasks, completions, extract=extract, settings=settings)
        return self.shape_planned(plan, group_ids, settings=settings)

    def shape_planned(
        self,
        plan: Sequence[Planned],
        group_ids: Sequence[Hashable] | None = None,
        *,
        settings: RewardSettings | None = None,
    ) -> list[Reward]:
        """Rewards of samples :meth:`plan` submitted, once their runs are done (blocks until then).

        This is the group-level step: group-relative efficiency compares the samples of each group
        given here, so a group's samples must all be in ``plan``.
        """
        results = [p.result.result() for p in plan]
        references = [None if p.reference is None else reference_cost(p.reference.result()) for p in plan]
        return self._shape(plan, results, references, group_ids, settings or self.settings)

    def open_stream(self, *, extract: bool = True, shaping: Mapping[str, Any] | None = None) -> ScoringStream:
        """A :class:`ScoringStream`: samples handed over one at a time, each run started at once."""
        return ScoringStream(self, self._settings_for(shaping), extract=extract)

    async def ascore(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        group_ids: Sequence[Hashable] | None = None,
        *,
        extract: bool = True,
        shaping: Mapping[str, Any] | None = None,
    ) -> list[Reward]:
        """:meth:`score` for asyncio callers: waits without blocking the event loop."""
        settings = self._settings_for(shaping)
        plan = self.plan(tasks, completions, extract=extract, settings=settings)
        results = await asyncio.gather(*(wait_for_result(p.result) for p in plan))
        references = [
            None if p.reference is None else reference_cost(await wait_for_result(p.reference)) for p in plan
        ]
        return self._shape(plan, list(results), references, group_ids, settings)

    def plan(
        self,
        tasks: Sequence[Task],
        completions: Sequence[str],
        *,
        extract: bool = True,
        settings: RewardSettings | None = None,
        batch_runs: dict[tuple[Any, ...], ResultFuture] | None = None,
    ) -> list[Planned]:
        """Extract, dedupe and submit every sample (and each task's reference) without waiting.

        batch_runs: the runs of samples planned earlier for the same batch, by :func:`run_key` (filled
        in here). A sample equal to one of them shares its run, as it would inside one call, even
        after the cache has kept that run's result only in its slim form.
        """
        if len(tasks) != len(completions):
            raise ValueError(f"got {len(tasks)} tasks but {len(completions)} completions; pass one task each")
        settings = settings or self.settings
        planned = []
        for task, completion in zip(tasks, completions):
            if not isinstance(completion, str):
                raise TypeError(f"completions must be strings, got {type(completion).__name__}")
            signals: FormatSignals | None = None
            code = completion
            if extract:
                extracted = extract_code(
                    completion, entry_point=task.entry_point, prefix=self.completion_prefix
                )
                code, signals = with_prompt_imports(extracted.code, task.prompt), extracted
            fingerprint = self.fingerprint(task)
            # A task that cannot be scored raises here, before anything is submitted.
            job_for(task, code, allow_script=settings.allow_script_tests)

            # One lookup serves both the reference-scaled time limit and the efficiency baseline.
            measured = (
                self.reference_result(task, fingerprint, settings=settings)
                if settings.uses_reference or settings.timeout_factor
                else None
            )

            def run(
                task: Task = task, code: str = code, measured: ResultFuture | None = measured
            ) -> ResultFuture:
                def submit(limit_s: float) -> ResultFuture:
                    return submit_run(
                        self.sandbox,
                        task,
                        code,
                        timeout_s=limit_s,
                        repeats=settings.repeats,
                        allow_script=settings.allow_script_tests,
                    )

                if measured is None or not settings.timeout_factor:
                    return submit(settings.timeout_s)
                # The limit comes from the reference's time, so the run starts once it is known
                # (measured once per task and cached).
                return then(measured, lambda ran: submit(settings.time_limit(reference_wall_s(ran))))

            key = run_key(fingerprint, code, settings)
            if batch_runs is not None and key in batch_runs:
                future, cached = batch_runs[key], True
            else:
                future, cached = self.cache.get_or_submit(key, run)
                if batch_runs is not None:
                    batch_runs[key] = future
            reference = measured if settings.uses_reference else None
            planned.append(Planned(task, code, future, cached, reference, signals))
        return planned

    def reference_result(
        self,
        task: Task,
        fingerprint: str | None = None,
        repeats: int | None = None,
        *,
        settings: RewardSettings | None = None,
    ) -> ResultFuture | None:
        """The (cached) run of ``task``'s first reference against its tests; None without one.

        The reference runs with the execution settings of the candidates it is compared with (the
        scorer's, or ``settings``): the minimum or median of more runs would be biased low against
        them, and a different time limit would judge it differently. It runs like a candidate
        (:func:`submit_run`), so with perf tests its cost is the cost on them.
        """
        if not task.reference:
            return None
        settings = self._execution(settings, repeats)
        reference = task.reference
        key = run_key(fingerprint or self.fingerprint(task), reference, settings)
        future, _ = self.references.get_or_submit(
            key,
            lambda: submit_run(
                self.sandbox, task, reference, timeout_s=settings.timeout_s, repeats=settings.repeats
            ),
        )
        return future

    def seed_reference(
        self,
        task: Task,
        result: ExecutionResult,
        repeats: int | None = None,
        *,
        settings: RewardSettings | None = None,
    ) -> None:
        """Record an already-measured reference run (e.g. the one that produced expected outputs).

        Only for tasks without perf tests: with them the reference's cost must come from its perf run.
        """
        if not task.reference:
            raise ValueError(f"task {task.id!r} has no reference to record a measurement for")
        if task.perf_tests:
            raise ValueError(
                f"task {task.id!r} has perf tests: its reference cost is measured on them, not recorded"
            )
        done: ResultFuture = concurrent.futures.Future()
        done.set_result(result)
        key = run_key(self.fingerprint(task), task.reference, self._execution(settings, repeats))
        self.references.get_or_submit(key, lambda: done)

    def _execution(self, settings: RewardSettings | None, repeats: int | None) -> RewardSettings:
        settings = settings or self.settings
        return (
            settings if repeats is None or repeats == settings.repeats else settings.replace(repeats=repeats)
        )

    def _shape(
        self,
        plan: Sequence[Planned],
        results: list[ExecutionResult],
        references: list[Cost | None],
        group_ids: Sequence[Hashable] | None,
        settings: RewardSettings,
    ) -> list[Reward]:
        return shape_rewards(
            results,
            [p.task for p in plan],
            group_ids,
            settings,
            reference_costs=references,
            formats=[p.signals for p in plan],
        )

    def _settings_for(self, shaping: Mapping[str, Any] | None) -> RewardSettings:
        if not shaping:
            return self.settings
        fixed = [key for key in shaping if key not in SHAPING_KEYS]
        if fixed:
            raise ValueError(
                f"reward settings {', '.join(sorted(fixed))} decide how code runs and are fixed by the "
                f"scorer; per-call settings may only change {', '.join(SHAPING_KEYS)}"
            )
        return self.settings.replace(**shaping)

    @property
    def stats(self) -> dict[str, int]:
        return {**dataclasses.asdict(self.cache.stats), "cached_entries": len(self.cache)}


class ScoringStream:
    """One batch's samples scored as they arrive, for a caller that gets them one at a time (a rollout
    engine finishing completions while others still decode).

    :meth:`add` starts a sample's run at once (:meth:`RewardScorer.plan`); :meth:`rewards` waits for
    them all and shapes them together, so group-relative efficiency sees whole groups and the rewards
    equal :meth:`RewardScorer.score` of the same samples. Adding an index again replaces its sample.
    One thread adds, then one collects; ``finished_at`` (filled by the sandbox's threads) is the
    wall-clock time each sample's run finished, comparable across processes of one host.
    """

    def __init__(self, scorer: RewardScorer, settings: RewardSettings, *, extract: bool = True) -> None:
        self.scorer = scorer
        self.settings = settings
        self.extract = extract
        self.finished_at: dict[int, float] = {}
        self._samples: dict[int, tuple[Planned, Hashable]] = {}
        self._runs: dict[tuple[Any, ...], ResultFuture] = {}

    def add(self, index: int, task: Task, completion: str, group: Hashable) -> None:
        """Sample ``index`` (``completion`` answering ``task``, in ``group``); its run starts now."""
        [planned] = self.scorer.plan(
            [task], [completion], extract=self.extract, settings=self.settings, batch_runs=self._runs
        )
        self._samples[index] = (planned, group)
        self.finished_at.pop(index, None)

        def finished(_: ResultFuture) -> None:
            if self._samples.get(index, (None,))[0] is planned:  # not replaced meanwhile
                self.finished_at[index] = time.time()

        planned.result.add_done_callback(finished)

    def rewards(self) -> dict[int, Reward]:
        """Every sample's reward by index, once all have run (blocks until then)."""
        indices = sorted(self._samples)
        plan = [self._samples[i][0] for i in indices]
        groups = [self._samples[i][1] for i in indices]
        return dict(zip(indices, self.scorer.shape_planned(plan, groups, settings=self.settings)))

    def close(self) -> None:
        """Forget the samples; runs already submitted finish in the sandbox and are cached."""
        self._samples.clear()
        self._runs.clear()


def run_key(fingerprint: str, code: str, settings: RewardSettings) -> tuple[Any, ...]:
    """Cache key of running ``code`` against a task: equal keys give the same verdict.

    The execution settings a call may vary (repeats, time limit) are part of it; the others (cost
    counters, memory limit) are fixed by the sandbox the cache belongs to.
    """
    return (
        fingerprint,
        code_digest(code),
        settings.repeats,
        settings.timeout_s,
        settings.timeout_factor,
        settings.min_timeout_s,
    )


def reference_wall_s(result: ExecutionResult) -> float | None:
    """A reference run's wall time in seconds (what time limits scale), None when it did not pass."""
    return result.cost.wall_ns / 1e9 if result.status is Status.PASSED else None


def reference_cost(result: ExecutionResult) -> Cost | None:
    """A reference run's cost, or None (with a warning) when the reference itself did not pass."""
    if result.status is Status.PASSED:
        return result.cost
    log.warning("reference solution did not pass its own tests (%s): %s", result.status.value, result.error)
    return None


async def wait_for_result(future: ResultFuture) -> ExecutionResult:
    """Await a sandbox future from asyncio without letting a cancelled caller cancel it.

    Futures are shared through the cache: a request that gives up must not cancel the run another
    request is waiting for.
    """
    return await asyncio.shield(asyncio.wrap_future(future))
