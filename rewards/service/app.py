"""`RewardService`: the HTTP reward service (aiohttp), in-process or as ``effirl reward serve``.

Routes (docs/reward_service.md has the full API with examples):

    POST /v1/evaluate   check code against tests given in the request
    POST /v1/score      score model completions for tasks of a loaded dataset
    POST /run_code      SandboxFusion-compatible program run
    GET  /healthz       liveness and pool state (no token needed)
    GET  /metrics       Prometheus text format

The service process never executes candidate code: the sandbox's worker processes do, and they are
started with an empty environment.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import inspect
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from rewards.scorer import RewardScorer, TaskError
from rewards.service.admission import Admission
from rewards.service.config import ServiceConfig
from rewards.service.evaluate import Evaluator, score_items
from rewards.service.metrics import CONTENT_TYPE, Metrics, Readings
from rewards.service.run_code import program_job, run_code_response
from rewards.service.schema import (
    RequestError,
    decode_json,
    parse_evaluate,
    parse_run_code,
    parse_score,
    request_settings,
)
from rewards.settings import RewardSettings
from rewards.tasks import Task
from rewards.user_error import UserError
from sandbox import Sandbox

log = logging.getLogger(__name__)
TaskSource = Callable[[str, "str | None"], Sequence[Task]]
ROUTES = ("/v1/evaluate", "/v1/score", "/run_code", "/healthz", "/metrics")
OPEN_ROUTES = ("/healthz",)


def registered_datasets(sandbox: Sandbox, *, allow_paths: bool) -> TaskSource:
    """The default task source: :func:`rewards.datasets.load_tasks`, by registered name only unless
    ``allow_paths`` (clients must not make the service read files or download by naming them).

    Loaders that compute expected outputs run them on ``sandbox``.
    """

    def load(name: str, split: str | None) -> Sequence[Task]:
        from rewards.datasets import dataset_names, load_tasks
        from rewards.datasets.registry import LOADERS

        if name not in dataset_names() and not allow_paths:
            raise ValueError(
                f"unknown dataset {name!r}; this service serves {', '.join(dataset_names())} "
                "(start it with dataset_paths=True to also load task files by path)"
            )
        loader = LOADERS.get(name)
        takes_sandbox = loader is not None and "sandbox" in inspect.signature(loader).parameters
        options = {"sandbox": sandbox} if takes_sandbox else {}
        return load_tasks(name, split=split, **options)

    return load


class RewardService:
    """The reward service. Start it on a running loop (:meth:`start`) or in a thread of its own
    (:meth:`start_in_thread`, or ``with RewardService(...) as service:``); :attr:`url` says where.

    sandbox: an existing pool to use (not closed by the service); None starts one from the config.
    task_source: ``(dataset, split) -> tasks`` for ``/v1/score``; defaults to the dataset loaders.
    """

    def __init__(
        self,
        config: ServiceConfig | None = None,
        *,
        sandbox: Sandbox | None = None,
        task_source: TaskSource | None = None,
    ) -> None:
        self.config = config or ServiceConfig()
        self._owns_sandbox = sandbox is None
        limit = (sandbox.config if sandbox is not None else self.config.sandbox_config()).memory_mb
        if limit != self.config.reward.memory_mb:
            # Requests are checked against reward.memory_mb; it must be the limit code runs under.
            raise ValueError(
                f"reward.memory_mb ({self.config.reward.memory_mb}) differs from the sandbox's memory_mb "
                f"({limit}); give them the same value"
            )
        self.sandbox = sandbox if sandbox is not None else Sandbox(self.config.sandbox_config())
        self.scorer = RewardScorer(
            self.sandbox,
            self.config.reward,
            cache_size=self.config.cache_size,
            cache_max_bytes=self.config.cache_max_bytes,
        )
        self.evaluator = Evaluator(self.scorer, outputs_cache_bytes=self.config.cache_max_bytes)
        self.admission = Admission(self.config.queue_capacity)
        self.metrics = Metrics()
        self.metrics.read_at_scrape(self._readings)
        self.task_source = task_source or registered_datasets(
            self.sandbox, allow_paths=self.config.dataset_paths
        )
        self._datasets: dict[tuple[str, str | None], dict[str, Task]] = {}
        self._loading: dict[tuple[str, str | None], asyncio.Future[dict[str, Task]]] = {}
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the service is not started; call start() or start_in_thread() first")
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}"

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._middleware])
        app.router.add_post("/v1/evaluate", self._evaluate)
        app.router.add_post("/v1/score", self._score)
        app.router.add_post("/run_code", self._run_code)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        """Listen on the configured host and port from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise listen_error(self.config.host, self.config.port, exc) from exc
        sockets = getattr(site._server, "sockets", None) or []  # aiohttp exposes no public accessor
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self) -> str:
        """Run the service on an event loop in a daemon thread; returns its URL once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=main, name="effirl-reward-service", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.url

    def close(self) -> None:
        """Stop listening and, if the service started its own sandbox, stop the sandbox."""
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._thread = None
        if self._owns_sandbox:
            self.sandbox.close()

    def __enter__(self) -> RewardService:
        self.start_in_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.path if request.path in ROUTES else "other"
        try:
            self._authorise(request, route)
            response = await handler(request)
        except RequestError as exc:
            response = error_response(exc.status, exc.message, exc)
        except web.HTTPException as exc:
            message = (
                _too_large(None, self.config.max_body_bytes)
                if exc.status == 413
                else _http_message(exc, request)
            )
            response = error_response(exc.status, message, exc)
        except Exception as exc:  # a bug on our side: say so, keep serving
            log.exception("reward service failed on %s %s", request.method, request.path)
            response = error_response(500, f"internal error in the reward service: {exc!r}", exc)
        self.metrics.observe_request(route, response.status, time.perf_counter() - started)
        return response

    def _authorise(self, request: web.Request, route: str) -> None:
        token = self.config.token
        if token is None or route in OPEN_ROUTES:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            self.metrics.count_rejection("unauthorised")
            raise RequestError(
                "this service requires a bearer token: send the header `Authorization: Bearer <token>` "
                "with the token the service was started with (--token / $EFFIRL_REWARD_TOKEN)",
                status=401,
            )
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            self.metrics.count_rejection("unauthorised")
            raise RequestError("the bearer token is wrong; use the token the service was started with", 401)

    async def _parsed(self, request: web.Request, parse: Callable[[Any], Any]) -> Any:
        """The request's JSON body through ``parse`` (a schema function), with limits.

        A large body is decoded in a worker thread, so the event loop keeps answering (health checks,
        other requests) meanwhile. A body nested too deeply for the decoder is the client's error (400).
        """
        body = await self._json_body(request)

        def decode() -> Any:
            try:
                return parse(decode_json(body))
            except RecursionError:
                raise RequestError(
                    "the request body is nested too deeply to decode; send values at most a few "
                    "hundred levels deep"
                ) from None

        if len(body) <= _PARSE_INLINE_BYTES:
            return decode()
        return await asyncio.to_thread(decode)

    async def _json_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            self.metrics.count_rejection("too_large")
            raise RequestError(_too_large(request.content_length, limit), status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.count_rejection("too_large")
            raise RequestError(_too_large(None, limit), status=413) from None
        return body

    def _admit(self, n: int) -> None:
        if not self.admission.try_acquire(n):
            self.metrics.count_rejection("queue_full")
            retry = self.admission.retry_after_s()
            raise RequestError(
                f"the service is busy: {self.admission.in_flight} of {self.admission.capacity} queue slots "
                f"are taken and this request needs {n}; retry after {retry} s",
                status=503,
                headers={"Retry-After": str(retry)},
            )

    def _hold(self, futures: Sequence[Any]) -> None:
        """Release one admission slot per future when it finishes (None: at once)."""
        for future in futures:
            if future is None:
                self.admission.release()
            else:
                future.add_done_callback(lambda _: self.admission.release())

    def _deadline(self) -> float:
        return time.monotonic() + self.config.request_timeout_s

    # -------------------------------------------------------------------------------------- handlers

    def _settings(self, requested: dict[str, Any]) -> RewardSettings:
        """The settings a request is scored with (schema.request_settings: honoured or refused)."""
        return request_settings(
            requested,
            served=self.scorer.settings,
            max_repeats=self.config.max_repeats,
            max_timeout_s=self.config.max_run_timeout_s,
        )

    async def _evaluate(self, request: web.Request) -> web.Response:
        parsed = await self._parsed(
            request,
            lambda data: parse_evaluate(
                data, max_submissions=self.config.max_submissions, max_repeats=self.config.max_repeats
            ),
        )
        settings = self._settings(
            parsed.settings if parsed.repeats is None else {**parsed.settings, "repeats": parsed.repeats}
        )
        n = len(parsed.submissions)
        self._admit(n)
        holds: list[Any] = [None] * n
        try:
            results, holds = await self.evaluator.evaluate(
                parsed.submissions, settings, self._deadline(), self.config.request_timeout_s
            )
        finally:
            self._hold(holds)
        for result in results:
            self.metrics.count_verdict(result["status"])
        return json_response({"results": results, "settings": settings.scoring_dict()})

    async def _score(self, request: web.Request) -> web.Response:
        parsed = await self._parsed(
            request, lambda data: parse_score(data, max_items=self.config.max_submissions)
        )
        settings = self._settings(parsed.settings)
        table = await self._dataset(parsed.dataset, parsed.split)
        unknown = [item.task_id for item in parsed.items if item.task_id not in table]
        if unknown:
            known = ", ".join(sorted(table)[:3])
            raise RequestError(
                f"{len(unknown)} task_id(s) are not in dataset {parsed.dataset!r} (split {parsed.split!r}), "
                f"e.g. {unknown[0]!r}; ids look like {known}"
            )
        tasks = [table[item.task_id] for item in parsed.items]
        groups = [item.task_id if item.group is None else item.group for item in parsed.items]
        self._admit(len(tasks))
        holds: list[Any] = [None] * len(tasks)
        try:
            results, holds = await score_items(
                self.scorer,
                tasks,
                [item.completion for item in parsed.items],
                groups,
                extract=parsed.extract,
                settings=settings,
                deadline=self._deadline(),
                timeout_s=self.config.request_timeout_s,
            )
        except TaskError as exc:
            raise RequestError(str(exc)) from None
        finally:
            self._hold(holds)
        for result in results:
            self.metrics.count_verdict(result["evidence"]["status"])
        return json_response({"results": results, "settings": settings.scoring_dict()})

    async def _dataset(self, name: str, split: str | None) -> dict[str, Task]:
        key = (name, split)
        if key in self._datasets:
            return self._datasets[key]
        pending = self._loading.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._loading[key] = loop.create_future()

            def load() -> dict[str, Task]:
                return {task.id: task for task in self.task_source(name, split)}

            try:
                table = await loop.run_in_executor(None, load)
            except Exception as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved here; waiters re-raise it
                del self._loading[key]
                raise RequestError(f"dataset {name!r} (split {split!r}) could not be loaded: {exc}") from None
            self._datasets[key] = table
            del self._loading[key]
            pending.set_result(table)
            return table
        try:
            return await asyncio.shield(pending)
        except Exception as exc:
            raise RequestError(f"dataset {name!r} (split {split!r}) could not be loaded: {exc}") from None

    async def _run_code(self, request: web.Request) -> web.Response:
        parsed = await self._parsed(
            request, lambda data: parse_run_code(data, max_timeout_s=self.config.max_run_timeout_s)
        )
        job = program_job(parsed, self.sandbox.config.timeout_s)
        self._admit(1)
        try:
            future = self.sandbox.submit(job)
        except BaseException:
            self.admission.release()
            raise
        self._hold([future])
        result = await asyncio.wrap_future(future)
        self.metrics.count_verdict(result.status.value)
        return json_response(run_code_response(result, job.timeout_s or self.sandbox.config.timeout_s))

    async def _healthz(self, request: web.Request) -> web.Response:
        info = self.sandbox.info
        return json_response(
            {
                "status": "ok",
                "isolation": info["isolation"],
                "workers": info["workers"],
                "queue": {"in_flight": self.admission.in_flight, "capacity": self.admission.capacity},
                "auth": self.config.token is not None,
                "settings": self.scorer.settings.scoring_dict(),
                "cost_trusted": self.scorer.settings.cost_trusted,
            }
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.metrics.render)  # reads /proc: off the event loop
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, **_PROMETHEUS})

    def _readings(self) -> Readings:
        """The gauges and counters /metrics reads from the pool, the caches and the queue."""
        info = self.sandbox.info
        stats = self.scorer.cache.stats
        gauges = {
            "effirl_queue_depth": ("Submissions accepted and not yet executed.", self.admission.in_flight),
            "effirl_queue_capacity": ("Most submissions the queue holds.", self.admission.capacity),
            "effirl_sandbox_workers": ("Sandbox worker processes.", info["workers"]),
            "effirl_cache_entries": ("Results held in the execution cache.", len(self.scorer.cache)),
            "effirl_cache_bytes": (
                "Bytes held by the result caches (runs, reference runs, reference outputs).",
                self.scorer.cache.bytes + self.scorer.references.bytes + self.evaluator.outputs.bytes,
            ),
        }
        counters = {
            "effirl_executions_total": ("Sandbox executions (repeats count).", info["executions"]),
            "effirl_sandbox_restarts_total": ("Sandbox worker restarts.", info["restarts"]),
            "effirl_cache_hits_total": ("Submissions answered from the cache.", stats.hits),
            "effirl_cache_misses_total": ("Submissions that had to run.", stats.misses),
            "effirl_accepted_total": ("Submissions admitted to the queue.", self.admission.accepted),
        }
        return gauges, counters


_PROMETHEUS = {"X-Content-Type-Options": "nosniff"}
# Bodies up to this size are decoded on the event loop (a thread hop costs more than decoding them).
_PARSE_INLINE_BYTES = 64 * 1024


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


def error_response(status: int, message: str, exc: BaseException | None = None) -> web.Response:
    headers = dict(exc.headers) if isinstance(exc, RequestError) else {}
    if isinstance(exc, web.HTTPException) and exc.status == 405:
        headers["Allow"] = exc.headers.get("Allow", "")
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="effirl"'
    return json_response({"error": message, "status": status}, status=status, headers=headers)


def _too_large(size: int | None, limit: int) -> str:
    got = f"{size} bytes" if size is not None else "more than that"
    return (
        f"the request body is {got}, over this service's limit of {limit} bytes; "
        "send fewer submissions per request (or start the service with a larger max_body_bytes)"
    )


def _http_message(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no route {request.path!r}; the service answers {', '.join(ROUTES)}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "another method")
        return f"{request.method} is not allowed on {request.path}; use {allowed}"
    return exc.reason or f"HTTP {exc.status}"


def listen_error(host: str, port: int, exc: OSError) -> OSError | UserError:
    """What went wrong when listening on ``host:port`` failed, as a one-line UserError when the
    user can fix it (port taken, privileged port, host not of this machine); else ``exc`` itself."""
    if exc.errno == errno.EADDRINUSE:
        return UserError(
            f"port {port} on {host} is already in use (another process listens there); stop that "
            "process or choose another --port (0 picks a free one)"
        )
    if exc.errno == errno.EACCES:
        return UserError(
            f"no permission to listen on port {port} of {host} (ports below 1024 need root); choose "
            "a --port from 1024 to 65535"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return UserError(
            f"cannot listen on --host {host}: {exc.strerror or exc}; use an address of this machine "
            "(127.0.0.1 for this machine only, 0.0.0.0 for every interface)"
        )
    return exc
