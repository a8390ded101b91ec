"""Perf tests: cost is measured on them only, after the correctness tests pass, and they are judged."""

from __future__ import annotations

import concurrent.futures

import pytest

from rewards.scorer import RewardScorer, cost_job_for, perf_job_for, submit_run
from rewards.settings import RewardSettings
from rewards.tasks import Task
from sandbox.jobs import FunctionJob, ProgramJob
from sandbox.types import FunctionTest, ProgramTest

# Sum of 0..n-1. The correctness tests are tiny; the perf test is large.
TOTAL = Task(
    id="toy/total",
    prompt="def total(n): ...",
    entry_point="total",
    function_tests=tuple(FunctionTest((n,), n * (n - 1) // 2) for n in range(6)),
    perf_tests=(FunctionTest((3000,), 3000 * 2999 // 2),),
    references=("def total(n):\n    return n * (n - 1) // 2\n",),
)
LOOP = "def total(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
FORMULA = "def total(n):\n    return n * (n - 1) // 2\n"
# Right on the small tests, wrong from 1000 on: only the perf test sees it.
CHEAP_BUT_WRONG = "def total(n):\n    return 0 if n >= 1000 else n * (n - 1) // 2\n"


class CountingSandbox:
    """A sandbox wrapper that records the jobs submitted to it."""

    def __init__(self, box) -> None:
        self.box = box
        self.config = box.config
        self.jobs: list = []

    def submit(self, job) -> concurrent.futures.Future:
        self.jobs.append(job)
        return self.box.submit(job)


@pytest.fixture(scope="module")
def events_box():
    from sandbox import Sandbox

    settings = RewardSettings(cost_measure="python_events")
    with Sandbox(settings.sandbox_config(workers=1, memory_mb=256)) as box:
        yield box


def test_perf_jobs_are_built_from_perf_tests() -> None:
    job = perf_job_for(TOTAL, LOOP, repeats=3)
    assert isinstance(job, FunctionJob) and job.tests == TOTAL.perf_tests and job.repeats == 3
    plain = Task(id="p", prompt="", function_tests=TOTAL.function_tests, entry_point="total")
    assert perf_job_for(plain, LOOP) is None
    assert cost_job_for(plain, LOOP).tests == plain.function_tests  # type: ignore[union-attr]
    program = Task(
        id="prog",
        prompt="",
        program_tests=(ProgramTest("1\n", "2\n"),),
        perf_tests=(ProgramTest("9\n", "18\n"),),
    )
    assert isinstance(perf_job_for(program, "print(2 * int(input()))"), ProgramJob)


def test_task_refuses_mixed_or_unrunnable_perf_tests() -> None:
    with pytest.raises(ValueError, match="need an entry_point"):
        Task(id="x", prompt="", perf_tests=(FunctionTest((1,), 1),))
    with pytest.raises(ValueError, match="all FunctionTest or all ProgramTest"):
        Task(id="x", prompt="", entry_point="f", perf_tests=(FunctionTest((1,), 1), ProgramTest("", "")))


def test_cost_is_the_perf_run_cost(events_box) -> None:
    counting = CountingSandbox(events_box)
    result = submit_run(counting, TOTAL, LOOP, repeats=2).result()
    assert result.status.value == "passed"
    assert result.passed == result.total == len(TOTAL.function_tests) + 1
    check, perf = counting.jobs
    assert check.tests == TOTAL.function_tests and check.repeats == 1
    assert perf.tests == TOTAL.perf_tests and perf.repeats == 2
    alone = events_box.run(FunctionJob(LOOP, "total", TOTAL.perf_tests))
    assert result.cost.python_events == alone.cost.python_events  # the perf test's events, nothing else
    assert len(result.costs) == 2


def test_perf_tests_do_not_run_when_correctness_fails(events_box) -> None:
    counting = CountingSandbox(events_box)
    result = submit_run(counting, TOTAL, "def total(n):\n    return n\n").result()
    assert result.status.value == "failed" and len(counting.jobs) == 1
    assert result.total == len(TOTAL.function_tests)


def test_a_wrong_output_on_a_perf_test_fails(events_box) -> None:
    settings = RewardSettings(cost_measure="python_events", efficiency_weight=1.0)
    scorer = RewardScorer(events_box, settings, cache_size=0)
    (reward,) = scorer.score([TOTAL], [CHEAP_BUT_WRONG], extract=False)
    assert reward.evidence.status == "failed" and reward.evidence.error_kind == "wrong_output"
    assert "perf test" in (reward.evidence.error or "")
    assert reward.value == 0.0 and reward.evidence.speedup is None


def test_speedup_compares_perf_costs_of_sample_and_reference(events_box) -> None:
    settings = RewardSettings(cost_measure="python_events", efficiency_weight=1.0, speedup_clip=4.0)
    scorer = RewardScorer(events_box, settings, cache_size=0)
    fast, slow = scorer.score([TOTAL, TOTAL], [FORMULA, LOOP], extract=False)
    assert fast.evidence.status == slow.evidence.status == "passed"
    assert fast.evidence.speedup == pytest.approx(1.0)
    # the loop runs 2 events per iteration of the perf input, the formula a fixed few
    assert slow.evidence.cost > 50 * fast.evidence.cost and slow.efficiency == -1.0
    reference = scorer.reference_result(TOTAL).result()  # type: ignore[union-attr]
    assert reference.cost.python_events == fast.evidence.reference_cost
    with pytest.raises(ValueError, match="has perf tests"):
        scorer.seed_reference(TOTAL, reference)


def test_program_perf_tests(events_box) -> None:
    task = Task(
        id="toy/double",
        prompt="",
        program_tests=(ProgramTest("1\n", "2\n"),),
        perf_tests=(ProgramTest("21\n", "42\n"),),
    )
    scorer = RewardScorer(events_box, RewardSettings(cost_measure="python_events"), cache_size=0)
    good, bad = scorer.score(
        [task, task],
        ["print(2 * int(input()))", "n = int(input())\nprint(2 if n == 1 else 0)"],
        extract=False,
    )
    assert good.evidence.status == "passed" and good.evidence.total == 2
    assert bad.evidence.status == "failed" and "perf test" in (bad.evidence.error or "")


# ------------------------------------------------------------------ the service, its client and TRL


def test_evaluate_schema_carries_perf_tests() -> None:
    from rewards.client import submission
    from rewards.service.schema import MISSING, RequestError, parse_evaluate

    item = submission(
        "a",
        LOOP,
        "total",
        [((3,), 3)],
        perf_tests=[((3000,), 4498500)],
        perf_inputs=[(10,)],
        reference=FORMULA,
    )
    assert item["perf_tests"] == [{"input": [3000], "expected": 4498500}, {"input": [10]}]
    (parsed,) = parse_evaluate({"submissions": [item]}, max_submissions=10, max_repeats=5).submissions
    assert parsed.inputs == [[3]] and parsed.expected == [3]
    assert parsed.perf_inputs == [[3000], [10]] and parsed.perf_expected == [4498500, MISSING]
    assert parsed.needs_reference_outputs
    without = {**item, "perf_tests": [{"input": [5]}]}
    del without["reference"]
    with pytest.raises(RequestError, match=r"submissions\[0\]\.perf_tests\[0\]\.expected` is missing"):
        parse_evaluate({"submissions": [without]}, max_submissions=10, max_repeats=5)
    old = {k: v for k, v in item.items() if k != "perf_tests"}
    (plain,) = parse_evaluate({"submissions": [old]}, max_submissions=10, max_repeats=5).submissions
    assert plain.perf_inputs == [] and plain.perf_expected == []


def test_service_measures_cost_on_perf_tests(events_box) -> None:
    from rewards.client import RewardClient, submission
    from rewards.service import RewardService, ServiceConfig

    config = ServiceConfig(port=0, reward=RewardSettings(cost_measure="python_events", memory_mb=256))
    subs = [
        submission(
            name,
            code,
            "total",
            [((n,), n * (n - 1) // 2) for n in range(4)],
            perf_inputs=[(3000,)],
            reference=FORMULA,
        )
        for name, code in (("loop", LOOP), ("wrong", CHEAP_BUT_WRONG), ("formula", FORMULA))
    ]
    with RewardService(config, sandbox=events_box) as service, RewardClient(service.url) as client:
        loop, wrong, formula = client.evaluate(subs)
    assert loop["status"] == "passed" and loop["total"] == 5
    measured = events_box.run(FunctionJob(LOOP, "total", (FunctionTest((3000,)),))).cost.python_events
    assert loop["details"]["measured"]["python_events"] == measured
    assert loop["speedup"] < 0.05 and formula["speedup"] == pytest.approx(1.0)
    assert wrong["status"] == "failed" and wrong["details"]["failed_tests"] == [
        {"index": 4, "error": "wrong output"}
    ]


def test_trl_rows_carry_perf_tests(events_box) -> None:
    from rewards.trl import TrlReward, task_from_columns

    row = {
        "entry_point": "total",
        "tests": [{"input": [n], "expected": n * (n - 1) // 2} for n in range(4)],
        "perf_tests": '[{"input": [3000], "expected": 4498500}]',
    }
    task = task_from_columns(row)
    assert task.perf_tests == (FunctionTest((3000,), 4498500),)
    assert task_from_columns({k: v for k, v in row.items() if k != "perf_tests"}).perf_tests == ()
    reward = TrlReward(RewardScorer(events_box, RewardSettings(cost_measure="python_events")))
    values = reward(
        prompts=["p", "p"],
        completions=[LOOP, CHEAP_BUT_WRONG],
        **{key: [value, value] for key, value in row.items()},
    )
    assert values == [1.0, 0.0]


def test_a_timeout_on_perf_tests_is_right_censored(events_box) -> None:
    # Correct everywhere, but far too slow for the limit on the perf input.
    crawl = (
        "def total(n):\n    s = 0\n    for i in range(n):\n"
        "        for _ in range(n * 50):\n            pass\n        s += i\n    return s\n"
    )
    settings = RewardSettings(cost_measure="python_events", efficiency_weight=0.5, timeout_s=0.5)
    scorer = RewardScorer(events_box, settings, cache_size=0)
    (reward,) = scorer.score([TOTAL], [crawl], extract=False)
    assert reward.evidence.status == "passed" and reward.evidence.error_kind == "perf_timeout"
    assert reward.correctness == 1.0 and reward.efficiency == -1.0 and reward.penalty == 0.0
    assert reward.value == pytest.approx(0.5)
    result = submit_run(events_box, TOTAL, crawl, timeout_s=0.5).result()
    assert result.cost.cpu_ns == 500_000_000 and result.cost.python_events is None
