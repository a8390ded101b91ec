"""The reward service's HTTP API on a real loopback server: verdicts, encoding, errors, auth, limits."""

from __future__ import annotations

import json
import os
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rewards.client import RewardClient, ServiceError, submission
from rewards.service import RewardService, ServiceConfig
from rewards.settings import RewardSettings
from rewards.tasks import Task
from sandbox.types import FunctionTest
from tests.rewards.service_fixtures import get, post

SECRET = "effirl-test-secret-7f3a"

ADD = {
    "id": "add",
    "code": "def add(x, y):\n    return x + y\n",
    "entry_point": "add",
    "tests": [{"input": [1, 2], "expected": 3}, {"input": [-1, 1], "expected": 0}],
}

SORT_TASK = Task(
    id="toy/sort",
    prompt="Write sort_list(xs).",
    entry_point="sort_list",
    function_tests=tuple(FunctionTest(([3, 1, 2],), [1, 2, 3]) for _ in range(1)),
    references=("def sort_list(xs):\n    return sorted(xs)\n",),
)


def toy_tasks(name: str, split: str | None) -> list[Task]:
    if name != "toy":
        raise ValueError(f"unknown dataset {name!r}; this test knows only 'toy'")
    return [SORT_TASK]


@pytest.fixture(scope="module")
def service(box):
    os.environ["EFFIRL_SERVICE_TEST_SECRET"] = SECRET
    config = ServiceConfig(
        port=0,
        max_body_bytes=256 * 1024,
        max_submissions=50,
        queue_capacity=200,
        # Short enough for the timeout cases to be quick, long enough for the runs that should pass
        # to pass on a loaded machine.
        reward=RewardSettings(timeout_s=3.0),
    )
    with RewardService(config, sandbox=box, task_source=toy_tasks) as running:
        yield running
    del os.environ["EFFIRL_SERVICE_TEST_SECRET"]


def evaluate(service, *submissions, **extra):
    status, _, body = post(service.url + "/v1/evaluate", {"submissions": list(submissions), **extra})
    assert status == 200, body
    return body["results"]


# ------------------------------------------------------------------------------------------ verdicts


def test_evaluate_verdicts_in_order(service) -> None:
    subs = [
        ADD,
        {**ADD, "id": "wrong", "code": "def add(x, y):\n    return abs(x) + y\n"},
        {**ADD, "id": "syntax", "code": "def add(x, y) return 1"},
        {**ADD, "id": "loop", "code": "def add(x, y):\n    while True: pass\n"},
        {**ADD, "id": "raise", "code": "def add(x, y):\n    raise ValueError('no')\n"},
        {**ADD, "id": "missing", "code": "def plus(x, y):\n    return x + y\n"},
    ]
    results = evaluate(service, *subs)
    assert [r["id"] for r in results] == ["add", "wrong", "syntax", "loop", "raise", "missing"]
    assert [r["status"] for r in results] == [
        "passed",
        "failed",
        "syntax_error",
        "timeout",
        "runtime_error",
        "runtime_error",
    ]
    assert results[0]["passed"] == 2 and results[0]["total"] == 2 and results[0]["reward"] == 1.0
    assert results[0]["cost"] > 0 and results[0]["details"]["measured"]["cpu_ns"] > 0
    assert results[1]["passed"] == 1 and results[1]["details"]["failed_tests"] == [
        {"index": 1, "error": "wrong output"}
    ]
    assert results[2]["reward"] == -1.0 and results[3]["reward"] == -0.5
    assert results[5]["details"]["error_kind"] == "missing_entry_point" and results[5]["reward"] == -1.0


def test_tagged_values_round_trip(service) -> None:
    code = "def f(x):\n    return (x, {x}, float('nan'), b'\\x00' * x)\n"
    expected = {"__tuple__": [2, {"__set__": [2]}, {"__float__": "nan"}, {"__bytes__": "AAA="}]}
    sub = {"id": "t", "code": code, "entry_point": "f", "tests": [{"input": [2], "expected": expected}]}
    (result,) = evaluate(service, sub)
    assert result["status"] == "passed"
    # a list is not a tuple
    wrong = {**sub, "tests": [{"input": [2], "expected": [2, [2], 0.0, ""]}]}
    assert evaluate(service, wrong)[0]["status"] == "failed"


