"""The synthetic family catalogue: held-out families stay out of training, and in every family both
references pass and the fast one is at least 5x cheaper than the slow one on the stress inputs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewards.datasets import (
    check_training_tasks,
    heldout_splits,
    load_tasks,
    task_from_record,
    task_to_record,
)
from rewards.synthetic import FAMILIES, HELDOUT_FAMILIES, family_names, synthetic_tasks
from rewards.tasks import Task
from sandbox import FunctionJob, Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parents[2]
# What the reward needs: a copy of the slow code earns nothing when it costs speedup_clip (4) times the
# fast reference; the families are built to clear 5x.
MIN_RATIO = 5.0


@pytest.fixture(scope="module")
def representatives() -> list[Task]:
    """The first task of every family (test_synthetic.py checks every variant's references agree)."""
    train = synthetic_tasks("train", n=len(family_names("train")))
    return train + synthetic_tasks("heldout_families", n=len(HELDOUT_FAMILIES))


@pytest.fixture(scope="module")
def counter() -> Iterator[Sandbox]:
    """A sandbox that also counts Python line events (deterministic costs)."""
    sandbox = Sandbox(SandboxConfig(workers=2, timeout_s=60.0, count_python_events=True))
    yield sandbox
    sandbox.close()


def test_at_least_32_families_of_which_8_are_held_out() -> None:
    assert len(FAMILIES) >= 32
    assert len(HELDOUT_FAMILIES) >= 8 and set(FAMILIES) >= HELDOUT_FAMILIES
    assert set(family_names("train")) == set(family_names("heldout")) == set(FAMILIES) - HELDOUT_FAMILIES
    assert set(family_names("heldout_families")) == HELDOUT_FAMILIES
    assert {f.difficulty for name, f in FAMILIES.items() if name in HELDOUT_FAMILIES} >= {"easy", "hard"}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_held_out_family_reaches_train_or_heldout(seed: int) -> None:
    # Structural (the training splits only draw from family_names("train")); checked on samples.
    for dataset in ("synthetic", "synthetic_optimise"):
        for n in (1, 2 * len(FAMILIES) + 3):
            for split in (None, "train", "heldout"):
                tasks = load_tasks(dataset, split=split, limit=n, seed=seed)
                assert tasks and not {t.metadata["family"] for t in tasks} & HELDOUT_FAMILIES
            unseen = load_tasks(dataset, split="heldout_families", limit=n, seed=seed)
            assert unseen and {t.metadata["family"] for t in unseen} <= HELDOUT_FAMILIES
            assert {t.metadata["split"] for t in unseen} == {"heldout_families"}
    for split in ("train", "heldout"):
        every = synthetic_tasks(split, seed=seed, families=family_names("train")[-3:])
        assert every and not {t.metadata["family"] for t in every} & HELDOUT_FAMILIES


def test_asking_a_training_split_for_a_held_out_family_is_an_error() -> None:
    held = sorted(HELDOUT_FAMILIES)[0]
    for split in ("train", "heldout"):
        with pytest.raises(ValueError, match="are not in split"):
            synthetic_tasks(split, families=[held])
    with pytest.raises(ValueError, match="are not in split 'heldout_families'"):
        synthetic_tasks("heldout_families", families=["pair_sum"])
    every = synthetic_tasks("heldout_families")
    assert {t.metadata["family"] for t in every} == HELDOUT_FAMILIES
    assert len({t.prompt for t in every}) == len(every)


def test_a_held_out_family_renders_each_task_from_one_side_of_its_pools() -> None:
    for task in synthetic_tasks("heldout_families"):
        family = FAMILIES[task.metadata["family"]]
        side = "train" if task.entry_point in family.function_names.train else "heldout"
        assert task.metadata["variant"] in {v.key for v in family.variants.of(side)}, task.id
    variants = {(t.metadata["family"], t.metadata["variant"]) for t in synthetic_tasks("heldout_families")}
    assert variants == {
        (name, v.key)
        for name in HELDOUT_FAMILIES
        for v in FAMILIES[name].variants.train + FAMILIES[name].variants.heldout
    }


def test_the_registry_declares_the_held_out_splits_and_training_refuses_them(tmp_path: Path) -> None:
    for dataset in ("synthetic", "synthetic_optimise"):
        assert heldout_splits(dataset) == ("heldout", "heldout_families")
        check_training_tasks(load_tasks(dataset, limit=40), dataset, None)
        check_training_tasks((), dataset, "train")
        for split in heldout_splits(dataset):
            with pytest.raises(ValueError, match="held out for evaluation"):
                check_training_tasks((), dataset, split)
    # Held-out tasks saved to a task file keep their source and split, and are refused too.
    saved = [task_from_record(task_to_record(t)) for t in synthetic_tasks("heldout_families", n=3)]
    with pytest.raises(ValueError, match="held-out split 'heldout_families' of 'synthetic'"):
        check_training_tasks(saved)
    assert heldout_splits("humanevalplus") == () and heldout_splits(tmp_path / "x.jsonl") == ()


def test_both_references_pass_and_the_fast_one_is_5x_cheaper_on_the_stress_inputs(
    representatives: list[Task], counter: Sandbox, box: Sandbox
) -> None:
    """Line events (deterministic) compare the two where both do their work in Python; where one
    works inside C builtins (``cost_in_builtins``), events cannot see it, so CPU time (minimum of
    3 runs) compares them there."""
    assert {t.metadata["family"] for t in representatives} == set(FAMILIES)
    jobs, by_events = [], []
    for task in representatives:
        small = task.function_tests
        stress = task.perf_tests
        assert small and stress, task.id
        events = not FAMILIES[task.metadata["family"]].cost_in_builtins
        by_events.append(events)
        for code in (task.reference, task.metadata["slow_reference"]):
            jobs.append((counter, FunctionJob(code, task.entry_point, small)))
            jobs.append(
                (
                    counter if events else box,
                    FunctionJob(code, task.entry_point, stress, repeats=1 if events else 3),
                )
            )
    futures = [sandbox.submit(job) for sandbox, job in jobs]
    results = [f.result() for f in futures]
    failed = [(job.entry_point, r.status.value, r.error) for (_, job), r in zip(jobs, results) if not r.ok]
    assert failed == []
    low = []
    for i, (task, events) in enumerate(zip(representatives, by_events)):
        _, fast_stress, _, slow_stress = results[4 * i : 4 * i + 4]
        if events:
            ratio = slow_stress.cost.python_events / max(fast_stress.cost.python_events, 1)
        else:
            ratio = slow_stress.cost.cpu_ns / max(fast_stress.cost.cpu_ns, 1)
        if ratio < MIN_RATIO:
            low.append(
                (task.metadata["family"], task.metadata["variant"], "events" if events else "cpu", ratio)
            )
    assert low == []


def test_cost_script_checks_chosen_families_and_writes_json_only_when_asked(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "check_synthetic_costs.py"
    before = sorted(p.name for p in tmp_path.iterdir())
    run = subprocess.run(
        [sys.executable, str(script), "--in-process", "--repeats", "1", "--families", "mod_power", "set_bits",
         "--markdown"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "| set_bits | heldout_families |" in run.stdout and "| mod_power | train, heldout |" in run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    out = tmp_path / "costs.json"
    run = subprocess.run(
        [sys.executable, str(script), "--in-process", "--repeats", "1", "--families", "mod_power",
         "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and out.is_file()
    assert (
        "nope"
        in subprocess.run(
            [sys.executable, str(script), "--families", "nope"], capture_output=True, text=True, timeout=60
        ).stderr
    )
