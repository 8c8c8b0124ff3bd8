"""Where metrics go: `<run_dir>/metrics.jsonl` always (main process), wandb when `logger.wandb` is set.

metrics.jsonl holds one JSON object a line: {"split": "train" | "train_epoch" | "val" | "sync", "epoch", "step",
"stage", "loss": {...}, "metrics": {...}, "lr", "clips_per_s", ...}; evaluation/plots.py reads it.
"sync" lines (multi-process runs, once an epoch) hold `rank_weight_hashes`: one hash of the trained weights per rank.
"""
from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; a null marks the value as missing
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def wandb_identity(cfg: DictConfig, run_dir: Path) -> tuple[str, str]:
    """(group, name) of the run in wandb. A sweep's runs (train.py -m, any launcher or sweeper) share one group, the
    sweep dir, and each is named by its overrides (`backbone.lora.alpha=32,backbone.lora.r=8`); a single run is
    grouped by experiment and named by its run dir. wandb's own WANDB_RUN_GROUP / WANDB_NAME win when set."""
    import os

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    group, name = cfg.experiment_name, Path(run_dir).name
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hc = HydraConfig.get()
        group, name = f"{cfg.experiment_name}:{hc.sweep.dir}", hc.job.override_dirname or name
    return os.environ.get("WANDB_RUN_GROUP", group), os.environ.get("WANDB_NAME", name)


class MetricsLogger:
    def __init__(self, accelerator, run_dir: Path, cfg: DictConfig, wandb_run_id: str | None = None):
        self.accelerator = accelerator
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb_cfg = cfg.logger.get("wandb")
        # Kept in the resume state so a resumed run continues the same wandb run.
        self.wandb_run_id = wandb_run_id or uuid.uuid4().hex[:12]
        if self.wandb_cfg:
            w = self.wandb_cfg
            accelerator.init_trackers(
                project_name=w.project,
                config=OmegaConf.to_container(cfg, resolve=True),
                init_kwargs={"wandb": {"id": self.wandb_run_id, "resume": "allow", "entity": w.get("entity"),
                                       "mode": w.get("mode", "online"), "dir": str(run_dir),
                                       **dict(zip(("group", "name"), wandb_identity(cfg, run_dir)))}},
            )

    def log(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        record = _clean(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_cfg:
            flat = {"epoch": record.get("epoch"), "stage_index": record.get("stage_index")}
            split = record["split"]
            for group in ("loss", "metrics"):
                for k, v in (record.get(group) or {}).items():
                    if isinstance(v, (int, float)) and v is not None:
                        flat[f"{split}/{group}/{k}"] = v
            for k in ("lr", "clips_per_s"):
                if record.get(k) is not None:
                    flat[f"{split}/{k}"] = record[k]
            self.accelerator.log(flat, step=record["step"])
