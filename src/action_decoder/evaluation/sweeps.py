"""Sweep tables: one row per run of a sweep (its overrides, its best validation epoch), as Markdown and as
series for `plots.plot_sweep`."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics_log import METRICS_FILE, epoch_records, read_metrics, step_records


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


TABLE_METRICS = ("event_f1", "action_macro_f1", "action_acc", "click_hit_rate", "key_acc")


def sweep_table(run_dirs: Iterable[str | os.PathLike], metric: str = "event_f1") -> list[dict]:
    """One row per run: run dir, its overrides, and its validation with the best `metric` (ties: the earliest;
    default event_f1, train.best_metric's default) with that validation's TABLE_METRICS, step and epoch.

    Rows are sorted best first; runs without a metrics log or validation records are kept (at the
    end, with a `status`) so a crashed sweep member is visible rather than missing.
    """
    rows = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        row: dict[str, Any] = {"run": str(run_dir), "overrides": read_overrides(run_dir), "metric": metric,
                               "best_step": None, "best_epoch": None, "validations": 0, "status": "ok",
                               **{k: None for k in (metric, *TABLE_METRICS)}}
        if not (run_dir / METRICS_FILE).is_file():
            row["status"] = "no metrics.jsonl"
            rows.append(row)
            continue
        val = [r for r in validations(read_metrics(run_dir)) if (r.get("metrics") or {}).get(metric) is not None]
        row["validations"] = len(val)
        if not val:
            row["status"] = "no validation"
            rows.append(row)
            continue
        best = max(val, key=lambda r: (r["metrics"][metric], -(r.get("step") or 0), -r["epoch"]))
        row["best_step"], row["best_epoch"] = best.get("step"), best["epoch"]
        for key in {metric, *TABLE_METRICS}:
            row[key] = best["metrics"].get(key)
        rows.append(row)
    rows.sort(key=lambda r: (r.get(metric) is None, -(r.get(metric) or 0.0)))
    return rows


def validations(records: Sequence[dict]) -> list[dict]:
    """The validation records of a run in order, one per validation (by step; per epoch for logs without steps)."""
    by_step = step_records(records, "val")
    return by_step or epoch_records(records, "val")


def varying_overrides(rows: Sequence[dict]) -> tuple[list[str], dict[str, str]]:
    """(override keys whose value differs between the runs, {key: value} of those all runs share)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["overrides"] if k not in keys]
    varying = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]
    return varying, {k: rows[0]["overrides"][k] for k in keys if k not in varying}


def run_labels(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """A legend label per run: the overrides that differ between them (`r=8 alpha=32`: the last part of each
    key where that is unambiguous), else the config values that differ (config.yaml), else the run dir's name."""
    rows = [{"overrides": read_overrides(d)} for d in run_dirs]
    varying, _ = varying_overrides(rows)
    values = [{k: r["overrides"].get(k) for k in varying} for r in rows]
    if not varying:
        configs = [_flat_config(d) for d in run_dirs]
        varying = [k for k in sorted(set().union(*configs)) if len({str(c.get(k)) for c in configs}) > 1
                   and not k.startswith(IGNORED_CONFIG_KEYS)]
        values = [{k: c.get(k) for k in varying} for c in configs]
    if not varying or len(varying) > 6:  # beyond that a legend entry is no longer readable
        return [Path(d).name for d in run_dirs]
    short = {k: k.rsplit(".", 1)[-1] for k in varying}
    if len(set(short.values())) < len(short):
        short = {k: k for k in varying}
    return [" ".join(f"{short[k]}={_short_value(v[k])}" for k in varying) for v in values]


IGNORED_CONFIG_KEYS = ("output_root", "resume", "backbone.vision.fingerprint", "backbone.text.fingerprint")


def _flat_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(run_dir) / "config.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else {}
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node
    walk(cfg or {}, "")
    return out


def _short_value(v: Any) -> str:
    """3 significant digits for the floats a search samples (0.000123456 -> 0.000123), the rest as it is."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(v) if str(v).lstrip("-").isdigit() else f"{f:.3g}"


def write_sweep_table(rows: Sequence[dict], out_md: str | os.PathLike) -> Path:
    """Markdown table of `sweep_table` rows: one column per override that differs between runs
    (overrides shared by all runs are listed once above the table); a search's best trial (Optuna's
    optimization_results.yaml beside the runs) below it. Returns the written path."""
    varying, shared = varying_overrides(rows)
    runs = [Path(r["run"]) for r in rows]
    base = Path(os.path.commonpath(runs)) if len(runs) > 1 else None
    metric = rows[0]["metric"] if rows else "event_f1"
    shown = [metric, *(k for k in TABLE_METRICS if k != metric)]

    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v).replace("|", "\\|")

    header = ["run", *varying, f"best val {metric}", *(k for k in shown[1:]), "at step", "epoch", "validations",
              "status"]
    lines = ["# Sweep summary", ""]
    if base is not None:
        lines.append(f"Runs under `{base}`: each run's validation with the best `{metric}`, best run first.")
    if shared:
        lines.append("Shared overrides: " + ", ".join(f"`{k}={v}`" for k, v in shared.items()) + ".")
    lines += ["", "| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] * (1 + len(varying)) + ["---:"] * (len(shown) + 3) + ["---"]) + "|"]
    for row, run in zip(rows, runs):
        name = str(run.relative_to(base)) if base is not None and run != base else str(run)
        cells = [f"`{name}`", *(fmt(_short_value(row["overrides"][k]) if k in row["overrides"] else None) for k in varying),
                 *(fmt(row.get(k)) for k in shown),
                 fmt(row["best_step"]), fmt(row["best_epoch"]), fmt(row["validations"]), row["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _search_result(base or (runs[0].parent if runs else None))
    out = Path(out_md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def _search_result(sweep_dir: Path | None) -> list[str]:
    """Optuna's best trial, from the `optimization_results.yaml` hydra-optuna-sweeper writes into the sweep dir."""
    import yaml

    path = sweep_dir / "optimization_results.yaml" if sweep_dir else None
    if path is None or not path.is_file():
        return []
    res = yaml.safe_load(path.read_text()) or {}
    params = " ".join(f"`{k}={_short_value(v)}`" for k, v in (res.get("best_params") or {}).items())
    best = res.get("best_value")
    return ["", f"Search ({res.get('name', 'optuna')}): best value {best:.3f} with {params} "
            "(all values: optimization_results.yaml)." if isinstance(best, float) else
            f"Search ({res.get('name', 'optuna')}): best value {best} with {params}."]


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
