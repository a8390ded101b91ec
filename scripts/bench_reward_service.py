#!/usr/bin/env python3
"""Benchmark the reward service on loopback with the 164 HumanEval+ canonical solutions.

Everything is measured side by side in one run on this machine:
  * submissions/s and request latency p50/p99 at client concurrencies 1, 4 and 16, sending one
    submission per request and batches of --batch-size, against `python -m rewards.service` started
    as a separate process with its cache off (every submission really runs);
  * the same submissions sent again with the cache on (how duplicate GRPO samples are answered);
  * `/v1/score` with every base and plus test (the service loads HumanEval+ itself, as in training:
    plus inputs run to 100+ MB per task, too much to send), batched, at the highest concurrency;
  * the sandbox alone, in-process (the ceiling the service can reach on these jobs);
  * the naive way: one `subprocess.run([python, ...])` per program, as many in parallel as the
    service has sandbox workers;
  * where the time goes: CPU seconds per submission of the service process, of its sandbox workers
    and of this load generator.

Prints a table, writes JSON (--json) and, with --markdown, appends rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_table import add_table_flag  # noqa: E402

from rewards.client import RewardClient  # noqa: E402
from rewards.datasets import load_humanevalplus  # noqa: E402
from rewards.tasks import Task  # noqa: E402
from sandbox import FunctionJob, FunctionTest, Sandbox, SandboxConfig, codec  # noqa: E402

BASELINE_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from sandbox import codec
from sandbox.compare import outputs_match
job = json.load(sys.stdin)
namespace = {}
exec(job["code"], namespace)
function = namespace[job["entry_point"]]
tests = codec.from_jsonable(job["tests"])
print(json.dumps(all(outputs_match(function(*args), expected, job["atol"]) for args, expected in tests)))
"""


def default_data_dir() -> Path:
    return Path(os.environ.get("EFFIRL_DATA_DIR") or REPO.parent / "shared" / "data")


def base_tests(task: Task) -> tuple[FunctionTest, ...]:
    return tuple(task.function_tests[: task.n_base_tests])


def submissions_of(tasks: list[Task]) -> list[dict[str, Any]]:
    """One /v1/evaluate submission per task: its canonical solution against its base tests."""
    out = []
    for task in tasks:
        chosen = base_tests(task)
        item = {
            "id": task.id,
            "code": task.reference,
            "entry_point": task.entry_point,
            "tests": [
                {"input": codec.to_jsonable(list(t.args)), "expected": codec.to_jsonable(t.expected)}
                for t in chosen
            ],
        }
        if task.atol:
            item["atol"] = task.atol
        out.append(item)
    return out


