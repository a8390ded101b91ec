"""Python clients of the reward service: :class:`RewardClient` (blocking) and :class:`AsyncRewardClient`.

Both retry what is worth retrying (connection failures, 429/502/503/504) with exponential backoff,
waiting as long as the service's Retry-After header asks, and cap the requests in flight. Requests are
idempotent (a verdict depends only on the request), so a retried request never double-counts.

    with RewardClient("http://127.0.0.1:8080") as client:
        [result] = client.evaluate([submission("a", "def f(x): return x", "f", [([1], 1)])])
        result["status"], result["reward"]

``settings`` (a :class:`RewardSettings`, or a mapping of some of its keys) travel with a request: a
RewardSettings is sent complete (its ``scoring_dict()``), so the service scores exactly as the caller
would in-process or refuses with the key it cannot honour; the answer's echo of the settings used is
checked against what was sent.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rewards.settings import RewardSettings
from rewards.shaping import Reward
from sandbox import codec

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ServiceError(RuntimeError):
    """The service refused a request (4xx, or 5xx after the retries); ``message`` is its explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"reward service answered {status}: {message}")
        self.status = status
        self.message = message


def submission(
    id: str,
    code: str,
    entry_point: str,
    tests: Iterable[tuple[Sequence[Any], Any]] = (),
    *,
    inputs: Iterable[Sequence[Any]] = (),
    reference: str | None = None,
    atol: float | None = None,
    perf_tests: Iterable[tuple[Sequence[Any], Any]] = (),
    perf_inputs: Iterable[Sequence[Any]] = (),
) -> dict[str, Any]:
    """A ``/v1/evaluate`` submission, values tagged for JSON.

    tests: ``(args, expected)`` pairs. inputs: argument lists without expected values; the service
    computes those by running ``reference`` (required with ``inputs``). perf_tests / perf_inputs:
    the same for perf tests, on which alone cost is measured once the tests pass.
    """
    pairs, bare = list(tests), list(inputs)
    perf_pairs, perf_bare = list(perf_tests), list(perf_inputs)
    if (bare or perf_bare) and reference is None:
        raise ValueError("`inputs` without expected values need a `reference` that computes them")
    encoded = [
        {"input": codec.to_jsonable(list(args)), "expected": codec.to_jsonable(expected)}
        for args, expected in pairs
    ]
    encoded += [{"input": codec.to_jsonable(list(args))} for args in bare]
    item: dict[str, Any] = {"id": id, "code": code, "entry_point": entry_point, "tests": encoded}
    if perf_pairs or perf_bare:
        item["perf_tests"] = [
            {"input": codec.to_jsonable(list(args)), "expected": codec.to_jsonable(expected)}
            for args, expected in perf_pairs
        ] + [{"input": codec.to_jsonable(list(args))} for args in perf_bare]
    if reference is not None:
        item["reference"] = reference
    if atol is not None:
        item["atol"] = atol
    return item


class _Policy:
    """Retry timing shared by both clients."""

    def __init__(self, max_retries: int, backoff_s: float, max_backoff_s: float) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        step = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return step * random.uniform(0.5, 1.0)


def _decode(status: int, body: bytes, content_type: str) -> Any:
    if "json" not in content_type:
        return body.decode("utf-8", "replace")
    data = json.loads(body)
    if status >= 400:
        message = data.get("error", body.decode()) if isinstance(data, dict) else str(data)
        raise ServiceError(status, message)
    return data


