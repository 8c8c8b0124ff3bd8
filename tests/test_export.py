"""export=ducktrack: per-frame labels -> events.jsonl + metadata.json that the importer's own rules label back to
the same labels (inference/export.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from action_decoder.data.labels import VideoInfo
from action_decoder.data.vocab import LabelVocab
from action_decoder.inference.export import differing_frames, roundtrip, write_ducktrack

from tests.conftest import REPO

VOCAB = LabelVocab.from_config(OmegaConf.load(REPO / "conf" / "labels" / "default.yaml"))
W, H, FPS = 320, 200, 5.0


def labels_of(rows):
    """rows: (action, key, modifier, (x, y) | None) per frame."""
    return {"action": [r[0] for r in rows], "key": [r[1] for r in rows], "modifier": [r[2] for r in rows],
            "click": [list(r[3]) if r[3] is not None else None for r in rows]}


def back(tmp_path, labels, fps=FPS):
    video = tmp_path / "source.mp4"
    video.write_bytes(b"")  # the link's target; the importer's labels need only its VideoInfo here
    write_ducktrack(tmp_path, labels, video, fps, W, H, "Click OK", VOCAB, ["pseudo_label"], {"min_score": 0.0})
    n = len(labels["action"])
    return roundtrip(tmp_path, VideoInfo(fps=10.0, frame_count=int(n / fps * 10)), fps, VOCAB)


def test_every_kind_of_frame_labels_back_the_same(tmp_path):
    rows = [
        ("move", None, None, None),                     # first frame: a move needs a position logged before it
        ("none", None, None, None),
        ("click", None, "none", (0.25, 0.5)),
        ("double_click", None, "none", (0.25, 0.5)),    # the previous click is near in time and space
        ("none", None, None, None),
        ("none", None, None, None),
        ("click", None, "none", (0.25, 0.5)),           # a click again where the frame allows > 0.5 s (rule 5)
        ("double_click", None, "shift", (0.7, 0.2)),    # no click before it: two clicks inside the frame
        ("right_click", None, "ctrl", (0.1, 0.9)),
        ("drag", None, "none", (0.2, 0.2)),
        ("drag", None, "shift", (0.3, 0.25)),           # the modifier changes during the drag
        ("drag", None, "shift", (0.4, 0.3)),
        ("move", None, None, None),
        ("drag", None, "none", (0.5, 0.5)),             # a one-frame drag
        ("scroll_down", None, "none", None),
        ("scroll_down", None, "none", None),
        ("scroll_up", None, "ctrl", None),
        ("type", "h", "none", None),
        ("type", "I", "shift", None),
        ("type", " ", "none", None),
        ("type", "other", "none", None),
        ("key", "enter", "none", None),
        ("key", "other", "shift", None),
        ("hotkey", "c", "ctrl", None),
        ("hotkey", "s", "ctrl+shift", None),
        ("hotkey", "other", "alt", None),
        ("move", None, None, None),
        ("drag", None, "none", (0.9, 0.9)),             # a drag running to the last frame: released after the video
    ]
    labels = labels_of(rows)
    got = back(tmp_path, labels)
    assert differing_frames(labels, got) == [], [(f, got["action"][f]) for f in differing_frames(labels, got)]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert (meta["screen_width"], meta["screen_height"]) == (W, H) and meta["tags"] == ["pseudo_label"]
    assert (tmp_path / "task.txt").read_text().strip() == "Click OK"
    assert (tmp_path / "video.mp4").is_symlink()


@pytest.mark.parametrize("seed", range(5))
def test_random_label_sequences_round_trip(tmp_path, seed):
    """Random sequences of labels an event log can give (named keys for key, a held ctrl/alt/cmd for hotkey,
    clicks at distinct spots) come back exactly, at 5 and 10 frames/s."""
    rng = np.random.default_rng(seed)
    keys = [k for k in VOCAB.keys.names if len(k) == 1 and k != " "]
    named = [k for k in VOCAB.keys.names if len(k) > 1]
    rows = []
    for _ in range(60):
        a = rng.choice(["none", "move", "click", "double_click", "right_click", "drag", "scroll_up", "scroll_down",
                        "type", "key", "hotkey"])
        xy = (float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.95)))
        mod = str(rng.choice(["none", "shift"]))
        if a in ("none", "move"):
            rows.append((a, None, None, None))
        elif a in ("click", "double_click", "right_click", "drag"):
            rows.append((a, None, mod, xy))
        elif a in ("scroll_up", "scroll_down"):
            rows.append((a, None, mod, None))
        elif a == "type":
            rows.append((a, str(rng.choice(keys + [" "])), mod, None))
        elif a == "key":
            rows.append((a, str(rng.choice(named)), mod, None))
        else:
            rows.append((a, str(rng.choice(keys)).lower(), str(rng.choice(["ctrl", "alt", "ctrl+shift", "cmd"])), None))
    for fps in (5.0, 10.0):
        labels = labels_of(rows)
        got = back(tmp_path, labels, fps)
        diff = differing_frames(labels, got)
        assert diff == [], [(f, rows[f], got["action"][f], got["modifier"][f]) for f in diff[:5]]


def test_labels_no_log_can_give_are_reported_not_hidden(tmp_path):
    """A `key` whose key is a printable character is a `type` to the importer: the frame differs, and says so."""
    rows = [("none", None, None, None), ("key", "a", "none", None), ("hotkey", "a", "shift", None),
            ("click", None, "none", (0.5, 0.5)), ("click", None, "none", (0.5, 0.5))]   # rule 5: a double click
    labels = labels_of(rows)
    got = back(tmp_path, labels)
    assert differing_frames(labels, got) == [1, 2, 4]
    assert got["action"][1:] == ["type", "type", "click", "double_click"]
