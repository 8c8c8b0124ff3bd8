"""A real-desktop recording made in the test (Xvfb + xterm + xcalc, xdotool input, pynput events, x11grab video)
goes through the importer: every scripted action is labelled within one frame of when the script did it, and
the cursor drawn in decoded frames sits where pynput logged it. Skipped only where the X tools are missing
(`apt-get install -y xvfb xdotool ffmpeg xterm x11-apps x11-utils xfonts-base`; .ci/run installs them)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest

from action_decoder.recorders.desktop import TASKS, missing_tools
from tests.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FPS = 10.0
MISSING = missing_tools()
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(bool(MISSING), reason=f"desktop recorder needs {', '.join(MISSING)} (see data/README.md §5)")]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One recording with all 8 tasks (every action class) and a pause, prepared at 10 fps."""
    root = tmp_path_factory.mktemp("desktop")
    common = [f"data.recordings_dir={root / 'recordings'}", f"data.prepared_dir={root / 'prepared'}"]
    for script, extra in (("record_desktop.py", ["data=desktop", "data.desktop.num_recordings=1", "data.desktop.workers=1",
                                                 "data.desktop.pause_fraction=1", "data.desktop.steps=[8,8]"]),
                          ("prepare_data.py", ["data=desktop", f"data.sample_fps={SAMPLE_FPS}", "data.val_fraction=0",
                                               "data.test_fraction=0"])):
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *common, *extra], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, f"{script}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rec = root / "recordings" / "desk_00000"
    episode = json.loads((root / "prepared" / "train.jsonl").read_text())
    summary = json.loads((root / "prepared" / "summary.json").read_text())
    return rec, episode, summary, json.loads((rec / "script.json").read_text())


def test_every_scripted_action_is_labelled_within_one_frame(recorded):
    rec, episode, summary, script = recorded
    assert sorted(script["tasks"]) == sorted(TASKS)
    action = episode["action"]
    checked = 0
    for a in script["actions"]:
        if a["action"] == "move":                       # travel: some frame of it is a move (or outranks it)
            f, last = int(a["video_time"] * SAMPLE_FPS), int((a["video_time"] + a["span"]) * SAMPLE_FPS)
            assert any(x != "none" for x in action[f:last + 1]), a
            continue
        # The event happened during the xdotool call (video_time is its midpoint; a call takes ~20-110 ms, more
        # on a loaded machine): its class must be on a frame within one frame of the call.
        lo = max(0, int((a["video_time"] - a["span"] / 2) * SAMPLE_FPS) - 1)
        hi = int((a["video_time"] + a["span"] / 2) * SAMPLE_FPS) + 2
        assert a["action"] in action[lo:hi], f"{a} not within one frame of frames {lo + 1}-{hi - 2}: {action[lo:hi]}"
        if a["action"] in ("key", "hotkey"):                 # the key head names the key pressed
            assert a["key"] in [k for x, k in zip(action[lo:hi], episode["key"][lo:hi]) if x == a["action"]], a
        checked += 1
    assert checked >= 20
    classes = {a for a in action}
    assert classes >= {"move", "click", "double_click", "right_click", "drag", "scroll_up", "scroll_down", "type",
                       "key", "hotkey"}
    # Typed keys come out as typed: the type frames spell the typed characters in order (10 fps keeps them all here
    # unless two fell into one frame, which the summary counts).
    typed = "".join(a["key"] for a in script["actions"] if a["action"] == "type")
    labelled = "".join(k for a, k in zip(action, episode["key"]) if a == "type")
    lost, total = summary["typed_chars_lost"]
    assert total == len(typed) and len(labelled) == total - lost


def test_pause_is_cut_from_video_and_clock(recorded):
    rec, episode, summary, script = recorded
    assert len(script["segment_frames"]) == 2
    assert len(decord.VideoReader(str(rec / "video.mp4"))) == sum(script["segment_frames"])
    assert summary["dropped_events"].get("during_pause", 0) >= 1       # the move made while paused
    assert summary["narration"]["cues"] == 8 and summary["skipped_recordings"] == {}


def logged_position(rec: Path, t: float) -> tuple[float, float]:
    """The cursor position pynput logged last before event-clock time t."""
    xy = None
    for line in (rec / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["time_stamp"] > t:
            break
        if e["action"] in ("move", "click", "scroll"):
            xy = (e["x"], e["y"])
    return xy


def test_cursor_in_decoded_frames_sits_at_the_logged_position(recorded):
    rec, episode, _, script = recorded
    meta = json.loads((rec / "metadata.json").read_text())
    start = meta["obs_record_state_timings"]["OBS_WEBSOCKET_OUTPUT_STARTED"][0]
    events = [json.loads(line) for line in (rec / "events.jsonl").read_text().splitlines()]
    pause = next(e["time_stamp"] for e in events if e["action"] == "pause")
    resume = next(e["time_stamp"] for e in events if e["action"] == "resume")
    reader = decord.VideoReader(str(rec / "video.mp4"))
    checks = script["cursor_checks"]
    assert len(checks) == 3                                  # start, after the resume, end
    for check in checks:
        t = check["t"]
        video_t = t - start - (resume - pause if t > resume else 0.0)
        x, y = logged_position(rec, t)
        gray = reader[int(video_t * reader.get_avg_fps())].asnumpy().mean(axis=2)
        # The root cursor (16x16 'X', hotspot at its centre) is the only bright thing on the black root there.
        ys, xs = np.nonzero(gray[int(y) - 12:int(y) + 13, int(x) - 12:int(x) + 13] >= 128)
        assert len(xs) >= 5, check
        cx, cy = (xs.min() + xs.max()) / 2 + int(x) - 12, (ys.min() + ys.max()) / 2 + int(y) - 12
        assert abs(cx - x) <= 2 and abs(cy - y) <= 2, (check, (cx, cy), (x, y))


def test_prepared_desktop_set_validates(recorded):
    rec = recorded[0]
    out = rec.parents[1] / "prepared"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "validate_data.py"), f"data.prepared_dir={out}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
