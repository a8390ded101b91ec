#!/usr/bin/env python3
"""Benchmark the reward service on loopback with the 164 HumanEval+ canonical solutions.

Every submission is code the service has never seen (each carries a statement of its own, so no
cache can answer it), and everything is measured side by side in one run on this machine, in rounds
that alternate between the services compared:
  * submissions/s and request latency p50/p99 at client concurrencies 1, 4 and 16, sending one
    submission per request and batches of --batch-size to `/v1/evaluate`, against
    `python -m rewards.service` started as a separate process with its default cache;
  * `/run_code` (SandboxFusion's API) with each solution as a program that calls it on its tests;
  * with --baseline-tree PATH, the same for the service of another checkout (e.g. the commit before a
    change: `git worktree add ../effirl-old 9c04269`), with the ratio of each figure;
  * with --sandboxfusion URL, `/run_code` of a running SandboxFusion server, same programs, same rounds;
  * the same submissions sent again (cache hits: how duplicate GRPO samples are answered);
  * `/v1/score` with every base and plus test (the service loads HumanEval+ itself, as in training:
    plus inputs run to 100+ MB per task, too much to send), batched, at the highest concurrency;
  * the sandbox alone, in-process (the ceiling the service can reach on these jobs);
  * the naive way: one `subprocess.run([python, ...])` per program, as many in parallel as the
    service has sandbox workers;
  * where the time goes: CPU ms per submission of the service process, of its sandbox workers
    (with everything they reaped) and of this load generator.

Prints a table, writes JSON (--json) and, with --markdown, appends rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import datetime
import itertools
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


_NONCES = itertools.count(1)


def never_seen(code: str) -> str:
    """``code`` plus a statement no other submission has: a different program to any cache key
    (comments and layout would not be)."""
    return f"{code}\n_bench_nonce = {next(_NONCES)}\n"


def fresh(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``items`` (submissions or programs) whose code no service has seen before."""
    return [{**item, "code": never_seen(item["code"])} for item in items]


def programs_of(tasks: list[Task]) -> list[dict[str, Any]]:
    """One `/run_code` program per task: its canonical solution, then a call on each base test's
    arguments, printing the results (tasks whose arguments have no Python literal are left out)."""
    out = []
    for task in tasks:
        literal = repr([list(t.args) for t in base_tests(task)])
        try:
            ast.literal_eval(literal)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        driver = f"\n\nfor _args in {literal}:\n    print(repr({task.entry_point}(*_args)))\n"
        out.append({"id": task.id, "code": task.reference + driver})
    return out


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

    def __init__(self, workers: int, cache_size: int | None, data_dir: Path, tree: Path = REPO) -> None:
        command = [sys.executable, "-m", "rewards.service", "--port", "0", "--workers", str(workers)]
        command += ["--timeout-s", "30"]
        if cache_size is not None:
            command += ["--cache-size", str(cache_size)]
        env = {**os.environ, "PYTHONPATH": str(tree), "EFFIRL_DATA_DIR": str(data_dir)}
        self.process = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)
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


def run_code(client: RewardClient, batch: list[dict]) -> list[str]:
    """One program per request; SandboxFusion's answer status (`Success` when it ran to the end)."""
    return [client.run_code(item["code"], run_timeout=30)["status"] for item in batch]


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


ROUTES = {"evaluate": evaluate, "run_code": run_code}