def test_reference_supplies_expected_values_and_cost(service) -> None:
    # The reference sums ten times over: about 20x the fast one's cost, which includes decoding the
    # input (about as long as one pass of the loop), so a loaded machine cannot flip the order.
    reference = (
        "def total(xs):\n    for _ in range(10):\n        s = 0\n        for x in xs:\n            s += x\n"
        "    return s\n"
    )
    fast = {
        "id": "fast",
        "code": "def total(xs):\n    return sum(xs)\n",
        "entry_point": "total",
        # Large enough that the loop costs several times the sum on a loaded machine too.
        "tests": [{"input": [list(range(15000))]}, {"input": [[1, 2]], "expected": 3}],
        "reference": reference,
    }
    wrong = {**fast, "id": "wrong", "code": "def total(xs):\n    return len(xs) + 1\n"}
    results = evaluate(service, fast, wrong)
    assert [r["status"] for r in results] == ["passed", "failed"]
    assert results[0]["reference_cost"] > 0 and results[0]["speedup"] > 1.0, results
    assert results[0]["reward"] > 1.0  # faster than the reference earns efficiency reward
    assert results[1]["passed"] == 1 and results[1]["speedup"] is None


def test_broken_reference_is_reported_per_submission(service) -> None:
    broken = {
        "id": "b",
        "code": "def f(x):\n    return x\n",
        "entry_point": "f",
        "tests": [{"input": [1]}],
        "reference": "def f(x):\n    raise RuntimeError('bad reference')\n",
    }
    results = evaluate(service, broken, ADD)
    assert results[0]["status"] == "sandbox_error"
    assert results[0]["details"]["error_kind"] == "bad_reference"
    assert "bad reference" in results[0]["details"]["error"]
    assert results[1]["status"] == "passed"


def test_atol_and_repeats(service) -> None:
    sub = {
        "id": "pi",
        "code": "def pi():\n    return 3.1416\n",
        "entry_point": "pi",
        "tests": [{"input": [], "expected": 3.14159}],
    }
    assert evaluate(service, sub)[0]["status"] == "failed"
    (result,) = evaluate(service, {**sub, "atol": 1e-3}, repeats=3)
    assert result["status"] == "passed" and result["details"]["repeats"] == 3


def test_identical_submissions_run_once(service) -> None:
    code = "def add(x, y):\n    return y + x  # cache probe\n"
    before = service.sandbox.executions
    results = evaluate(service, *({**ADD, "id": str(i), "code": code} for i in range(5)))
    assert service.sandbox.executions - before == 1
    assert [r["details"]["cached"] for r in results].count(False) == 1


# --------------------------------------------------------------------------------------- /v1/score


def test_score_by_task_id(service) -> None:
    items = [
        {"task_id": "toy/sort", "completion": "def sort_list(xs):\n    return sorted(xs)\n", "group": 0},
        {"task_id": "toy/sort", "completion": "def sort_list(xs):\n    return xs\n", "group": 0},
    ]
    body = {"dataset": "toy", "items": items, "extract": False}
    status, _, response = post(service.url + "/v1/score", body)
    assert status == 200, response
    first, second = response["results"]
    assert first["task_id"] == "toy/sort" and first["evidence"]["status"] == "passed"
    assert first["parts"]["correctness"] == 1.0 and first["evidence"]["reference_cost"] > 0
    assert second["evidence"]["status"] == "failed" and second["reward"] == 0.0
    body["settings"] = {"efficiency_weight": 0.0}
    assert post(service.url + "/v1/score", body)[2]["results"][0]["reward"] == 1.0


