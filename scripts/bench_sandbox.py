#!/usr/bin/env python3
"""Benchmark the sandbox: throughput, per-execution overhead, and how steady its cost measurements are.

Everything is measured side by side in one run on this machine:
  * executions/s of a trivial correct function with 10 tests on a pool of all cores, against the same
    workload run the naive way (one fresh `python` subprocess per submission, same parallelism);
  * the median per-execution overhead: host-observed latency minus the candidate's own wall time, on
    an idle pool (the usual case when a trainer submits a batch and waits) and back to back;
  * cost stability: coefficient of variation of the CPU cost (min of 5 repeats) of one program over
    many measurements, the measured ratio of a program doing exactly twice the work, and how often
    the cheaper of two correct solutions with a >= 2x true gap is ranked cheaper.

Writes JSON (--json) and a row in docs/benchmarks.md (--markdown).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from benchmark_table import add_table_flag  # noqa: E402

from sandbox import FunctionJob, FunctionTest, Sandbox, SandboxConfig, Status  # noqa: E402

TRIVIAL = "def add(a, b):\n    return a + b\n"
TESTS = [FunctionTest((i, i + 1), 2 * i + 1) for i in range(10)]
WORK = "def work(n):\n    s = 0\n    for i in range(n):\n        s += i * i % 7\n    return s\n"
FAST_DUP = "def has_dup(xs):\n    return len(set(xs)) != len(xs)\n"
SLOW_DUP = (
    "def has_dup(xs):\n    seen = []\n    for x in xs:\n        if x in seen:\n            return True\n"
    "        seen.append(x)\n    return False\n"
)
BASELINE_RUNNER = """
import json, sys
job = json.load(sys.stdin)
namespace = {}
exec(job["code"], namespace)
fn = namespace[job["entry_point"]]
print(json.dumps([fn(*args) == expected for args, expected in job["tests"]]))
"""


def throughput(box: Sandbox, count: int) -> float:
    jobs = [FunctionJob(TRIVIAL, "add", TESTS) for _ in range(count)]
    box.run_many(jobs[: min(50, count)])  # warm up
    start = time.perf_counter()
    results = box.run_many(jobs)
    elapsed = time.perf_counter() - start
    assert all(r.status is Status.PASSED for r in results)
    return count / elapsed


def baseline_throughput(count: int, parallel: int) -> float:
    payload = json.dumps(
        {"code": TRIVIAL, "entry_point": "add", "tests": [[list(t.args), t.expected] for t in TESTS]}
    )

    def one(_: int) -> bool:
        done = subprocess.run(
            [sys.executable, "-c", BASELINE_RUNNER], input=payload, capture_output=True, text=True, timeout=30
        )
        return done.returncode == 0 and all(json.loads(done.stdout))

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        ok = list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - start
    assert all(ok)
    return count / elapsed


def overheads(box: Sandbox, count: int, idle_gap_s: float) -> float:
    values = []
    for _ in range(count):
        start = time.perf_counter_ns()
        result = box.run_function_tests(TRIVIAL, "add", TESTS)
        latency = time.perf_counter_ns() - start
        values.append((latency - result.cost.wall_ns) / 1e6)
        if idle_gap_s:
            time.sleep(idle_gap_s)
    return statistics.median(values)


def cost_stability(box: Sandbox, measurements: int, n: int) -> dict[str, float]:
    def min_cost(code: str, entry: str, args: tuple, expected: object) -> int:
        result = box.run_function_tests(code, entry, [FunctionTest(args, expected)], repeats=5)
        assert result.status is Status.PASSED, result.error
        return result.cost.cpu_ns

    expected = sum(i * i % 7 for i in range(n))
    expected2 = sum(i * i % 7 for i in range(2 * n))
    singles, ratios = [], []
    for _ in range(measurements):
        one = min_cost(WORK, "work", (n,), expected)
        two = min_cost(WORK, "work", (2 * n,), expected2)
        singles.append(one)
        ratios.append(two / one)
    xs = list(range(3000))
    fast_wins = 0
    for _ in range(measurements):
        fast = min_cost(FAST_DUP, "has_dup", (xs,), False)
        slow = min_cost(SLOW_DUP, "has_dup", (xs,), False)
        fast_wins += fast < slow
    return {
        "cost_cv": statistics.pstdev(singles) / statistics.mean(singles),
        "cost_ms_mean": statistics.mean(singles) / 1e6,
        "double_work_ratio_min": min(ratios),
        "double_work_ratio_max": max(ratios),
        "double_work_ratio_median": statistics.median(ratios),
        "ranking_correct_fraction": fast_wins / measurements,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    add_table_flag(parser)
    parser.add_argument("--executions", type=int, default=2000, help="jobs for the throughput measurement")
    parser.add_argument(
        "--baseline-executions", type=int, default=200, help="jobs for the subprocess baseline"
    )
    parser.add_argument("--measurements", type=int, default=20, help="cost-stability measurements")
    parser.add_argument("--work", type=int, default=200_000, help="loop size of the cost-stability program")
    parser.add_argument("--isolation", default="namespaces", help="sandbox isolation level")
    parser.add_argument("--namespace-scope", default="worker", choices=("worker", "run"))
    args = parser.parse_args()

    workers = os.cpu_count() or 1
    config = SandboxConfig(workers=workers, isolation=args.isolation, namespace_scope=args.namespace_scope)
    with Sandbox(config) as box:
        executions_per_s = throughput(box, args.executions)
        idle_overhead = overheads(box, 200, idle_gap_s=0.01)
        busy_overhead = overheads(box, 200, idle_gap_s=0.0)
    baseline = baseline_throughput(args.baseline_executions, workers)
    with Sandbox(
        SandboxConfig(workers=1, isolation=args.isolation, namespace_scope=args.namespace_scope)
    ) as box:
        stability = cost_stability(box, args.measurements, args.work)
    results = {
        "executions_per_s": executions_per_s,
        "overhead_ms_p50": idle_overhead,
        "overhead_back_to_back_ms_p50": busy_overhead,
        "baseline_executions_per_s": baseline,
        "speedup_vs_baseline": executions_per_s / baseline,
        **stability,
        "workers": workers,
        "isolation": args.isolation,
        "namespace_scope": args.namespace_scope,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "date": datetime.date.today().isoformat(),
    }
    rows = [
        ("executions/s (trivial fn, 10 tests)", f"{executions_per_s:.0f}", ">= 300"),
        ("subprocess-per-submission baseline /s", f"{baseline:.0f}", ""),
        ("speedup vs baseline", f"{results['speedup_vs_baseline']:.1f}x", ""),
        ("overhead p50, idle pool (ms)", f"{idle_overhead:.2f}", "<= 5"),
        ("overhead p50, back to back (ms)", f"{busy_overhead:.2f}", ""),
        ("CPU cost CV (min of 5)", f"{stability['cost_cv'] * 100:.2f}%", "<= 2%"),
        (
            "2x work measured as",
            f"{stability['double_work_ratio_min']:.2f}-{stability['double_work_ratio_max']:.2f}x",
            "1.7-2.3x",
        ),
        (
            "cheaper of 2 solutions ranked cheaper",
            f"{stability['ranking_correct_fraction'] * 100:.0f}%",
            "100%",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'metric'.ljust(width)}  {'value':>12}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>12}  {target}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        command = "python scripts/bench_sandbox.py --json bench_sandbox.json"
        if args.isolation != "namespaces" or args.namespace_scope != "worker":
            command += f" --isolation {args.isolation} --namespace-scope {args.namespace_scope}"
        summary = (
            f"{executions_per_s:.0f} exec/s vs {baseline:.0f} subprocess "
            f"({results['speedup_vs_baseline']:.1f}x); overhead p50 {idle_overhead:.2f} ms idle / "
            f"{busy_overhead:.2f} ms back to back; cost CV {stability['cost_cv'] * 100:.2f}%; "
            f"2x work = {stability['double_work_ratio_median']:.2f}x "
            f"({stability['double_work_ratio_min']:.2f}-{stability['double_work_ratio_max']:.2f}); "
            f"ranking {stability['ranking_correct_fraction'] * 100:.0f}%"
        )
        scope = f"{args.isolation}/{args.namespace_scope}"
        line = f"| {results['date']} | sandbox ({scope}) | {results['machine']} | {summary} | `{command}` |\n"
        append_row(args.markdown, line)


def append_row(path: Path, line: str) -> None:
    header = "| date | benchmark | machine | result | command |\n|---|---|---|---|---|\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + header
    if header not in text:
        text = text.rstrip("\n") + "\n\n" + header
    path.write_text(text + line)


if __name__ == "__main__":
    main()
