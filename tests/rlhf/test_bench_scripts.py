"""The GPU benchmark scripts run end to end on a CPU with --tiny (that they work, not how fast)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

torch.set_num_threads(2)


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name",
    [
        "bench_rollout",
        "bench_vs_trl",
        "bench_weight_sync",
        "bench_learner",
        "bench_shared_prompts",
        "bench_cpu_memory",
        "bench_reward_stream",
    ],
)
def test_help_says_how_long_it_takes(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _script(name).main(["--help"])
    assert exit_info.value.code == 0
    assert "Time:" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_rollout_tiny(tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    _script("bench_rollout").main(["--tiny", "--unpacked", "--json", str(out)])
    result = json.loads(out.read_text())
    assert len(result["engine_check"]) == 4
    assert all(check["tokens_match"] for check in result["engine_check"].values()), result["engine_check"]
    shape = result["shapes"][0]
    assert shape["rows"] == 4 and shape["new_tokens"] == 12
    for key in ("generate", "fast", "generate_merged"):
        assert shape[key]["tokens_per_s"] > 0
    assert 0 < shape["fast"]["fraction_of_bound"] < 1
    assert shape["speedup_vs_generate"] > 0
    assert shape["variants"]["fast_unpacked/steps_per_sync=4"]["tokens_per_s"] > 0


@pytest.mark.slow
def test_bench_vs_trl_tiny(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    out = tmp_path / "trl.json"
    _script("bench_vs_trl").main(["--tiny", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["effirl"]["median_step_s"] > 0 and result["trl"]["median_step_s"] > 0
    assert result["trl_over_effirl"] > 0
    # Both did the same work: full-length completions of the same budget.
    assert result["effirl"]["completion_len_mean"] == pytest.approx(
        result["trl"]["completion_len_mean"], abs=2
    )
    # The engine's log-prob pass gives what the learner computes (float32 on CPU).
    check = result["effirl"]["logprob_max_abs_diff"]
    assert check["engine_pass_vs_learner"] <= 1e-5 and check["engine_pass_same_budget_vs_learner"] <= 1e-5
    assert check["returned_vs_learner"] <= (1e-4 if check["on_policy"] else 1e-5)
    assert result["effirl"]["ratio_max"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_bench_weight_sync_tiny(tmp_path: Path) -> None:
    out = tmp_path / "sync.json"
    _script("bench_weight_sync").main(["--tiny", "--no-ray", "--json", str(out)])
    shape = json.loads(out.read_text())["shapes"][0]
    assert shape["merged_bytes"] > shape["adapter_bytes"] > 0
    assert shape["adapter_sync_max_abs_logit_diff"] <= 1e-5
    assert shape["merged_sync_max_abs_logit_diff"] <= 1e-5


@pytest.mark.slow
def test_bench_learner_tiny(tmp_path: Path) -> None:
    out = tmp_path / "learner.json"
    _script("bench_learner").main(["--tiny", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["real_tokens"] < result["padded_tokens"]
    assert set(result["variants"]) == {
        "padded",
        "padded_chunked",
        "packed_chunked",
        "padded_chunked_checkpointing",
    }
    assert all(v["ms"] > 0 for v in result["variants"].values())


def test_bench_shared_prompts_tiny(tmp_path: Path) -> None:
    out = tmp_path / "shared.json"
    _script("bench_shared_prompts").main(["--tiny", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["rows"] == 16 and result["tokens_shared"] < result["tokens_full"]
    assert result["step_s_full"] > 0 and result["step_s_shared"] > 0
    assert result["gradient_difference"] < 1e-5  # fp32 on CPU: the same gradient up to rounding


@pytest.mark.slow
def test_bench_reward_stream_tiny(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    result = _script("bench_reward_stream").main(["--tiny", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    after, streamed = result["medians"]["after"], result["medians"]["streamed"]
    during = "reward_stream/scored_during_generation"
    assert after[during] == 0 < streamed[during]
    for median in (after, streamed):
        assert 0 < median["time_reward_exposed_s"] <= median["time_reward_s"] < median["time_step_s"]
    assert after["time_reward_exposed_s"] == after["time_reward_s"]  # nothing ran beside generation


@pytest.mark.slow
def test_bench_cpu_memory_compares_variants_in_alternating_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "memory.json"
    result = _script("bench_cpu_memory").main(
        [
            "--tiny",
            "--json",
            str(out),
            "--rounds",
            "2",
            "--variant",
            "plain:train.map_activations=false",
            "--variant",
            "mapped:train.map_activations=true,train.micro_batch_tokens=256",
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["variants"] == {
        "plain": ["train.map_activations=false"],
        "mapped": ["train.map_activations=true", "train.micro_batch_tokens=256"],
    }
    assert [len(runs) for runs in result["runs"].values()] == [2, 2]
    # Ratios to the first variant, of each median.
    ratios = result["ratios_to_first"]
    assert set(ratios) == {"mapped"}
    for key, ratio in ratios["mapped"].items():
        assert ratio == pytest.approx(result["medians"]["mapped"][key] / result["medians"]["plain"][key])
    for median in result["medians"].values():
        assert median["peak_rss_gib"] > 0.1 and median["time_train_s"] > 0  # a whole training process
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[memory]")]
    assert [line.split()[1] for line in printed] == ["plain", "mapped", "mapped", "plain"]


def test_bench_cpu_memory_variants_are_checked() -> None:
    bench = _script("bench_cpu_memory")
    assert bench.parse_variant("a:train.bf16=true,train.seed=2") == ("a", ["train.bf16=true", "train.seed=2"])
    assert bench.parse_variant("recipe:") == ("recipe", [])
    for bad in ("no-colon", ":train.bf16=true", "a:train.bf16"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_variant(bad)
    with pytest.raises(SystemExit):
        bench.parse_args(["--variant", "a:train.seed=1", "--variant", "a:train.seed=2"])  # one label twice
    with pytest.raises(SystemExit):
        bench.parse_args(["--variant", "a:train.seed=1"])  # nothing to compare with
    defaults = bench.parse_args([])
    assert [label for label, _ in defaults.variant] == ["heap", "mapped"]


def test_table_rows_append_under_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _script("benchmark_table")
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nSome prose.\n")
    monkeypatch.setattr(
        "sys.argv",
        [
            str(SCRIPTS / "bench_rollout.py"),
            "--shapes",
            "tiny",
            "--json",
            "/x/y/out.json",
            "--markdown",
            str(path),
        ],
    )
    command = table.reproduce_command()
    assert command == "python scripts/bench_rollout.py --shapes tiny --json out.json"
    table.append_row(path, table.table_row("rollout | tiny", "cpu", "1 tok/s", command, date="2026-01-02"))
    table.append_row(path, table.table_row("rollout", "cpu", "2 tok/s", command, date="2026-01-03"))
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nSome prose.\n\n" + table.HEADER)
    rows = text.split(table.HEADER)[1].splitlines()
    cell = f"`{command}`"
    assert rows == [
        f"| 2026-01-02 | rollout \\| tiny | cpu | 1 tok/s | {cell} |",
        f"| 2026-01-03 | rollout | cpu | 2 tok/s | {cell} |",
    ]
    # Text after the table stays after it: a new row goes to the table's end, not the file's.
    path.write_text(text + "\n## Not measured yet\n\n- something\n")
    table.append_row(path, table.table_row("learner", "cpu", "3 s", command, date="2026-01-04"))
    after = path.read_text().split(table.HEADER)[1]
    assert after.splitlines()[2] == f"| 2026-01-04 | learner | cpu | 3 s | {cell} |"
    assert after.endswith("\n\n## Not measured yet\n\n- something\n")


@pytest.mark.parametrize(
    "name",
    [
        "bench_rollout",
        "bench_vs_trl",
        "bench_weight_sync",
        "bench_learner",
        "bench_shared_prompts",
        "bench_cpu_memory",
        "bench_reward_stream",
    ],
)
def test_the_table_is_written_only_when_asked(name: str) -> None:
    module = _script(name)
    assert module.parse_args([]).markdown is None
    assert module.parse_args(["--markdown"]).markdown == SCRIPTS.parent / "docs" / "benchmarks.md"
    assert module.parse_args(["--markdown", "t.md"]).markdown == Path("t.md")


def test_a_bench_run_leaves_the_checkout_as_it_was(tmp_path: Path) -> None:
    def state() -> tuple[str, bytes]:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=SCRIPTS.parent,
            capture_output=True,
            text=True,
        )
        return status.stdout, (SCRIPTS.parent / "docs" / "benchmarks.md").read_bytes()

    before = state()
    small = ["--executions", "10", "--baseline-executions", "2", "--measurements", "2", "--work", "1000"]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_sandbox.py"), *small, "--json", str(tmp_path / "b.json")],
        cwd=SCRIPTS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert state() == before and json.loads((tmp_path / "b.json").read_text())


def test_the_reproducing_command_drops_output_locations(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _script("benchmark_table")
    argv = [
        str(SCRIPTS / "bench_x.py"),
        "--markdown",
        "--tiny",
        "--markdown",
        "/tmp/t.md",
        "--json",
        "/a/b.json",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    assert table.reproduce_command() == "python scripts/bench_x.py --tiny --json b.json"
