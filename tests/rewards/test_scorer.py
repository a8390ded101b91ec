"""RewardScorer on a real sandbox: jobs from tasks, caching, references, sync and async."""

from __future__ import annotations

import asyncio

import pytest

from rewards.cache import ExecutionCache, code_digest, task_fingerprint
from rewards.scorer import RewardScorer, TaskError, job_for
from rewards.settings import RewardSettings
from rewards.tasks import Task
from sandbox import Sandbox
from sandbox.jobs import FunctionJob, ProgramJob, ScriptJob
from sandbox.types import ExecutionResult, FunctionTest, ProgramTest, Status

SQUARE = Task(
    id="toy/square",
    prompt="def square(x): ...",
    entry_point="square",
    function_tests=tuple(FunctionTest((i,), i * i) for i in range(5)),
    references=("def square(x):\n    return sum(x for _ in range(x))\n",),
)
ECHO = Task(id="toy/echo", prompt="", program_tests=(ProgramTest("3\n", "6\n"), ProgramTest("5\n", "10\n")))
SCRIPTED = Task(
    id="toy/script", prompt="", entry_point="inc", test_script="def check(f):\n    assert f(1) == 2\n"
)

GOOD = "def square(x):\n    return x * x\n"
GOOD_REFORMATTED = "# squares\ndef square(x):   \n\n    return x*x   # fast\n"
WRONG = "def square(x):\n    return x + x\n"


def test_code_digest_ignores_comments_layout_and_trailing_space() -> None:
    assert code_digest(GOOD) == code_digest(GOOD_REFORMATTED)
    assert code_digest(GOOD) != code_digest(WRONG)
    assert len({code_digest(GOOD) for _ in range(50)}) == 1
    docstring = 'def f(x):\n    """Doc."""\n    return [i for i in range(x)]\n'
    spaced = docstring.replace("\n    return", "\n\n    return") + "# end\n"
    assert code_digest(docstring) == code_digest(spaced)
    assert code_digest(docstring) != code_digest(docstring.replace("Doc.", "Other."))
    # unparsable code: its text counts, minus blank lines and trailing whitespace
    assert code_digest("def f(:  \n\n  pass\n") == code_digest("def f(:\n  pass")
    assert code_digest("def f(:\n  pass") != code_digest("def g(:\n  pass")


def test_task_fingerprint_tells_tests_apart() -> None:
    other = Task(id=SQUARE.id, prompt="", entry_point="square", function_tests=(FunctionTest((9,), 81),))
    assert task_fingerprint(SQUARE) == task_fingerprint(SQUARE)
    assert task_fingerprint(SQUARE) != task_fingerprint(other)


def test_job_for_picks_the_strongest_test_kind() -> None:
    assert isinstance(job_for(SQUARE, GOOD), FunctionJob)
    assert isinstance(job_for(ECHO, "print(1)"), ProgramJob)
    assert isinstance(job_for(SCRIPTED, "def inc(x): return x + 1"), ScriptJob)
    with pytest.raises(TaskError, match="no function_tests, program_tests or test_script"):
        job_for(Task(id="empty", prompt=""), GOOD)
    with pytest.raises(TaskError, match="no entry_point"):
        job_for(Task(id="x", prompt="", function_tests=(FunctionTest((1,), 1),)), GOOD)


def test_script_only_tasks_are_refused_unless_opted_in(box) -> None:
    with pytest.raises(TaskError, match=r"assertion script.*allow_script_tests"):
        RewardScorer(box, RewardSettings()).score([SCRIPTED], ["def inc(x): return x + 1"], extract=False)


