"""annotate.py through the real CLI: a labelled recording (event P/R/F1), a bare video (no events.jsonl), a bad
file reported and counted, and two processes sharding the files under `accelerate launch`."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from action_decoder.evaluation.events import EventCounts, frames_to_events
from tests.conftest import only_run_dir, run_cli, run_train, subprocess_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def checkpoint(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("annotate_ckpt")
    # [height, width] as the tiny preset uses (16 x 32 px = 2 x 4 tokens of 8 px): frames keep the screen's shape
    run_train(prepared_data, out, "train.epochs=1", "backbone.vision.image_size=[16,32]")
    return only_run_dir(out) / "best.pt"


@pytest.fixture(scope="module")
def inputs(prepared_data, tmp_path_factory):
    """A folder with two recording folders (with events), one bare mp4 (no events) and a file that is no video."""
    recordings = prepared_data.parent / "recordings"
    names = sorted(p.name for p in recordings.iterdir())[:3]
    root = tmp_path_factory.mktemp("annotate_in")
    for name in names[:2]:
        shutil.copytree(recordings / name, root / name)
    shutil.copy(recordings / names[2] / "video.mp4", root / "bare.mp4")
    (root / "notes.mp4").write_text("this is not a video\n")
    return root, names[:2]


def annotate(*args, launch=None):
    cmd = [*(launch or [sys.executable]), "annotate.py", *args]
    return run_cli(cmd, env=subprocess_env(**({"ACCELERATE_USE_CPU": "1"} if launch else {})), timeout=400)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_annotate_recordings_with_and_without_events_and_a_bad_file(checkpoint, inputs, tmp_path):
    root, labelled = inputs
    proc = annotate(f"checkpoint={checkpoint}", f"input={root}", f"output={tmp_path}")
    total = json.loads((tmp_path / "annotate.json").read_text())
    assert (total["recordings"], total["annotated"], total["bad"]) == (4, 3, 1)
    assert total["bad_inputs"][0]["input"].endswith("notes.mp4") and "notes" in proc.stdout
    assert total["scored_recordings"] == 2 and total["metrics"]["event_tolerance"] == 2

    for rec in (*labelled, "bare"):
        out = tmp_path / rec
        frames = read_jsonl(out / "frames.jsonl")
        assert [r["frame"] for r in frames] == list(range(len(frames))) and len(frames) == 20  # 4 s at 5 frames/s
        assert frames[3]["t"] == pytest.approx(0.6)
        for r in frames:
            assert 0.0 < r["action_prob"] <= 1.0
            assert ("x" in r) == (r["action"] in ("click", "double_click", "right_click", "drag"))
            assert ("key" in r) == (r["action"] in ("type", "key", "hotkey"))
        actions = read_jsonl(out / "actions.jsonl")
        # actions.jsonl holds exactly the events of frames.jsonl, in pixels of the 320x200 video and normalized
        lists = {"action": [r["action"] for r in frames], "key": [r.get("key") for r in frames],
                 "modifier": [r.get("modifier") for r in frames],
                 "click": [(r["x"], r["y"]) if "x" in r else None for r in frames]}
        events = frames_to_events(**lists)
        assert [(a["type"], a["frame_start"], a["frame_end"]) for a in actions] == \
            [(e.type, e.frame_start, e.frame_end) for e in events]
        for a in actions:
            assert a["t_start"] == pytest.approx(a["frame_start"] / 5) and a["t_end"] > a["t_start"]
            if "x" in a:
                assert a["x"] == pytest.approx(a["x_norm"] * 320, abs=0.1)
                assert a["y"] == pytest.approx(a["y_norm"] * 200, abs=0.1)
        assert (out / "timeline.png").stat().st_size > 0
        summary = json.loads((out / "annotate.json").read_text())
        assert summary["num_frames"] == 20 and summary["width"] == 320 and summary["height"] == 200
        assert ("metrics" in summary) == (rec != "bare")

    # the labelled recordings' scores are their events matched against the prepared labels of the same recording
    counts = EventCounts(2)
    prepared = {json.loads(line)["id"]: json.loads(line)
                for split in ("train", "val", "test")
                for line in (_prepared_dir(checkpoint) / f"{split}.jsonl").read_text().splitlines()}
    for rec in labelled:
        frames = read_jsonl(tmp_path / rec / "frames.jsonl")
        ep = prepared[rec]
        pred = frames_to_events(action=[r["action"] for r in frames], key=[r.get("key") for r in frames],
                                modifier=[r.get("modifier") for r in frames],
                                click=[(r["x"], r["y"]) if "x" in r else None for r in frames])
        true = frames_to_events(action=ep["action"], key=ep["key"], modifier=ep["modifier"], click=ep["click"])
        counts.add(pred, true)
        counts.add_move_frames([r["action"] for r in frames], ep["action"])
        one = json.loads((tmp_path / rec / "annotate.json").read_text())["metrics"]
        assert one["event_n_true"] == len(true) > 0
    expect = counts.compute()
    for k in ("event_f1", "event_n_true", "event_n_pred", "move_frame_f1"):
        assert total["metrics"][k] == pytest.approx(expect[k]) if expect[k] is not None else total["metrics"][k] is None


def _prepared_dir(checkpoint) -> Path:
    return Path(torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]["data"]["prepared_dir"])


def test_two_processes_shard_the_files(checkpoint, inputs, tmp_path):
    root, labelled = inputs
    launch = ["accelerate", "launch", "--config_file", "conf/accelerate/cpu_2proc.yaml"]
    proc = annotate(f"checkpoint={checkpoint}", f"input={root}", f"output={tmp_path}", launch=launch)
    total = json.loads((tmp_path / "annotate.json").read_text())
    assert (total["recordings"], total["annotated"], total["bad"]) == (4, 3, 1)
    assert sorted(total["recordings_annotated"]) == sorted([*labelled, "bare"])
    assert "[rank 1] skipped notes" in proc.stdout  # inputs sorted: bare, notes, rec0, rec1 -> rank 1 got notes
    for rec in (*labelled, "bare"):
        assert (tmp_path / rec / "frames.jsonl").is_file()


def test_parallel_checkpoint_annotates_through_stream_with_transcripts(prepared_data, inputs, tmp_path):
    run_train(prepared_data, tmp_path / "run", "experiment=new_arch_tiny", "train.epochs=1")
    ckpt = only_run_dir(tmp_path / "run", "new_arch_tiny") / "best.pt"
    root, labelled = inputs
    annotate(f"checkpoint={ckpt}", f"input={root / labelled[0]}", f"output={tmp_path / 'out'}")
    frames = read_jsonl(tmp_path / "out" / labelled[0] / "frames.jsonl")
    assert len(frames) == 20 and all(isinstance(r["transcript"], str) for r in frames)
    assert "metrics" in json.loads((tmp_path / "out" / labelled[0] / "annotate.json").read_text())
