"""Check that every synthetic family's stress (performance) tests separate its fast and slow solutions.

For each family, split and variant, the first generated task's fast reference and its slow
(naive) reference run on the task's stress inputs; the CPU time of each is the minimum over
``--repeats`` runs. Every split is covered: ``train`` and ``heldout`` (the training families) and
``heldout_families`` (the families no training split shows). By default they run in the sandbox
and the sandbox's trusted cost is used; ``--in-process`` times plain calls here with
``time.process_time_ns`` instead. ``--events`` adds the ratio of Python line events (deterministic,
but blind to work inside C builtins; families marked ``cost_in_builtins`` print it in brackets).

Prints a table per (family, split, variant) and a summary per family, and exits with status 1 if
any slow/fast ratio is below ``--min-ratio`` (default 5) or any fast reference takes more than
``--max-fast-ms`` (default 50). Writes nothing unless ``--json`` names a file. About 30 s on
2 cores for all families (a minute with ``--events``).

    python scripts/check_synthetic_costs.py [--in-process] [--repeats 5] [--families pair_sum dedupe]
        [--events] [--markdown] [--json out.json]
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

from rewards.synthetic import FAMILIES, HELDOUT_FAMILIES, synthetic_tasks
from rewards.synthetic.family import compile_function
from rewards.synthetic.generate import SPLITS
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
    events_ratio: float | None = None


def representative_tasks(seed: int, families: list[str] | None = None) -> list[Task]:
    """The first task of every (family, split, variant)."""
    chosen: dict[tuple[str, str, str], Task] = {}
    for split in SPLITS:
        wanted = None if families is None else [f for f in families if _in_split(f, split)]
        if wanted == []:
            continue
        for task in synthetic_tasks(split, seed=seed, families=wanted):
            key = (task.metadata["family"], split, task.metadata["variant"])
            chosen.setdefault(key, task)
    return [chosen[k] for k in sorted(chosen)]


def _in_split(family: str, split: str) -> bool:
    return (family in HELDOUT_FAMILIES) == (split == "heldout_families")


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


def sandbox_cost(box: Any, code: str, entry_point: str, tests: list[Any], repeats: int) -> Any:
    result = box.run_function_tests(code, entry_point, tests, repeats=repeats)
    if not result.ok or result.cost is None:
        raise AssertionError(f"{entry_point}: {result.status.value} in the sandbox: {result.error}")
    return result.cost


def measure(args: argparse.Namespace) -> list[Row]:
    tasks = representative_tasks(args.seed, args.families)
    box = counter = None
    if not args.in_process or args.events:
        from sandbox import Sandbox, SandboxConfig

        if not args.in_process:
            box = Sandbox(SandboxConfig(workers=1, timeout_s=60))
        if args.events:
            counter = Sandbox(SandboxConfig(workers=1, timeout_s=120, count_python_events=True))
    rows = []
    try:
        for task in tasks:
            tests = stress_tests(task)
            codes = (task.reference, task.metadata["slow_reference"])
            assert codes[0] is not None and task.entry_point is not None
            if box is None:
                fast_ns, slow_ns = (in_process_ns(c, task.entry_point, tests, args.repeats) for c in codes)
            else:
                fast_ns, slow_ns = (
                    sandbox_cost(box, c, task.entry_point, tests, args.repeats).cpu_ns for c in codes
                )
            events_ratio = None
            if counter is not None:
                fast_events, slow_events = (
                    sandbox_cost(counter, c, task.entry_point, tests, 1).python_events for c in codes
                )
                events_ratio = slow_events / max(fast_events, 1)
            fast_ms, slow_ms = fast_ns / 1e6, slow_ns / 1e6
            ratio = slow_ms / max(fast_ms, 1e-6)
            ok = ratio >= args.min_ratio and fast_ms <= args.max_fast_ms
            meta = task.metadata
            rows.append(
                Row(meta["family"], meta["split"], meta["variant"], fast_ms, slow_ms, ratio, ok, events_ratio)
            )
    finally:
        for sandbox in (box, counter):
            if sandbox is not None:
                sandbox.close()
    return rows


def family_summary(rows: list[Row]) -> list[dict[str, Any]]:
    """Per family: its splits, the lowest and highest slow/fast ratio over its variants."""
    summary = []
    for name in dict.fromkeys(r.family for r in rows):
        mine = [r for r in rows if r.family == name]
        summary.append(
            {
                "family": name,
                "held_out": name in HELDOUT_FAMILIES,
                "cost_in_builtins": FAMILIES[name].cost_in_builtins,
                "variants": len({r.variant for r in mine}),
                "min_ratio": min(r.ratio for r in mine),
                "max_ratio": max(r.ratio for r in mine),
                "max_fast_ms": max(r.fast_ms for r in mine),
                "max_slow_ms": max(r.slow_ms for r in mine),
            }
        )
    return sorted(summary, key=lambda s: (s["held_out"], s["family"]))


def _events(row: Row) -> str:
    if row.events_ratio is None:
        return ""
    text = f"{row.events_ratio:.1f}"
    return f"[{text}]" if FAMILIES[row.family].cost_in_builtins else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--in-process", action="store_true", help="time calls here instead of in the sandbox")
    parser.add_argument("--repeats", type=int, default=5, help="runs per solution; the minimum counts")
    parser.add_argument("--min-ratio", type=float, default=5.0, help="lowest acceptable slow/fast CPU ratio")
    parser.add_argument("--max-fast-ms", type=float, default=50.0, help="highest acceptable fast CPU time")
    parser.add_argument("--seed", type=int, default=0, help="generation seed of the tasks measured")
    parser.add_argument("--families", nargs="+", metavar="NAME", help="only these families (default: all)")
    parser.add_argument("--events", action="store_true", help="also compare counts of Python line events")
    parser.add_argument("--markdown", action="store_true", help="print the per-family summary as Markdown")
    parser.add_argument("--json", type=Path, help="also write the rows and the summary to this JSON file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.families or ()) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    rows = measure(args)
    mode = "in-process" if args.in_process else "sandbox"
    print(f"synthetic families: CPU time on stress inputs ({mode}, min of {args.repeats})")
    print(
        f"{'family':<21} {'split':<16} {'variant':<15} {'fast ms':>9} {'slow ms':>9} {'ratio':>8}"
        f"{' events':>9}  ok"
    )
    for row in rows:
        print(
            f"{row.family:<21} {row.split:<16} {row.variant:<15} {row.fast_ms:>9.3f} {row.slow_ms:>9.2f} "
            f"{row.ratio:>8.1f}{_events(row):>9}  {'yes' if row.ok else 'NO'}"
        )
    summary = family_summary(rows)
    if args.markdown:
        print("\n| family | split | variants | slow/fast CPU (min-max over variants) | fast ms | slow ms |")
        print("|---|---|---|---|---|---|")
        for s in summary:
            split = "heldout_families" if s["held_out"] else "train, heldout"
            ratios = f"{s['min_ratio']:.0f}x-{s['max_ratio']:.0f}x"
            print(
                f"| {s['family']} | {split} | {s['variants']} | {ratios} | {s['max_fast_ms']:.2f} | "
                f"{s['max_slow_ms']:.1f} |"
            )
    expected = set(args.families or FAMILIES)
    missing = sorted(expected - {r.family for r in rows})
    if missing:
        print(f"families without tasks: {missing}")
    if args.json:
        data = {"mode": mode, "repeats": args.repeats, "rows": [asdict(r) for r in rows], "families": summary}
        args.json.write_text(json.dumps(data, indent=2))
    failed = [r for r in rows if not r.ok]
    if failed or missing:
        print(f"FAILED: {len(failed)} row(s) below {args.min_ratio}x or above {args.max_fast_ms} ms")
        return 1
    print(
        f"all {len(rows)} rows of {len(summary)} families: slow/fast >= {args.min_ratio}x "
        f"and fast <= {args.max_fast_ms} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
