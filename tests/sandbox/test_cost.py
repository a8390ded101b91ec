"""Cost is measured by the trusted side and cannot be forged from inside."""

from __future__ import annotations

import asyncio

from sandbox import FunctionJob, FunctionTest, Sandbox, Status

LOOP = "def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"


def cpu(result) -> int:
    assert result.status is Status.PASSED, result.error
    return result.cost.cpu_ns


def test_module_level_work_counts(box):
    hidden = "_ = sum(range(3_000_000))\n" + LOOP
    plain = cpu(box.run_function_tests(LOOP, "f", [FunctionTest((10,), 45)], repeats=3))
    loaded = cpu(box.run_function_tests(hidden, "f", [FunctionTest((10,), 45)], repeats=3))
    assert loaded > plain + 10_000_000  # 3M additions take well over 10 ms of CPU here


def test_patching_time_inside_the_candidate_does_not_change_its_cost(box):
    forger = (
        "import time, os\n"
        "time.process_time_ns = lambda: 0\ntime.perf_counter_ns = lambda: 0\ntime.monotonic_ns = lambda: 0\n"
        "time.clock_gettime_ns = lambda *a: 0\ntime.process_time = lambda: 0.0\n"
        "os.times = lambda: os.times_result((0, 0, 0, 0, 0))\n" + LOOP
    )
    test = [FunctionTest((400_000,), sum(range(400_000)))]
    honest = cpu(box.run_function_tests(LOOP, "f", test, repeats=3))
    forged = cpu(box.run_function_tests(forger, "f", test, repeats=3))
    assert forged > 0.6 * honest  # same work, same cost (within machine noise)


def test_more_work_costs_more(box):
    small = cpu(box.run_function_tests(LOOP, "f", [FunctionTest((200_000,), sum(range(200_000)))], repeats=3))
    large = cpu(
        box.run_function_tests(LOOP, "f", [FunctionTest((2_000_000,), sum(range(2_000_000)))], repeats=3)
    )
    assert 5 * small < large < 20 * small


def test_repeats_give_one_cost_each_and_the_minimum():
    with Sandbox(workers=1, repeats=4) as box:
        result = box.run_function_tests(LOOP, "f", [FunctionTest((1000,), sum(range(1000)))])
    assert len(result.costs) == 4
    assert result.cost.cpu_ns == min(c.cpu_ns for c in result.costs)


def test_failed_runs_are_not_repeated(box):
    result = box.run_function_tests(LOOP, "f", [FunctionTest((10,), -1)], repeats=5)
    assert result.status is Status.FAILED and len(result.costs) == 1


def test_peak_memory_is_reported(box):
    grow = "def f():\n    x = bytearray(50 << 20)\n    x[::4096] = b'1' * len(x[::4096])\n    return len(x)\n"
    result = box.run_function_tests(grow, "f", [FunctionTest((), 50 << 20)])
    assert result.cost.peak_memory_bytes > 40 << 20


def test_python_event_counts_are_deterministic():
    with Sandbox(workers=1, count_python_events=True) as box:
        counts = {
            box.run_function_tests(LOOP, "f", [FunctionTest((1000,), sum(range(1000)))]).cost.python_events
            for _ in range(3)
        }
        bigger = box.run_function_tests(
            LOOP, "f", [FunctionTest((2000,), sum(range(2000)))]
        ).cost.python_events
    assert len(counts) == 1
    (count,) = counts
    assert count > 2000 and 1.8 * count < bigger < 2.2 * count


def test_instruction_counts_fall_back_cleanly_where_unsupported():
    with Sandbox(workers=1, count_instructions=True) as box:
        result = box.run_function_tests(LOOP, "f", [FunctionTest((10,), 45)])
    assert result.status is Status.PASSED
    assert result.cost.instructions is None or result.cost.instructions > 0


def test_async_api_runs_jobs_concurrently(box):
    async def main():
        jobs = [FunctionJob(LOOP, "f", [FunctionTest((n,), sum(range(n)))]) for n in range(40)]
        return await box.arun_many(jobs)

    results = asyncio.run(main())
    assert [r.status for r in results] == [Status.PASSED] * 40


def test_run_many_keeps_order(box):
    jobs = [FunctionJob(LOOP, "f", [FunctionTest((n,), sum(range(n)) + (n % 3 == 0))]) for n in range(30)]
    statuses = [r.status for r in box.run_many(jobs)]
    assert statuses == [Status.FAILED if n % 3 == 0 else Status.PASSED for n in range(30)]
