"""Per-frame labels -> events, and event-level precision / recall / F1 (data/README.md §8).

The field scores an inverse-dynamics model by its events: a predicted event counts when a true one of
the same type and detail lies within ±k frames. `frames_to_events` turns one episode's per-frame labels
(predicted or true, names as in conf/labels) into events; `match_events` pairs predicted with true
events one-to-one, nearest first; `EventCounts` sums the matches over episodes (and processes) and
`compute()` gives P/R/F1 per type and overall (`event_f1`), the mean distance of matched clicks and the
typed-text similarity of matched typing runs. `move` frames are not events: their per-frame P/R/F1 is
reported beside them.

    counts = EventCounts(tolerance=2)
    for pred_frames, true_frames in episodes:                      # dicts of per-frame lists
        counts.add(frames_to_events(**pred_frames), frames_to_events(**true_frames))
        counts.add_move_frames(pred_frames["action"], true_frames["action"])
    counts.compute()["event_f1"]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer
import torch

POINT_TYPES = ("click", "double_click", "right_click")  # one event per frame, at (x, y)
EVENT_TYPES = POINT_TYPES + ("drag", "scroll", "type", "key", "hotkey")
RUN_ACTIONS = ("drag", "scroll_up", "scroll_down", "type")  # consecutive frames of one of these form one event
UNKNOWN_CHAR = "\ufffd"  # a typed key outside the vocabulary (`other`) in a typed string
_CHARS = jiwer.ReduceToListOfListOfChars()  # character edit distance that keeps spaces (typed text)


@dataclass
class ActionEvent:
    """One action event of an episode (what event F1 matches; data/events.py's Event is one logged input event); frames are sampled-frame indices, frame_end inclusive, x/y normalized."""

    type: str
    frame_start: int
    frame_end: int
    x: float | None = None          # click point / drag start
    y: float | None = None
    x_end: float | None = None      # drag end
    y_end: float | None = None
    text: str | None = None         # typed string (type)
    key: str | None = None          # named key (key, hotkey)
    modifiers: str | None = None    # modifier combination held (every event but scroll)
    direction: str | None = None    # up | down (scroll)
    score: float | None = None      # mean predicted probability of the action over the event's frames

    def detail(self) -> tuple:
        """What must agree besides the type for two events to match."""
        if self.type == "scroll":
            return (self.direction,)
        if self.type == "key":
            return (self.key,)
        if self.type == "hotkey":
            return (self.key, self.modifiers)
        return ()

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def frames_to_events(action: Sequence[str], key: Sequence[str | None] | None = None,
                     modifier: Sequence[str | None] | None = None,
                     click: Sequence[Sequence[float] | None] | None = None,
                     score: Sequence[float] | None = None) -> list[ActionEvent]:
    """One episode's per-frame labels -> its events, in frame order.

    click / double_click / right_click / key / hotkey: one event per frame (labels put one press on one
    frame; two adjacent frames are two presses). drag, scroll_up / scroll_down and type: a run of
    consecutive frames with that action is one event (a drag from its first frame's point to its last
    frame's point; a scroll gesture with its direction; the typed string, one character per frame).
    none and move frames make no event.
    """
    n = len(action)
    key = key if key is not None else [None] * n
    modifier = modifier if modifier is not None else [None] * n
    click = click if click is not None else [None] * n
    events: list[ActionEvent] = []
    f = 0
    while f < n:
        a = action[f]
        end = f
        if a in RUN_ACTIONS:
            while end + 1 < n and action[end + 1] == a:
                end += 1
        s = None if score is None else float(sum(score[f:end + 1]) / (end + 1 - f))
        xy, xy_end = click[f], click[end]
        if a in POINT_TYPES:
            events.append(ActionEvent(a, f, f, *_xy(xy), modifiers=modifier[f], score=s))
        elif a == "drag":
            events.append(ActionEvent(a, f, end, *_xy(xy), *_xy(xy_end), modifiers=modifier[f], score=s))
        elif a in ("scroll_up", "scroll_down"):
            events.append(ActionEvent("scroll", f, end, direction=a.split("_")[1], score=s))
        elif a == "type":
            text = "".join(k if k is not None and len(k) == 1 else UNKNOWN_CHAR for k in key[f:end + 1])
            events.append(ActionEvent(a, f, end, text=text, modifiers=modifier[f], score=s))
        elif a in ("key", "hotkey"):
            events.append(ActionEvent(a, f, f, key=key[f], modifiers=modifier[f], score=s))
        f = end + 1
    return events


def _xy(xy) -> tuple[float | None, float | None]:
    return (None, None) if xy is None else (float(xy[0]), float(xy[1]))


def match_events(pred: Sequence[ActionEvent], true: Sequence[ActionEvent], tolerance: int) -> list[tuple[int, int]]:
    """(pred index, true index) pairs: same type and detail, start frames at most `tolerance` apart,
    each event used at most once; the closest pairs are taken first (ties: earlier true, then earlier
    predicted event)."""
    candidates = sorted(
        (abs(p.frame_start - t.frame_start), j, i)
        for i, p in enumerate(pred) for j, t in enumerate(true)
        if p.type == t.type and p.detail() == t.detail() and abs(p.frame_start - t.frame_start) <= tolerance)
    used_p, used_t, pairs = set(), set(), []
    for _, j, i in candidates:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def text_similarity(ref: str, hyp: str) -> float:
    """1 - character edit distance / the longer string's length (1 = identical, 0 = nothing shared)."""
    if not ref and not hyp:
        return 1.0
    if not ref or not hyp:
        return 0.0
    out = jiwer.process_characters(ref, hyp, reference_transform=_CHARS, hypothesis_transform=_CHARS)
    return 1.0 - (out.substitutions + out.deletions + out.insertions) / max(len(ref), len(hyp))


_COUNT_NAMES = [f"{t}_{c}" for t in EVENT_TYPES for c in ("tp", "pred", "true")] + [
    "click_dist_sum", "click_matched", "text_sim_sum", "text_matched", "move_tp", "move_pred", "move_true"]


class EventCounts:
    """Summable event-match counts over episodes: add per episode, sum across processes, then compute."""

    def __init__(self, tolerance: int = 2) -> None:
        if tolerance < 0:
            raise ValueError(f"eval.event_tolerance={tolerance} must be >= 0 frames")
        self.tolerance = int(tolerance)
        self.counts = torch.zeros(len(_COUNT_NAMES), dtype=torch.float64)

    def _add(self, name: str, value: float) -> None:
        self.counts[_COUNT_NAMES.index(name)] += value

    def add(self, pred: Sequence[ActionEvent], true: Sequence[ActionEvent]) -> list[tuple[int, int]]:
        """Add one episode's events; returns the matched (pred, true) index pairs."""
        pairs = match_events(pred, true, self.tolerance)
        for e in pred:
            self._add(f"{e.type}_pred", 1)
        for e in true:
            self._add(f"{e.type}_true", 1)
        for i, j in pairs:
            p, t = pred[i], true[j]
            self._add(f"{t.type}_tp", 1)
            if t.type in POINT_TYPES and None not in (p.x, t.x):
                self._add("click_dist_sum", math.hypot(p.x - t.x, p.y - t.y))
                self._add("click_matched", 1)
            if t.type == "type":
                self._add("text_sim_sum", text_similarity(t.text or "", p.text or ""))
                self._add("text_matched", 1)
        return pairs

    def add_move_frames(self, pred_action: Sequence[str], true_action: Sequence[str]) -> None:
        """Move frames, scored per frame (a move has no single instant to match)."""
        for p, t in zip(pred_action, true_action):
            self._add("move_tp", p == "move" and t == "move")
            self._add("move_pred", p == "move")
            self._add("move_true", t == "move")

    def merge(self, other: "EventCounts") -> "EventCounts":
        self.counts += other.counts
        return self

    def compute(self) -> dict:
        c = dict(zip(_COUNT_NAMES, self.counts.tolist()))
        out: dict = {}
        tp = n_pred = n_true = 0.0
        for t in EVENT_TYPES:
            p, r, f1 = _prf(c[f"{t}_tp"], c[f"{t}_pred"], c[f"{t}_true"])
            out.update({f"event_{t}_precision": p, f"event_{t}_recall": r, f"event_{t}_f1": f1,
                        f"event_{t}_n_true": int(c[f"{t}_true"]), f"event_{t}_n_pred": int(c[f"{t}_pred"])})
            tp, n_pred, n_true = tp + c[f"{t}_tp"], n_pred + c[f"{t}_pred"], n_true + c[f"{t}_true"]
        p, r, f1 = _prf(tp, n_pred, n_true)
        mp, mr, mf1 = _prf(c["move_tp"], c["move_pred"], c["move_true"])
        out.update(event_precision=p, event_recall=r, event_f1=f1, event_n_true=int(n_true),
                   event_n_pred=int(n_pred), event_tolerance=self.tolerance,
                   event_click_mean_dist=c["click_dist_sum"] / c["click_matched"] if c["click_matched"] else None,
                   event_typed_text_similarity=c["text_sim_sum"] / c["text_matched"] if c["text_matched"] else None,
                   move_frame_precision=mp, move_frame_recall=mr, move_frame_f1=mf1)
        return out


def _prf(tp: float, n_pred: float, n_true: float) -> tuple[float | None, float | None, float | None]:
    """Precision, recall, F1 (None where undefined: no predictions / no targets / neither)."""
    p = tp / n_pred if n_pred else None
    r = tp / n_true if n_true else None
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else None
    return p, r, f1


class EpisodeFrames:
    """Per-frame predictions and targets of whole episodes, gathered from the scored frames of windows.

    Validation scores each frame in one window (data.clips.scoring_windows); events span windows, so
    the frames are put back together per episode before events are made. Rows hold class ids.
    """

    def __init__(self) -> None:
        self.rows: list[tuple] = []  # (episode id, frame, pred a, k, m, x, y, prob, true a, k, m, x, y, has click)

    def add_batch(self, outputs, batch, keep: torch.Tensor) -> None:
        """keep [B]: clips this process counts (distributed padding repeats clips)."""
        scored = batch["scored"].bool() & keep.bool().to(batch["scored"].device)[:, None]
        if not scored.any():
            return
        probs = torch.softmax(outputs.action_logits.float(), dim=-1)
        pa = probs.argmax(-1)
        cols = [pa, outputs.key_logits.argmax(-1), outputs.modifier_logits.argmax(-1), outputs.click_xy[..., 0],
                outputs.click_xy[..., 1], probs.max(-1).values, batch["action"], batch["key"], batch["modifier"],
                batch["click_xy"][..., 0], batch["click_xy"][..., 1], batch["click_mask"]]
        cols = [c.detach().float().cpu() for c in cols]
        b_idx, t_idx = torch.nonzero(scored.cpu(), as_tuple=True)
        for b, t in zip(b_idx.tolist(), t_idx.tolist()):
            ep, start = batch["clip_id"][b].rsplit("@", 1)
            self.rows.append((ep, int(start) + t, *(c[b, t].item() for c in cols)))

    def episodes(self, action_names, key_names, modifier_names) -> dict[str, tuple[dict, dict]]:
        """{episode id: (predicted frames, true frames)}, each a dict of per-frame name lists for
        `frames_to_events` (frames missing from the rows, e.g. a window whose video failed, are `none`)."""
        by_ep: dict[str, dict[int, tuple]] = {}
        for row in self.rows:
            by_ep.setdefault(row[0], {})[row[1]] = row[2:]
        out = {}
        for ep, frames in sorted(by_ep.items()):
            n = max(frames) + 1
            pred = {"action": ["none"] * n, "key": [None] * n, "modifier": [None] * n, "click": [None] * n,
                    "score": [0.0] * n}
            true = {"action": ["none"] * n, "key": [None] * n, "modifier": [None] * n, "click": [None] * n}
            for f, (pa, pk, pm, px, py, prob, ta, tk, tm, tx, ty, tc) in frames.items():
                pred["action"][f] = action_names[int(pa)]
                pred["key"][f], pred["modifier"][f] = key_names[int(pk)], modifier_names[int(pm)]
                pred["click"][f], pred["score"][f] = (px, py), prob
                true["action"][f] = action_names[int(ta)]
                true["key"][f] = key_names[int(tk)] if tk >= 0 else None
                true["modifier"][f] = modifier_names[int(tm)] if tm >= 0 else None
                true["click"][f] = (tx, ty) if tc else None
            out[ep] = (pred, true)
        return out

    def event_counts(self, action_names, key_names, modifier_names, tolerance: int) -> EventCounts:
        counts = EventCounts(tolerance)
        for pred, true in self.episodes(action_names, key_names, modifier_names).values():
            counts.add(frames_to_events(**pred), frames_to_events(**true))
            counts.add_move_frames(pred["action"], true["action"])
        return counts
