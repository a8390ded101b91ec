"""The reward service under requests written to hurt it: memory growth, a stalled loop, hostile JSON."""

from __future__ import annotations

import re
import threading
import time

import pytest

import rewards.cache as cache_module
from rewards.cache import COMPILE_MAX_SCOPES, ExecutionCache, code_digest, footprint, slim
from rewards.service import RewardService, ServiceConfig
from rewards.settings import RewardSettings
from sandbox import ExecutionResult, Status
from sandbox import TestOutcome as Outcome
from tests.rewards.service_fixtures import get, post


@pytest.fixture(scope="module")
def service(box):
    config = ServiceConfig(
        port=0, max_submissions=64, queue_capacity=256, reward=RewardSettings(timeout_s=10.0)
    )
    with RewardService(config, sandbox=box) as running:
        yield running


def metric(service, name: str) -> float:
    text = get(service.url + "/metrics")[2]
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


# ------------------------------------------------------------------------ 9. the cache keeps verdicts


def loud(n: int) -> dict:
    """A correct submission that prints about 1 MB (distinct code each time: every one is a miss)."""
    code = f"def f(x):\n    print('{n}' * (1000 * 1000 // len('{n}')))\n    return x\n"
    return {"id": str(n), "code": code, "entry_point": "f", "tests": [{"input": [1], "expected": 1}]}


def test_what_submissions_print_is_not_kept(service) -> None:
    before = metric(service, "effirl_cache_bytes")
    for start in range(0, 50, 10):
        status, _, body = post(
            service.url + "/v1/evaluate", {"submissions": [loud(n) for n in range(start, start + 10)]}
        )
        assert status == 200 and {r["status"] for r in body["results"]} == {"passed"}, body
    time.sleep(0.2)  # results settle into the cache as their futures finish
    grown = metric(service, "effirl_cache_bytes") - before
    # 50 runs printed 50 MB; the cache keeps a few hundred bytes of each.
    assert 0 < grown < 200_000, grown


def test_the_cache_holds_to_its_byte_budget() -> None:
    cache = ExecutionCache(max_entries=1000, max_bytes=20_000)
    for n in range(40):
        result = ExecutionResult(Status.FAILED, tests=[Outcome(False, "x" * 5000)], stdout="y" * 10_000)
        future, _ = cache.get_or_submit(n, lambda result=result: _done(result))
        assert future.result().stdout == "y" * 10_000  # the caller still gets everything
        assert cache.bytes <= cache.max_bytes
    assert 0 < len(cache) < 40 and cache.stats.evictions > 0
    kept = cache.get_or_submit(39, lambda: _done(ExecutionResult(Status.PASSED)))[0].result()
    assert len(kept.stdout) < 600 and len(kept.tests[0].error) < 400  # the slim copy
    assert slim(kept) == kept and footprint(kept) < 2000


def _done(result: ExecutionResult):
    import concurrent.futures

    future = concurrent.futures.Future()
    future.set_result(result)
    return future


# ------------------------------------------------------------------ 10. nothing heavy on the event loop

LAMBDA_CHAIN = "f = " + "lambda: " * 999 + "0\n"


def test_code_that_is_slow_to_compile_is_never_compiled_for_its_cache_key(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(
        cache_module, "compile", lambda *a, **k: calls.append(a) or compile(*a, **k), raising=False
    )
    assert code_digest("def f(x):\n    return x\n") == code_digest("def f(x):  # same\n\n    return x\n")
    assert len(calls) == 2  # ordinary code: compiled, so layout and comments do not count
    calls.clear()
    hostile = LAMBDA_CHAIN * 16  # 128 KB of nested scopes: compiling it took seconds
    assert code_digest(hostile) == code_digest(hostile + "\n# a comment\n")
    assert code_digest(LAMBDA_CHAIN) != code_digest(LAMBDA_CHAIN.replace("0", "1"))
    assert calls == [] and LAMBDA_CHAIN.count("lambda") > COMPILE_MAX_SCOPES


def test_health_checks_are_answered_while_hostile_code_is_scored(service) -> None:
    submission = {
        "id": "slow-to-compile",
        "code": LAMBDA_CHAIN * 16,
        "entry_point": "f",
        "tests": [{"input": [], "expected": 0}],
    }
    latencies = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.monotonic()
            assert get(service.url + "/healthz")[0] == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        status, _, _ = post(service.url + "/v1/evaluate", {"submissions": [submission] * 8})
    finally:
        done.set()
        poller.join()
    assert status == 200 and latencies
    # Before the fix the loop stalled for 2.5-3.7 s while the key was computed.
    assert max(latencies) < 2.0, max(latencies)


# --------------------------------------------------------------------- 11. hostile JSON bodies get 400

DEEP_BODIES = {
    "objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "arrays": b"[" * 100_000 + b"]" * 100_000,
    "in_a_field": b'{"submissions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("route", ["/v1/evaluate", "/v1/score", "/run_code"])
@pytest.mark.parametrize("body", sorted(DEEP_BODIES))
def test_deeply_nested_bodies_are_the_clients_error(service, route: str, body: str) -> None:
    status, _, answer = post(service.url + route, None, raw=DEEP_BODIES[body])
    assert status == 400, answer
    assert "nested too deeply" in answer["error"] and "\n" not in answer["error"]
    assert get(service.url + "/healthz")[0] == 200