class RewardClient:
    """Blocking client; thread-safe (one keep-alive connection per thread), at most ``max_concurrency``
    requests in flight across threads.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 900.0,
        max_retries: int = 6,
        backoff_s: float = 0.2,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 16,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"reward service url must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._parsed = parsed
        self.timeout_s = timeout_s
        self.policy = _Policy(max_retries, backoff_s, max_backoff_s)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._open_lock = threading.Lock()
        self.retries = 0

    # ---------------------------------------------------------------------------------------- API

    def evaluate(
        self,
        submissions: Sequence[dict[str, Any]],
        *,
        repeats: int | None = None,
        settings: RewardSettings | Mapping[str, Any] | None = None,
    ) -> list[dict]:
        """Results of ``/v1/evaluate``, one per submission, in order (see :func:`submission`)."""
        body = _evaluate_body(submissions, repeats, settings)
        return _checked(body, self.request("POST", "/v1/evaluate", body))["results"]

    def score(
        self,
        dataset: str,
        items: Sequence[dict[str, Any]],
        *,
        split: str | None = None,
        settings: RewardSettings | Mapping[str, Any] | None = None,
        extract: bool = True,
    ) -> list[Reward]:
        """Rewards from ``/v1/score`` for ``items`` (``{"task_id", "completion", "group"}``), in order."""
        body = _score_body(dataset, items, split, settings, extract)
        answer = _checked(body, self.request("POST", "/v1/score", body))
        return [Reward.from_dict(r) for r in answer["results"]]

    def run_code(self, code: str, *, stdin: str = "", language: str = "python", **fields: Any) -> dict:
        """SandboxFusion-style ``/run_code``."""
        body = {"code": code, "stdin": stdin, "language": language, **fields}
        return self.request("POST", "/run_code", body)

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/healthz")

    def metrics(self) -> str:
        return self.request("GET", "/metrics")

    # ----------------------------------------------------------------------------------- plumbing

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request with retries; returns the decoded JSON (or text) body."""
        data = None if body is None else json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        with self._slots:
            for attempt in range(self.policy.max_retries + 1):
                last = attempt == self.policy.max_retries
                try:
                    status, headers, payload = self._send(method, path, data)
                except (OSError, http.client.HTTPException) as exc:
                    self._drop_connection()
                    if last:
                        raise ServiceError(0, f"could not reach {self.url}: {exc!r}") from exc
                    self._wait(attempt, None)
                    continue
                if status in RETRY_STATUSES and not last:
                    self._wait(attempt, headers.get("retry-after"))
                    continue
                return _decode(status, payload, headers.get("content-type", ""))
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        self.retries += 1
        time.sleep(self.policy.delay(attempt, retry_after))

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            secure = self._parsed.scheme == "https"
            kind = http.client.HTTPSConnection if secure else http.client.HTTPConnection
            connection = kind(self._parsed.hostname, self._parsed.port, timeout=self.timeout_s)
            self._local.connection = connection
            with self._open_lock:
                self._open.add(connection)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
            with self._open_lock:
                self._open.discard(connection)

    def _send(self, method: str, path: str, data: bytes | None) -> tuple[int, dict[str, str], bytes]:
        connection = self._connection()
        connection.request(method, self._parsed.path.rstrip("/") + path, body=data, headers=self._headers)
        if connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        response = connection.getresponse()
        payload = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        if response.will_close:
            self._drop_connection()
        return response.status, headers, payload

    def close(self) -> None:
        """Close the connections of every thread that used this client."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRewardClient:
    """asyncio client (aiohttp) with the same methods as :class:`RewardClient`, as coroutines."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 900.0,
        max_retries: int = 6,
        backoff_s: float = 0.2,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 16,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"reward service url must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.policy = _Policy(max_retries, backoff_s, max_backoff_s)
        self.max_concurrency = max_concurrency
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: Any = None
        self._slots: asyncio.Semaphore | None = None
        self.retries = 0

    async def evaluate(
        self,
        submissions: Sequence[dict[str, Any]],
        *,
        repeats: int | None = None,
        settings: RewardSettings | Mapping[str, Any] | None = None,
    ) -> list[dict]:
        body = _evaluate_body(submissions, repeats, settings)
        return _checked(body, await self.request("POST", "/v1/evaluate", body))["results"]

    async def score(
        self,
        dataset: str,
        items: Sequence[dict[str, Any]],
        *,
        split: str | None = None,
        settings: RewardSettings | Mapping[str, Any] | None = None,
        extract: bool = True,
    ) -> list[Reward]:
        body = _score_body(dataset, items, split, settings, extract)
        answer = _checked(body, await self.request("POST", "/v1/score", body))
        return [Reward.from_dict(r) for r in answer["results"]]

    async def run_code(self, code: str, *, stdin: str = "", language: str = "python", **fields: Any) -> dict:
        body = {"code": code, "stdin": stdin, "language": language, **fields}
        return await self.request("POST", "/run_code", body)

    async def health(self) -> dict[str, Any]:
        return await self.request("GET", "/healthz")

    async def metrics(self) -> str:
        return await self.request("GET", "/metrics")

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_concurrency),
            )
            self._slots = asyncio.Semaphore(self.max_concurrency)
        assert self._slots is not None
        data = None if body is None else json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        async with self._slots:
            for attempt in range(self.policy.max_retries + 1):
                last = attempt == self.policy.max_retries
                try:
                    async with self._session.request(
                        method, self.url + path, data=data, headers=self._headers
                    ) as response:
                        payload = await response.read()
                        status, headers = response.status, response.headers
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                    if last:
                        raise ServiceError(0, f"could not reach {self.url}: {exc!r}") from exc
                    self.retries += 1
                    await asyncio.sleep(self.policy.delay(attempt, None))
                    continue
                if status in RETRY_STATUSES and not last:
                    self.retries += 1
                    await asyncio.sleep(self.policy.delay(attempt, headers.get("Retry-After")))
                    continue
                return _decode(status, payload, headers.get("Content-Type", ""))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _settings_body(settings: RewardSettings | Mapping[str, Any] | None) -> dict[str, Any]:
    if settings is None:
        return {}
    if isinstance(settings, RewardSettings):
        return settings.scoring_dict()
    return dict(settings)


