"""The real DuckTrack example log (tests/fixtures/ducktrack_example, MIT) through the real CLIs.

The recording's video was removed upstream; a blank video of the recorded length stands in for it
(labels depend only on the video's fps and frame count).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.videos import write_blank_video

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "ducktrack_example"
START = 150160.871470625        # OBS_WEBSOCKET_OUTPUT_STARTED
STOP = 150193.79908625          # OBS_WEBSOCKET_OUTPUT_STOPPING
VIDEO_FPS, SAMPLE_FPS = 30, 5.0


def frame_of(event_time: float) -> int:
    return int((event_time - START) * SAMPLE_FPS)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ducktrack")
    rec = root / "recordings" / "ducktrack_example"
    shutil.copytree(FIXTURE, rec)
    write_blank_video(rec / "video.mp4", round((STOP - START) * VIDEO_FPS), fps=VIDEO_FPS, size=(64, 40))
    out = root / "prepared"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"),
                           f"data.recordings_dir={root / 'recordings'}", f"data.prepared_dir={out}",
                           f"data.sample_fps={SAMPLE_FPS}"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    split = next(s for s, n in summary["recordings"].items() if n == 1)
    episode = json.loads((out / f"{split}.jsonl").read_text())
    return out, summary, split, episode, proc.stdout


@pytest.mark.e2e
def test_raw_event_counts_match_the_log(prepared):
    _, summary, _, _, stdout = prepared
    events = summary["events"]
    assert events["left_press"] == 22 and events["left_release"] == 22
    assert events["key_press"] == 27 and events["key_release"] == 27
    assert events["scroll"] == 140 and events["move"] == 13163
    assert summary["dropped_events"] == {} and summary["unknown_keys"] == {}
    assert "left_press 22" in stdout and "key_press 27" in stdout


@pytest.mark.e2e
def test_log_resolves_into_the_actions_it_shows(prepared):
    _, summary, split, _, _ = prepared
    # 22 left presses: 3 drags (175.31 -> 176.12 ~205 px, 179.94 -> 180.95, 187.51 -> 187.96),
    # a triple click at 177.92 / 178.06 / 178.18 (click, double, double), 17 single clicks.
    # 27 key presses: "wikipedia" + enter, "transformer model" (space types " ").
    # 140 scrolls, all dy = -1 on macOS with natural scrolling (scroll_direction = -1): reading down pages.
    assert summary["labelled_events"] == {"click": 17, "double_click": 2, "drag": 3, "key": 1,
                                          "scroll_down": 140, "type": 26}
    frames = summary["frames_per_action"][split]
    # 988 video frames at 30 fps -> floor(32.93 s * 5) = 164 sampled frames.
    assert sum(frames.values()) == summary["frames"][split] == 164
    # Drags cover their press frame and the frames strictly before the release frame: 4 + 5 + 2.
    assert frames["drag"] == 11 and frames["double_click"] == 2 and frames["key"] == 1
    assert frames["scroll_up"] == 0 and frames["hotkey"] == 0 and frames["right_click"] == 0


@pytest.mark.e2e
def test_specific_frames(prepared):
    *_, episode, _ = prepared
    action, key, click = episode["action"], episode["key"], episode["click"]
    assert action[frame_of(150162.266221958)] == "type" and key[frame_of(150162.266221958)] == "w"
    assert action[frame_of(150163.229376666)] == "key" and key[frame_of(150163.229376666)] == "enter"
    # Frame 27 holds the space press then "m": the earlier type event wins.
    assert frame_of(150166.283431416) == frame_of(150166.428195416) == 27
    assert action[27] == "type" and key[27] == " "
    assert action[frame_of(150168.915498791)] == "scroll_down"
    drag = frame_of(150175.306346458)
    assert action[drag:drag + 4] == ["drag"] * 4 and action[frame_of(150176.118872166)] != "drag"
    assert click[drag] == pytest.approx([363.3359375 / 1512, 359.7578125 / 982], abs=1e-6)
    # 177.92 and 178.06 share a frame: the double click outranks the first click.
    assert frame_of(150177.917626625) == frame_of(150178.055403458)
    assert action[frame_of(150178.055403458)] == "double_click"
    assert action[frame_of(150178.177948041)] == "double_click"
    assert episode["modifier"][drag] == "none" and episode["prompt"] == ""
    assert episode["screen"] == [1512, 982] and episode["video_fps"] == VIDEO_FPS


@pytest.mark.e2e
def test_prepared_ducktrack_set_validates(prepared):
    out = prepared[0]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "validate_data.py"), f"data.prepared_dir={out}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: 1 episodes, 164 frames" in proc.stdout
