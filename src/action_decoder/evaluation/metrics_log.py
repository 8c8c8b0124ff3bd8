"""The training loop's metrics log, `metrics.jsonl` in a run dir: reading it.

The metrics log (training/loggers.py writes it, one JSON object a line) holds four kinds of records, each with
its epoch, step (micro-steps trained) and optimizer_step (the x of every curve):
  split "train"       per logged step: stage, lr, loss {total, action, key, modifier, click, ...}, clips_per_s
  split "train_epoch" per epoch: training averages, loss {...} and metrics {action_acc, ...}
  split "val"         per validation (every train.val_every_steps and at each epoch's end): loss {...}, metrics {...}
  split "sync"        per epoch of a multi-process run: one hash of the trained weights per rank
Curriculum stage switches show as the `stage` field changing between epochs; every plot marks them.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a metrics log; `path` is the file or the run directory holding `metrics.jsonl`.

    A malformed line is an error naming file and line, except a cut-off LAST line (a run killed while
    writing), which is skipped with a warning so the rest of the run still plots.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}")
    lines = path.read_text().splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if i == last:
                warnings.warn(f"{path}:{i + 1}: skipped cut-off last line ({err.msg})", stacklevel=2)
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {err.msg}") from None
        if not isinstance(rec, dict) or "split" not in rec:
            raise ValueError(f"{path}:{i + 1}: expected a JSON object with a 'split' field")
        records.append(rec)
    return records


def epoch_records(records: Iterable[dict], split: str) -> list[dict]:
    """One record per epoch of `split`, sorted; a resumed run that logged an epoch twice keeps the last."""
    by_epoch: dict[int, dict] = {}
    for rec in records:
        if rec.get("split") == split and rec.get("epoch") is not None:
            by_epoch[int(rec["epoch"])] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


def step_records(records: Iterable[dict], split: str = "train") -> list[dict]:
    """Records of `split` carrying a step, one per step, sorted; a step logged twice (resume) keeps the last.
    `val` records by step are the validation curve: several a epoch with train.val_every_steps."""
    by_step: dict[int, dict] = {}
    for rec in records:
        if rec.get("split") == split and rec.get("step") is not None:
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def optimizer_step(rec: dict) -> int:
    """A record's optimizer step, the x of every curve (`step` counts micro-steps: more at train.grad_accum > 1)."""
    return int(rec["optimizer_step"] if rec.get("optimizer_step") is not None else rec["step"])


def epoch_ends(records: Iterable[dict]) -> dict[int, int]:
    """{epoch: the last optimizer step it trained}: the per-epoch summary's, else the epoch's last logged step's."""
    records = list(records)
    ends: dict[int, int] = {}
    for rec in step_records(records):
        ends[int(rec["epoch"])] = optimizer_step(rec)
    for rec in epoch_records(records, "train_epoch"):
        if rec.get("step") is not None:
            ends[int(rec["epoch"])] = optimizer_step(rec)
    return dict(sorted(ends.items()))
