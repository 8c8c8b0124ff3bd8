"""scripts/validate_data.py: a clean prepared set passes; every kind of damage is listed with split and line."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from action_decoder.config import load_config
from action_decoder.data.importer import prepare_dataset
from action_decoder.data.validate import validate_prepared
from action_decoder.data.vocab import LabelVocab
from tests.recordings import key, move, tap, write_recording

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vocab() -> LabelVocab:
    return LabelVocab.from_config(load_config().labels)


@pytest.fixture
def prepared(tmp_path, vocab):
    """One real 2 s recording prepared at 5 fps: click on frame 0, type on frame 2, moves on 4-5."""
    events = [*tap(0.1, 100, 100), *key(0.5, "a"), move(0.85, 10, 10), move(1.05, 300, 200)]
    write_recording(tmp_path / "rec" / "r1", events, n_video_frames=20)
    out = tmp_path / "prepared"
    prepare_dataset(tmp_path / "rec", out, 5.0, 0.0, 0.0, vocab, progress=False)
    episode = json.loads((out / "train.jsonl").read_text())
    assert episode["action"][:6] == ["click", "none", "type", "none", "move", "move"]
    return out, episode


def run_cli(prepared_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "validate_data.py"),
                           f"data.prepared_dir={prepared_dir}"], capture_output=True, text=True, cwd=REPO)


@pytest.mark.e2e
def test_clean_prepared_set_passes(prepared, vocab):
    out, _ = prepared
    report = validate_prepared(out, vocab)
    assert report.ok and report.episodes == 1 and report.frames == 10
    proc = run_cli(out)
    assert proc.returncode == 0 and "OK: 1 episodes, 10 frames" in proc.stdout


@pytest.mark.e2e
def test_every_problem_is_listed_with_split_and_line(prepared, vocab, tmp_path):
    out, good = prepared

    def variant(i: int, **changes) -> dict:
        e = copy.deepcopy(good)
        e["id"] = f"e{i}"
        e.update(changes)
        return e

    bad_labels = variant(1)
    bad_labels["action"][1] = "jump"                  # not in the vocabulary
    bad_labels["click"][0] = [1.5, 0.2]              # outside [0, 1]
    bad_labels["key"][3] = "enter"                   # a key on a none frame (rule 12)
    bad_labels["modifier"][2] = "meta"               # not a modifier class
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    short_key = variant(4)
    short_key["key"] = short_key["key"][:-1]
    lines = [
        json.dumps(bad_labels),
        json.dumps(variant(2, video=str(tmp_path / "missing.mp4"))),
        json.dumps(variant(3, frame_index=good["frame_index"][:-1] + [25])),   # video has 20 frames
        json.dumps(short_key),
        "{not json",
        json.dumps(variant(6, video=str(garbage))),
        json.dumps(variant(1)),                       # duplicate id
    ]
    (out / "train.jsonl").write_text("\n".join(lines) + "\n")
    (out / "test.jsonl").unlink()

    problems = validate_prepared(out, vocab).problems
    expected = [
        "train.jsonl:1: action 'jump' not in labels.actions at frame 1",
        "train.jsonl:1: modifier 'meta' not in labels.modifiers at frame 2",
        "train.jsonl:1: key is set on a 'none' frame (rule 12) at frame 3",
        "train.jsonl:1: click [1.5, 0.2] outside [0, 1] at frame 0",
        f"train.jsonl:2: video {tmp_path / 'missing.mp4'} does not exist",
        f"train.jsonl:3: video {good['video']} has 20 frames, frame_index needs 26",
        "train.jsonl:4: key has 9 entries, num_frames is 10",
        "train.jsonl:5: bad JSON",
        f"train.jsonl:6: video {garbage} does not open",
        "train.jsonl:7: id 'e1' already used at train.jsonl:1",
        "test.jsonl: missing",
    ]
    for text in expected:
        assert sum(p.startswith(text) for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected)

    proc = run_cli(out)
    assert proc.returncode == 1
    assert all(p in proc.stdout for p in problems) and "Traceback" not in proc.stderr


def test_frame_problems_are_grouped_not_dropped(prepared, vocab):
    out, good = prepared
    e = copy.deepcopy(good)
    e["action"] = ["warp"] * 10
    (out / "train.jsonl").write_text(json.dumps(e) + "\n")
    problems = validate_prepared(out, vocab, check_videos=False).problems
    assert "train.jsonl:1: action 'warp' not in labels.actions at frames 0, 1, 2, 3, 4 and 5 more" in problems