def _evaluate_body(
    submissions: Sequence[dict[str, Any]],
    repeats: int | None,
    settings: RewardSettings | Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"submissions": list(submissions)}
    if repeats is not None:
        body["repeats"] = repeats
    if settings is not None:
        body["settings"] = _settings_body(settings)
    return body


def _score_body(
    dataset: str,
    items: Sequence[dict[str, Any]],
    split: str | None,
    settings: RewardSettings | Mapping[str, Any] | None,
    extract: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset": dataset, "items": list(items), "extract": extract}
    if split is not None:
        body["split"] = split
    if settings:
        body["settings"] = _settings_body(settings)
    return body


def _checked(body: dict[str, Any], answer: Any) -> Any:
    """``answer``, after checking that the service scored with the settings the request sent.

    A service refuses settings it cannot honour and echoes the ones it used; this catches anything
    in between that would drop or change them (a proxy rewriting bodies), instead of training on the
    service's own values. (Services from before the echo accepted shaping keys only and refused the
    rest, so an answer without one substituted nothing.)
    """
    sent = body.get("settings") or {}
    used = answer.get("settings") if isinstance(answer, dict) else None
    if not sent or not isinstance(used, dict):
        return answer
    differ = sorted(key for key, value in sent.items() if used.get(key) != value)
    if differ:
        shown = ", ".join(f"{key}: sent {sent[key]!r}, used {used.get(key)!r}" for key in differ)
        raise ServiceError(200, f"the reward service scored with other settings than sent ({shown})")
    return answer


class RemoteScorer:
    """The scorer API (``score(tasks, completions, group_ids)``) over a reward service's ``/v1/score``.

    The service loads ``dataset`` (and ``split``) itself and looks tasks up by id, so the tasks
    passed in must come from the same dataset; only ids, completions, groups and ``settings`` travel.
    settings: what every request is scored with; a :class:`RewardSettings` travels complete, so the
        service scores as a local :class:`RewardScorer` with the same settings would, or refuses the
        request naming the key it cannot honour. None leaves every key to the service.
    """

    def __init__(
        self,
        client: RewardClient,
        dataset: str,
        *,
        split: str | None = None,
        settings: RewardSettings | Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.dataset = dataset
        self.split = split
        self.settings = settings

    def score(
        self,
        tasks: Sequence[Any],
        completions: Sequence[str],
        group_ids: Sequence[Any] | None = None,
        *,
        extract: bool = True,
    ) -> list[Reward]:
        if len(tasks) != len(completions):
            raise ValueError(f"got {len(tasks)} tasks but {len(completions)} completions; pass one task each")
        groups = list(group_ids) if group_ids is not None else [task.id for task in tasks]
        # Any hashable group id works locally; the wire takes ints, so number them in order of appearance.
        numbering: dict[Any, int] = {}
        items = []
        for task, completion, group in zip(tasks, completions, groups):
            number = numbering.setdefault(group, len(numbering))
            items.append({"task_id": task.id, "completion": completion, "group": number})
        return self.client.score(
            self.dataset, items, split=self.split, settings=self.settings, extract=extract
        )
