"""`effirl sandbox audit --url URL`: the sandbox's attacks, run against a reward service over HTTP.

The attacks and their predicates are the sandbox's own (:mod:`sandbox.attacks`); this module only
sends each step the way a client of the service would (``/v1/evaluate`` for function tests,
``/run_code`` for programs) and maps the JSON answers onto :class:`sandbox.audit.Observation`. The
attacks on the service itself (what its cache keeps, its event loop, request bodies nested too
deeply) are run here. Attacks that need the host's own view (uids of processes) are "not applicable
remotely".

    report = audit_service("http://127.0.0.1:8080", token=None)
    print(render(report)); sys.exit(report.exit_code)
"""

from __future__ import annotations

import http.client
import itertools
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from rewards.client import RewardClient, ServiceError
from sandbox import codec
from sandbox.audit import (
    Attack,
    Context,
    Finding,
    FunctionStep,
    Observation,
    Outcome,
    ProgramStep,
    Report,
    ScriptStep,
    Step,
    contained,
    inconclusive,
    not_contained,
    plural,
    run_attacks,
    select,
)
from sandbox.verdict import normalise_stdout


class AuditUsageError(ValueError):
    """The audit cannot start: the URL does not answer, or the token is refused (one line)."""


def audit_service(
    url: str,
    *,
    token: str | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = False,
    parallel: int = 4,
) -> Report:
    """Audit the reward service at ``url``; raises :class:`AuditUsageError` when it cannot be reached."""
    from sandbox.attacks import ATTACKS

    attacks = select(ATTACKS, classes)
    try:
        client = RewardClient(
            url, token=token, max_retries=1, backoff_s=0.2, timeout_s=300.0, max_concurrency=8
        )
    except ValueError as exc:
        raise AuditUsageError(str(exc)) from None
    started = time.monotonic()
    with client:
        health = _health(client, url)
        context = Context(
            remote=True,
            isolation=str(health.get("isolation")),
            scope=None,
            workers=max(1, int(health.get("workers") or 1)),
            nonce=secrets.token_hex(8),
            host_address=_address(url),
            host_port=_port(url),
            extra={"client": client, "url": url, "token": token},
        )
        tags = itertools.count()

        def execute(step: Step) -> Observation:
            return execute_remote(client, step, f"{context.nonce}-{next(tags)}")

        def skip(attack: Attack) -> str | None:
            return f"not applicable remotely: {attack.local_because}" if attack.where == "local" else None

        runnable = [replace(a, custom=SERVICE_CHECKS[a.name]) if a.where == "service" else a for a in attacks]
        results = run_attacks(runnable, execute, context, parallel=parallel, skip=skip, progress=progress)
    settings = health.get("settings") or {}
    header = [
        f"isolation in use: {health.get('isolation')} ({plural(int(health.get('workers') or 0), 'worker')}), "
        f"auth {'on' if health.get('auth') else 'off'}, "
        f"cost measure {settings.get('cost_measure', 'not reported')}"
        + ("" if health.get("cost_trusted") in (None, True) else " (NOT trusted)")
    ]
    return Report(url, str(health.get("isolation")), None, header, results, time.monotonic() - started)


def _health(client: RewardClient, url: str) -> dict[str, Any]:
    try:
        health = client.health()
    except ServiceError as exc:
        raise AuditUsageError(f"no reward service answers at {url}: {exc.message}") from None
    if not isinstance(health, dict) or "isolation" not in health:
        raise AuditUsageError(f"{url} answered /healthz, but not as an effirl reward service does")
    try:
        client.metrics()
    except ServiceError as exc:
        if exc.status in (401, 403):
            raise AuditUsageError(f"the reward service at {url} refused the token: {exc.message}") from None
        raise AuditUsageError(f"the reward service at {url} failed: {exc.message}") from None
    return health


def _address(url: str) -> str | None:
    """The service's address as numbers, as a candidate on its host would dial it."""
    try:
        return socket.getaddrinfo(urllib.parse.urlsplit(url).hostname, None, socket.AF_INET)[0][4][0]
    except (OSError, IndexError, UnicodeError):
        return None


