"""What the loop carries across steps and saves for resuming (`resume/trainer_state.json`)."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunLayout:
    """What a saved data position means: the same step of an epoch is another set of clips under another world
    size, batch or accumulation, or over re-prepared data. A resume under a changed layout stops, naming it."""

    world_size: int
    batch_size: int
    grad_accum: int
    data_sha256: dict[str, str]  # prepared split file -> sha256 of its bytes

    @classmethod
    def of(cls, world_size: int, batch_size: int, grad_accum: int, split_files: list[Path]) -> "RunLayout":
        return cls(world_size, batch_size, grad_accum, {str(p): file_sha256(p) for p in split_files})

    def changes_from(self, saved: "RunLayout") -> list[str]:
        """One line per setting that differs from `saved` (the run being resumed), with the way back."""
        out = []
        if saved.world_size != self.world_size:
            out.append(f"world size {saved.world_size} -> {self.world_size}: launch {saved.world_size} processes "
                       f"(accelerate launch --num_processes {saved.world_size} ...)")
        if saved.batch_size != self.batch_size:
            out.append(f"train.batch_size {saved.batch_size} -> {self.batch_size}: set train.batch_size={saved.batch_size}")
        if saved.grad_accum != self.grad_accum:
            out.append(f"train.grad_accum {saved.grad_accum} -> {self.grad_accum}: set train.grad_accum={saved.grad_accum}")
        for path in sorted(set(saved.data_sha256) | set(self.data_sha256)):
            if saved.data_sha256.get(path) != self.data_sha256.get(path):
                out.append(f"{path} is not the file the run started on (sha256 {saved.data_sha256.get(path, 'absent')[:12]} "
                           f"-> {self.data_sha256.get(path, 'absent')[:12]}): restore it, or start a new run")
        return out


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (== train.epochs when the run is done)
    step_in_epoch: int = 0  # micro-steps of that epoch already trained
    global_step: int = 0
    best_value: float = -1.0  # of train.best_metric
    best_epoch: int | None = None
    best_step: int | None = None  # global step of that validation (several a epoch with train.val_every_steps)
    stage: str = ""
    nonfinite_skipped: int = 0
    wandb_run_id: str | None = None
    # Running sums of the epoch in progress, so a resumed epoch's summary covers all of its steps:
    epoch_loss_sums: dict[str, float] = field(default_factory=dict)  # rank 0's per-head train losses
    epoch_loss_count: int = 0
    epoch_metric_counts: dict[str, Any] | None = None  # ActionMetrics.state() summed over ranks (lists)
    epoch_skipped_clips: int = 0  # corrupt clips skipped, all ranks
    layout: RunLayout | None = None

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step_in_epoch = epoch, 0
        self.epoch_loss_sums, self.epoch_loss_count = {}, 0
        self.epoch_metric_counts, self.epoch_skipped_clips = None, 0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, RunLayout(**value) if key == "layout" and value is not None else value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
