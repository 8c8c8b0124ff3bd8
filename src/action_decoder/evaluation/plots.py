"""Training curves, confusion matrices, sweep and timeline plots (metrics log format: evaluation/metrics_log.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics_log import epoch_records  # noqa: E402
from .sweeps import sweep_series  # noqa: E402

# Epoch-level metrics drawn by plot_accuracy, in panel order: (metrics key, panel title).
# Panels whose key is in no record are left out (e.g. transcript metrics before that head exists).
ACCURACY_PANELS = (
    ("action_acc", "Action accuracy"),
    ("action_macro_f1", "Action macro-F1"),
    ("event_f1", "Event F1 (±k frames, validation only)"),
    ("click_hit_rate", "Click hit rate"),
    ("key_acc", "Key accuracy"),
    ("modifier_acc", "Modifier accuracy"),
    ("transcript_cer", "Transcript CER (lower is better)"),
)
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"


def _step_records(records: Iterable[dict]) -> list[dict]:
    """Per-step training records sorted by step; a step logged twice (resume) keeps the last."""
    by_step: dict[int, dict] = {}
    for rec in records:
        if rec.get("split") == "train" and rec.get("step") is not None:
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def _stage_spans(points: Sequence[tuple[float, str]]) -> list[tuple[float, str]]:
    """(x where the stage starts, name) for each run of equal stage names along sorted (x, stage) points.
    A switch is placed halfway between the last point of one stage and the first of the next."""
    spans: list[tuple[float, str]] = []
    prev_x = None
    for x, stage in points:
        if stage is None:
            continue
        if not spans or spans[-1][1] != stage:
            start = x if prev_x is None else (prev_x + x) / 2
            spans.append((start, stage))
        prev_x = x
    return spans


def _mark_stages(axes: Sequence[plt.Axes], spans: list[tuple[float, str]]) -> None:
    """Vertical lines at stage switches and each stage's name at the top of its span."""
    if len(spans) < 2 and not (spans and spans[0][1] not in (None, "main")):
        return  # a single default stage: nothing worth marking
    for ax in axes:
        for i, (x, name) in enumerate(spans):
            if i > 0:
                ax.axvline(x, color="0.35", linestyle=":", linewidth=1.2, zorder=1)
            ax.annotate(
                f" {name}",
                xy=(x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -3),
                textcoords="offset points",
                va="top",
                ha="left",
                fontsize=8,
                color="0.3",
                style="italic",
            )