def _port(url: str) -> int:
    parsed = urllib.parse.urlsplit(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


# ------------------------------------------------------------------------------- steps over HTTP


def tagged(code: str, tag: str) -> str:
    """``code`` made distinct for the service's cache (comments do not count there; an assignment does)."""
    return f"_effirl_audit = {tag!r}\n{code}"


def execute_remote(client: RewardClient, step: Step, tag: str) -> Observation:
    started = time.monotonic()
    try:
        if isinstance(step, FunctionStep):
            answer = _evaluate_function(client, step, tag)
            return observe_evaluation(answer, time.monotonic() - started)
        if isinstance(step, ProgramStep):
            if step.repeats > 1:
                raise ValueError("/run_code runs a program once; this step needs repeats")
            fields = {} if step.timeout_s is None else {"run_timeout": step.timeout_s}
            answer = client.run_code(tagged(step.code, tag), stdin=step.stdin, **fields)
            return observe_run_code(answer, step.expected_stdout, time.monotonic() - started)
        return _evaluate_script(client, step, tag, started)
    except ServiceError as exc:
        if 400 <= exc.status < 500:
            return Observation(
                "refused", refused=f"HTTP {exc.status}: {exc.message}", elapsed_s=time.monotonic() - started
            )
        raise


def _evaluate_function(client: RewardClient, step: FunctionStep, tag: str) -> dict[str, Any]:
    code = tagged(step.code, tag)
    tests = []
    for args, expected in step.tests:
        test: dict[str, Any] = {"input": codec.to_jsonable(list(args))}
        if not step.reference:
            test["expected"] = codec.to_jsonable(expected)
        tests.append(test)
    item: dict[str, Any] = {"id": tag, "code": code, "entry_point": step.entry_point, "tests": tests}
    if step.reference:
        item["reference"] = code
    settings: dict[str, Any] = {"repeats": step.repeats}
    if step.timeout_s is not None:
        settings["timeout_s"] = step.timeout_s
    return client.evaluate([item], settings=settings)[0]


def _evaluate_script(client: RewardClient, step: ScriptStep, tag: str, started: float) -> Observation:
    item = {
        "id": tag,
        "code": tagged(step.code, tag),
        "entry_point": step.entry_point or "candidate",
        "test_script": step.test_script,
    }
    answer = client.request("POST", "/v1/evaluate", {"submissions": [item]})
    result = answer["results"][0]
    observation = observe_evaluation(result, time.monotonic() - started)
    return replace(observation, script_marked=script_marked(result))


def script_marked(result: dict[str, Any]) -> bool:
    """Whether a result says its verdict is of script trust (a ``trust...`` field saying ``script``)."""
    places = [result, result.get("details") or {}]
    return any("trust" in key and value == "script" for place in places for key, value in place.items())


def observe_evaluation(result: dict[str, Any], elapsed_s: float) -> Observation:
    """One ``/v1/evaluate`` result as plain verdict fields."""
    details = result.get("details") or {}
    total = int(result.get("total") or 0)
    failed = {t["index"]: t.get("error") or "failed" for t in details.get("failed_tests") or []}
    measured = details.get("measured") or {}
    return Observation(
        status=str(result.get("status")),
        error_kind=details.get("error_kind"),
        error=details.get("error"),
        passed=int(result.get("passed") or 0),
        total=total,
        test_errors=tuple(failed.get(i) for i in range(total)),
        cpu_ns=measured.get("cpu_ns"),
        python_events=measured.get("python_events"),
        cost_measure=details.get("cost_measure"),
        cost_trusted=details.get("cost_trusted"),
        elapsed_s=elapsed_s,
    )


def observe_run_code(response: dict[str, Any], expected_stdout: str, elapsed_s: float) -> Observation:
    """A SandboxFusion ``/run_code`` answer as plain verdict fields (the exit status is its own)."""
    run = response.get("run_result") or {}
    code = run.get("return_code")
    stderr = run.get("stderr") or ""
    if response.get("status") == "SandboxError":
        status = "sandbox_error"
    elif run.get("status") == "TimeLimitExceeded":
        status = "timeout"
    elif code != 0:
        status = "runtime_error"
    elif normalise_stdout(run.get("stdout") or "") == normalise_stdout(expected_stdout):
        status = "passed"
    else:
        status = "failed"
    kind = "protocol_violation" if "result channel" in stderr else None
    error = response.get("message") or (stderr.strip().splitlines() or [None])[-1]
    return Observation(
        status=status,
        error_kind=kind,
        error=error,
        exit_code=code,
        passed=int(status == "passed"),
        total=1,
        test_errors=(None if status == "passed" else status,),
        elapsed_s=elapsed_s,
    )


# ------------------------------------------------------------------------ attacks on the service


def _cache_growth(context: Context) -> Finding:
    client: RewardClient = context.extra["client"]
    before = _metric(client.metrics(), "effirl_cache_bytes")
    if before is None:
        return Finding(Outcome.NOT_MEASURABLE, "the service's /metrics has no effirl_cache_bytes")
    runs, size = 10, 500_000
    loud = [
        {
            "id": str(k),
            "code": tagged(
                f"def f(x):\n    print('{k}' * {size})\n    return x\n", f"{context.nonce}-loud-{k}"
            ),
            "entry_point": "f",
            "tests": [{"input": [1], "expected": 1}],
        }
        for k in range(runs)
    ]
    results = client.evaluate(loud)
    if any(r["status"] != "passed" for r in results):
        return inconclusive(f"the printing runs did not pass: {results[0]['status']}")
    time.sleep(0.3)  # results settle into the cache as their futures finish
    grown = (_metric(client.metrics(), "effirl_cache_bytes") or 0) - before
    printed = runs * size
    if grown > printed / 10:
        return not_contained(
            f"{runs} runs printed {printed / 1e6:.0f} MB and the cache grew {grown / 1e6:.1f} MB"
        )
    return contained(
        f"{runs} runs printed {printed / 1e6:.0f} MB; the cache grew {max(grown, 0) / 1e3:.0f} kB"
    )


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text if isinstance(text, str) else "", re.M)
    return float(match.group(1)) if match else None