def test_scores_function_program_and_script_tasks(box) -> None:
    scorer = RewardScorer(box, RewardSettings(correctness="fraction", allow_script_tests=True))
    tasks = [SQUARE, SQUARE, ECHO, ECHO, SCRIPTED, SQUARE]
    codes = [
        GOOD,
        WRONG,
        "print(int(input()) * 2)",
        "print(6)",
        "def inc(x): return x + 1",
        "def square(x) return x",
    ]
    rewards = scorer.score(tasks, codes, extract=False)
    statuses = [r.evidence.status for r in rewards]
    assert statuses == ["passed", "failed", "passed", "failed", "passed", "syntax_error"]
    assert rewards[1].correctness == pytest.approx(2 / 5)  # 0 and 2 square to their doubles
    assert rewards[3].correctness == pytest.approx(1 / 2)
    assert rewards[5].penalty == -1.0
    assert rewards[0].evidence.reference_cost is not None and rewards[0].evidence.speedup > 0
    assert rewards[2].evidence.reference_cost is None  # no reference: no reference speedup


def test_identical_pairs_execute_once(box) -> None:
    # No reference run at all: neither efficiency nor a reference-scaled time limit asks for one.
    scorer = RewardScorer(box, RewardSettings(efficiency_mode="none", timeout_factor=0.0))
    before = box.executions
    rewards = scorer.score([SQUARE] * 4, [GOOD, GOOD_REFORMATTED, GOOD, WRONG], extract=False)
    assert [r.evidence.status for r in rewards] == ["passed", "passed", "passed", "failed"]
    assert box.executions - before == 2
    assert scorer.stats["hits"] == 2 and scorer.stats["misses"] == 2
    # a later batch hits the cache as well
    scorer.score([SQUARE], [GOOD], extract=False)
    assert box.executions - before == 2


def test_reference_is_measured_once_per_task(box) -> None:
    scorer = RewardScorer(box, RewardSettings())
    before = box.executions
    first = scorer.score([SQUARE, SQUARE], [GOOD, WRONG], extract=False)
    second = scorer.score([SQUARE], [WRONG + "\n# another\n"], extract=False)
    assert box.executions - before == 3  # GOOD, WRONG and the reference; the rest are cache hits
    assert first[0].evidence.reference_cost == second[0].evidence.reference_cost


def test_sandbox_errors_are_not_cached() -> None:
    cache = ExecutionCache(8)
    import concurrent.futures

    def done(status: Status) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        future.set_result(ExecutionResult(status))
        return future

    cache.get_or_submit("k", lambda: done(Status.SANDBOX_ERROR))
    _, hit = cache.get_or_submit("k", lambda: done(Status.PASSED))
    assert not hit
    _, hit = cache.get_or_submit("k", lambda: done(Status.PASSED))
    assert hit


def test_cache_is_bounded() -> None:
    import concurrent.futures

    cache = ExecutionCache(2)
    for key in "abc":
        cache.get_or_submit(key, concurrent.futures.Future)
    assert len(cache) == 2 and cache.stats.evictions == 1
    _, hit = cache.get_or_submit("a", concurrent.futures.Future)
    assert not hit


def test_async_scoring_matches_sync(box) -> None:
    scorer = RewardScorer(box, RewardSettings(efficiency_mode="none"), cache_size=0)
    rewards = asyncio.run(scorer.ascore([SQUARE, SQUARE], [GOOD, WRONG], extract=False))
    assert [r.value for r in rewards] == [1.0, 0.0]


def test_per_call_shaping_and_fixed_keys(box) -> None:
    scorer = RewardScorer(box, RewardSettings())
    (reward,) = scorer.score([SQUARE], [WRONG], extract=False, shaping={"correctness": "fraction"})
    assert reward.correctness == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="timeout_s decide how code runs"):
        scorer.score([SQUARE], [WRONG], extract=False, shaping={"timeout_s": 1.0})


def test_cost_measure_needs_a_counting_sandbox(box) -> None:
    with pytest.raises(ValueError, match="count_python_events=True"):
        RewardScorer(box, RewardSettings(cost_measure="python_events"))
    # CPU time under the event tracer is inflated, and a candidate can switch the tracer off.
    tracing = RewardSettings(cost_measure="python_events", workers=1).sandbox_config()
    with (
        Sandbox(tracing) as traced,
        pytest.raises(ValueError, match="on a sandbox that counts Python events"),
    ):
        RewardScorer(traced, RewardSettings(cost_measure="cpu"))