def test_score_errors_name_the_fix(service) -> None:
    item = {"task_id": "toy/nope", "completion": "x"}
    status, _, body = post(service.url + "/v1/score", {"dataset": "toy", "items": [item]})
    assert status == 400 and "not in dataset 'toy'" in body["error"] and "toy/sort" in body["error"]
    status, _, body = post(service.url + "/v1/score", {"dataset": "nope", "items": [item]})
    assert status == 400 and "unknown dataset 'nope'" in body["error"]
    item = {"task_id": "toy/sort", "completion": "x"}
    body = {"dataset": "toy", "items": [item], "settings": {"cost_measure": "python_events"}}
    status, _, body = post(service.url + "/v1/score", body)
    assert status == 409 and "start the service with --cost-measure python_events" in body["error"]


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "body is empty"),
        (b"\xff\xfe", 400, "not UTF-8"),
        (b'{"submissions": [{"id": "a", "code": "", "entry_point": "f", "tests": NaN}]}', 400, "bare NaN"),
        (b"[1, 2]", 400, "`request` must be a JSON object, got array"),
        (b"{}", 400, "`submissions` is missing"),
        (b'{"submissions": {}}', 400, "`submissions` must be an array, got object"),
        (b'{"submissions": [], "x": 1}', 400, "unknown field(s) x"),
        (b'{"submissions": [{"id": "a"}]}', 400, "`submissions[0].code` is missing"),
        (
            b'{"submissions": [{"id": "a", "code": 5, "entry_point": "f", "tests": []}]}',
            400,
            "`submissions[0].code` must be a string, got integer",
        ),
        (
            b'{"submissions": [{"id": "a", "code": "", "entry_point": "f x", "tests": [{"input": []}]}]}',
            400,
            "must be a Python function name",
        ),
        (
            b'{"submissions": [{"id": "a", "code": "", "entry_point": "f", "tests": [{"input": 3}]}]}',
            400,
            "`submissions[0].tests[0].input` must be an array",
        ),
        (
            b'{"submissions": [{"id": "a", "code": "", "entry_point": "f", "tests": [{"input": []}]}]}',
            400,
            "no `reference`",
        ),
        (
            b'{"submissions": [{"id": "a", "code": "", "entry_point": "f", '
            b'"tests": [{"input": [], "expected": {"__float__": "big"}}]}]}',
            400,
            "not valid tagged JSON",
        ),
        (b'{"submissions": [' + b",".join([json.dumps(ADD).encode()] * 51) + b"]}", 413, "limit of 50"),
        (json.dumps({"submissions": [ADD], "repeats": 0}).encode(), 400, "`repeats` must be between 1"),
    ],
)
def test_bad_requests_say_what_is_wrong(service, raw: bytes, status: int, fragment: str) -> None:
    got, headers, body = post(service.url + "/v1/evaluate", None, raw=raw)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/json")
    assert fragment in body["error"]


def test_oversized_body_is_413(service) -> None:
    big = {"submissions": [{**ADD, "code": "# " + "x" * 300_000 + "\n" + ADD["code"]}]}
    status, _, body = post(service.url + "/v1/evaluate", big)
    assert status == 413 and "limit of 262144 bytes" in body["error"]
    assert get(service.url + "/healthz")[0] == 200  # still serving


def test_unknown_route_and_method(service) -> None:
    status, _, body = get(service.url + "/v2/nothing")
    assert status == 404 and "/v1/evaluate" in body["error"]
    status, headers, body = get(service.url + "/v1/evaluate")
    assert status == 405 and "POST" in body["error"] and headers["Allow"] == "POST"


# --------------------------------------------------------------------------------------- /run_code


def verl_request(code: str, stdin: str = "", timeout: int = 10, language: str = "python") -> dict:
    """Exactly the JSON verl's sandbox_fusion reward sends (call_sandbox_api)."""
    return {
        "compile_timeout": timeout,
        "run_timeout": timeout,
        "code": code,
        "stdin": stdin,
        "language": language,
        "files": {},
        "fetch_files": [],
    }


