"""The synthetic screen recorder writes real DuckTrack recordings whose every action leaves a visible trace."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw

from action_decoder.config import load_config
from action_decoder.recorders.synthetic.recorder import (SyntheticConfig, generate_recording, generate_recordings,
                                           plan_recording, write_recording)
from action_decoder.recorders.synthetic.scene import CURSOR_SHAPE, Desktop
from action_decoder.recorders.synthetic.tasks import TASKS, VARIANTS

REPO = Path(__file__).resolve().parents[1]
CFG = SyntheticConfig(num_recordings=4, duration=6.0, pause_fraction=0.0, seed=3)
ALL_ACTIONS = {"none", "move", "click", "double_click", "right_click", "drag", "scroll_up", "scroll_down", "type",
               "key", "hotkey"}
# the class each task exists to show (scroll_list: per variant)
TASK_CLASS = {"click_button": "click", "double_click_item": "double_click", "right_click_menu": "right_click",
              "drag_item": "drag", "type_text": "type", "key_press": "key", "hotkey": "hotkey"}
MODS = {"shift": "shift", "shift_l": "shift", "shift_r": "shift", "ctrl": "ctrl", "ctrl_l": "ctrl", "ctrl_r": "ctrl",
        "alt": "alt", "alt_l": "alt", "alt_r": "alt", "cmd": "cmd", "cmd_l": "cmd", "cmd_r": "cmd"}


def expected_class(task: str, variant: str) -> str:
    return f"scroll_{variant}" if task == "scroll_list" else TASK_CLASS[task]


def classify(events: list[dict]) -> list[tuple[str, list[int]]]:
    """A small independent reference of data/README.md rules 4-11: (action class, indices of its events).
    'none' marks a gap of >= 0.3 s without input."""
    out, held, last_click, press, pos, paused = [], {}, None, None, None, False
    prev_t = None
    for i, ev in enumerate(events):
        a, t = ev["action"], ev["time_stamp"]
        if a in ("pause", "resume"):
            paused = a == "pause"
            prev_t = t if a == "resume" else prev_t
            continue
        if paused:
            continue
        if prev_t is not None and t - prev_t >= 0.3:
            out.append(("none", [i]))
        prev_t = t
        if a == "move":
            if pos is not None and math.dist(pos, (ev["x"], ev["y"])) > 2:
                out.append(("move", [i]))
            pos = (ev["x"], ev["y"])
        elif a == "click" and ev["button"] == "left":
            if ev["pressed"]:
                press = (i, t, ev["x"], ev["y"])
            elif press is not None:
                pi, pt, px, py = press
                if math.dist((px, py), (ev["x"], ev["y"])) > 5:
                    out.append(("drag", [pi, i]))
                    last_click = None
                elif last_click and pt - last_click[0] <= 0.5 and math.dist(last_click[1:], (px, py)) <= 5:
                    out.append(("double_click", [pi, i]))
                    last_click = (pt, px, py)
                else:
                    out.append(("click", [pi, i]))
                    last_click = (pt, px, py)
                press = None
        elif a == "click" and ev["button"] == "right" and ev["pressed"]:
            out.append(("right_click", [i]))
        elif a == "scroll" and ev["dy"]:
            out.append(("scroll_up" if ev["dy"] > 0 else "scroll_down", [i]))
        elif a == "press":
            name = ev["name"]
            if name in MODS:
                held[name] = True
            elif {MODS[m] for m in held} & {"ctrl", "cmd", "alt"}:
                out.append(("hotkey", [i]))
            elif len(name) == 1 or name == "space":
                out.append(("type", [i]))
            else:
                out.append(("key", [i]))
        elif a == "release":
            held.pop(ev["name"], None)
    return out


def plan_events(plan) -> list[dict]:
    return plan.timed_events()


def read_events(rec: Path) -> list[dict]:
    return [json.loads(line) for line in (rec / "events.jsonl").read_text().splitlines()]


# --- every action class, every task variant ---

@pytest.mark.parametrize("task,variant", [(t, v) for t in TASKS for v in VARIANTS[t]])
def test_each_task_variant_produces_its_action_class(task, variant):
    for index in range(3):
        plan = plan_recording(index, CFG, task, variant)
        classes = {c for c, _ in classify(plan_events(plan))}
        assert expected_class(task, variant) in classes, (task, variant, index, classes)


def test_fixed_task_mix_covers_every_action_class(tmp_path):
    seen = set()
    mix = [(t, VARIANTS[t][0]) for t in TASKS] + [("scroll_list", "up")]
    for index, (task, variant) in enumerate(mix):
        rec = generate_recording(tmp_path, index, CFG, task, variant, paused=False)
        seen |= {c for c, _ in classify(read_events(rec))}
    assert seen == ALL_ACTIONS


def test_labelling_rule_timings_hold_over_many_recordings():
    """No accidental double clicks, double clicks fast, drags long, modifiers used for capitals."""
    cfg = SyntheticConfig(pause_fraction=0.3, seed=11)
    for index in range(60):
        plan = plan_recording(index, cfg)
        events = plan_events(plan)
        assert all(a["time_stamp"] <= b["time_stamp"] for a, b in zip(events, events[1:]))
        classes = classify(events)
        names = [c for c, _ in classes]
        if plan.task != "double_click_item":
            assert "double_click" not in names, (index, plan.task, plan.variant)
        for c, idx in classes:
            if c == "drag":
                a, b = events[idx[0]], events[idx[1]]
                assert math.dist((a["x"], a["y"]), (b["x"], b["y"])) > 5
        held = set()
        for ev in events:
            if ev["action"] == "press" and ev["name"].startswith("shift"):
                held.add(ev["name"])
            elif ev["action"] == "release" and ev["name"].startswith("shift"):
                held.discard(ev["name"])
            elif ev["action"] == "press" and len(ev["name"]) == 1 and ev["name"].isupper():
                assert held, f"recording {index}: capital {ev['name']} typed without shift"
        assert not held


# --- every class leaves a visible trace in the rendered UI ---

@pytest.mark.parametrize("task,variant", [(t, v) for t in TASKS for v in VARIANTS[t]])
def test_action_changes_the_screen(task, variant):
    """Render the UI (cursor hidden) right before the task's action and right after: it must differ."""
    plan = plan_recording(0, CFG, task, variant)
    events = plan.events                                   # video time, as the renderer sees them
    timed = [dict(ev, time_stamp=t) for t, ev in events]
    target = expected_class(task, variant)
    idx = next(ix for c, ix in classify(timed) if c == target)
    desk = Desktop(plan.layout)
    for t, ev in events[:idx[0]]:
        desk.handle(ev, t)
    t_before = events[idx[0]][0]
    before = desk.render(t_before, cursor=False)
    for t, ev in events[idx[0]:idx[-1] + 1]:
        desk.handle(ev, t)
    after = desk.render(events[idx[-1]][0] + 0.01, cursor=False)
    changed = np.abs(before.astype(int) - after.astype(int)).max(axis=2) > 30
    assert changed.sum() >= 6, f"{task}/{variant}: {target} left no visible trace"