def test_completions_are_extracted_and_format_scored(box) -> None:
    settings = RewardSettings(efficiency_mode="none", format_weight=0.5)
    scorer = RewardScorer(box, settings)
    completions = [
        f"Sure! Here it is:\n```python\n{GOOD}```\nIt squares x.",
        GOOD,  # bare code: no fence
        "```python\ndef cube(x):\n    return x ** 3\n```",  # fenced, wrong function
        "I cannot help with that.",
    ]
    rewards = scorer.score([SQUARE] * 4, completions)
    assert [r.evidence.status for r in rewards] == ["passed", "passed", "runtime_error", "runtime_error"]
    assert [r.format for r in rewards] == [1.0, 0.5, 0.5, 0.0]
    assert rewards[0].value == pytest.approx(1.5) and rewards[1].value == pytest.approx(1.25)
    assert rewards[2].penalty == -1.0 and rewards[2].evidence.error_kind == "missing_entry_point"


def test_completion_prefix_continues_a_prefilled_fence(box) -> None:
    scorer = RewardScorer(box, RewardSettings(efficiency_mode="none"), completion_prefix="```python\n")
    (reward,) = scorer.score([SQUARE], ["def square(x):\n    return x * x\n```\nDone."])
    assert reward.evidence.status == "passed"


@pytest.fixture(scope="module")
def counting_box():
    """A one-worker sandbox that counts Python events (the deterministic cost measure)."""
    from sandbox import Sandbox

    settings = RewardSettings(cost_measure="python_events")
    with Sandbox(settings.sandbox_config(workers=1, memory_mb=256)) as box:
        yield box


@pytest.fixture(scope="module")
def synthetic_task() -> Task:
    from rewards.datasets import load_tasks

    return load_tasks("synthetic", limit=1)[0]


def test_synthetic_task_rewards_the_fast_solution(counting_box, synthetic_task) -> None:
    task = synthetic_task
    fast, slow = task.reference, task.metadata["slow_reference"]
    # Counted Python events, not CPU time: the fast solution *is* the reference, and on a loaded
    # machine two CPU timings of millisecond-long runs can differ by 2x (seen in CI), which would
    # test the machine's noise rather than the shaping. CPU-time ranking is tested in the sandbox.
    settings = RewardSettings(efficiency_weight=0.5, speedup_clip=4.0, cost_measure="python_events")
    scorer = RewardScorer(counting_box, settings, cache_size=0)
    quick, sluggish = scorer.score([task, task], [fast, slow], extract=False)
    assert quick.evidence.status == sluggish.evidence.status == "passed"
    assert quick.evidence.speedup == pytest.approx(1.0) and quick.value == pytest.approx(1.0)
    assert sluggish.evidence.speedup < 0.25 and sluggish.efficiency == -1.0 and sluggish.value == 0.5


def test_python_events_are_a_deterministic_cost(counting_box, synthetic_task) -> None:
    task = synthetic_task
    settings = RewardSettings(cost_measure="python_events", efficiency_mode="group", efficiency_weight=1.0)
    scorer = RewardScorer(counting_box, settings, cache_size=0)
    slow = task.metadata["slow_reference"]
    first = scorer.score([task] * 3, [task.reference, slow, slow], [0, 0, 0], extract=False)
    second = scorer.score([task] * 3, [task.reference, slow, slow], [0, 0, 0], extract=False)
    assert [r.evidence.cost for r in first] == [r.evidence.cost for r in second]
    assert first[0].evidence.cost < first[1].evidence.cost
    # the group median is the slow cost: the fast solution earns the full efficiency score
    assert first[0].efficiency == 1.0 and first[1].efficiency == 0.0