def test_run_code_speaks_sandbox_fusion(service) -> None:
    status, _, body = post(service.url + "/run_code", verl_request("print(int(input()) * 2)", "21\n"))
    assert status == 200
    assert body["status"] == "Success" and body["compile_result"] is None
    run = body["run_result"]
    assert run["status"] == "Finished" and run["return_code"] == 0 and run["stdout"] == "42\n"
    assert run["execution_time"] > 0 and run["stderr"] == ""
    # verl's verdict: stdout compared after rstrip("\n")
    assert run["stdout"].rstrip("\n") == "42"


# A program that writes the harness's own "done" record on the result channel, then fails.
FORGED_DONE_THEN_RAISE = (
    'import os\nos.write(3, b\'{"t":"done","events":null}\\n\')\nraise RuntimeError(\'after done\')'
)


@pytest.mark.parametrize(
    ("code", "api_status", "run_status", "return_code", "stderr_fragment"),
    [
        ("import sys\nprint('x')\nsys.exit(3)", "Failed", "Finished", 3, "exit status 3"),
        ("raise ValueError('boom')", "Failed", "Finished", 1, "ValueError: boom"),
        ("def f(:\n", "Failed", "Finished", 1, "SyntaxError"),
        ("while True:\n    pass", "Failed", "TimeLimitExceeded", None, ""),
        # The exit status comes from the kernel, never from what the program printed or raised.
        ("raise ValueError('exit status 0')", "Failed", "Finished", 1, "ValueError"),
        ("import os\nprint('x', flush=True)\nos._exit(5)", "Failed", "Finished", 5, "exit status 5"),
        ("import ctypes\nctypes.string_at(0)", "Failed", "Finished", -11, "SIGSEGV"),
        (FORGED_DONE_THEN_RAISE, "Failed", "Finished", 1, "RuntimeError"),
    ],
)
def test_run_code_failures_map_to_sandbox_fusion_states(
    service, code, api_status, run_status, return_code, stderr_fragment
) -> None:
    _, _, body = post(service.url + "/run_code", verl_request(code, timeout=1))
    assert body["status"] == api_status
    assert body["run_result"]["status"] == run_status
    assert body["run_result"]["return_code"] == return_code
    assert stderr_fragment in body["run_result"]["stderr"]


def test_run_code_files_and_languages(service) -> None:
    request = verl_request("print(open('data/in.txt').read())")
    request["files"] = {"data/in.txt": "aGVsbG8="}
    _, _, body = post(service.url + "/run_code", request)
    assert body["run_result"]["stdout"] == "hello\n"
    status, _, body = post(service.url + "/run_code", verl_request("int main(){}", language="cpp"))
    assert status == 400 and "effirl runs Python only" in body["error"]
    request["files"] = {"../escape": "aGVsbG8="}
    status, _, body = post(service.url + "/run_code", request)
    assert status == 400 and "must be relative" in body["error"]


def test_hostile_programs_cannot_hurt_the_service(service) -> None:
    _, _, body = post(service.url + "/run_code", verl_request("import os\nos.kill(os.getppid(), 9)"))
    assert body["status"] in ("Failed", "Success")
    _, _, body = post(service.url + "/run_code", verl_request("import os\nos.kill(-1, 9)"))
    assert get(service.url + "/healthz")[2]["status"] == "ok"
    assert post(service.url + "/v1/evaluate", {"submissions": [ADD]})[2]["results"][0]["status"] == "passed"


def test_candidates_see_no_secret_of_the_service(service) -> None:
    assert os.environ["EFFIRL_SERVICE_TEST_SECRET"] == SECRET
    probe = (
        "import os, glob\n"
        "found = [k + '=' + v for k, v in os.environ.items()]\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        found.append(open(path, 'rb').read().decode('latin-1'))\n"
        "    except OSError:\n"
        "        pass\n"
        "print('\\n'.join(found))\n"
    )
    _, _, body = post(service.url + "/run_code", verl_request(probe))
    assert body["status"] == "Success"
    assert SECRET not in body["run_result"]["stdout"] and "EFFIRL_SERVICE_TEST_SECRET" not in str(body)
    sub = {
        "id": "env",
        "code": "import os\ndef env():\n    return dict(os.environ)\n",
        "entry_point": "env",
        "tests": [{"input": [], "expected": {}}],
    }
    (result,) = evaluate(service, sub)
    assert SECRET not in json.dumps(result)


