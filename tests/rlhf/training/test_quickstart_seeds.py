"""scripts/quickstart_seeds.py: real runs of the smoke recipe under two seeds, and its verdict."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "quickstart_seeds_under_test", REPO / "scripts/quickstart_seeds.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(seed: int, start: float | None, end: float | None) -> dict:
    return {"seed": seed, "start": {"pass_rate": start}, "end": {"pass_rate": end}}


def test_learning_must_beat_the_spread_of_the_final_values() -> None:
    verdict = _script().verdict
    clear = verdict([_row(0, 0.2, 0.9), _row(1, 0.2, 0.8), _row(2, 0.2, 0.85)], "pass_rate")
    assert (
        clear["learns"]
        and clear["spread"] == pytest.approx(0.1)
        and clear["gain_mean"] == pytest.approx(0.65)
    )
    noisy = verdict([_row(0, 0.2, 0.5), _row(1, 0.2, 0.2), _row(2, 0.2, 0.3)], "pass_rate")
    assert not noisy["learns"]  # mean gain 0.13 < spread 0.3
    one_seed_worse = verdict([_row(0, 0.2, 0.9), _row(1, 0.2, 0.9), _row(2, 0.2, 0.1)], "pass_rate")
    assert not one_seed_worse["learns"]
    # no passing sample: no speedup, counted as 0
    assert verdict([_row(0, None, 1.5), _row(1, None, 1.4)], "pass_rate")["start_mean"] == 0.0


@pytest.mark.slow
def test_two_seeds_of_the_smoke_recipe_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = str(REPO / "rlhf" / "recipes" / "smoke.yaml")
    status = _script().main(
        [
            "--recipe",
            smoke,
            "--seeds",
            "3",
            "4",
            "--parallel",
            "2",
            "--out",
            str(tmp_path),
            "eval_at_start=true",
        ]
    )
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert [row["seed"] for row in summary["seeds"]] == [3, 4]
    for row in summary["seeds"]:
        assert row["start"]["step"] == 0 and row["end"]["step"] == 2  # the smoke recipe's two steps
        assert (tmp_path / f"seed-{row['seed']}" / "checkpoints" / "step-2").is_dir()
    assert set(summary["verdicts"]) == {"pass_rate", "speedup_mean"}
    # A random tiny model never writes passing code (pass rate 0 and no speedup at both ends), so it
    # learns nothing, and the script must say so in its verdicts and through its exit status.
    assert all(row[end]["pass_rate"] == 0 for row in summary["seeds"] for end in ("start", "end"))
    assert not any(v["learns"] for v in summary["verdicts"].values())
    assert status == 1
    assert "| seed | minutes |" in capsys.readouterr().out


def test_a_failing_run_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="seed 0 failed"):
        _script().main(
            [
                "--recipe",
                str(REPO / "rlhf" / "recipes" / "smoke.yaml"),
                "--seeds",
                "0",
                "--out",
                str(tmp_path),
                "rollout.temprature=1",
            ]
        )
    assert "did you mean" in (tmp_path / "seed-0" / "train.log").read_text()


@pytest.mark.slow
def test_a_spent_budget_stops_the_runs_and_resume_finishes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _script()
    common = ["--recipe", "smoke", "--seeds", "0", "--out", str(tmp_path)]
    overrides = ["eval_at_start=true", "save_every=1"]
    # The smoke run needs several seconds to load; a budget of 0.6 s stops it before its end.
    assert script.main([*common, "--budget-min", "0.01", *overrides]) == 3
    stopped = json.loads((tmp_path / "seed-0" / "seeds_state.json").read_text())
    assert not stopped["done"] and stopped["seconds"] > 0
    assert not (tmp_path / "seeds.json").exists()
    assert "--resume" in capsys.readouterr().out

    status = script.main([*common, "--resume", *overrides])
    assert status == 1  # a random tiny model does not learn (see above)
    finished = json.loads((tmp_path / "seed-0" / "seeds_state.json").read_text())
    assert finished["done"] and finished["seconds"] > stopped["seconds"]
    summary = json.loads((tmp_path / "seeds.json").read_text())
    (row,) = summary["seeds"]
    assert [point["step"] for point in row["curve"]] == [0, 2]
    assert row["minutes"] == pytest.approx(finished["seconds"] / 60)
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000

    # A finished seed is not run again; --report-only rereads the runs and reports the same rows.
    assert script.main([*common, "--resume", *overrides]) == status
    assert "finished earlier" in capsys.readouterr().out
    (tmp_path / "seeds.json").unlink()
    assert script.main([*common, "--report-only"]) == status
    assert json.loads((tmp_path / "seeds.json").read_text())["seeds"] == summary["seeds"]