class Targets:
    """The services compared, driven in rounds that alternate between them; every run is kept."""

    def __init__(self, services: dict[str, ServedProcess], external: dict[str, str]) -> None:
        self.services, self.external = services, external
        self.runs: list[dict[str, Any]] = []

    def names(self, route: str) -> list[str]:
        # An external service (SandboxFusion) speaks /run_code only.
        return [*self.services, *(self.external if route == "run_code" else ())]

    def measure(self, name: str, route: str, items: list[dict], batch: int, concurrency: int) -> None:
        served = self.services.get(name)
        url = served.url if served is not None else self.external[name]
        before = served.cpu_seconds() if served is not None else None
        run = drive(url, fresh(items), concurrency, batch, 1, ROUTES[route])
        run.update(target=name, route=route, batch=batch, concurrency=concurrency)
        if served is not None and before is not None:
            after = served.cpu_seconds()
            run["service_cpu_ms_per_sub"] = 1000 * (after[0] - before[0]) / run["submissions"]
            run["workers_cpu_ms_per_sub"] = 1000 * (after[1] - before[1]) / run["submissions"]
        run["client_cpu_ms_per_sub"] = 1000 * run.pop("client_cpu_s") / run["submissions"]
        self.runs.append(run)

    def summary(self) -> list[dict[str, Any]]:
        """Per (route, batch, concurrency, target): medians over rounds and the range of rates."""
        groups: dict[tuple, list[dict]] = {}
        for run in self.runs:
            groups.setdefault((run["route"], run["batch"], run["concurrency"], run["target"]), []).append(run)
        rows = []
        for (route, batch, concurrency, target), runs in groups.items():
            rates = [r["submissions_per_s"] for r in runs]
            row = {"route": route, "batch": batch, "concurrency": concurrency, "target": target}
            row.update(submissions_per_s=statistics.median(rates), min_per_s=min(rates), max_per_s=max(rates))
            for key in (
                "latency_ms_p50",
                "latency_ms_p99",
                "service_cpu_ms_per_sub",
                "workers_cpu_ms_per_sub",
            ):
                values = [r[key] for r in runs if key in r]
                row[key] = statistics.median(values) if values else None
            row["client_cpu_ms_per_sub"] = statistics.median(r["client_cpu_ms_per_sub"] for r in runs)
            row["statuses"] = {
                k: sum(r["statuses"].get(k, 0) for r in runs) for r in runs for k in r["statuses"]
            }
            row["rounds"] = len(runs)
            rows.append(row)
        return rows


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
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, each one pass over the 164 submissions"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox workers")
    parser.add_argument(
        "--baseline-tree", type=Path, help="another effirl checkout whose service is measured side by side"
    )
    parser.add_argument(
        "--sandboxfusion",
        metavar="URL",
        help="a running SandboxFusion server (e.g. http://127.0.0.1:8091) whose /run_code is measured too",
    )
    parser.add_argument("--no-extras", action="store_true", help="skip /v1/score, cache hits and baselines")
    args = parser.parse_args()

    dataset = args.data / "humanevalplus" / "HumanEvalPlus.jsonl.gz"
    if not dataset.exists():
        sys.exit(f"HumanEval+ not found at {dataset}; pass --data or set EFFIRL_DATA_DIR")
    tasks = load_humanevalplus(dataset)
    subs = submissions_of(tasks)
    programs = programs_of(tasks)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    top = max(concurrencies)
    services = {"this checkout": ServedProcess(args.workers, None, args.data)}
    load_before = os.getloadavg()[0]
    try:
        if args.baseline_tree is not None:
            tree = args.baseline_tree.resolve()
            services["baseline"] = ServedProcess(args.workers, None, args.data, tree)
        targets = Targets(services, {"SandboxFusion": args.sandboxfusion} if args.sandboxfusion else {})
        for name in targets.names("run_code"):  # warm up: workers started, code paths loaded
            targets.measure(name, "run_code", programs[:32], 1, 4)
            if name in services:
                targets.measure(name, "evaluate", subs, args.batch_size, 4)
        targets.runs.clear()
        settings = [("evaluate", 1, c) for c in concurrencies]
        settings += [("evaluate", args.batch_size, c) for c in concurrencies] + [("run_code", 1, top)]
        for number in range(args.rounds):
            for route, batch, concurrency in settings:
                names = targets.names(route)
                for name in names if number % 2 == 0 else names[::-1]:
                    items = subs if route == "evaluate" else programs
                    targets.measure(name, route, items, batch, concurrency)
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        extras = {} if args.no_extras else measure_extras(services["this checkout"], tasks, subs, args)
    finally:
        for served in services.values():
            served.stop()
    if not args.no_extras:
        extras["sandbox_alone_per_s"] = sandbox_alone(tasks, args.workers, args.rounds)
        extras["subprocess_baseline_per_s"] = subprocess_baseline(subs, args.workers)

    results = {
        "runs": targets.runs,
        "summary": targets.summary(),
        **extras,
        "tasks": len(tasks),
        "programs": len(programs),
        "mean_base_tests": statistics.mean(len(s["tests"]) for s in subs),
        "mean_all_tests": statistics.mean(len(task.function_tests) for task in tasks),
        "workers": args.workers,
        "rounds": args.rounds,
        "baseline_tree": None if args.baseline_tree is None else str(args.baseline_tree),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "date": datetime.date.today().isoformat(),
    }
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        write_markdown(args.markdown, results, args)