def _values(records: Sequence[dict], field: str, key: str) -> tuple[list[float], list[float]]:
    """(x, y) of records[i][field][key] over epoch records, skipping missing / null values."""
    xs, ys = [], []
    for rec in records:
        v = (rec.get(field) or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(rec["epoch"])
            ys.append(float(v))
    return xs, ys


def _finish_axis(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)


def _run_title(records: Sequence[dict], default: str) -> str:
    name = next((r.get("run") for r in records if r.get("run")), None)
    return f"{default} — {name}" if name else default


def _integer_epochs(ax: plt.Axes, epochs: Sequence[int]) -> None:
    """Whole-epoch ticks, with half an epoch of room either side (a one-epoch run is one point)."""
    lo, hi = min(epochs), max(epochs)
    ax.set_xlim(lo - 0.5, hi + 0.5)
    if hi - lo <= 20:
        ax.set_xticks(range(lo, hi + 1))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


# ------------------------------------------------------------------------------------ curves
def plot_accuracy(records: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Train (dashed) and validation (solid) metrics per epoch, one panel per metric present,
    curriculum stage switches marked. Returns the written path."""
    train = epoch_records(records, "train_epoch")
    val = epoch_records(records, "val")
    panels = [
        (key, name)
        for key, name in ACCURACY_PANELS
        if any(_values(recs, "metrics", key)[0] for recs in (train, val))
    ]
    if not panels:
        raise ValueError("no epoch metrics (train_epoch / val records with 'metrics') to plot")
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.6 * nrows), squeeze=False, sharex=True)
    flat = list(axes.flat)
    for ax in flat[len(panels) :]:
        ax.remove()
    flat = flat[: len(panels)]
    baseline = next(
        (r["metrics"].get("action_majority_acc") for r in reversed(val) if (r.get("metrics") or {}).get("action_majority_acc") is not None),
        None,
    )
    for ax, (key, name) in zip(flat, panels):
        for recs, label, color, style in ((train, "train", TRAIN_COLOR, "--"), (val, "validation", VAL_COLOR, "-")):
            xs, ys = _values(recs, "metrics", key)
            if xs:
                ax.plot(xs, ys, style, color=color, marker="o", markersize=4, label=label)
        if key == "action_acc" and baseline is not None:
            ax.axhline(baseline, color="0.5", linestyle="-.", linewidth=1, label="majority class (val)")
        if key == "transcript_cer":
            # Against the empty-prediction baseline (CER 1: every reference character deleted), from 0, so
            # a flat 0.995-1.0 does not fill the panel as if it were progress. Wrong text can exceed 1.
            ax.axhline(1.0, color="0.5", linestyle="-.", linewidth=1, label="empty prediction")
            ax.set_ylim(-0.02, max(1.05, *(_values(val, "metrics", key)[1] or [0.0])) + 0.05)
        else:
            ax.set_ylim(-0.02, 1.05)
        _finish_axis(ax, "epoch", key.split("_", 1)[1].replace("_", " ") if "_" in key else key, name)
        _integer_epochs(ax, [int(r["epoch"]) for r in (*train, *val)])
        ax.legend(loc="best", fontsize=8, framealpha=0.8)
    for ax in flat:
        ax.xaxis.set_tick_params(labelbottom=True)
    points = [(r["epoch"], r.get("stage")) for r in (val or train)]
    _mark_stages(flat, _stage_spans(points))
    fig.suptitle(title or _run_title(records, "Accuracy per epoch"), fontsize=13)
    fig.tight_layout()
    return _save(fig, out_png)


def plot_loss(records: Sequence[dict], out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Top: total loss over optimizer steps (train per step, light; train epoch mean; validation per
    epoch). Bottom: each head's loss (train epoch mean dashed, validation solid). Stage switches marked.
    Log scale when the losses span more than a decade. Returns the written path."""
    steps = _step_records(records)
    train_ep = epoch_records(records, "train_epoch")
    val = epoch_records(records, "val")
    if not (steps or train_ep or val):
        raise ValueError("no train / train_epoch / val records to plot")
    fig, (ax_total, ax_heads) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)

    def series(recs: Sequence[dict], head: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for rec in recs:
            v = (rec.get("loss") or {}).get(head)
            if isinstance(v, (int, float)) and math.isfinite(v) and rec.get("step") is not None:
                xs.append(rec["step"])
                ys.append(float(v))
        return xs, ys

    xs, ys = series(steps, "total")
    if xs:
        ax_total.plot(xs, ys, color=TRAIN_COLOR, alpha=0.3, linewidth=0.8, label="train (per step)")
    xs, ys = series(train_ep, "total")
    if xs:
        ax_total.plot(xs, ys, "--", color=TRAIN_COLOR, marker="o", markersize=4, label="train (epoch mean)")
    xs, ys = series(val, "total")
    if xs:
        ax_total.plot(xs, ys, "-", color=VAL_COLOR, marker="o", markersize=4, label="validation")
    _finish_axis(ax_total, "", "loss", "Total loss")
    # Legends sit right of the panels: stage names run along the top and curves fill the rest.
    ax_total.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)

    heads = []
    for rec in [*steps, *train_ep, *val]:
        for head in rec.get("loss") or {}:
            if head != "total" and head not in heads:
                heads.append(head)
    colors = plt.get_cmap("tab10")
    # Per-epoch train means when logged; otherwise the per-step values stand in for them.
    train_heads = train_ep if train_ep else steps
    for i, head in enumerate(heads):
        color = colors(i % 10)
        xs, ys = series(train_heads, head)
        if xs:
            ax_heads.plot(xs, ys, "--", color=color, marker="o" if train_ep else None, markersize=3, alpha=0.8)
        xs, ys = series(val, head)
        if xs:
            ax_heads.plot(xs, ys, "-", color=color, marker="o", markersize=4)
    # Legend: one entry per head (colour) plus the two line styles.
    handles = [plt.Line2D([], [], color=colors(i % 10), linewidth=2, label=h) for i, h in enumerate(heads)]
    handles += [
        plt.Line2D([], [], color="0.3", linestyle="--", label="train" + (" (epoch mean)" if train_ep else "")),
        plt.Line2D([], [], color="0.3", linestyle="-", marker="o", markersize=4, label="validation"),
    ]
    if heads:
        ax_heads.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    _finish_axis(ax_heads, "optimizer step", "loss", "Loss per head")
    for ax in (ax_total, ax_heads):
        _maybe_log(ax)

    points = sorted(
        [(r["step"], r.get("stage")) for r in [*steps, *train_ep, *val] if r.get("step") is not None],
        key=lambda p: p[0],
    )
    _mark_stages((ax_total, ax_heads), _stage_spans(points))
    _add_epoch_axis(ax_total, val or train_ep)
    fig.suptitle(title or _run_title(records, "Loss"), fontsize=13)
    fig.tight_layout()
    return _save(fig, out_png)


def _maybe_log(ax: plt.Axes) -> None:
    ys = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.zeros(0)]).astype(float)
    ys = ys[np.isfinite(ys)]
    if ys.size and ys.min() > 0 and ys.max() / ys.min() > 10:
        ax.set_yscale("log")


def _add_epoch_axis(ax: plt.Axes, epoch_records: Sequence[dict]) -> None:
    """Epoch numbers along the top of a step-based plot, at the step where each epoch ended."""
    marks = [(r["step"], r["epoch"]) for r in epoch_records if r.get("step") is not None]
    if not marks:
        return
    if len(marks) > 15:  # keep the labels readable on long runs
        every = math.ceil(len(marks) / 15)
        marks = marks[::every]
    top = ax.secondary_xaxis("top")
    top.set_xticks([s for s, _ in marks], labels=[f"ep {e}" for _, e in marks], fontsize=8, color="0.35")
    top.tick_params(axis="x", colors="0.35", length=3)


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
               lines: str = "backbone.lora.alpha", metric: str = "action_macro_f1") -> Path:
    """Held-out (validation) `metric` against the override `x`, one line per value of `lines` (`sweep_series`)."""
    series = sweep_series(rows, x, lines, metric)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, pts in series.items():
        ax.plot(*zip(*pts), marker="o", label=f"{lines}={label}" if label else None)
    _finish_axis(ax, x, f"val {metric} (best epoch)", f"Sweep: {metric} vs {x}")
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    if any(series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)