class ServedProcess:
    """`python -m rewards.service` on a free loopback port."""

    def __init__(self, workers: int, cache_size: int, data_dir: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "rewards.service",
            "--port",
            "0",
            "--workers",
            str(workers),
            "--cache-size",
            str(cache_size),
            "--timeout-s",
            "30",
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO), "EFFIRL_DATA_DIR": str(data_dir)}
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if select.select([self.process.stdout], [], [], 1.0)[0]:
                line = self.process.stdout.readline()
                if "listening on" in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
                    return
            if self.process.poll() is not None:
                raise RuntimeError("the reward service exited before listening")
        raise RuntimeError("the reward service did not start within 120 s")

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds of the service process, and of its sandbox workers with their reaped children."""
        tick = os.sysconf("SC_CLK_TCK")
        own = _stat_fields(self.process.pid)
        service = (own[13] + own[14]) / tick
        workers = 0.0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = _stat_fields(int(entry.name))
                except OSError:
                    continue
                if fields[3] == self.process.pid:
                    workers += sum(fields[13:17]) / tick
        return service, workers

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _stat_fields(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text.rsplit(")", 1)[1].split()
    return [0, 0, 0, *[int(x) if x.lstrip("-").isdigit() else 0 for x in rest[1:]]]


def evaluate(client: RewardClient, batch: list[dict]) -> list[str]:
    return [result["status"] for result in client.evaluate(batch)]


def score(client: RewardClient, batch: list[dict]) -> list[str]:
    rewards = client.score("humanevalplus", batch, extract=False)
    return [reward.evidence.status for reward in rewards]


def drive(
    url: str,
    items: list[dict],
    concurrency: int,
    batch: int,
    rounds: int,
    send: Callable[[RewardClient, list[dict]], list[str]] = evaluate,
) -> dict[str, Any]:
    """Send ``rounds`` passes over ``items`` from ``concurrency`` client threads; time every request."""
    requests = [items[i : i + batch] for _ in range(rounds) for i in range(0, len(items), batch)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    cursor = iter(range(len(requests)))

    def client_main() -> None:
        with RewardClient(url, max_concurrency=1) as client:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                started = time.perf_counter()
                try:
                    answered = send(client, requests[index])
                except Exception as exc:
                    with lock:
                        errors.append(exc)
                    return
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    for status in answered:
                        statuses[status] = statuses.get(status, 0) + 1

    cpu_before = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=client_main) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    count = sum(len(r) for r in requests)
    latencies.sort()
    return {
        "submissions": count,
        "requests": len(requests),
        "seconds": elapsed,
        "submissions_per_s": count / elapsed,
        "latency_ms_p50": 1000 * statistics.median(latencies),
        "latency_ms_p99": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "statuses": statuses,
        "client_cpu_s": time.process_time() - cpu_before,
    }


def sandbox_alone(tasks: list[Task], workers: int, rounds: int) -> float:
    """Executions/s of the same jobs submitted straight to an in-process Sandbox."""
    jobs = [
        FunctionJob(task.reference, task.entry_point, base_tests(task), task.atol or None, 30.0)
        for task in tasks
    ]
    with Sandbox(SandboxConfig(workers=workers, timeout_s=30.0)) as box:
        box.run_many(jobs)  # warm up
        started = time.perf_counter()
        for _ in range(rounds):
            box.run_many(jobs)
        return rounds * len(jobs) / (time.perf_counter() - started)


def subprocess_baseline(subs: list[dict], parallel: int) -> float:
    """Submissions/s running each program in a fresh `python` with `subprocess.run`."""

    def one(sub: dict) -> bool:
        payload = {
            "code": sub["code"],
            "entry_point": sub["entry_point"],
            "tests": [
                [codec.from_jsonable(t["input"]), codec.from_jsonable(t["expected"])] for t in sub["tests"]
            ],
            "atol": sub.get("atol"),
        }
        payload["tests"] = codec.to_jsonable(payload["tests"])
        done = subprocess.run(
            [sys.executable, "-c", BASELINE_RUNNER, str(REPO)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode == 0 and json.loads(done.stdout)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        ok = list(pool.map(one, subs))
    elapsed = time.perf_counter() - started
    failures = len(ok) - sum(ok)
    if failures:
        print(f"note: {failures} canonical solutions failed in the subprocess baseline", file=sys.stderr)
    return len(subs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
        help="folder with humanevalplus/HumanEvalPlus.jsonl.gz (default: $EFFIRL_DATA_DIR or ../shared/data)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    add_table_flag(parser)
    parser.add_argument("--concurrency", default="1,4,16", help="client concurrencies (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="submissions per batched request")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the 164 submissions per setting")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox workers")
    args = parser.parse_args()

    dataset = args.data / "humanevalplus" / "HumanEvalPlus.jsonl.gz"
    if not dataset.exists():
        sys.exit(f"HumanEval+ not found at {dataset}; pass --data or set EFFIRL_DATA_DIR")
    tasks = load_humanevalplus(dataset)
    subs = submissions_of(tasks)
    items = [{"task_id": task.id, "completion": task.reference} for task in tasks]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    runs: list[dict[str, Any]] = []

    served = ServedProcess(args.workers, cache_size=0, data_dir=args.data)
    try:
        warm = drive(served.url, subs, 4, args.batch_size, 1)
        if warm["statuses"].get("passed", 0) != len(subs):
            print(f"note: canonical solutions' verdicts: {warm['statuses']}", file=sys.stderr)
        for mode, batch in (("single", 1), ("batched", args.batch_size)):
            for concurrency in concurrencies:
                before = served.cpu_seconds()
                run = drive(served.url, subs, concurrency, batch, args.rounds)
                after = served.cpu_seconds()
                run.update(mode=mode, batch=batch, concurrency=concurrency, cache=False)
                run["service_cpu_ms_per_sub"] = 1000 * (after[0] - before[0]) / run["submissions"]
                run["workers_cpu_ms_per_sub"] = 1000 * (after[1] - before[1]) / run["submissions"]
                run["client_cpu_ms_per_sub"] = 1000 * run.pop("client_cpu_s") / run["submissions"]
                runs.append(run)
        drive(served.url, items, 4, args.batch_size, 1, score)  # loads the dataset, measures references
        top = max(concurrencies)
        before = served.cpu_seconds()
        run = drive(served.url, items, top, args.batch_size, 1, score)
        after = served.cpu_seconds()
        run.update(mode="score", batch=args.batch_size, concurrency=top, cache=False)
        run["service_cpu_ms_per_sub"] = 1000 * (after[0] - before[0]) / run["submissions"]
        run["workers_cpu_ms_per_sub"] = 1000 * (after[1] - before[1]) / run["submissions"]
        run["client_cpu_ms_per_sub"] = 1000 * run.pop("client_cpu_s") / run["submissions"]
        runs.append(run)
    finally:
        served.stop()
    served = ServedProcess(args.workers, cache_size=16384, data_dir=args.data)
    try:
        drive(served.url, subs, 4, args.batch_size, 1)  # fill the cache
        cached = drive(served.url, subs, max(concurrencies), args.batch_size, args.rounds)
        cached.update(mode="batched", batch=args.batch_size, concurrency=max(concurrencies), cache=True)
        cached["client_cpu_ms_per_sub"] = 1000 * cached.pop("client_cpu_s") / cached["submissions"]
        runs.append(cached)
    finally:
        served.stop()
    ceiling = sandbox_alone(tasks, args.workers, args.rounds)
    baseline = subprocess_baseline(subs, args.workers)

    results = {
        "runs": runs,
        "sandbox_alone_per_s": ceiling,
        "subprocess_baseline_per_s": baseline,
        "tasks": len(tasks),
        "mean_base_tests": statistics.mean(len(s["tests"]) for s in subs),
        "mean_all_tests": statistics.mean(len(task.function_tests) for task in tasks),
        "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "date": datetime.date.today().isoformat(),
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        write_markdown(args.markdown, results, args)


def print_table(results: dict[str, Any]) -> None:
    print(
        f"HumanEval+ canonical solutions: evaluate with base tests ({results['mean_base_tests']:.1f} per "
        f"submission), score with all tests ({results['mean_all_tests']:.0f}); "
        f"{results['workers']} sandbox workers"
    )
    header = f"{'mode':<8} {'batch':>5} {'conc':>4} {'cache':>5} {'subs/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    header += f" {'svc ms/sub':>10} {'sbx ms/sub':>10} {'cli ms/sub':>10}"
    print(header)
    for run in results["runs"]:
        print(
            f"{run['mode']:<8} {run['batch']:>5} {run['concurrency']:>4} "
            f"{'on' if run['cache'] else 'off':>5} "
            f"{run['submissions_per_s']:>8.0f} {run['latency_ms_p50']:>8.1f} {run['latency_ms_p99']:>8.1f} "
            f"{run.get('service_cpu_ms_per_sub', float('nan')):>10.2f} "
            f"{run.get('workers_cpu_ms_per_sub', float('nan')):>10.2f} {run['client_cpu_ms_per_sub']:>10.2f}"
        )
    print(f"sandbox alone (in-process, no HTTP): {results['sandbox_alone_per_s']:.0f} submissions/s")
    print(f"subprocess.run per program:          {results['subprocess_baseline_per_s']:.0f} submissions/s")


def write_markdown(path: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    command = "python scripts/bench_reward_service.py --json bench_reward_service.json"
    by_key = {(r["mode"], r["concurrency"], r["cache"]): r for r in results["runs"]}
    cells = []
    for mode in ("single", "batched"):
        parts = [
            f"c{c} {by_key[(mode, c, False)]['submissions_per_s']:.0f}/s "
            f"(p50 {by_key[(mode, c, False)]['latency_ms_p50']:.0f} / p99 "
            f"{by_key[(mode, c, False)]['latency_ms_p99']:.0f} ms)"
            for c in sorted(
                {r["concurrency"] for r in results["runs"] if r["mode"] == mode and not r["cache"]}
            )
        ]
        cells.append(f"{mode}{'' if mode == 'single' else ' x' + str(args.batch_size)}: " + ", ".join(parts))
    cached = next(r for r in results["runs"] if r["cache"])
    scored = next(r for r in results["runs"] if r["mode"] == "score")
    summary = (
        "; ".join(cells)
        + f"; /v1/score all tests x{args.batch_size} c{scored['concurrency']} "
        + f"{scored['submissions_per_s']:.0f}/s"
        + f"; cache hits {cached['submissions_per_s']:.0f}/s"
        + f"; sandbox alone {results['sandbox_alone_per_s']:.0f}/s"
        + f"; subprocess.run baseline {results['subprocess_baseline_per_s']:.0f}/s"
    )
    name = f"reward service (HumanEval+ canonical, {results['workers']} sandbox workers)"
    line = f"| {results['date']} | {name} | {results['machine']} | {summary} | `{command}` |\n"
    append_or_replace_row(path, name, results["date"], line)


def append_or_replace_row(path: Path, name: str, date: str, line: str) -> None:
    """Append ``line``; a row of the same benchmark from the same day is replaced instead."""
    header = "| date | benchmark | machine | result | command |\n|---|---|---|---|---|\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + header
    if header not in text:
        text = text.rstrip("\n") + "\n\n" + header
    lines = [row for row in text.splitlines(keepends=True) if not row.startswith(f"| {date} | {name} |")]
    path.write_text("".join(lines) + line)


if __name__ == "__main__":
    main()