LAMBDA_CHAIN = "f = " + "lambda: " * 999 + "0\n"


def _event_loop(context: Context) -> Finding:
    client: RewardClient = context.extra["client"]
    baseline = max(_timed(client.health) for _ in range(5))
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            latencies.append(_timed(client.health))
            time.sleep(0.02)

    slow = [
        {
            "id": str(k),
            "code": tagged(LAMBDA_CHAIN * 16, f"{context.nonce}-slow-{k}"),
            "entry_point": "f",
            "tests": [{"input": [], "expected": 0}],
        }
        for k in range(4)
    ]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        client.evaluate(slow, settings={"timeout_s": 2.0})
    finally:
        done.set()
        poller.join(timeout=30)
    worst = max(latencies, default=0.0)
    if worst > max(1.0, 10 * baseline):
        return not_contained(f"/healthz took {worst:.1f} s while 512 kB of nested lambdas were scored")
    return contained(
        f"/healthz answered within {worst * 1000:.0f} ms ({len(latencies)} checks) "
        "while nested lambdas were scored"
    )


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


DEEP_BODY = b"[" * 100_000 + b"]" * 100_000
ROUTES = ("/v1/evaluate", "/v1/score", "/run_code")


def _json_depth(context: Context) -> Finding:
    answers = {
        route: _raw_post(context.extra["url"], context.extra["token"], route, DEEP_BODY) for route in ROUTES
    }
    failed = [f"{route} answered {status}" for route, status in answers.items() if status >= 500]
    if failed:
        return not_contained(", ".join(failed))
    odd = [f"{route} answered {status}" for route, status in answers.items() if not 400 <= status < 500]
    if odd:
        return inconclusive(", ".join(odd))
    return contained(f"{' and '.join(sorted({str(s) for s in answers.values()}))} on {', '.join(ROUTES)}")


def _raw_post(url: str, token: str | None, route: str, body: bytes) -> int:
    """The HTTP status of POSTing ``body`` as it is (the client would encode a Python value)."""
    parsed = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    connection = kind(parsed.hostname, parsed.port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request("POST", parsed.path.rstrip("/") + route, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


SERVICE_CHECKS: dict[str, Callable[[Context], Finding]] = {
    "printed_output_kept": _cache_growth,
    "slow_to_compile": _event_loop,
    "deep_bodies": _json_depth,
}
