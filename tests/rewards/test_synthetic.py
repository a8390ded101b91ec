"""Synthetic efficiency tasks: determinism, structural splits, correct references, real speed gaps."""

from __future__ import annotations

import copy
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from rewards.synthetic import (
    DEFAULT_PER_FAMILY,
    FAMILIES,
    Family,
    Pool,
    Variant,
    family_names,
    synthetic_tasks,
)
from rewards.synthetic.family import compile_function
from rewards.tasks import Task
from sandbox import FunctionJob, Sandbox


@pytest.fixture(scope="module")
def train() -> list[Task]:
    return synthetic_tasks("train")


@pytest.fixture(scope="module")
def heldout() -> list[Task]:
    return synthetic_tasks("heldout")


@pytest.fixture(scope="module")
def unseen() -> list[Task]:
    """The held-out families' tasks."""
    return synthetic_tasks("heldout_families")


TRAINING = family_names("train")


def fast_and_slow(task: Task) -> tuple[Callable[..., Any], Callable[..., Any]]:
    assert task.entry_point and task.reference
    return (
        compile_function(task.reference, task.entry_point),
        compile_function(task.metadata["slow_reference"], task.entry_point),
    )


def test_at_least_ten_families_with_all_difficulties() -> None:
    assert len(FAMILIES) >= 10
    assert {f.difficulty for f in FAMILIES.values()} == {"easy", "medium", "hard"}


def test_thousands_of_distinct_train_prompts(train: list[Task]) -> None:
    assert len(train) == DEFAULT_PER_FAMILY["train"] * len(TRAINING)
    assert len({t.prompt for t in train}) == len(train)
    assert len({t.id for t in train}) == len(train)
    assert Counter(t.metadata["family"] for t in train) == dict.fromkeys(
        TRAINING, DEFAULT_PER_FAMILY["train"]
    )


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    assert synthetic_tasks("train", n=60, seed=5) == synthetic_tasks("train", n=60, seed=5)
    assert synthetic_tasks("train", n=60, seed=5) != synthetic_tasks("train", n=60, seed=6)


def test_family_streams_do_not_depend_on_n(train: list[Task]) -> None:
    short = synthetic_tasks("train", n=3 * len(TRAINING))
    assert short == [t for t in train if int(t.id.rsplit("/", 1)[1]) < 3]


def test_n_mixes_families_evenly() -> None:
    tasks = synthetic_tasks("heldout", n=2 * len(TRAINING) + 1)
    counts = Counter(t.metadata["family"] for t in tasks)
    assert set(counts) == set(TRAINING) and max(counts.values()) - min(counts.values()) <= 1


def test_splits_are_disjoint_in_prompts_parameters_and_names(train: list[Task], heldout: list[Task]) -> None:
    assert heldout and all(t.metadata["split"] == "heldout" for t in heldout)
    assert not {t.prompt for t in train} & {t.prompt for t in heldout}
    train_params = {(t.metadata["family"], t.metadata["params"]) for t in train}
    assert not train_params & {(t.metadata["family"], t.metadata["params"]) for t in heldout}
    assert not {t.entry_point for t in train} & {t.entry_point for t in heldout}
    assert {t.metadata["family"] for t in heldout} == set(TRAINING)


def test_heldout_phrasings_are_unseen(train: list[Task], heldout: list[Task]) -> None:
    def frame(prompt: str) -> str:
        return re.sub(r"`[^`]*`.*", "", prompt)  # the words before the signature

    assert not {frame(t.prompt) for t in train} & {frame(t.prompt) for t in heldout}


def test_prompts_are_short_and_show_signature_and_a_true_example(
    train: list[Task], heldout: list[Task], unseen: list[Task]
) -> None:
    example = re.compile(
        r"(?:Example: |E\.g\. |For instance, |Sample: )(\w+\(.*\)) (?:==|returns|gives|->) (.+)\.$"
    )
    for task in train + heldout + unseen:
        assert len(task.prompt) <= 400, task.prompt
        assert f"`{task.entry_point}(" in task.prompt
        match = example.search(task.prompt)
        assert match is not None, task.prompt
        fast, _ = fast_and_slow(task)
        assert eval(match.group(1), {task.entry_point: fast}) == eval(match.group(2)), task.prompt


def test_easy_prompts_are_one_short_paragraph(train: list[Task]) -> None:
    easy = [t for t in train if t.metadata["difficulty"] == "easy"]
    assert easy and max(len(t.prompt) for t in easy) <= 280
    assert all("\n" not in t.prompt for t in train)
    series = [t.prompt for t in easy if t.metadata["constants"] == {"A": 1, "D": 1}]
    assert any("1, 2, 3, ..." in p or "1 + 2 + 3 + ..." in p for p in series)


def test_metadata_and_test_layout(train: list[Task]) -> None:
    for task in train[:: len(TRAINING) - 1]:
        meta = task.metadata
        assert meta["source"] == "synthetic" and meta["split"] == "train"
        assert meta["family"] in FAMILIES and meta["difficulty"] == FAMILIES[meta["family"]].difficulty
        assert "slow_reference" in meta and meta["slow_reference"] not in task.prompt
        assert task.n_base_tests is not None and task.n_base_tests >= 4
        # small correctness tests, then the stress inputs as perf tests (cost is measured on those)
        assert len(task.function_tests) == task.n_base_tests
        assert len(task.perf_tests) == meta["n_stress_tests"] >= 1
        assert task.references == (task.reference,)


