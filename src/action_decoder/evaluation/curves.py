"""Training curves of one run (loss.png, accuracy.png) and validation curves of several runs in one figure.

x is the optimizer step everywhere (metrics_log.py: every train and val record carries it), epochs are marked by
dotted lines and named along the top, curriculum stage switches by their names. Per-step training losses swing
from batch to batch: they are drawn faint, with their exponential moving average on top.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics_log import epoch_ends, epoch_records, optimizer_step, step_records
from .plots import _finish_axis, _save, plt

# Validation metrics drawn, in panel order: (metrics key, panel title). Panels whose key no record has are left out.
ACCURACY_PANELS = (
    ("event_f1", "Event F1 (±k frames)"),
    ("action_macro_f1", "Action macro-F1"),
    ("action_acc", "Action accuracy"),
    ("click_hit_rate", "Click hit rate"),
    ("key_acc", "Key accuracy"),
    ("modifier_acc", "Modifier accuracy"),
    ("transcript_cer", "Transcript CER (lower is better)"),
)
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"


def ema(values: Sequence[float], weight: float | None = None) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard's smoothing). `weight` None: a half-life of 5% of the
    points (at least one), so a short and a long run are smoothed alike."""
    v = np.asarray(values, dtype=float)
    if weight is None:
        weight = 0.5 ** (1.0 / max(1.0, 0.05 * len(v)))
    out, acc, norm = np.empty_like(v), 0.0, 0.0
    for i, x in enumerate(v):
        acc, norm = weight * acc + (1 - weight) * x, weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def _series(records: Sequence[dict], field: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for rec in records:
        v = (rec.get(field) or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and rec.get("step") is not None:
            xs.append(optimizer_step(rec))
            ys.append(float(v))
    return xs, ys


def mark_epochs(axes: Sequence[plt.Axes], records: Sequence[dict]) -> None:
    """A dotted line where each epoch ends and the next begins; `epoch N` along the top of the first axis."""
    ends = epoch_ends(records)
    bounds = [(step, epoch + 1) for epoch, step in ends.items() if epoch + 1 in ends]
    for ax in axes:
        for step, _ in bounds:
            ax.axvline(step, color="0.55", linestyle=":", linewidth=1, zorder=1)
    if not ends or not axes:
        return
    starts = [0] + [s for s, _ in bounds]
    mids = [((a + b) / 2, f"epoch {e}") for (a, b), e in zip(zip(starts, list(ends.values())), ends)]
    every = max(1, math.ceil(len(mids) / 12))  # readable labels on long runs
    top = axes[0].secondary_xaxis("top")
    top.set_xticks([m for m, _ in mids[::every]], labels=[t for _, t in mids[::every]], fontsize=8, color="0.35")
    top.tick_params(axis="x", length=0, colors="0.35")


def mark_stages(axes: Sequence[plt.Axes], records: Sequence[dict]) -> None:
    """The stage's name where a curriculum stage starts (nothing for a single stage)."""
    starts: list[tuple[int, str]] = []
    for rec in step_records(records):
        if rec.get("stage") and (not starts or starts[-1][1] != rec["stage"]):
            starts.append((optimizer_step(rec), rec["stage"]))
    if len(starts) < 2:
        return
    for ax in axes:
        for i, (x, name) in enumerate(starts):
            if i:
                ax.axvline(x, color="0.3", linestyle="--", linewidth=1.2, zorder=1)
            ax.annotate(f" {name}", xy=(x, 0.0), xycoords=("data", "axes fraction"), xytext=(2, 3),
                        textcoords="offset points", fontsize=8, color="0.3", style="italic")


def _grid(n: int, ncols: int = 2, width: float = 6.0, height: float = 3.3):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6), squeeze=False, sharex=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    for ax in flat[:n]:
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def _run_title(records: Sequence[dict], default: str) -> str:
    name = next((r.get("run") for r in records if r.get("run")), None)
    return f"{default} — {name}" if name else default


def plot_loss(records: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    """One panel per loss (total, then each head): training loss per logged step (faint) and its moving average,
    validation loss at each validation. Log scale where a panel spans more than a decade."""
    train, val = step_records(records), step_records(records, "val")
    heads: list[str] = []
    for rec in [*train, *val]:
        for head in rec.get("loss") or {}:
            if head not in heads:
                heads.append(head)
    heads.sort(key=lambda h: h != "total")
    if not heads:
        raise ValueError("no train / val records with losses to plot")
    fig, axes = _grid(len(heads))
    for ax, head in zip(axes, heads):
        xs, ys = _series(train, "loss", head)
        if xs:
            ax.plot(xs, ys, color=TRAIN_COLOR, alpha=0.25, linewidth=0.8, label="train (per logged step)")
            ax.plot(xs, ema(ys), color=TRAIN_COLOR, linewidth=1.8, label="train (moving average)")
        xs, ys = _series(val, "loss", head)
        if xs:
            ax.plot(xs, ys, "-o", color=VAL_COLOR, markersize=4, linewidth=1.5, label="validation")
        _finish_axis(ax, "optimizer step", "loss", "Total loss" if head == "total" else f"{head} loss")
        _maybe_log(ax)
    axes[0].legend(loc="upper right", fontsize=8, framealpha=0.85)
    mark_epochs(axes, records)
    mark_stages(axes, records)
    fig.suptitle(title or _run_title(records, "Loss per head"), fontsize=13)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_accuracy(records: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    """One panel per metric: validation at each validation (solid), the training epoch's running value at its end
    (dashed), the majority-class baseline (val) on action accuracy."""
    val, train = step_records(records, "val"), epoch_records(records, "train_epoch")
    panels = [(k, name) for k, name in ACCURACY_PANELS if _series(val, "metrics", k)[0] or _series(train, "metrics", k)[0]]
    if not panels:
        raise ValueError("no validation or train_epoch metrics to plot")
    fig, axes = _grid(len(panels))
    baseline = next((r["metrics"]["action_majority_acc"] for r in reversed(val)
                     if (r.get("metrics") or {}).get("action_majority_acc") is not None), None)
    for ax, (key, name) in zip(axes, panels):
        xs, ys = _series(train, "metrics", key)
        if xs:
            ax.plot(xs, ys, "--s", color=TRAIN_COLOR, markersize=4, alpha=0.8, label="train (epoch)")
        xs, ys = _series(val, "metrics", key)
        if xs:
            ax.plot(xs, ys, "-o", color=VAL_COLOR, markersize=4, label="validation")
        if key == "action_acc" and baseline is not None:
            ax.axhline(baseline, color="0.5", linestyle="-.", linewidth=1, label="majority class (val)")
        top = max([1.0, *ys]) if key == "transcript_cer" else 1.0  # CER can exceed 1 (wrong text)
        ax.set_ylim(-0.02, top + 0.05)
        _finish_axis(ax, "optimizer step", key.replace("_", " "), name)
        ax.legend(loc="lower right", fontsize=8, framealpha=0.85)
    mark_epochs(axes, records)
    mark_stages(axes, records)
    fig.suptitle(title or _run_title(records, "Metrics per validation"), fontsize=13)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_runs(runs: Sequence[tuple[str, Sequence[dict]]], out_png: str | os.PathLike, title: str = "Validation curves",
              metrics: Sequence[str] = ("event_f1", "action_macro_f1", "click_hit_rate", "key_acc")) -> Path:
    """Several runs' validation curves in one figure: a panel per metric and one for the validation loss, a colour
    per run, labelled `label` (what differs between the runs: sweeps.run_labels)."""
    vals = [(label, step_records(recs, "val")) for label, recs in runs]
    panels = [(k, dict(ACCURACY_PANELS).get(k, k)) for k in metrics if any(_series(v, "metrics", k)[0] for _, v in vals)]
    if not panels:
        raise ValueError(f"none of the runs has a validation record with {', '.join(metrics)}")
    fig, axes = _grid(len(panels) + 1)
    colors = plt.get_cmap("tab10" if len(vals) <= 10 else "viridis")
    for i, (label, val) in enumerate(vals):
        color = colors(i % 10) if len(vals) <= 10 else colors(i / max(1, len(vals) - 1))
        for ax, (key, _) in zip(axes, panels):
            xs, ys = _series(val, "metrics", key)
            if xs:
                ax.plot(xs, ys, "-o", color=color, markersize=3, linewidth=1.4, label=label)
        xs, ys = _series(val, "loss", "total")
        if xs:
            axes[-1].plot(xs, ys, "-o", color=color, markersize=3, linewidth=1.4, label=label)
    for ax, (key, name) in zip(axes, panels):
        ax.set_ylim(-0.02, 1.05)
        _finish_axis(ax, "optimizer step", key.replace("_", " "), name)
    _finish_axis(axes[-1], "optimizer step", "loss", "Validation loss (total)")
    _maybe_log(axes[-1])
    handles, labels = axes[-1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0].get_legend_handles_labels()
    ncol = min(len(labels), 3 if max(map(len, labels)) > 30 else 4)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.035 * math.ceil(len(labels) / ncol) + 0.01, 1, 1))
    return _save(fig, out_png)


def _maybe_log(ax: plt.Axes) -> None:
    ys = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.zeros(0)]).astype(float)
    ys = ys[np.isfinite(ys)]
    if ys.size and ys.min() > 0 and ys.max() / ys.min() > 10:
        ax.set_yscale("log")