# ------------------------------------------------------------------------------ health and metrics


def test_healthz_and_metrics(service) -> None:
    status, _, health = get(service.url + "/healthz")
    assert status == 200 and health["status"] == "ok" and health["workers"] == 2
    evaluate(service, ADD)
    status, headers, text = get(service.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    # The service is shared by the module's tests, so the counters hold their requests too.
    assert samples[("effirl_requests_total", (("route", "/v1/evaluate"), ("status", "200")))] >= 1
    evaluated = (("le", "+Inf"), ("route", "/v1/evaluate"))
    assert samples[("effirl_request_duration_seconds_bucket", evaluated)] >= 1
    assert samples[("effirl_queue_depth", ())] == 0 and samples[("effirl_executions_total", ())] >= 1
    assert samples[("effirl_submissions_total", (("status", "passed"),))] >= 1
    # The process's own metrics come with them (prometheus_client's process collector).
    assert samples[("process_resident_memory_bytes", ())] > 0 and ("process_cpu_seconds_total", ()) in samples


# ------------------------------------------------------------------------- auth, limits, timeouts


def test_bearer_token_auth(box) -> None:
    config = ServiceConfig(port=0, token="s3cret")
    with RewardService(config, sandbox=box) as service:
        status, headers, body = post(service.url + "/v1/evaluate", {"submissions": [ADD]})
        assert status == 401 and "Authorization: Bearer" in body["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer nope"}
        assert post(service.url + "/v1/evaluate", {"submissions": [ADD]}, headers=wrong)[0] == 401
        assert get(service.url + "/metrics")[0] == 401
        assert get(service.url + "/healthz")[0] == 200  # liveness probes need no token
        right = {"Authorization": "Bearer s3cret"}
        status, _, body = post(service.url + "/v1/evaluate", {"submissions": [ADD]}, headers=right)
        assert status == 200 and body["results"][0]["status"] == "passed"
        with RewardClient(service.url, token="s3cret") as client:
            assert client.evaluate([ADD])[0]["status"] == "passed"
        with RewardClient(service.url, token="nope") as client, pytest.raises(ServiceError) as caught:
            client.evaluate([ADD])
        assert caught.value.status == 401


def test_backpressure_refuses_with_retry_after_and_loses_nothing(box) -> None:
    config = ServiceConfig(port=0, queue_capacity=2, max_submissions=2)
    slow = {**ADD, "code": "import time\ndef add(x, y):\n    time.sleep(0.3)\n    return x + y\n"}
    with RewardService(config, sandbox=box) as service:
        outcomes: list[tuple[int, dict, dict]] = []

        def send(i: int) -> None:
            sub = {**slow, "id": str(i), "code": slow["code"] + f"K = {i}\n"}
            outcomes.append(post(service.url + "/v1/evaluate", {"submissions": [sub]}))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        refused = [o for o in outcomes if o[0] == 503]
        answered = [o for o in outcomes if o[0] == 200]
        assert refused and answered and len(refused) + len(answered) == 6
        assert all(int(headers["Retry-After"]) >= 1 for _, headers, _ in refused)
        assert "retry after" in refused[0][2]["error"]
        # a retrying client gets every submission through, exactly once each
        with RewardClient(service.url, max_concurrency=6, backoff_s=0.05) as client:
            results: dict[str, list] = {}

            def retrying(i: int) -> None:
                sub = {**slow, "id": f"r{i}", "code": slow["code"] + f"K = 'r{i}'\n"}
                results.setdefault(sub["id"], []).extend(client.evaluate([sub]))

            threads = [threading.Thread(target=retrying, args=(i,)) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert sorted(results) == [f"r{i}" for i in range(6)]
        assert all(len(v) == 1 and v[0]["status"] == "passed" for v in results.values())
        assert client.retries > 0
        assert service.admission.in_flight == 0


def test_request_deadline_answers_every_submission(box) -> None:
    config = ServiceConfig(port=0, request_timeout_s=0.25, reward=RewardSettings(timeout_s=5.0))
    slow = {**ADD, "code": "import time\ndef add(x, y):\n    time.sleep(0.5)\n    return x + y\n"}
    with RewardService(config, sandbox=box) as service:
        subs = [{**slow, "id": str(i), "code": slow["code"] + f"K = {i}\n"} for i in range(3)] + [ADD]
        status, _, body = post(service.url + "/v1/evaluate", {"submissions": subs})
        assert status == 200
        results = body["results"]
        assert [r["id"] for r in results] == ["0", "1", "2", "add"]
        late = [r for r in results if r["details"]["error_kind"] == "deadline"]
        assert late and all(r["status"] == "sandbox_error" and r["reward"] == 0.0 for r in late)
        assert "deadline of 0.25 s" in late[0]["details"]["error"]


def test_client_submission_helper_encodes_values(service) -> None:
    sub = submission("s", "def f(x):\n    return (x, x)\n", "f", [((1,), (1, 1))])
    assert sub["tests"][0]["expected"] == {"__tuple__": [1, 1]}
    with pytest.raises(ValueError, match="need a `reference`"):
        submission("s", "", "f", inputs=[(1,)])
    with RewardClient(service.url) as client:
        assert client.evaluate([sub])[0]["status"] == "passed"
        assert client.health()["status"] == "ok"
        with pytest.raises(ServiceError, match="must be a string"):
            client.evaluate([{**sub, "id": 3}])


def test_remote_scorer_matches_local_scoring(service, box) -> None:
    from rewards.client import RemoteScorer
    from rewards.scorer import RewardScorer

    codes = [
        "def sort_list(xs):\n    return sorted(xs)\n",
        "def sort_list(xs):\n    return xs[::-1]\n",
        "def sort_list(xs):\n    return sorted(xs\n",
        "def other(xs):\n    return xs\n",
    ]
    # Costs differ from run to run, so the shaping here leaves them out; everything else must agree.
    settings = RewardSettings(timeout_s=1.0, efficiency_weight=0.0, format_weight=0.0, correctness="fraction")
    groups = [("g", 1)] * len(codes)
    local = RewardScorer(box, settings).score([SORT_TASK] * len(codes), codes, groups, extract=False)
    with RewardClient(service.url) as client:
        remote = RemoteScorer(client, "toy", settings=settings).score(
            [SORT_TASK] * len(codes), codes, groups, extract=False
        )
    assert [r.evidence.status for r in remote] == ["passed", "failed", "syntax_error", "runtime_error"]
    for here, there in zip(local, remote):
        assert (here.value, here.correctness, here.penalty) == (there.value, there.correctness, there.penalty)
        assert (here.evidence.status, here.evidence.error_kind) == (
            there.evidence.status,
            there.evidence.error_kind,
        )
        assert (here.evidence.passed, here.evidence.total) == (there.evidence.passed, there.evidence.total)


def test_score_a_registered_dataset(box) -> None:
    from rewards.datasets import load_tasks

    task = load_tasks("synthetic", limit=1)[0]
    items = [
        {"task_id": task.id, "completion": f"```python\n{task.reference}```", "group": 0},
        {"task_id": task.id, "completion": "```python\ndef nothing():\n    pass\n```", "group": 0},
    ]
    with RewardService(ServiceConfig(port=0), sandbox=box) as service:
        status, _, body = post(service.url + "/v1/score", {"dataset": "synthetic", "items": items})
        assert status == 200, body
        good, bad = body["results"]
        assert good["evidence"]["status"] == "passed" and good["evidence"]["reference_cost"] > 0
        assert bad["evidence"]["error_kind"] == "missing_entry_point" and bad["reward"] == -1.0
        path = {"dataset": "/etc/passwd", "items": items}
        status, _, body = post(service.url + "/v1/score", path)
        assert status == 400 and "this service serves" in body["error"] and "synthetic" in body["error"]