def test_slow_references_agree_with_fast_ones_on_every_small_test(
    train: list[Task], heldout: list[Task], unseen: list[Task]
) -> None:
    for task in train + heldout + unseen:
        fast, slow = fast_and_slow(task)
        for test in task.function_tests[: task.n_base_tests]:
            assert slow(*copy.deepcopy(test.args)) == test.expected == fast(*copy.deepcopy(test.args)), (
                task.id
            )


def test_slow_references_agree_on_stress_tests_of_every_variant(
    train: list[Task], heldout: list[Task], unseen: list[Task]
) -> None:
    seen = set()
    for task in train + heldout + unseen:
        key = (task.metadata["family"], task.metadata["variant"])
        if key in seen:
            continue
        seen.add(key)
        _, slow = fast_and_slow(task)
        for test in task.perf_tests:
            assert slow(*copy.deepcopy(test.args)) == test.expected, task.id
    assert len(seen) >= 2 * len(FAMILIES)
    assert {family for family, _ in seen} == set(FAMILIES)


def test_generation_does_not_mutate_shared_stress_inputs() -> None:
    for split in ("train", "heldout_families"):
        first = synthetic_tasks(split, n=len(FAMILIES) * 2)
        again = synthetic_tasks(split, n=len(FAMILIES) * 2)
        assert [(t.function_tests, t.perf_tests) for t in first] == [
            (t.function_tests, t.perf_tests) for t in again
        ]


def test_fast_references_pass_their_own_tests_in_the_sandbox(
    train: list[Task], heldout: list[Task], unseen: list[Task], box: Sandbox
) -> None:
    tasks = train[::11] + heldout[::3] + unseen[::2]
    jobs = [
        FunctionJob(t.reference, t.entry_point, (*t.function_tests, *t.perf_tests), t.atol) for t in tasks
    ]
    results = box.run_many(jobs)
    assert [(t.id, r.error) for t, r in zip(tasks, results) if not r.ok] == []


def test_naive_solutions_fail_nothing_but_cost_more_in_the_sandbox(train: list[Task], box: Sandbox) -> None:
    by_family = {t.metadata["family"]: t for t in reversed(train)}
    for name in ("pair_sum", "multiples_sum"):
        task = by_family[name]
        fast = box.run_function_tests(task.reference, task.entry_point, task.perf_tests, repeats=3)
        slow = box.run_function_tests(
            task.metadata["slow_reference"], task.entry_point, task.perf_tests, repeats=3
        )
        assert fast.ok and slow.ok
        assert slow.cost.cpu_ns >= 3 * fast.cost.cpu_ns, name  # the cost script checks 5x on every family


def test_in_process_slow_over_fast_ratio_on_two_families(train: list[Task]) -> None:
    def cpu_ns(function: Callable[..., Any], tests: list[Any]) -> int:
        best = None
        for _ in range(3):
            inputs = [copy.deepcopy(t.args) for t in tests]
            start = time.process_time_ns()
            for args in inputs:
                function(*args)
            elapsed = time.process_time_ns() - start
            best = elapsed if best is None else min(best, elapsed)
        return max(best or 1, 1)

    by_family = {t.metadata["family"]: t for t in train}
    for name in ("max_subarray", "membership_count"):
        task = by_family[name]
        fast, slow = fast_and_slow(task)
        stress = list(task.perf_tests)
        assert cpu_ns(slow, stress) >= 3 * cpu_ns(fast, stress), name


def test_family_filter_and_errors() -> None:
    tasks = synthetic_tasks("train", n=5, families=["dedupe"])
    assert {t.metadata["family"] for t in tasks} == {"dedupe"}
    assert synthetic_tasks("train", n=0) == []
    with pytest.raises(ValueError, match="unknown synthetic families \\['nope'\\]"):
        synthetic_tasks("train", families=["nope"])
    with pytest.raises(ValueError, match="unknown synthetic split 'test'"):
        synthetic_tasks("test")
    with pytest.raises(ValueError, match="n must be >= 0"):
        synthetic_tasks("train", n=-2)


def test_family_must_keep_splits_apart() -> None:
    family = FAMILIES["pair_sum"]
    shared_variant = family.variants
    with pytest.raises(ValueError, match="make one of the two pools disjoint"):
        Family(
            **{
                **family.__dict__,
                "variants": Pool(shared_variant.train, shared_variant.train),
                "constants": Pool(({"K": 5},), ({"K": 5},)),
            }
        )
    variant = Variant("v", Pool(("d",), ()), "def $fn($nums): pass\n", "def $fn($nums): pass\n")
    with pytest.raises(ValueError, match="do not match roles"):
        Family(
            **{**family.__dict__, "variants": Pool((variant,), ()), "argument_names": Pool((("a", "b"),), ())}
        )


def test_optimisation_variant_shows_the_slow_code_and_keeps_tests_and_references() -> None:
    from rewards.datasets import load_tasks
    from rewards.synthetic import optimisation_task

    plain = synthetic_tasks("heldout", n=14)
    shown = load_tasks("synthetic_optimise", split="heldout", limit=14)
    assert len(shown) == len(plain) == 14
    for base, task in zip(plain, shown):
        assert task.id == base.id.replace("synthetic/", "synthetic_optimise/")
        assert task.prompt.startswith(base.prompt.rstrip())
        assert "```python\n" + base.metadata["slow_reference"].rstrip() + "\n```" in task.prompt
        assert base.reference not in task.prompt  # the fast answer is never shown
        assert f"faster `{base.entry_point}`" in task.prompt
        assert task.function_tests == base.function_tests and task.references == base.references
        assert task.metadata["shows_slow_solution"] and task.metadata["family"] == base.metadata["family"]
    with pytest.raises(ValueError, match="no slow reference"):
        optimisation_task(Task(id="x", prompt="p", entry_point="f"))
