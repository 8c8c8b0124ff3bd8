"""Confusion matrices, sweep, eof-threshold and timeline plots (training curves: evaluation/curves.py)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .sweeps import sweep_series  # noqa: E402


def _finish_axis(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)


# ----------------------------------------------------------------------------------- confusion
def plot_confusion(
    confusion: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    out_png: str | os.PathLike,
    title: str = "Action confusion (rows: target, normalized per row)",
    hide_empty: bool = False,
) -> Path:
    """Row-normalized confusion matrix (rows = target) with counts written in the cells.

    hide_empty: drop classes with neither targets nor predictions (use for the key vocabulary, where
    most of ~120 classes never occur in a split). Rows without targets are drawn blank.
    """
    cm = np.asarray(confusion, dtype=float)
    names = list(class_names)
    if cm.ndim != 2 or cm.shape != (len(names), len(names)):
        raise ValueError(f"confusion must be [{len(names)}, {len(names)}], got {list(cm.shape)}")
    if hide_empty:
        keep = (cm.sum(0) + cm.sum(1)) > 0
        cm, names = cm[keep][:, keep], [n for n, k in zip(names, keep) if k]
    names = [name if name.strip() else "space" for name in names]  # the key ' ' would be an invisible label
    n = len(names)
    row = cm.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(row > 0, cm / np.where(row > 0, row, 1), np.nan)
    size = max(4.5, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.92")  # grey rows: no targets
    im = ax.imshow(norm, cmap=cmap, vmin=0, vmax=1)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the target row")
    labels = [f"{name} ({int(r)})" for name, r in zip(names, row[:, 0])]
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("target (frames)")
    ax.set_title(title, fontsize=11)
    if n <= 30:  # beyond that the numbers overlap; colours still read
        fontsize = 9 if n <= 12 else 7
        for i in range(n):
            for j in range(n):
                if cm[i, j] == 0:
                    continue
                dark = np.isfinite(norm[i, j]) and norm[i, j] > 0.55
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=fontsize,
                        color="white" if dark else "0.15")
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    fig.tight_layout()
    return _save(fig, out_png)


# ------------------------------------------------------------------------------- eof threshold
def plot_eof_threshold(rows: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Transcript metrics against `model.eof_threshold` (rows from `sweep_eof_threshold`).

    Thresholds are on the x axis; plain argmax (threshold None) is drawn as dotted horizontal lines.
    """
    series = [("transcript_cer", "CER", "C0"), ("transcript_missed_rate", "narrated frames left empty", "C1"),
              ("transcript_false_text_rate", "silent frames with text", "C2"),
              ("transcript_exact_match", "exact match (narrated)", "C3")]
    swept = sorted((r for r in rows if r["eof_threshold"] is not None), key=lambda r: r["eof_threshold"])
    argmax = next((r for r in rows if r["eof_threshold"] is None), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, color in series:
        pts = [(r["eof_threshold"], r[key]) for r in swept if r[key] is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", color=color, label=label)
        if argmax is not None and argmax[key] is not None:
            ax.axhline(argmax[key], color=color, linestyle=":", linewidth=1)
    if argmax is not None:
        ax.plot([], [], color="0.3", linestyle=":", label="plain argmax (null)")
    ax.set_ylim(bottom=0)
    _finish_axis(ax, "eof_threshold: silent iff p(eof) at the first token >= this", "rate",
                 title or "Transcript decoding vs the speak/silent threshold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def _save(fig: plt.Figure, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------- timeline
def _event_label(e) -> str:
    detail = e.text if e.type == "type" else e.key if e.type == "key" else \
        f"{e.modifiers}+{e.key}" if e.type == "hotkey" else e.direction if e.type == "scroll" else ""
    span = f" f{e.frame_start}-{e.frame_end}" if e.frame_end != e.frame_start else ""
    return f"{e.type} {detail!r}{span}" if detail else f"{e.type}{span}"


def plot_timeline(video, frame_index: Sequence[int], frames: Sequence[dict], pred_events: Sequence,
                  true_events: Sequence | None, true_frames: dict | None, sample_fps: float,
                  out_png: str | os.PathLike, max_frames: int = 24, reader: str = "decord",
                  title: str | None = None, show_pred: bool = True) -> Path:
    """A strip of a recording's frames: the frames where a predicted or true event starts (evenly thinned
    to `max_frames`, or filled with evenly spaced frames), each captioned with its predicted event (red)
    and true event (green) and marked with the predicted (red +) and true (green o) click points.
    `show_pred=False`: the labels alone (no model), `frames` unused."""
    from action_decoder.data.video import read_frames

    n = len(frames) if show_pred else len(true_frames["action"])
    starts = sorted({e.frame_start for e in (*pred_events, *(true_events or []))})
    if len(starts) > max_frames:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_frames).round().astype(int)]
    fill = [f for f in dict.fromkeys(np.linspace(0, n - 1, max_frames).round().astype(int).tolist()) if f not in starts]
    shown = sorted(starts + fill[:max_frames - len(starts)])
    images = read_frames(video, [frame_index[f] for f in shown], reader)
    h, w = images.shape[1:3]
    pred_at = {e.frame_start: e for e in pred_events}
    true_at = {e.frame_start: e for e in (true_events or [])}
    ncols = min(6, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows * h / w + 0.9 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, f, img in zip(axes.flat, shown, images):
        ax.imshow(img)
        ax.set_title(f"frame {f}  {f / sample_fps:.1f} s", fontsize=8)
        lines = [("pred: " + (_event_label(pred_at[f]) if f in pred_at else frames[f]["action"]), "tab:red")
                 ] if show_pred else []
        if true_frames is not None:
            lines.append(("true: " + (_event_label(true_at[f]) if f in true_at else true_frames["action"][f]),
                          "tab:green"))
        for i, (text, color) in enumerate(lines):
            ax.text(0.0, -0.04 - 0.11 * i, text[:40], transform=ax.transAxes, fontsize=7, color=color, va="top")
        if show_pred and "x" in frames[f]:
            ax.plot(frames[f]["x"] * w, frames[f]["y"] * h, "+", color="red", markersize=12, markeredgewidth=2)
        if true_frames is not None and true_frames["click"][f] is not None:
            x, y = true_frames["click"][f]
            ax.plot(x * w, y * h, "o", markerfacecolor="none", color="lime", markersize=12, markeredgewidth=2)
    fig.suptitle(title or "timeline", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_episode_labels(episode: dict, out_png: str | os.PathLike, max_frames: int = 12,
                        reader: str = "decord") -> Path:
    """A prepared episode's frames with their labels (events in green, click points as green o), no model:
    the timeline picture of a dataset before anything is trained on it."""
    from action_decoder.evaluation.events import frames_to_events

    true = {k: episode[k] for k in ("action", "key", "modifier", "click")}
    return plot_timeline(episode["video"], episode["frame_index"], [], [], frames_to_events(**true), true,
                         episode["sample_fps"], out_png, max_frames=max_frames, reader=reader,
                         title=f"{episode['id']}: {episode['prompt'][:90]}", show_pred=False)


def plot_sweep(rows: Sequence[dict], out_png: str | os.PathLike, x: str = "backbone.lora.r",
               lines: str = "backbone.lora.alpha", metric: str = "event_f1") -> Path:
    """Held-out (validation) `metric` against the override `x`, one line per value of `lines` (`sweep_series`: the
    mean over the runs at a point); each run's own value as a faint dot where several share a point (search trials)."""
    series = sweep_series(rows, x, lines, metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, pts) in enumerate(series.items()):
        line = ax.plot(*zip(*pts), marker="o", label=f"{lines}={label}" if label else None)[0]
        own = [(float(r["overrides"][x]), r[metric]) for r in rows if r.get(metric) is not None and x in r["overrides"]
               and (not label or r["overrides"].get(lines, label) == label)]
        if len(own) > len(pts):
            ax.plot(*zip(*own), "o", color=line.get_color(), alpha=0.35, markersize=4)
    _finish_axis(ax, x, f"val {metric} (best validation)", f"Sweep: {metric} vs {x}")
    xs = sorted({p[0] for pts in series.values() for p in pts})
    if len(xs) <= 12:
        ax.set_xticks(xs)
    if any(series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)
