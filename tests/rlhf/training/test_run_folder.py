"""One run per output folder: a used folder is refused unless --resume or --overwrite, --overwrite
moves the earlier run aside (nothing is deleted), and no command picks up another run's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf.cli import main
from rlhf.config import ConfigError
from rlhf.training.checkpoint import (
    CheckpointError,
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from rlhf.training.export import ExportError, export_checkpoint, read_export_source
from rlhf.training.run_folder import RUN_FILE, continue_run_folder, read_run_id, start_run_folder
from rlhf.training.run_log import RunLog, read_metrics

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "rlhf" / "recipes" / "smoke.yaml")
QUICK = ["train.steps=1", "eval_at_end=false"]


def fake_checkpoint(run_dir: Path, step: int, run_id: str | None) -> Path:
    extra = {} if run_id is None else {"run_id": run_id}
    state = TrainerState(step=step, data_position={}, base_model="tiny:llama", extra=extra)
    adapter = {"base_model.model.layer.lora_A.weight": torch.zeros(2, 4)}
    return save_checkpoint(run_dir, state, adapter=adapter, adapter_config={"r": 2})


def test_a_used_folder_is_refused_and_overwrite_moves_the_earlier_run_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start_run_folder(run)
    assert read_run_id(run) == first.run_id and first.moved_to is None
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "train.log").write_text("a script's own log\n")  # not a run's record: it stays
    with pytest.raises(
        ConfigError, match=r"already holds a run \(run.json, metrics.jsonl\).*--resume.*--overwrite"
    ):
        start_run_folder(run)
    second = start_run_folder(run, overwrite=True)
    assert second.run_id != first.run_id and second.moved_to.name.startswith("run.old-")
    assert read_metrics(second.moved_to / "metrics.jsonl") == [{"step": 1}]
    assert read_run_id(second.moved_to) == first.run_id
    assert sorted(p.name for p in run.iterdir()) == [RUN_FILE, "train.log"]
    assert json.loads((run / RUN_FILE).read_text())["earlier_run_moved_to"] == str(second.moved_to)
    # A new run's log never replaces records left in its folder.
    (run / "eval.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(FileExistsError, match="records of an earlier run"):
        RunLog(run)


def test_no_command_reads_a_checkpoint_another_run_left_in_the_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ours = start_run_folder(run)
    mine = fake_checkpoint(run, 1, ours.run_id)
    assert load_checkpoint(mine).state.extra["run_id"] == ours.run_id
    foreign = fake_checkpoint(run, 2, "0123456789ab")  # e.g. copied in from another run
    with pytest.raises(CheckpointError, match=f"written by run 0123456789ab, but .* holds run {ours.run_id}"):
        load_checkpoint(foreign)
    with pytest.raises(ExportError, match="mixes two runs"):
        read_export_source(run)  # the newest checkpoint of the folder is the foreign one
    with pytest.raises(CheckpointError, match="mixes two runs"):
        load_checkpoint(list_checkpoints(run)[-1])
    # Checkpoints and folders from before run ids load as before, and a resumed old folder gets an id.
    legacy = tmp_path / "legacy"
    fake_checkpoint(legacy, 3, None)
    assert load_checkpoint(list_checkpoints(legacy)[-1]).state.step == 3
    assert continue_run_folder(legacy).run_id == read_run_id(legacy)


def test_train_refuses_a_used_folder_overwrites_on_request_and_resumes_the_same_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", SMOKE, f"output_dir={run}", "lora.rank=4", *QUICK]) == 0
    first_id = read_run_id(run)
    (checkpoint,) = list_checkpoints(run)
    assert load_checkpoint(checkpoint).state.extra["run_id"] == first_id
    assert main(["train", SMOKE, f"output_dir={run}", "lora.rank=2", *QUICK]) == 2  # refused: nothing changes
    assert read_run_id(run) == first_id and read_metrics(run / "metrics.jsonl")
    assert main(["train", SMOKE, f"output_dir={run}", "lora.rank=2", *QUICK, "--overwrite"]) == 0
    (aside,) = tmp_path.glob("run.old-*")
    assert read_run_id(aside) == first_id and [r["step"] for r in read_metrics(aside / "metrics.jsonl")] == [
        1
    ]
    assert (
        json.loads((aside / "checkpoints" / "step-1" / "adapter" / "adapter_config.json").read_text())["r"]
        == 4
    )
    second_id = read_run_id(run)
    assert second_id != first_id
    # Export takes the new run's adapter (rank 2), never the earlier run's.
    export_checkpoint(run, out=tmp_path / "exported")
    assert json.loads((tmp_path / "exported" / "adapter_config.json").read_text())["r"] == 2
    # --resume continues this run: same id, the history goes on.
    assert (
        main(
            [
                "train",
                SMOKE,
                f"output_dir={run}",
                "lora.rank=2",
                "train.steps=2",
                "eval_at_end=false",
                "--resume",
            ]
        )
        == 0
    )
    assert read_run_id(run) == second_id
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert load_checkpoint(list_checkpoints(run)[-1]).state.extra["run_id"] == second_id
    assert main(["train", SMOKE, f"output_dir={run}", "--resume", "--overwrite"]) == 2  # contradictory
