"""Check that every synthetic family's stress tests separate its fast and slow solutions.

For each family, split and variant, the first generated task's fast reference and its slow
(naive) reference run on the task's stress inputs; the CPU time of each is the minimum over
``--repeats`` runs. By default they run in the sandbox and the sandbox's trusted cost is used;
``--in-process`` times plain calls here with ``time.process_time_ns`` instead. Prints a table and
exits with status 1 if any slow/fast ratio is below ``--min-ratio`` (default 5) or any fast
reference takes more than ``--max-fast-ms`` (default 50).

    python scripts/check_synthetic_costs.py [--in-process] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.synthetic import FAMILIES, synthetic_tasks
from rewards.synthetic.family import compile_function
from rewards.tasks import Task


@dataclass
class Row:
    family: str
    split: str
    variant: str
    fast_ms: float
    slow_ms: float
    ratio: float
    ok: bool


def representative_tasks(seed: int) -> list[Task]:
    """The first task of every (family, split, variant)."""
    chosen: dict[tuple[str, str, str], Task] = {}
    for split in ("train", "heldout"):
        for task in synthetic_tasks(split, seed=seed):
            key = (task.metadata["family"], split, task.metadata["variant"])
            chosen.setdefault(key, task)
    return [chosen[k] for k in sorted(chosen)]


def stress_tests(task: Task) -> list[Any]:
    return list(task.perf_tests)


def in_process_ns(code: str, entry_point: str, tests: list[Any], repeats: int) -> int:
    function = compile_function(code, entry_point)
    best = None
    for _ in range(repeats):
        inputs = [copy.deepcopy(t.args) for t in tests]
        start = time.process_time_ns()
        outputs = [function(*args) for args in inputs]
        elapsed = time.process_time_ns() - start
        if any(out != t.expected for out, t in zip(outputs, tests)):
            raise AssertionError(f"{entry_point}: wrong output on a stress test")
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return best


def sandbox_ns(box: Any, code: str, entry_point: str, tests: list[Any], repeats: int) -> int:
    result = box.run_function_tests(code, entry_point, tests, repeats=repeats)
    if not result.ok or result.cost is None:
        raise AssertionError(f"{entry_point}: {result.status.value} in the sandbox: {result.error}")
    return result.cost.cpu_ns


def measure(args: argparse.Namespace) -> list[Row]:
    tasks = representative_tasks(args.seed)
    box = None
    if not args.in_process:
        from sandbox import Sandbox, SandboxConfig

        box = Sandbox(SandboxConfig(workers=1, timeout_s=60))
    rows = []
    try:
        for task in tasks:
            tests = stress_tests(task)
            costs = []
            for code in (task.reference, task.metadata["slow_reference"]):
                assert code is not None and task.entry_point is not None
                if box is None:
                    costs.append(in_process_ns(code, task.entry_point, tests, args.repeats))
                else:
                    costs.append(sandbox_ns(box, code, task.entry_point, tests, args.repeats))
            fast_ms, slow_ms = costs[0] / 1e6, costs[1] / 1e6
            ratio = slow_ms / max(fast_ms, 1e-6)
            ok = ratio >= args.min_ratio and fast_ms <= args.max_fast_ms
            rows.append(
                Row(
                    task.metadata["family"],
                    task.metadata["split"],
                    task.metadata["variant"],
                    fast_ms,
                    slow_ms,
                    ratio,
                    ok,
                )
            )
    finally:
        if box is not None:
            box.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-process", action="store_true", help="time calls here instead of in the sandbox")
    parser.add_argument("--repeats", type=int, default=5, help="runs per solution; the minimum counts")
    parser.add_argument("--min-ratio", type=float, default=5.0, help="lowest acceptable slow/fast CPU ratio")
    parser.add_argument("--max-fast-ms", type=float, default=50.0, help="highest acceptable fast CPU time")
    parser.add_argument("--seed", type=int, default=0, help="generation seed of the tasks measured")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = measure(args)
    mode = "in-process" if args.in_process else "sandbox"
    print(f"synthetic families: CPU time on stress inputs ({mode}, min of {args.repeats})")
    print(f"{'family':<18} {'split':<8} {'variant':<16} {'fast ms':>9} {'slow ms':>9} {'ratio':>8}  ok")
    for row in rows:
        print(
            f"{row.family:<18} {row.split:<8} {row.variant:<16} {row.fast_ms:>9.3f} {row.slow_ms:>9.2f} "
            f"{row.ratio:>8.1f}  {'yes' if row.ok else 'NO'}"
        )
    missing = sorted(set(FAMILIES) - {r.family for r in rows})
    if missing:
        print(f"families without tasks: {missing}")
    if args.json:
        args.json.write_text(json.dumps({"mode": mode, "rows": [asdict(r) for r in rows]}, indent=2))
    failed = [r for r in rows if not r.ok]
    if failed or missing:
        print(f"FAILED: {len(failed)} row(s) below {args.min_ratio}x or above {args.max_fast_ms} ms")
        return 1
    print(f"all {len(rows)} rows: slow/fast >= {args.min_ratio}x and fast <= {args.max_fast_ms} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
