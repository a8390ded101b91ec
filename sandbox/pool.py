"""`Sandbox`: a pool of fork servers with a synchronous and an asyncio API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sandbox import jobs as jobspec
from sandbox.config import STRONG_LEVELS, SandboxConfig, weak_isolation_warning
from sandbox.identity import claim_uid_block
from sandbox.jobs import FunctionJob, Job, JobError, ProgramJob, ScriptJob
from sandbox.types import ExecutionResult, FunctionTest, ProgramTest, Status
from sandbox.verdict import judge_function, judge_program, judge_script
from sandbox.worker import SandboxUnavailable, Worker, WorkerLost

log = logging.getLogger(__name__)
_STOP = object()


class Sandbox:
    """Runs untrusted Python in isolated, measured child processes.

    >>> with Sandbox(workers=2) as box:
    ...     result = box.run_function_tests("def add(a, b): return a + b", "add",
    ...                                     [FunctionTest((1, 2), 3), FunctionTest((2, 2), 4)])
    ...     result.status, result.cost.cpu_ns > 0
    (<Status.PASSED: 'passed'>, True)

    Construction starts the workers and fails loudly (``SandboxUnavailable``) if the configured
    isolation cannot be set up; it never falls back to a weaker level by itself. Thread-safe: any
    number of threads or coroutines may submit at once; jobs queue for the next free worker.
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides: Any) -> None:
        config = config or SandboxConfig()
        self.config = replace(config, **overrides) if overrides else config
        if self.config.isolation not in STRONG_LEVELS:
            # Printed, not logged: no logging setup (or -q) may hide it.
            print(f"WARNING: effirl {weak_isolation_warning(self.config.isolation)}", file=sys.stderr)
        self._uids = claim_uid_block()
        self._workers = [Worker(self.config, i, self._uids.uid(i)) for i in range(self.config.workers)]
        try:
            self._start_all()
        except BaseException:
            self._uids.release()
            raise
        self._queue: queue.Queue[Any] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._serve, args=(w,), name=f"sandbox-worker-{w.index}", daemon=True)
            for w in self._workers
        ]
        for thread in self._threads:
            thread.start()
        self._closed = False
        self.executions = 0

    def _start_all(self) -> None:
        errors: list[BaseException] = []

        def start(worker: Worker) -> None:
            try:
                worker.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(w,)) for w in self._workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            for worker in self._workers:
                worker.kill()
            raise (
                errors[0] if isinstance(errors[0], SandboxUnavailable) else SandboxUnavailable(str(errors[0]))
            )

    @property
    def info(self) -> dict[str, Any]:
        """Isolation level, notes from setting it up, worker count and restarts."""
        hello = self._workers[0].hello
        return {
            "isolation": self.config.isolation,
            "workers": len(self._workers),
            "notes": hello.get("notes", []),
            "worker_uid": hello.get("uid"),
            "restarts": sum(w.restarts for w in self._workers),
            "executions": self.executions,
        }

    # ------------------------------------------------------------------------------------ submission

    def submit(self, job: Job) -> concurrent.futures.Future[ExecutionResult]:
        """Queue ``job``; the future resolves to its result (never to an exception from the candidate)."""
        if self._closed:
            raise RuntimeError("this Sandbox is closed")
        future: concurrent.futures.Future[ExecutionResult] = concurrent.futures.Future()
        self._queue.put((job, future))
        return future

    def run(self, job: Job) -> ExecutionResult:
        return self.submit(job).result()

    def run_many(self, jobs: Iterable[Job], *, progress: bool | str = False) -> list[ExecutionResult]:
        """Run jobs in parallel on all workers; results come back in order."""
        futures = [self.submit(job) for job in jobs]
        if progress:
            from tqdm.auto import tqdm

            label = progress if isinstance(progress, str) else "sandbox"
            with tqdm(total=len(futures), desc=label, unit="run") as bar:
                for _ in concurrent.futures.as_completed(futures):
                    bar.update(1)
        return [f.result() for f in futures]

    async def arun(self, job: Job) -> ExecutionResult:
        return await asyncio.wrap_future(self.submit(job))

    async def arun_many(self, jobs: Iterable[Job]) -> list[ExecutionResult]:
        return list(await asyncio.gather(*(self.arun(job) for job in jobs)))

    # ---------------------------------------------------------------------------------- conveniences

    def run_function_tests(
        self,
        code: str,
        entry_point: str,
        tests: Sequence[FunctionTest],
        *,
        atol: float | None = None,
        timeout_s: float | None = None,
        repeats: int | None = None,
    ) -> ExecutionResult:
        """Call ``entry_point`` on each test's args and compare with its expected value."""
        return self.run(FunctionJob(code, entry_point, tuple(tests), atol, timeout_s, repeats))

    def call_function(
        self,
        code: str,
        entry_point: str,
        inputs: Sequence[Sequence[Any] | FunctionTest],
        *,
        timeout_s: float | None = None,
        repeats: int | None = None,
    ) -> ExecutionResult:
        """Call ``entry_point`` on each argument list and return the decoded outputs in ``.outputs``."""
        tests = tuple(t if isinstance(t, FunctionTest) else FunctionTest(tuple(t)) for t in inputs)
        return self.run(FunctionJob(code, entry_point, tests, None, timeout_s, repeats, want_outputs=True))

    def run_program(
        self,
        code: str,
        tests: Sequence[ProgramTest],
        *,
        timeout_s: float | None = None,
        repeats: int | None = None,
    ) -> ExecutionResult:
        """Run ``code`` as a program on each test's stdin and compare its stdout."""
        return self.run(ProgramJob(code, tuple(tests), timeout_s, repeats))

    def run_script(
        self, code: str, test_script: str, *, entry_point: str | None = None, timeout_s: float | None = None
    ) -> ExecutionResult:
        """Run ``code`` then an assertion script in the same namespace (weaker trust; see ScriptJob)."""
        return self.run(ScriptJob(code, test_script, entry_point, timeout_s))

    # --------------------------------------------------------------------------------------- workers

    def _serve(self, worker: Worker) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._execute(worker, job))
            except BaseException as exc:  # a bug on our side: report it, keep the worker alive
                log.exception("sandbox failed on a job")
                future.set_result(_sandbox_error(f"internal sandbox error: {exc!r}"))

    def _execute(self, worker: Worker, job: Job) -> ExecutionResult:
        try:
            if isinstance(job, FunctionJob):
                return self._execute_function(worker, job)
            if isinstance(job, ProgramJob):
                return self._execute_program(worker, job)
            if isinstance(job, ScriptJob):
                payload = jobspec.script_payload(job)
                report = self._once(worker, self._encode(payload, job.timeout_s), job.timeout_s)
                return judge_script([report], cost_aggregate=self.config.cost_aggregate)
            raise JobError(f"unknown job type {type(job).__name__}")
        except JobError as exc:
            return _sandbox_error(str(exc), kind="bad_input")

    def _execute_function(self, worker: Worker, job: FunctionJob) -> ExecutionResult:
        # Encoded once: repeats send the same bytes.
        payload = self._encode(jobspec.function_payload(job), job.timeout_s)
        first = self._once(worker, payload, job.timeout_s)
        reports = [first]
        verdict = judge_function(
            reports,
            job.tests,
            atol=job.atol,
            want_outputs=job.want_outputs,
            cost_aggregate=self.config.cost_aggregate,
        )
        repeats = job.repeats or self.config.repeats
        if repeats > 1 and verdict.status is Status.PASSED:
            reports += [self._once(worker, payload, job.timeout_s) for _ in range(repeats - 1)]
            verdict = judge_function(
                reports,
                job.tests,
                atol=job.atol,
                want_outputs=job.want_outputs,
                cost_aggregate=self.config.cost_aggregate,
            )
        return verdict

    def _execute_program(self, worker: Worker, job: ProgramJob) -> ExecutionResult:
        payloads = [
            self._encode(jobspec.program_payload(job.code, test.stdin), job.timeout_s) for test in job.tests
        ]
        runs = [[self._once(worker, p, job.timeout_s) for p in payloads]]
        verdict = judge_program(runs, job.tests, cost_aggregate=self.config.cost_aggregate)
        repeats = job.repeats or self.config.repeats
        if repeats > 1 and verdict.status is Status.PASSED:
            runs += [[self._once(worker, p, job.timeout_s) for p in payloads] for _ in range(repeats - 1)]
            verdict = judge_program(runs, job.tests, cost_aggregate=self.config.cost_aggregate)
        return verdict

    def _encode(self, payload: dict[str, Any], timeout_s: float | None) -> bytes:
        data = jobspec.encode(
            payload,
            self.config.limits(timeout_s),
            count_events=self.config.count_python_events,
            instructions=self.config.count_instructions,
        )
        if len(data) > self.config.max_input_bytes:
            raise JobError(
                f"the job is {len(data)} bytes (code plus encoded test inputs), over the sandbox's "
                f"max_input_bytes of {self.config.max_input_bytes}; send fewer or smaller inputs "
                "or raise the limit"
            )
        return data

    def _once(self, worker: Worker, data: bytes, timeout_s: float | None) -> dict[str, Any]:
        wall_s = float(timeout_s if timeout_s is not None else self.config.timeout_s)
        for attempt in range(2):
            try:
                self.executions += 1
                return worker.execute(data, wall_s)
            except (WorkerLost, SandboxUnavailable) as exc:
                # SandboxUnavailable: the restart after a loss failed too (the server was killed while
                # it started); the next attempt starts it again.
                if attempt == 1:
                    return {"outcome": "sandbox_error", "msg": str(exc)}
        raise AssertionError("unreachable")

    # --------------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop the workers; pending jobs still finish first."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=60)
        for worker in self._workers:
            worker.kill()
        self._uids.release()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _sandbox_error(message: str, kind: str = "sandbox") -> ExecutionResult:
    return ExecutionResult(status=Status.SANDBOX_ERROR, error=message, error_kind=kind)
