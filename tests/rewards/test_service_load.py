"""`effirl reward serve` as a separate process under load, and while its sandbox workers are killed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import pytest

from rewards.client import RewardClient
from tests.rewards.service_fixtures import ServiceProcess, get, post

SECRET = "effirl-load-secret-51c2"
BATCH_SIZES = (1, 4, 1, 8, 2)


@pytest.fixture(scope="module")
def served():
    service = ServiceProcess("--workers", "2", env={"EFFIRL_LOAD_TEST_SECRET": SECRET})
    yield service
    assert service.stop() == 0  # SIGTERM is a clean shutdown


def case(n: int) -> tuple[dict, str]:
    """Submission ``n`` (unique code, so nothing is answered from the cache) and its right verdict."""
    ident = f"s{n}"
    tests = [{"input": [n, 1], "expected": n + 1}, {"input": [2, 3], "expected": 5}]
    if n % 11 == 0:
        code, verdict = f"def add(x, y):\n    return x + y +\n# {n}\n", "syntax_error"
    elif n % 7 == 0:
        code, verdict = f"def add(x, y):\n    return x + y + [{n}][1]\n", "runtime_error"
    elif n % 2 == 0:
        code, verdict = f"def add(x, y):\n    return x + y + {n % 3 + 1}\n", "failed"
        code = f"K = {n}\n" + code
    else:
        code, verdict = f"K = {n}\ndef add(x, y):\n    return x + y\n", "passed"
    return {"id": ident, "code": code, "entry_point": "add", "tests": tests}, verdict


def drive(
    url: str, numbers: list[int], clients: int, progress: threading.Condition | None = None
) -> tuple[Counter, dict[str, str], list[str], dict[str, str]]:
    """Send ``numbers``' submissions from ``clients`` threads in mixed batch sizes; collect answers.

    ``progress`` is notified (holding it, ``progress.answered`` is the count so far) after each batch.
    """
    answers: Counter = Counter()
    verdicts: dict[str, str] = {}
    errors: dict[str, str] = {}  # each verdict's error message, to say why a wrong one was wrong
    problems: list[str] = []
    lock = threading.Lock()
    shares = [numbers[i::clients] for i in range(clients)]

    def client_main(share: list[int]) -> None:
        with RewardClient(url, max_concurrency=1, backoff_s=0.05) as client:
            position, turn = 0, 0
            while position < len(share):
                size = BATCH_SIZES[turn % len(BATCH_SIZES)]
                batch = [case(n)[0] for n in share[position : position + size]]
                position, turn = position + size, turn + 1
                try:
                    results = client.evaluate(batch)
                except Exception as exc:  # recorded, and the test fails on it
                    with lock:
                        problems.append(repr(exc))
                    continue
                with lock:
                    if [r["id"] for r in results] != [s["id"] for s in batch]:
                        problems.append(f"ids out of order: {[r['id'] for r in results]}")
                    for result in results:
                        answers[result["id"]] += 1
                        verdicts[result["id"]] = result["status"]
                        errors[result["id"]] = (
                            f"{result['details']['error_kind']}: {result['details']['error']}"
                        )
                if progress is not None:
                    with progress:
                        progress.answered += len(results)  # type: ignore[attr-defined]
                        progress.notify_all()

    threads = [threading.Thread(target=client_main, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, verdicts, problems, errors


def test_two_thousand_submissions_from_sixteen_clients(served) -> None:
    numbers = list(range(2000))
    started = time.perf_counter()
    answers, verdicts, problems, errors = drive(served.url, numbers, clients=16)
    elapsed = time.perf_counter() - started
    assert problems == []
    assert len(answers) == 2000 and set(answers.values()) == {1}, "every submission answered exactly once"
    wrong = {
        f"s{n}": (verdicts[f"s{n}"], case(n)[1], errors[f"s{n}"])
        for n in numbers
        if verdicts[f"s{n}"] != case(n)[1]
    }
    assert wrong == {}
    print(f"\n2000 submissions in {elapsed:.1f} s ({2000 / elapsed:.0f}/s)")
    _, _, metrics = get(served.url + "/metrics")
    assert "effirl_queue_depth 0" in metrics


def test_killed_fork_servers_lose_nothing(served) -> None:
    _, _, before = get(served.url + "/metrics")
    restarts_before = _metric(before, "effirl_sandbox_restarts_total")
    numbers = list(range(10_000, 10_600))
    killed: list[int] = []

    progress = threading.Condition()
    progress.answered = 0  # type: ignore[attr-defined]

    def killer() -> None:
        # Kill a fork server once a quarter and again once half of the submissions are answered: mid
        # load whatever the machine's speed, where a timer might fire before the load or after it.
        for share in (len(numbers) // 4, len(numbers) // 2):
            with progress:
                progress.wait_for(lambda share=share: progress.answered >= share, timeout=300)
            pids = served.fork_servers()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    assassin = threading.Thread(target=killer)
    assassin.start()
    answers, verdicts, problems, errors = drive(served.url, numbers, clients=8, progress=progress)
    assassin.join()
    assert len(killed) == 2
    assert problems == []
    assert len(answers) == 600 and set(answers.values()) == {1}, "every submission answered exactly once"
    # The sandbox retries a job whose worker died once; anything else must say sandbox_error, not lie.
    wrong = {
        f"s{n}": (verdicts[f"s{n}"], case(n)[1], errors[f"s{n}"])
        for n in numbers
        if verdicts[f"s{n}"] not in (case(n)[1], "sandbox_error")
    }
    assert wrong == {}
    assert sum(v == "sandbox_error" for v in verdicts.values()) <= 4
    _, _, after = get(served.url + "/metrics")
    assert _metric(after, "effirl_sandbox_restarts_total") >= restarts_before + 2
    assert get(served.url + "/healthz")[2]["status"] == "ok"
    assert served.process.poll() is None


def test_hostile_program_does_not_kill_the_service_process(served) -> None:
    request = {
        "compile_timeout": 5,
        "run_timeout": 5,
        "code": "import os\nprint(os.environ)\nos.kill(os.getppid(), 9)\nos.kill(1, 9)\n",
        "stdin": "",
        "language": "python",
        "files": {},
        "fetch_files": [],
    }
    status, _, body = post(served.url + "/run_code", request)
    assert status == 200 and body["status"] in ("Success", "Failed")
    assert SECRET not in str(body)
    time.sleep(0.2)
    assert served.process.poll() is None
    assert get(served.url + "/healthz")[2]["status"] == "ok"


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")
