"""What the sample rate loses: labelled events that share a frame with a winner under rule 3 are counted
per class (prepare_data.py summary) and validate_data.py names the recordings losing too many."""
from __future__ import annotations

import pytest

import json
import subprocess
import sys
from pathlib import Path

from action_decoder.config import load_config
from action_decoder.data.events import read_events, read_metadata
from action_decoder.data.labels import VideoInfo, label_events
from action_decoder.data.vocab import LabelVocab
from tests.recordings import click, key, move, scroll, tap, write_recording

REPO = Path(__file__).resolve().parents[1]

# 5 fps: frame i covers [0.2 i, 0.2 i + 0.2). Comments give each event's frame.
COLLIDING = [
    *key(0.00, "a"), *key(0.08, "b"), *key(0.16, "c"),      # frame 0: "a" wins, "b" and "c" lost
    *key(0.25, "d"), *tap(0.30, 100, 100),                   # frame 1: type outranks click: click lost
    *tap(0.45, 200, 200, hold=0.02), *tap(0.52, 200, 200, hold=0.02),  # frame 2: click, double_click -> click lost
    *key(0.65, "enter"), *key(0.70, "e"),                    # frame 3: key outranks type: "e" lost
    scroll(0.85, dy=-1), scroll(0.90, dy=-1),                # frame 4: second scroll_down lost
    *key(1.05, "f"),                                         # frame 5: alone, kept
    move(1.25, 10, 10), move(1.30, 300, 300),                # frame 6: moves are not labelled events
]


def test_collisions_are_counted_per_class(tmp_path):
    vocab = LabelVocab.from_config(load_config().labels)
    rec = write_recording(tmp_path / "rec", COLLIDING, n_video_frames=None)
    labels, stats = label_events(read_events(rec / "events.jsonl"), read_metadata(rec / "metadata.json"),
                                 VideoInfo(fps=10.0, frame_count=20), 5.0, vocab)
    assert labels.action[:7] == ["type", "type", "double_click", "key", "scroll_down", "type", "move"]
    assert labels.key[:2] == ["a", "d"]
    assert stats.labelled_events == {"type": 6, "key": 1, "click": 2, "double_click": 1, "scroll_down": 2}
    assert stats.lost_events == {"type": 3, "click": 2, "scroll_down": 1}
    assert stats.lost_share() == {"click": [2, 2], "scroll_down": [1, 2], "type": [3, 6]}


def test_a_drag_continuation_is_not_an_event_and_beats_what_it_covers(tmp_path):
    vocab = LabelVocab.from_config(load_config().labels)
    events = [click(0.1, 10, 10, True), move(0.3, 50, 50), *tap(0.5, 60, 60, button="right"),
              move(0.7, 90, 90), click(0.9, 100, 100, False)]     # drag from frame 0 to the release in frame 4
    rec = write_recording(tmp_path / "rec", events, n_video_frames=None)
    labels, stats = label_events(read_events(rec / "events.jsonl"), read_metadata(rec / "metadata.json"),
                                 VideoInfo(fps=10.0, frame_count=20), 5.0, vocab)
    assert labels.action[:5] == ["drag", "drag", "drag", "drag", "none"]
    # The continuation frames are not events (never counted lost), but they outrank the right click of frame 2.
    assert stats.labelled_events == {"drag": 1, "right_click": 1} and stats.lost_events == {"right_click": 1}


@pytest.mark.e2e
def test_summary_and_validate_name_the_lossy_recording(tmp_path):
    recordings = tmp_path / "recordings"
    write_recording(recordings / "lossy", COLLIDING)
    write_recording(recordings / "clean", [*key(0.1, "x"), *key(0.5, "y"), *tap(1.1, 10, 10)])
    out = tmp_path / "prepared"
    common = [f"data.recordings_dir={recordings}", f"data.prepared_dir={out}", "data.sample_fps=5"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), *common],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lost_events"] == {"click": 2, "scroll_down": 1, "type": 3}
    assert summary["typed_chars_lost"] == [3, 8]
    assert summary["lost_by_recording"] == {"lossy": {"click": [2, 2], "scroll_down": [1, 2], "type": [3, 6]}}
    assert "type 3 of 8 (38%)" in proc.stdout and "typed characters lost: 3 of 8 (37.5%)" in proc.stdout

    def validate(*extra):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "validate_data.py"), *common, *extra],
                              capture_output=True, text=True, cwd=REPO)
    proc = validate("data.max_lost_share=0.4")                  # 3/6 type and 2/2 click, 1/2 scroll exceed 0.4
    assert proc.returncode == 0, proc.stdout + proc.stderr     # a warning, not a problem
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all(w.startswith("warning: lossy: ") for w in warnings)
    assert any("3 of 6 type events (50%)" in w for w in warnings)
    proc = validate("data.max_lost_share=1.0")
    assert "warning" not in proc.stdout and proc.returncode == 0