def measure_extras(
    served: ServedProcess, tasks: list[Task], subs: list[dict], args: argparse.Namespace
) -> dict[str, Any]:
    """This checkout only: /v1/score with every test, and the same submissions again (cache hits)."""
    items = [{"task_id": task.id, "completion": task.reference} for task in tasks]
    drive(served.url, items, 4, args.batch_size, 1, score)  # loads the dataset, measures references
    items = [{**item, "completion": never_seen(item["completion"])} for item in items]
    before = served.cpu_seconds()
    scored = drive(
        served.url, items, max(int(c) for c in args.concurrency.split(",")), args.batch_size, 1, score
    )
    after = served.cpu_seconds()
    scored["service_cpu_ms_per_sub"] = 1000 * (after[0] - before[0]) / scored["submissions"]
    scored["workers_cpu_ms_per_sub"] = 1000 * (after[1] - before[1]) / scored["submissions"]
    seen = fresh(subs)
    drive(served.url, seen, 4, args.batch_size, 1)  # fill the cache
    cached = drive(served.url, seen, 16, args.batch_size, args.rounds)
    return {"score": scored, "cache_hits": cached}


def print_table(results: dict[str, Any]) -> None:
    print(
        f"HumanEval+ canonical solutions, every submission code never seen before: /v1/evaluate with "
        f"base tests ({results['mean_base_tests']:.1f} per submission), /run_code as {results['programs']} "
        f"programs; {results['workers']} sandbox workers; medians of {results['rounds']} alternating rounds; "
        f"load average {results['load_average_before_after'][0]:.1f} before, "
        f"{results['load_average_before_after'][1]:.1f} after"
    )
    header = f"{'route':<9} {'batch':>5} {'conc':>4} {'target':<14} {'subs/s (range)':>16} {'p50 ms':>7}"
    header += f" {'svc ms/sub':>10} {'sbx ms/sub':>10} {'cli ms/sub':>10}  ratio"
    print(header)
    rows = results["summary"]
    reference = {
        (r["route"], r["batch"], r["concurrency"]): r for r in rows if r["target"] == "this checkout"
    }
    for row in sorted(
        rows, key=lambda r: (r["route"], r["batch"], r["concurrency"], r["target"] != "this checkout")
    ):
        ours = reference.get((row["route"], row["batch"], row["concurrency"]))
        ratio = (
            ""
            if ours is None or row is ours
            else f"this checkout {ours['submissions_per_s'] / row['submissions_per_s']:.2f}x"
        )
        rate = f"{row['submissions_per_s']:.0f} ({row['min_per_s']:.0f}-{row['max_per_s']:.0f})"
        cpu = [
            row.get(k) for k in ("service_cpu_ms_per_sub", "workers_cpu_ms_per_sub", "client_cpu_ms_per_sub")
        ]
        cells = " ".join(f"{'' if v is None else f'{v:.2f}':>10}" for v in cpu)
        print(
            f"{row['route']:<9} {row['batch']:>5} {row['concurrency']:>4} {row['target']:<14} {rate:>16} "
            f"{row['latency_ms_p50']:>7.1f} {cells}  {ratio}"
        )
    if "score" in results:
        print(f"/v1/score, every test, x16: {results['score']['submissions_per_s']:.0f} submissions/s")
        print(f"the same submissions again (cache hits): {results['cache_hits']['submissions_per_s']:.0f}/s")
        print(f"sandbox alone (in-process, no HTTP):    {results['sandbox_alone_per_s']:.0f} submissions/s")
        naive = results["subprocess_baseline_per_s"]
        print(f"subprocess.run per program:             {naive:.0f} submissions/s")


def write_markdown(path: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    command = "python scripts/bench_reward_service.py --json bench_reward_service.json"
    if args.sandboxfusion:
        command += " --sandboxfusion URL"
    if args.baseline_tree:
        command += " --baseline-tree OLD_CHECKOUT"
    cells = []
    for row in sorted(results["summary"], key=lambda r: (r["route"], r["batch"], r["concurrency"])):
        name = f"{row['route']}{'' if row['batch'] == 1 else ' x' + str(row['batch'])} c{row['concurrency']}"
        cells.append(
            f"{name} {row['target']} {row['submissions_per_s']:.0f}/s "
            f"({row['min_per_s']:.0f}-{row['max_per_s']:.0f}, p50 {row['latency_ms_p50']:.0f} ms)"
        )
    summary = "never-seen code; " + "; ".join(cells)
    if "score" in results:
        summary += (
            f"; /v1/score all tests x{args.batch_size} {results['score']['submissions_per_s']:.0f}/s"
            f"; cache hits {results['cache_hits']['submissions_per_s']:.0f}/s"
            f"; sandbox alone {results['sandbox_alone_per_s']:.0f}/s"
            f"; subprocess.run baseline {results['subprocess_baseline_per_s']:.0f}/s"
        )
    load = results["load_average_before_after"]
    machine = f"{results['machine']}, load average {load[0]:.1f}-{load[1]:.1f}"
    name = f"reward service (HumanEval+ canonical, {results['workers']} sandbox workers)"
    line = f"| {results['date']} | {name} | {machine} | {summary} | `{command}` |\n"
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
