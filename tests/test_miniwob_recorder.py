"""MiniWoB++ episodes recorded in the test in a real Chromium (Xvfb, xdotool input, pynput events, x11grab video)
go through the importer: every action the solver made is labelled with its class within one frame, the typed
text comes out as typed, the held-out task type lands in test_unseen, and a re-run records nothing twice.
Skipped only where Chromium or the X tools are missing (`apt-get install -y xvfb xdotool ffmpeg chromium
chromium-driver`, `pip install -r requirements-desktop.txt`; .ci/run installs them)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from action_decoder.data.importer import split_of
from action_decoder.recorders.miniwob import (MiniwobConfig, check_labels, missing_tools, pending, plan,
                                              recording_id)
from tests.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
MISSING = missing_tools()
needs_browser = pytest.mark.skipif(bool(MISSING), reason=f"MiniWoB++ recorder needs {', '.join(MISSING)} "
                                                         "(see data/README.md §9)")
TRAIN, UNSEEN = ["find-word", "scroll-text"], ["drag-box"]


def _run(script: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """3 episodes of 3 task types (one of them held out as test_unseen), recorded twice into the same folder,
    then prepared."""
    root = tmp_path_factory.mktemp("miniwob")
    common = ["data=miniwob", f"data.recordings_dir={root / 'recordings'}", f"data.prepared_dir={root / 'prepared'}",
              f"data.miniwob.tasks=[{','.join(TRAIN)}]", f"data.miniwob.test_unseen=[{','.join(UNSEEN)}]"]
    record = common + ["data.miniwob.num_episodes=3", "data.miniwob.workers=2"]
    first = _run("record_miniwob.py", record)
    again = _run("record_miniwob.py", record)
    _run("prepare_data.py", common + ["data.val_fraction=0", "data.test_fraction=0"])
    prepared = {s: [json.loads(line) for line in (root / "prepared" / f"{s}.jsonl").read_text().splitlines()]
                for s in ("train", "val", "test", "test_unseen")}
    summary = json.loads((root / "prepared" / "summary.json").read_text())
    return root, first.stdout, again.stdout, prepared, summary


@needs_browser
@pytest.mark.e2e
def test_episodes_are_solved_and_rerun_keeps_them(recorded):
    root, first, again, _, _ = recorded
    assert "3 played: 3 solved" in first, first
    assert "3 already done (recorded, or unsolved and not kept), 0 played" in again, again
    for i in range(3):
        rec = root / "recordings" / recording_id(i)
        meta = json.loads((rec / "metadata.json").read_text())
        task, seed = plan(MiniwobConfig(tasks=tuple(TRAIN), test_unseen=tuple(UNSEEN)), i)
        assert meta["miniwob"]["task"] == task and meta["miniwob"]["seed"] == seed
        assert meta["miniwob"]["reward"] > 0 and meta["tags"] == ["miniwob", task]
        assert meta["miniwob"]["task_area"] == {"x": 0.0, "y": 0.0, "width": 160.0, "height": 210.0}
        # task.txt is the page's own instruction; the narration has one cue per solver step.
        instruction = (rec / "task.txt").read_text().strip()
        assert instruction == meta["description"] and len(instruction) > 10
        assert (rec / "narration.srt").read_text().count("-->") >= 2


@needs_browser
@pytest.mark.e2e
def test_held_out_task_type_is_test_unseen(recorded):
    _, _, _, prepared, summary = recorded
    assert [e["tags"][1] for e in prepared["test_unseen"]] == UNSEEN
    assert sorted(e["tags"][1] for e in prepared["train"]) == sorted(TRAIN)
    assert summary["recordings"] == {"train": 2, "val": 0, "test": 0, "test_unseen": 1}


@needs_browser
@pytest.mark.e2e
def test_every_solver_action_is_labelled(recorded):
    root, _, _, prepared, summary = recorded
    classes = set()
    for episode in prepared["train"] + prepared["test_unseen"]:
        script = json.loads((root / "recordings" / episode["id"] / "script.json").read_text())
        lost = summary["lost_by_recording"].get(episode["id"], {}).get("type", [0, 0])[0]
        r = check_labels(episode, script, lost)
        assert r["missed"] == [], r
        assert r["typed_ok"], r
        assert r["labelled"] + r["collided"] == r["actions"] >= 2
        classes |= set(episode["action"])
    # find-word double-clicks a word and copies it (ctrl+c / ctrl+v), scroll-text wheels down and types the
    # word it found, drag-box drags.
    assert classes >= {"click", "double_click", "hotkey", "scroll_down", "type", "drag", "move"}


@needs_browser
@pytest.mark.e2e
def test_prepared_miniwob_set_validates(recorded):
    root = recorded[0]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "validate_data.py"),
                           f"data.prepared_dir={root / 'prepared'}"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- without a browser -----------------------------------------------------------------------------------
def test_test_unseen_is_one_rule_by_task_tag():
    assert split_of("mw_00001", 0.1, 0.1, ["miniwob", "drag-box"], ["drag-box"]) == "test_unseen"
    for rid in ("mw_00001", "mw_00002", "syn_00003"):      # without the tag: the id hash, as before
        assert split_of(rid, 0.1, 0.1, ["miniwob", "click-test"], ["drag-box"]) == split_of(rid, 0.1, 0.1)


def test_config_refuses_unseen_task_types_that_are_trained_on_and_unknown_ones():
    with pytest.raises(ValueError, match="never trained on"):
        MiniwobConfig(tasks=("click-test", "drag-box"), test_unseen=("drag-box",))
    with pytest.raises(ValueError, match="no solver"):
        MiniwobConfig(tasks=("click-test", "book-flight"))


def test_rerun_plan_skips_finished_and_decided_episodes(tmp_path):
    cfg = MiniwobConfig(num_episodes=5, tasks=("click-test", "enter-text"))
    (tmp_path / recording_id(0)).mkdir()
    (tmp_path / recording_id(0) / "metadata.json").write_text("{}")
    (tmp_path / f".{recording_id(1)}.tmp").mkdir()                       # an interrupted recording: redone
    lines = [{"index": 2, "task": plan(cfg, 2)[0], "outcome": "unsolved"},
             {"index": 3, "task": plan(cfg, 3)[0], "outcome": "fault", "fault": "hung_page"}]
    (tmp_path / "recorder_log.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines) + '{"index": 4, "ta')
    assert pending(tmp_path, cfg) == [1, 3, 4]
    kept = MiniwobConfig(num_episodes=5, tasks=("click-test", "enter-text"), keep_unsolved=True)
    assert pending(tmp_path, kept) == [1, 2, 3, 4]


@needs_browser
@pytest.mark.e2e
def test_faults_end_the_episode_and_the_next_one_plays(tmp_path, monkeypatch):
    """A browser killed between episodes and a page whose script never returns: each ends its episode as a
    named fault, and the station's next episode is solved in a fresh browser."""
    import psutil

    from action_decoder.recorders.miniwob import Station, record_episode

    monkeypatch.setenv("DISPLAY", ":none")              # Station points DISPLAY at its own Xvfb; restored after
    cfg = MiniwobConfig(tasks=("click-test",), workers=1)
    station = Station(cfg)
    try:
        assert record_episode(station, tmp_path, 0, cfg)["outcome"] == "solved"
        for child in psutil.Process(station.driver.service.process.pid).children(recursive=True):
            child.kill()                                 # the browser crashes (chromedriver stays)
        crashed = record_episode(station, tmp_path, 1, cfg)
        assert (crashed["outcome"], crashed["fault"]) == ("fault", "browser_crash"), crashed
        assert record_episode(station, tmp_path, 2, cfg)["outcome"] == "solved"
        station.driver.execute_script("setTimeout(function () { for (;;) {} }, 50);")   # the page hangs
        hung = record_episode(station, tmp_path, 3, cfg)
        assert (hung["outcome"], hung["fault"]) == ("fault", "hung_page"), hung
        assert record_episode(station, tmp_path, 4, cfg)["outcome"] == "solved"
    finally:
        station.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [recording_id(i) for i in (0, 2, 4)]


def test_label_check_finds_labels_collisions_and_misses():
    episode = {"sample_fps": 5.0, "action": ["none", "click", "none", "type", "type", "key", "none", "none"],
               "key": [None, None, None, "a", "c", "tab", None, None]}
    act = lambda a, t, **k: {"action": a, "video_time": t, "span": 0.02, **k}   # noqa: E731
    script = {"typed": ["abc"], "actions": [
        act("move", 0.1), act("click", 0.3), act("type", 0.65, key="a"), act("type", 0.75, key="b"),
        act("type", 0.85, key="c"), act("key", 1.05, key="tab")]}
    r = check_labels(episode, script, typed_lost=1)          # "b" shared frame 3 with "a": lost, counted
    assert (r["actions"], r["labelled"], r["collided"], r["missed"], r["typed_ok"]) == (5, 5, 0, [], True)
    assert not check_labels(episode, script, typed_lost=0)["typed_ok"]     # an uncounted loss fails
    # A key pressed where no frame near it says so is a miss; a click under a key frame is a collision.
    script["actions"] += [act("key", 1.45, key="enter"), act("click", 1.0)]
    r = check_labels(episode, script, typed_lost=1)
    assert [m["key"] for m in r["missed"]] == ["enter"] and r["collided"] == 1
