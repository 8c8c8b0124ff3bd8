"""Curves of runs and sweep tables (conf/plot.yaml).

    python scripts/plot_runs.py run=outputs/smoke/<timestamp>            # loss.png, accuracy.png in the run dir
    python scripts/plot_runs.py "runs=[outputs/smoke/<a>,outputs/smoke/<b>]"   # runs.png: validation curves overlaid
    python scripts/plot_runs.py sweep=multirun/<date>/<time>             # sweep.md, sweep.png, curves.png

Every figure reads the runs' metrics.jsonl (evaluation/metrics_log.py); x is the optimizer step.
"""
from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from action_decoder import cli


def _run_dir(path: str, what: str) -> Path:
    from action_decoder.evaluation.metrics_log import METRICS_FILE

    run = Path(path)
    if not (run / METRICS_FILE).is_file():
        raise cli.MissingFileError(f"{what}={path}: no {METRICS_FILE} there; give a run dir that train.py wrote "
                                   "(outputs/<experiment>/<timestamp>)")
    return run


def plot_run(cfg: DictConfig) -> None:
    """run=: loss.png and accuracy.png of one run."""
    from action_decoder.evaluation.curves import plot_accuracy, plot_loss
    from action_decoder.evaluation.metrics_log import METRICS_FILE, read_metrics
    from action_decoder.training.run_dir import find_latest_run

    run = find_latest_run(cfg.output_root, cfg.experiment, needs=METRICS_FILE) if cfg.run == "latest" \
        else _run_dir(cfg.run, "run")
    records = read_metrics(run)
    plot_loss(records, run / "loss.png", title=f"Loss per head — {run}")
    plot_accuracy(records, run / "accuracy.png", title=f"Metrics per validation — {run}")
    print(f"-> {run}/loss.png, {run}/accuracy.png")


def overlay(run_dirs: list[Path], out: Path, cfg: DictConfig, title: str) -> Path:
    from action_decoder.evaluation.curves import plot_runs
    from action_decoder.evaluation.metrics_log import read_metrics
    from action_decoder.evaluation.sweeps import run_labels

    runs = list(zip(run_labels(run_dirs), (read_metrics(r) for r in run_dirs)))
    return plot_runs(runs, out, title=title, metrics=list(cfg.metrics))


def plot_several(cfg: DictConfig) -> None:
    """runs=[...]: the runs' validation curves in one figure."""
    dirs = [_run_dir(str(r), "runs") for r in cfg.runs]
    if len(dirs) < 2:
        raise cli.SettingError("runs=[...]: give two runs or more (one run: run=<dir>)")
    out = Path(cfg.out) if cfg.out else Path(os.path.commonpath([d.resolve() for d in dirs])) / "runs.png"
    print(f"-> {overlay(dirs, out, cfg, 'Validation curves')}")


def tabulate_sweep(cfg: DictConfig) -> None:
    """sweep=: sweep.md, sweep.png (best validation metric vs an override) and curves.png over a sweep's runs."""
    from action_decoder.evaluation.plots import plot_sweep
    from action_decoder.evaluation.sweeps import find_run_dirs, sweep_table, write_sweep_table

    sweep = Path(cfg.sweep)
    if not sweep.is_dir():
        raise cli.MissingFileError(f"sweep={sweep}: no such folder; give the multirun dir a sweep wrote "
                                   "(multirun/<date>/<time>, or hydra.sweep.dir)")
    dirs = find_run_dirs(sweep)
    if not dirs:
        raise cli.MissingFileError(f"sweep={sweep}: no run with a metrics.jsonl under it; the sweep's jobs have "
                                   "not logged yet (or this is not a sweep folder)")
    rows = sweep_table(dirs, cfg.sweep_metric)
    write_sweep_table(rows, sweep / "sweep.md")
    print((sweep / "sweep.md").read_text())
    written = [sweep / "sweep.md"]
    if any(cfg.sweep_plot.x in r["overrides"] for r in rows):
        written.append(plot_sweep(rows, sweep / "sweep.png", cfg.sweep_plot.x, cfg.sweep_plot.lines, cfg.sweep_metric))
    if len(dirs) > 1:
        written.append(overlay(dirs, sweep / "curves.png", cfg, f"Validation curves — {sweep}"))
    print("-> " + ", ".join(map(str, written)))


@hydra.main(version_base="1.3", config_path="../conf", config_name="plot")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    if not (cfg.run or cfg.runs or cfg.sweep):
        raise cli.SettingError("plot_runs.py: give run=<run dir>|latest, runs=[<dir>,<dir>,...] or sweep=<multirun dir>")
    if cfg.run:
        plot_run(cfg)
    if cfg.runs:
        plot_several(cfg)
    if cfg.sweep:
        tabulate_sweep(cfg)


if __name__ == "__main__":
    cli.entry(main)
