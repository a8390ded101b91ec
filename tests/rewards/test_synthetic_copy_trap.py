"""The copy trap, for every synthetic family: copying the slow code earns nothing.

A ``synthetic_optimise`` prompt shows a correct but slow solution. Its copy passes the tests, so
only the efficiency score can keep it from paying: on each family's stress inputs the slow
reference must cost at least ``speedup_clip`` times the fast one in the sandbox (the cost the
reward sees), so that the copy's speedup is clipped to ``1 / speedup_clip`` and its efficiency score
is -1. The families come from the registry, so a new family is checked as soon as it is registered;
every (split, variant) is checked on its first generated task, as ``scripts/check_synthetic_costs.py``
reports them.
"""

from __future__ import annotations

import pytest

from rewards.settings import RewardSettings
from rewards.shaping import efficiency_score
from rewards.synthetic import FAMILIES, family_names, synthetic_tasks
from rewards.synthetic.generate import SPLITS
from rewards.tasks import Task
from sandbox import FunctionJob, Sandbox

SPEEDUP_CLIP = RewardSettings().speedup_clip
REPEATS = 3  # the cost of each solution is measured this many times (CPU time, from the kernel)
TASKS_SEARCHED = 60  # a family's first tasks of a split, among which every variant must appear


def first_task_of_each_variant(family: str) -> list[Task]:
    chosen: dict[tuple[str, str], Task] = {}
    for split in (s for s in SPLITS if family in family_names(s)):
        for task in synthetic_tasks(split, n=TASKS_SEARCHED, families=[family]):
            chosen.setdefault((split, task.metadata["variant"]), task)
        # A held-out family shows the variants of both sides in its one split.
        sides = ("train", "heldout") if split == "heldout_families" else (split,)
        variants = {v.key for side in sides for v in FAMILIES[family].variants.of(side)}
        missing = variants - {variant for s, variant in chosen if s == split}
        assert not missing, f"{family}/{split}: variants {missing} not among the first {TASKS_SEARCHED} tasks"
    return [chosen[key] for key in sorted(chosen)]


def test_the_registry_is_not_empty() -> None:
    """The test below is parametrized by the registry: an empty one would check nothing, silently."""
    assert len(family_names()) >= 14


@pytest.mark.parametrize("family", family_names())
def test_the_slow_reference_costs_at_least_speedup_clip_times_the_fast_one(family: str, box: Sandbox) -> None:
    tasks = first_task_of_each_variant(family)
    jobs = []
    for task in tasks:
        stress = list(task.perf_tests)
        assert stress, f"{task.id} has no stress tests"
        for code in (task.reference, task.metadata["slow_reference"]):
            jobs.append(FunctionJob(code, task.entry_point, stress, atol=task.atol, repeats=REPEATS))
    results = box.run_many(jobs)
    for index, task in enumerate(tasks):
        fast, slow = results[2 * index], results[2 * index + 1]
        label = f"{family}/{task.metadata['split']}/{task.metadata['variant']} ({task.id})"
        assert fast.ok and slow.ok, (
            f"{label}: fast {fast.status.value} {fast.error}, slow {slow.status.value}"
        )
        ratio = slow.cost.cpu_ns / max(fast.cost.cpu_ns, 1)
        assert ratio >= SPEEDUP_CLIP, (
            f"{label}: the slow code costs only {ratio:.1f}x the fast one (< speedup_clip {SPEEDUP_CLIP}), "
            "so a copy of it would earn efficiency reward; make the stress inputs bigger"
        )
        copy_speedup = fast.cost.cpu_ns / slow.cost.cpu_ns
        assert efficiency_score(copy_speedup, SPEEDUP_CLIP) == -1.0, label
