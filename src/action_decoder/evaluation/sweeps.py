"""Sweep tables: one row per run of a sweep (its overrides, its best validation epoch), as Markdown and as
series for `plots.plot_sweep`."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics_log import METRICS_FILE, epoch_records, read_metrics


def find_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every folder under `root` (itself included) that holds a metrics log: the runs of a sweep."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(METRICS_FILE))


def read_overrides(run_dir: str | os.PathLike) -> dict[str, str]:
    """The command-line overrides of a Hydra run (`.hydra/overrides.yaml`), as {key: value}; {} if none."""
    import yaml

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of 'key=value' overrides")
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ValueError(f"{path}: override '{item}' has no '='")
        out[key.lstrip("+~")] = value
    return out


def sweep_table(run_dirs: Iterable[str | os.PathLike], metric: str = "action_acc") -> list[dict]:
    """One row per run: run dir, its overrides, and the validation epoch with the best `metric`
    (ties: the earliest) with that epoch's action acc, macro-F1 and click hit rate.

    Rows are sorted best first; runs without a metrics log or validation records are kept (at the
    end, with a `status`) so a crashed sweep member is visible rather than missing.
    """
    rows = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        row: dict[str, Any] = {
            "run": str(run_dir),
            "overrides": read_overrides(run_dir),
            "best_epoch": None,
            "val_epochs": 0,
            "action_acc": None,
            "action_macro_f1": None,
            "click_hit_rate": None,
            "status": "ok",
        }
        if not (run_dir / METRICS_FILE).is_file():
            row["status"] = "no metrics.jsonl"
            rows.append(row)
            continue
        val = [r for r in epoch_records(read_metrics(run_dir), "val") if (r.get("metrics") or {}).get(metric) is not None]
        row["val_epochs"] = len(val)
        if not val:
            row["status"] = "no validation epoch"
            rows.append(row)
            continue
        best = max(val, key=lambda r: (r["metrics"][metric], -r["epoch"]))
        row["best_epoch"] = best["epoch"]
        for key in ("action_acc", "action_macro_f1", "click_hit_rate"):
            row[key] = best["metrics"].get(key)
        if metric not in row:
            row[metric] = best["metrics"][metric]
        rows.append(row)
    rows.sort(key=lambda r: (r.get(metric) is None, -(r.get(metric) or 0.0)))
    return rows


def write_sweep_table(rows: Sequence[dict], out_md: str | os.PathLike) -> Path:
    """Markdown table of `sweep_table` rows: one column per override that differs between runs
    (overrides shared by all runs are listed once above the table). Returns the written path."""
    all_keys: list[str] = []
    for row in rows:
        for key in row["overrides"]:
            if key not in all_keys:
                all_keys.append(key)
    varying = [k for k in all_keys if len({r["overrides"].get(k) for r in rows}) > 1]
    shared = {k: rows[0]["overrides"][k] for k in all_keys if k not in varying}
    runs = [Path(r["run"]) for r in rows]
    base = Path(os.path.commonpath(runs)) if len(runs) > 1 else None

    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|")

    header = ["run", *varying, "best val action acc", "macro-F1", "click hit rate", "best epoch", "val epochs", "status"]
    lines = []
    lines.append("# Sweep summary")
    lines.append("")
    if base is not None:
        lines.append(f"Runs under `{base}`, best validation epoch by action accuracy, best first.")
    if shared:
        lines.append("Shared overrides: " + ", ".join(f"`{k}={v}`" for k, v in shared.items()) + ".")
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---"] * len(varying) + ["---:"] * 5 + ["---"]) + "|")
    for row, run in zip(rows, runs):
        name = str(run.relative_to(base)) if base is not None and run != base else str(run)
        cells = [
            f"`{name}`",
            *(fmt(row["overrides"].get(k)) for k in varying),
            fmt(row["action_acc"]),
            fmt(row["action_macro_f1"]),
            fmt(row["click_hit_rate"]),
            fmt(row["best_epoch"]),
            fmt(row["val_epochs"]),
            row["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    out = Path(out_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def sweep_series(rows: Sequence[dict], x: str = "backbone.lora.r", lines: str = "backbone.lora.alpha",
                 metric: str = "action_macro_f1") -> dict[str, list[tuple[float, float]]]:
    """{value of override `lines`: [(x, mean metric over the runs at that x), ...] sorted by x} from
    `sweep_table` rows (`metric` at each run's best validation epoch). A run without the `lines`
    override joins every line: e.g. r = 0 has no adapters, so no alpha, and is every alpha's r = 0."""
    points: dict[str, list[tuple[float, float]]] = {}
    shared: list[tuple[float, float]] = []
    for row in rows:
        value, xv = row.get(metric), row["overrides"].get(x)
        if value is None or xv is None:
            continue
        target = points.setdefault(str(row["overrides"][lines]), []) if lines in row["overrides"] else shared
        target.append((float(xv), float(value)))
    if not points and not shared:
        raise ValueError(f"no run of the sweep has both the override {x} and a validation {metric}")
    series = {}
    for label, pts in (points or {"": []}).items():
        pts = pts + shared
        series[label] = [(xv, float(np.mean([v for px, v in pts if px == xv]))) for xv in sorted({p[0] for p in pts})]
    return dict(sorted(series.items(), key=lambda kv: _num_or_str(kv[0])))


def _num_or_str(v: str) -> tuple:
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)