# --- determinism ---

def test_same_seed_same_events_bytes_different_seed_different(tmp_path):
    a = generate_recording(tmp_path / "a", 5, CFG)
    b = generate_recording(tmp_path / "b", 5, CFG)
    c = generate_recording(tmp_path / "c", 5, SyntheticConfig(**{**CFG.__dict__, "seed": CFG.seed + 1}))
    for name in ("events.jsonl", "metadata.json", "task.txt", "narration.srt"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "events.jsonl").read_bytes() != (c / "events.jsonl").read_bytes()


def test_worker_pool_writes_the_same_recordings_as_one_process(tmp_path):
    cfg = SyntheticConfig(**{**CFG.__dict__, "num_recordings": 3, "workers": 2})
    paths = generate_recordings(tmp_path / "pool", cfg, progress=False)
    assert [p.name for p in paths] == ["syn_00000", "syn_00001", "syn_00002"]
    for p in paths:
        single = generate_recording(tmp_path / "one", int(p.name[4:]), cfg)
        assert (p / "events.jsonl").read_bytes() == (single / "events.jsonl").read_bytes()
    assert not list((tmp_path / "pool").glob(".*tmp")), "temp folders must be renamed away"


# --- the video: frames, pause, cursor, typed text ---

def test_video_decodes_with_pause_removed(tmp_path):
    cfg = SyntheticConfig(**{**CFG.__dict__, "pause_fraction": 1.0})
    plan = plan_recording(1, cfg, "type_text")
    rec = write_recording(tmp_path, plan, cfg)
    events = read_events(rec)
    meta = json.loads((rec / "metadata.json").read_text())
    pause = next(e["time_stamp"] for e in events if e["action"] == "pause")
    resume = next(e["time_stamp"] for e in events if e["action"] == "resume")
    t0 = meta["obs_record_state_timings"]["OBS_WEBSOCKET_OUTPUT_STARTED"][0]
    assert t0 < pause < resume
    vr = decord.VideoReader(str(rec / "video.mp4"))
    expected = round((cfg.duration - (resume - pause)) * cfg.fps)
    assert len(vr) == expected == meta["synthetic"]["num_frames"] < cfg.duration * cfg.fps
    assert vr[0].shape == (cfg.height, cfg.width, 3)
    assert vr.get_avg_fps() == pytest.approx(cfg.fps)
    # every non-pause event maps inside the video once the paused span is removed (data/README.md rule 1)
    for e in events:
        if e["action"] in ("pause", "resume") or pause < e["time_stamp"] < resume:
            continue
        v = e["time_stamp"] - t0 - (resume - pause if e["time_stamp"] >= resume else 0)
        assert 0 <= v < len(vr) / cfg.fps


