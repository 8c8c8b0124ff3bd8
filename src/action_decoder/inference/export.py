"""Pseudo-labels as recordings: per-frame labels -> a DuckTrack folder the importer reads back to the same labels.

`write_ducktrack(out_dir, labels, ...)` writes `events.jsonl`, `metadata.json`, `task.txt` and `video.mp4` (a
symbolic link to the annotated video), so that `prepare_data.py data=recordings data.recordings_dir=<annotations>`
treats the annotations like anyone's recordings (data/README.md §1). The event log is built so that the labelling
rules (§2) give back each frame's label: one input event per labelled frame, placed inside that frame's interval
of the video clock (`OBS_WEBSOCKET_OUTPUT_STARTED` = 0):

  move          a cursor move of MOVE_PX from the cursor's last position (rule 11 needs > 2 px)
  click         left press + release at the point; placed more than 0.5 s after a previous click at the same spot
                where the frame allows it (rule 5 would make it a double click)
  double_click  a second press within 0.5 s of the previous click, or two clicks inside the frame (rule 3: the
                double click wins the frame)
  right_click   right press + release at the point
  drag          a run of drag frames: press in the first, a move to each frame's point (and that frame's modifiers)
                in the next ones, release in the frame after the run, at least MOVE_PX away (rule 6: nearer is a click)
  scroll_*      a scroll of dy = +1 / -1 at the cursor
  type / key / hotkey   the key press (space for " "; an unknown name for `other`), with the modifiers pressed
                before and released after

Labels that no event log can produce (a `key` whose key is a printable character, a `hotkey` without ctrl/alt/cmd,
a `type` of a named key, ...) come back as the importer makes them: `roundtrip()` labels the written log with the
importer's own code and the caller records the frames that differ (annotate.json `export.frames_differing`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from action_decoder.data.events import read_events, read_metadata
from action_decoder.data.labels import VideoInfo, label_events
from action_decoder.data.vocab import MODIFIER_ORDER, OTHER_KEY, LabelVocab

MOVE_PX = 6.0              # > CLICK_MAX_DIST_PX (5) and > MOVE_MIN_TRAVEL_PX (2) of the labelling rules
DOUBLE_CLICK_S = 0.5       # rule 5
_UNKNOWN_CHARS = "\u00e9\u00e8\u00fc\u00f1\u00e7\u00df\u00f8\u00e5"   # printable, for `type` of `other`
_UNKNOWN_NAME = "f13"      # a named key for `key` / `hotkey` of `other`


def frame_labels(frames: list[dict], keep: list[bool] | None = None) -> dict:
    """frames.jsonl rows -> per-frame label lists (names; normalized clicks). `keep[f]` False: the frame is `none`
    (its event fell under annotate.min_score)."""
    out = {"action": [], "key": [], "modifier": [], "click": []}
    for f, r in enumerate(frames):
        if keep is not None and not keep[f]:
            r = {"action": "none"}
        out["action"].append(r["action"])
        out["key"].append(r.get("key"))
        out["modifier"].append(r.get("modifier"))
        out["click"].append([r["x"], r["y"]] if "x" in r else None)
    return out


def build_events(labels: dict, sample_fps: float, width: int, height: int, vocab: LabelVocab) -> list[dict]:
    """The events.jsonl lines (dicts) whose labels are `labels` (see the module docstring)."""
    action, key, modifier, click = labels["action"], labels["key"], labels["modifier"], labels["click"]
    n = len(action)
    lines: list[dict] = []
    cursor = [width / 2.0, height / 2.0]
    last_click: tuple[float, tuple[float, float]] | None = None   # (press time, point) of the latest left click
    step = 1.0 / sample_fps

    def t(f: int, u: float) -> float:
        return (f + u) * step

    def emit(time: float, action_name: str, **fields) -> None:
        lines.append({"time_stamp": round(time, 6), "action": action_name, **fields})

    def mods_of(f: int) -> list[str]:
        m = modifier[f]
        return [] if m in (None, "none") else [x for x in MODIFIER_ORDER if x in m.split("+")]

    def point(f: int) -> tuple[float, float]:
        c = click[f] if click[f] is not None else (cursor[0] / width, cursor[1] / height)
        return float(c[0]) * width, float(c[1]) * height

    def left_click(time: float, p: tuple[float, float], release: float) -> None:
        nonlocal last_click
        emit(time, "click", x=p[0], y=p[1], button="left", pressed=True)
        emit(release, "click", x=p[0], y=p[1], button="left", pressed=False)
        last_click = (time, p)
        cursor[:] = p

    def near_last(p) -> bool:
        return last_click is not None and math.dist(p, last_click[1]) <= 5.0

    if n:  # the first position report: rule 11 measures a move from the position logged before it
        emit(t(0, 0.01), "move", x=cursor[0], y=cursor[1])
    f = 0
    while f < n:
        a = action[f]
        mods = mods_of(f) if a not in ("none", "move") else []
        for m in mods:
            emit(t(f, 0.10), "press", name=m)
        if a == "move":
            dx = MOVE_PX if cursor[0] + MOVE_PX <= width else -MOVE_PX
            cursor[0] += dx
            emit(t(f, 0.5), "move", x=cursor[0], y=cursor[1])
        elif a == "click":
            p = point(f)
            press = t(f, 0.2)
            if near_last(p) and press - last_click[0] <= DOUBLE_CLICK_S:
                press = min(last_click[0] + DOUBLE_CLICK_S + 1e-3, t(f, 0.6))
            left_click(press, p, press + 0.1 * step)
        elif a == "double_click":
            p = point(f)
            press = t(f, 0.5)
            if not (near_last(p) and press - last_click[0] <= DOUBLE_CLICK_S):
                left_click(t(f, 0.2), p, t(f, 0.3))
            left_click(press, p, t(f, 0.6))
        elif a == "right_click":
            p = point(f)
            emit(t(f, 0.2), "click", x=p[0], y=p[1], button="right", pressed=True)
            emit(t(f, 0.3), "click", x=p[0], y=p[1], button="right", pressed=False)
            cursor[:] = p
        elif a == "drag":
            end = f
            while end + 1 < n and action[end + 1] == "drag":
                end += 1
            start_p = point(f)
            emit(t(f, 0.5), "click", x=start_p[0], y=start_p[1], button="left", pressed=True)
            cursor[:] = start_p
            held = list(mods)
            for h in range(f + 1, end + 1):   # a continuation frame's modifier is what is held at its end (rule 6)
                target = mods_of(h)
                for m in [m for m in held if m not in target]:
                    emit(t(h, 0.3), "release", name=m)
                for m in [m for m in target if m not in held]:
                    emit(t(h, 0.3), "press", name=m)
                held = target
                cursor[:] = point(h)
                emit(t(h, 0.5), "move", x=cursor[0], y=cursor[1])
            if math.dist(cursor, start_p) <= 5.0:   # nearer is a click (rule 4): move the release off the press
                cursor[0] = start_p[0] + (MOVE_PX if start_p[0] + MOVE_PX <= width else -MOVE_PX)
                cursor[1] = start_p[1]
            emit(t(end + 1, 0.03), "click", x=cursor[0], y=cursor[1], button="left", pressed=False)
            for m in reversed(held):
                emit(t(end + 1, 0.06), "release", name=m)
            last_click = None                        # a drag ends any click chain
            f = end + 1
            continue
        elif a in ("scroll_up", "scroll_down"):
            emit(t(f, 0.5), "scroll", x=cursor[0], y=cursor[1], dx=0, dy=1 if a == "scroll_up" else -1)
        elif a in ("type", "key", "hotkey"):
            name = _key_name(a, key[f], vocab, f)
            emit(t(f, 0.4), "press", name=name)
            emit(t(f, 0.5), "release", name=name)
        for m in reversed(mods):
            emit(t(f, 0.9), "release", name=m)
        f += 1
    return lines


def _key_name(action: str, key: str | None, vocab: LabelVocab, f: int) -> str:
    """The pynput name a press must log to be labelled `key` (rule 9)."""
    if key is None:
        return _UNKNOWN_NAME
    if key == " ":
        return "space"
    if key == OTHER_KEY:
        if action == "type":
            return next((c for c in _UNKNOWN_CHARS if c not in vocab.keys), _UNKNOWN_CHARS[0])
        return _UNKNOWN_NAME if _UNKNOWN_NAME not in vocab.keys else OTHER_KEY
    return key


def write_ducktrack(out_dir: Path, labels: dict, video: Path, sample_fps: float, width: int, height: int,
                    prompt: str, vocab: LabelVocab, tags: list[str], source: dict) -> None:
    """events.jsonl, metadata.json, task.txt and video.mp4 (a link to `video`) in `out_dir`."""
    lines = build_events(labels, sample_fps, width, height, vocab)
    (out_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    meta = {"screen_width": int(width), "screen_height": int(height),
            "obs_record_state_timings": {"OBS_WEBSOCKET_OUTPUT_STARTED": [0.0]},
            "description": prompt, "tags": tags, "pseudo_labels": source}
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=1))
    (out_dir / "task.txt").write_text(prompt + "\n", encoding="utf-8")
    link = out_dir / "video.mp4"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(video).resolve(), link)


def roundtrip(out_dir: Path, info: VideoInfo, sample_fps: float, vocab: LabelVocab) -> dict:
    """The importer's labels of the written folder (per-frame lists, as `frame_labels`)."""
    labels, _ = label_events(read_events(out_dir / "events.jsonl"), read_metadata(out_dir / "metadata.json"),
                             info, sample_fps, vocab)
    return {"action": labels.action, "key": labels.key, "modifier": labels.modifier, "click": labels.click}


def differing_frames(a: dict, b: dict, tol: float = 1e-4) -> list[int]:
    """Frames whose action, key, modifier or click (within `tol`) differ between two label dicts."""
    out = []
    for f in range(len(a["action"])):
        ca, cb = a["click"][f], b["click"][f]
        same_click = (ca is None) == (cb is None) and (ca is None or math.dist(ca, cb) <= tol)
        if not (a["action"][f] == b["action"][f] and a["key"][f] == b["key"][f]
                and a["modifier"][f] == b["modifier"][f] and same_click):
            out.append(f)
    return out
