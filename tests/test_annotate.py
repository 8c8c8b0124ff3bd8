"""annotate.py through the real CLI: a labelled recording (event P/R/F1), a bare video (no events.jsonl), a bad
file reported and counted, and two processes sharding the files under `accelerate launch`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from action_decoder.evaluation.events import EventCounts, frames_to_events
from tests.conftest import REPO, only_run_dir, run_cli, run_train, subprocess_env

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


# ---- resumable, idempotent outputs ----

def recording_copies(prepared_data, tmp_path, n):
    recordings = prepared_data.parent / "recordings"
    root = tmp_path / "in"
    for name in sorted(p.name for p in recordings.iterdir())[:n]:
        shutil.copytree(recordings / name, root / name)
    return root


def annotate_cmd(*args, launch=None):
    return [*(launch or [sys.executable]), "annotate.py", *args]


def kill_after_first_recording(cmd, output, sig, env):
    """Start annotate in its own process group, wait until one recording folder is complete, then send `sig` to
    the whole group (every rank and DataLoader worker, as a scheduler's preemption does). Returns the exit code."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if output.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in output.iterdir()):
            break
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    return proc.wait(60)


def tree(root):
    """{relative path: bytes} of every file under the recording folders (the totals file is compared apart)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "annotate.json"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_killed_run_resumes_to_the_same_outputs(checkpoint, prepared_data, tmp_path, sig):
    root = recording_copies(prepared_data, tmp_path, 8)
    args = [f"checkpoint={checkpoint}", f"input={root}", "timeline_frames=0", "export=ducktrack"]
    annotate(*args, f"output={tmp_path / 'whole'}")
    whole = tree(tmp_path / "whole")

    out = tmp_path / "resumed"
    code = kill_after_first_recording(annotate_cmd(*args, f"output={out}"), out, sig, subprocess_env())
    assert code == -sig, f"annotate exited {code} before it was killed"
    assert not (out / "annotate.json").exists()
    done_before = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert 1 <= len(done_before) < 8
    proc = annotate(*args, f"output={out}")
    assert f"{len(done_before)} of 8 recordings already annotated" in proc.stdout
    assert tree(out) == whole  # byte for byte: nothing half-written survived, nothing finished was redone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp folder left
    total, expect = (json.loads((d / "annotate.json").read_text()) for d in (out, tmp_path / "whole"))
    assert total["metrics"] == expect["metrics"] and total["recordings_annotated"] == expect["recordings_annotated"]
    assert total["skipped_finished"] == len(done_before)

    # Same output, same checkpoint and settings: nothing to do. Other settings or overwrite=true: all redone.
    assert "8 of 8 recordings already annotated" in annotate(*args, f"output={out}").stdout
    proc = annotate(*args, f"output={out}", "annotate.min_score=0.5")
    assert "already annotated" not in proc.stdout
    assert json.loads((out / "annotate.json").read_text())["skipped_finished"] == 0
    proc = annotate(*args, f"output={out}", "overwrite=true")
    assert "already annotated" not in proc.stdout and tree(out) == whole


def test_two_processes_killed_and_resumed(checkpoint, prepared_data, tmp_path):
    """accelerate launch with 2 CPU processes, killed mid-run and relaunched: the same files as one process
    uninterrupted (windows of different recordings share batches: results do not depend on which)."""
    root = recording_copies(prepared_data, tmp_path, 8)
    args = [f"checkpoint={checkpoint}", f"input={root}", "timeline_frames=0"]
    annotate(*args, f"output={tmp_path / 'whole'}")
    launch = ["accelerate", "launch", "--config_file", "conf/accelerate/cpu_2proc.yaml"]
    out = tmp_path / "resumed"
    env = subprocess_env(ACCELERATE_USE_CPU="1")
    code = kill_after_first_recording(annotate_cmd(*args, f"output={out}", launch=launch), out, signal.SIGTERM, env)
    assert code != 0
    done_before = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    proc = annotate(*args, f"output={out}", launch=launch)
    assert f"{len(done_before)} of 8 recordings already annotated" in proc.stdout
    assert tree(out) == tree(tmp_path / "whole")
    assert json.loads((out / "annotate.json").read_text())["annotated"] == 8


def test_short_videos_and_real_ocap_recordings_are_annotated(checkpoint, prepared_data, tmp_path):
    """Fewer frames than a clip: one window padded with the last frame, as eval.py does. The three real ocap
    recordings (variable frame rate HEVC mkv) are sampled by their frames' times, as their importer does."""
    import av

    root = tmp_path / "in"
    root.mkdir()
    for mkv in (REPO / "tests" / "fixtures" / "owa_ocap").glob("*.mkv"):
        shutil.copy(mkv, root / mkv.name)
    src = next((prepared_data.parent / "recordings").iterdir()) / "video.mp4"
    with av.open(str(src)) as inp, av.open(str(root / "short.mp4"), "w") as out:  # 0.6 s: 3 frames at 5 fps
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 200, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == 6:
                break
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    annotate(f"checkpoint={checkpoint}", f"input={root}", f"output={tmp_path / 'out'}")
    total = json.loads((tmp_path / "out" / "annotate.json").read_text())
    assert (total["annotated"], total["bad"]) == (4, 0), total["bad_inputs"]
    clip_len = torch.load(checkpoint, map_location="cpu", weights_only=True)["config"]["data"]["clip_len"]
    frames = read_jsonl(tmp_path / "out" / "short" / "frames.jsonl")
    assert len(frames) == 3 < clip_len
    for name, n in (("0.3.2", 24), ("0.4.2", 38), ("0.5.1", 37)):  # 5 frames/s over each video's pts span
        assert len(read_jsonl(tmp_path / "out" / name / "frames.jsonl")) == n
        assert (tmp_path / "out" / name / "timeline.png").stat().st_size > 0


# ---- pseudo-labels back into training ----

def test_export_prepare_and_train_on_pseudo_labels(checkpoint, prepared_data, tmp_path):
    """annotate export=ducktrack -> prepare_data.py data=recordings -> train.py one epoch on labelled + pseudo."""
    recordings = prepared_data.parent / "recordings"
    held_out = [json.loads(line)["id"] for split in ("val", "test")
                for line in (prepared_data / f"{split}.jsonl").read_text().splitlines()]
    root = tmp_path / "unlabelled"
    for name in held_out:  # video + task only: no labels go in
        (root / name).mkdir(parents=True)
        shutil.copy(recordings / name / "video.mp4", root / name / "video.mp4")
        shutil.copy(recordings / name / "task.txt", root / name / "task.txt")
    pseudo = tmp_path / "pseudo"
    annotate(f"checkpoint={checkpoint}", f"input={root}", f"output={pseudo}", "export=ducktrack", "timeline_frames=0")
    run_cli([sys.executable, "scripts/prepare_data.py", "data=recordings", f"data.recordings_dir={pseudo}",
             f"data.prepared_dir={tmp_path / 'pseudo_prepared'}", "data.sample_fps=5", "data.val_fraction=0",
             "data.test_fraction=0"])
    episodes = {json.loads(line)["id"]: json.loads(line)
                for line in (tmp_path / "pseudo_prepared" / "train.jsonl").read_text().splitlines()}
    assert sorted(episodes) == sorted(held_out)
    for name in held_out:
        frames = read_jsonl(pseudo / name / "frames.jsonl")
        ep = episodes[name]
        differ = set(json.loads((pseudo / name / "annotate.json").read_text())["export"]["differing"])
        assert len(differ) <= len(frames) // 2
        assert ep["prompt"] == (recordings / name / "task.txt").read_text().strip()
        assert Path(ep["video"]).resolve() == (root / name / "video.mp4").resolve()
        for f, r in enumerate(frames):  # the importer gives back the predicted labels
            if f in differ:
                continue
            assert ep["action"][f] == r["action"] and ep["key"][f] == r.get("key")
            assert ep["modifier"][f] == r.get("modifier")
            assert (ep["click"][f] is None) == ("x" not in r)
            if "x" in r:
                assert ep["click"][f] == pytest.approx([r["x"], r["y"]], abs=1e-6)
    out = tmp_path / "train"
    run_train(prepared_data, out, "train.epochs=1", "backbone.vision.image_size=[16,32]",
              f"data.prepared_dir=[{prepared_data},{tmp_path / 'pseudo_prepared'}]")
    assert (only_run_dir(out) / "best.pt").is_file()


def test_calibration_stored_in_the_checkpoint_and_used(checkpoint, inputs, tmp_path):
    ckpt = tmp_path / "best.pt"
    shutil.copy(checkpoint, ckpt)
    proc = run_cli([sys.executable, "scripts/calibrate.py", f"checkpoint={ckpt}"])
    assert "ECE" in proc.stdout
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    cal = saved["calibration"]
    assert cal["split"] == "val" and cal["frames"] > 0 and cal["action_temperature"] > 0
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    assert 0 <= cal["ece_after"] <= 1 and 0 <= cal["ece_before"] <= 1
    original = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert set(saved) - set(original) == {"calibration"}  # the format is otherwise untouched
    assert all(torch.equal(saved["state"][k], original["state"][k]) for k in original["state"])

    run_cli([sys.executable, "eval.py", f"checkpoint={ckpt}", "split=val"])
    eval_dirs = list((tmp_path / "eval").glob("best_val_*"))
    md = (eval_dirs[0] / "eval.md").read_text()
    assert "## Calibration" in md and "reliability.png" in md and (eval_dirs[0] / "reliability.png").is_file()

    root, labelled = inputs
    annotate(f"checkpoint={ckpt}", f"input={root / labelled[0]}", f"output={tmp_path / 'cal'}", "timeline_frames=0")
    annotate(f"checkpoint={checkpoint}", f"input={root / labelled[0]}", f"output={tmp_path / 'raw'}",
             "timeline_frames=0")
    cal_frames, raw_frames = (read_jsonl(tmp_path / d / labelled[0] / "frames.jsonl") for d in ("cal", "raw"))
    assert json.loads((tmp_path / "cal" / labelled[0] / "annotate.json").read_text())["action_temperature"] == \
        pytest.approx(cal["action_temperature"])
    assert [r["action"] for r in cal_frames] == [r["action"] for r in raw_frames]  # scaling changes no prediction
    assert [r["action_prob"] for r in cal_frames] != [r["action_prob"] for r in raw_frames]


def test_annotate_applies_the_event_rule_stored_in_the_checkpoint(checkpoint, inputs, tmp_path):
    from action_decoder.evaluation.decision import EventRule, store_rule

    root, labelled = inputs
    ruled = tmp_path / "ruled.pt"
    shutil.copy(checkpoint, ruled)
    # a rule no trained model would get: click everywhere, then one click per 100 frames
    store_rule(ruled, EventRule(bias={"click": 50.0}, merge={"click": 100}), {"split": "test"})
    annotate(f"checkpoint={ruled}", f"input={root / labelled[0]}", f"output={tmp_path / 'out'}")
    frames = read_jsonl(tmp_path / "out" / labelled[0] / "frames.jsonl")
    actions = [r["action"] for r in frames]
    assert actions.count("click") == 1 and set(actions) <= {"click", "none", "move"}
    assert [a["type"] for a in read_jsonl(tmp_path / "out" / labelled[0] / "actions.jsonl")] == ["click"]