def _cursor_tip(frame: np.ndarray) -> tuple[int, int]:
    """Where the magenta arrow's tip is: best match of the cursor polygon against the magenta pixels
    (robust to the 4:2:0 chroma blur that eats the arrow's 1-px tip)."""
    h, w = max(p[1] for p in CURSOR_SHAPE) + 1, max(p[0] for p in CURSOR_SHAPE) + 1
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon(CURSOR_SHAPE, fill=1)
    shape = np.array(im, bool)
    f = frame.astype(int)
    mask = (f[..., 0] > 170) & (f[..., 2] > 170) & (f[..., 1] < 110)     # CURSOR_FILL is (255, 0, 255)
    assert mask.sum() >= 12, "no magenta cursor in the frame"
    win = sliding_window_view(np.pad(mask, ((0, h), (0, w))), (h, w))[:mask.shape[0], :mask.shape[1]]
    score = (win & shape).sum((2, 3)) - (win & ~shape).sum((2, 3))
    y, x = np.unravel_index(np.argmax(score), score.shape)
    return int(x), int(y)


@pytest.mark.parametrize("task", ["click_button", "right_click_menu"])
def test_click_coordinates_land_on_the_rendered_cursor(tmp_path, task):
    plan = plan_recording(2, CFG, task, paused=False)
    rec = write_recording(tmp_path, plan, CFG)
    events = read_events(rec)
    t0 = json.loads((rec / "metadata.json").read_text())["obs_record_state_timings"]["OBS_WEBSOCKET_OUTPUT_STARTED"][0]
    vr = decord.VideoReader(str(rec / "video.mp4"))
    clicks = [e for e in events if e["action"] == "click" and e["pressed"]]
    assert clicks
    for e in clicks:
        k = int((e["time_stamp"] - t0) * CFG.fps)
        x, y = _cursor_tip(vr[k].asnumpy())
        assert abs(x - e["x"]) <= 1 and abs(y - e["y"]) <= 1, (e, (x, y), k)


