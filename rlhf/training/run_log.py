"""Where a run's numbers go: metrics.jsonl (always), TensorBoard and Weights & Biases (optional)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"


class RunLog:
    """Appends one JSON object per step to ``metrics.jsonl`` and mirrors it to the enabled sinks.

    On resume, lines for steps after the checkpoint are dropped first, so the file always describes
    one consistent history. A new run refuses a folder whose files already hold records.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "effirl",
        run_name: str = "run",
        config: Mapping[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.output_dir / METRICS_FILE
        self.eval_path = self.output_dir / EVAL_FILE
        for path in (self.metrics_path, self.eval_path):
            if resume_step is not None:
                truncate_after(path, resume_step)
            elif path.is_file() and path.stat().st_size:
                # A new run never replaces another run's records (rlhf/training/run_folder.py moves
                # them aside).
                raise FileExistsError(
                    f"{path} holds records of an earlier run; resume that run, or move it aside "
                    "(`effirl train --overwrite` does)"
                )
        self._tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.output_dir / "tensorboard"))
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise RuntimeError(
                    "log_wandb is true but wandb is not installed: `pip install 'effirl[wandb]'` or set "
                    "log_wandb=false"
                ) from None
            self._wandb = wandb_module.init(project=wandb_project, name=run_name, config=dict(config or {}))

    def log(self, step: int, metrics: Mapping[str, float], *, kind: str = "train") -> None:
        """Record ``metrics`` of ``step``; ``kind="eval"`` goes to eval.jsonl and an ``eval/`` prefix."""
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        path = self.metrics_path if kind == "train" else self.eval_path
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        prefix = "" if kind == "train" else f"{kind}/"
        if self._tensorboard is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tensorboard.add_scalar(prefix + key, value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log({prefix + k: v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_after(path: Path, step: int) -> None:
    """Drop rows with a step after ``step`` (the history beyond a resumed checkpoint)."""
    rows = read_metrics(path)
    kept = [row for row in rows if int(row.get("step", 0)) <= step]
    if len(kept) != len(rows):
        path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