def test_typed_character_appears_in_the_text_field(tmp_path):
    plan = plan_recording(0, CFG, "type_text", paused=False)
    rec = write_recording(tmp_path, plan, CFG)
    events = read_events(rec)
    t0 = json.loads((rec / "metadata.json").read_text())["obs_record_state_timings"]["OBS_WEBSOCKET_OUTPUT_STARTED"][0]
    first = next(e for e in events if e["action"] == "press" and e["name"] not in MODS)
    click = [e for e in events if e["action"] == "click" and e["time_stamp"] < first["time_stamp"]][-1]
    field = next(f for f in plan.layout.fields if f.rect[0] <= click["x"] < f.rect[2] and f.rect[1] <= click["y"] < f.rect[3])
    x0, y0, x1, y1 = field.rect
    k = int((first["time_stamp"] - t0) * CFG.fps)
    vr = decord.VideoReader(str(rec / "video.mp4"))
    crop = lambda i: vr[i].asnumpy()[y0 + 2:y1 - 2, x0 + 2:x0 + 40].astype(int)
    typed = np.abs(crop(k) - crop(k + 2)).max(axis=2) > 40
    idle = np.abs(crop(k - 1) - crop(k)).max(axis=2) > 40       # nothing typed yet: the field is still
    assert typed.sum() >= 5 and idle.sum() == 0


# --- the text files ---

def test_metadata_task_and_srt_parse(tmp_path):
    rec = generate_recording(tmp_path, 0, CFG, "key_press", "enter", paused=False)
    meta = json.loads((rec / "metadata.json").read_text())
    assert (meta["screen_width"], meta["screen_height"]) == (CFG.width, CFG.height)
    assert meta["scroll_direction"] in (1, -1)
    assert meta["tags"] == ["synthetic", "key_press"]
    prompt = (rec / "task.txt").read_text().strip()
    assert prompt and prompt == meta["description"]
    t0 = meta["obs_record_state_timings"]["OBS_WEBSOCKET_OUTPUT_STARTED"][0]
    events = read_events(rec)
    assert t0 <= events[0]["time_stamp"]
    for e in events:
        keys = {"move": {"x", "y"}, "click": {"x", "y", "button", "pressed"}, "scroll": {"x", "y", "dx", "dy"},
                "press": {"name"}, "release": {"name"}, "pause": set(), "resume": set()}[e["action"]]
        assert set(e) == {"time_stamp", "action"} | keys
    cues = re.findall(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)\n",
                      (rec / "narration.srt").read_text())
    assert len(cues) >= 3
    n_frames = meta["synthetic"]["num_frames"]
    prev_end = 0.0
    for k, cue in enumerate(cues):
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, cue[1:9])
        a, b = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert int(cue[0]) == k + 1 and prev_end <= a < b <= n_frames / CFG.fps and cue[9].strip()
        prev_end = b
    assert any("enter" in c[9] or "return" in c[9] for c in cues)


def test_scroll_sign_follows_rule_8_whatever_the_flag_and_the_flag_varies():
    dirs = set()
    for index in range(40):
        variant = ("down", "up")[index % 2]
        plan = plan_recording(index, CFG, "scroll_list", variant)
        dirs.add(plan.layout.scroll_direction)
        dys = [ev["dy"] for _, ev in plan.events if ev["action"] == "scroll"]
        assert dys and all((dy < 0) == (variant == "down") for dy in dys)
    assert dirs == {1, -1}


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="even"):
        SyntheticConfig(width=321)
    with pytest.raises(ValueError, match="unknown synthetic tasks"):
        SyntheticConfig(tasks=["click_button", "fly"])
    with pytest.raises(ValueError, match="unknown keys"):
        SyntheticConfig.from_cfg({"num_recordings": 2, "colour": "red"})


@pytest.mark.e2e
def test_cli_writes_recordings_from_config_overrides(tmp_path):
    out = tmp_path / "recs"
    res = subprocess.run([sys.executable, str(REPO / "scripts/make_synthetic_data.py"),
                          "data.synthetic.num_recordings=2", f"data.recordings_dir={out}", "data.synthetic.workers=1",
                          "data.synthetic.duration=4.0"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert re.search(r"wrote 2 synthetic recordings to .* recordings/min", res.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["syn_00000", "syn_00001"]
    cfg = load_config([f"data.recordings_dir={out}"])
    assert SyntheticConfig.from_cfg(cfg.data.synthetic).tasks == TASKS
    for rec in out.iterdir():
        assert {p.name for p in rec.iterdir()} == {"video.mp4", "events.jsonl", "metadata.json", "task.txt",
                                                  "narration.srt"}
