"""ocap (Open World Agents) recordings through `prepare_data.py data=ocap`: the three real recordings in
tests/fixtures/owa_ocap (Notepad on Windows typing "test text", MIT) and hand-made ones for the edge cases."""
from __future__ import annotations

import json
from fractions import Fraction
import subprocess
import sys
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from mcap.writer import Writer

from action_decoder.config import load_config
from action_decoder.data.events import RecordingSkipped
from action_decoder.data.importer import prepare_recording, probe_video, video_size
from action_decoder.data.ocap import read_ocap, vk_name
from action_decoder.data.vocab import LabelVocab

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "owa_ocap"
VERSIONS = ("0.3.2", "0.4.2", "0.5.1")


@pytest.fixture(scope="module")
def vocab() -> LabelVocab:
    return LabelVocab.from_config(load_config().labels)


def typed(events) -> str:
    """Characters of the non-modifier key presses, as the importer's rule 9 sees them."""
    out = []
    for e in events:
        if e.action == "press" and e.name not in ("shift", "shift_r", "ctrl_l", "ctrl_r", "alt_l", "alt_gr"):
            out.append(" " if e.name == "space" else e.name)
    return "".join(out)


@pytest.mark.parametrize("version", VERSIONS)
def test_real_recording_types_test_text(version):
    mcap, mkv = FIXTURES / f"{version}.mcap", FIXTURES / f"{version}.mkv"
    rec = read_ocap(mcap, mkv, video_size(mkv))
    # Each recording types "test text" then hotkeys (ctrl+s, ctrl+c): letters are lower case, no shift.
    assert typed(rec.events).startswith("test text")
    w, h = video_size(mkv)
    assert (rec.meta.screen_width, rec.meta.screen_height) in ((w, h), (w - 1, h - 1))  # 1025x1017 padded to even


@pytest.mark.e2e
def test_real_recordings_prepare_and_validate(tmp_path):
    out = tmp_path / "prepared"
    common = [f"data.recordings_dir={FIXTURES}", f"data.prepared_dir={out}"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), "data=ocap", *common,
                           "data.sample_fps=30", "data.val_fraction=0", "data.test_fraction=0"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recordings"]["train"] == 3 and summary["skipped_recordings"] == {}
    episodes = {e["id"]: e for e in map(json.loads, (out / "train.jsonl").read_text().splitlines())}
    assert set(episodes) == set(VERSIONS)
    for version, ep in episodes.items():
        # At 30 fps no two characters share a frame: the type labels spell the text, then ctrl+s / ctrl+c.
        keys = [(a, k) for a, k in zip(ep["action"], ep["key"]) if a in ("type", "hotkey")]
        assert "".join(k for a, k in keys if a == "type") == "test text", version
        assert {k for a, k in keys if a == "hotkey"} <= {"s", "c"}
        assert all(m == "ctrl" for a, m in zip(ep["action"], ep["modifier"]) if a == "hotkey")
    assert summary["typed_chars_lost"] == [0, 27] and summary["unknown_keys"] == {}
    # Clicks outside the captured Notepad window (another window) are dropped and counted, never clipped.
    assert summary["dropped_events"]["outside_video"] > 0
    assert all(0 < c < 1 for ep in episodes.values() for xy in ep["click"] if xy for c in xy)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "validate_data.py"), "data=ocap", *common],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mouse_positions_land_on_the_cursor_drawn_in_the_video(tmp_path, vocab):
    """0.3.2: the second click, at desktop (876, 541), inside Notepad's window at (360, 307) with a 6 px
    invisible border, is at video (510, 234); the I-beam cursor is drawn there in the frame shown then."""
    episode, _ = prepare_recording(FIXTURES / "0.3.2.mcap", "0.3.2", 5.0, vocab, fmt="ocap",
                                   video_dir=tmp_path)
    clicks = [(i, xy) for i, xy in enumerate(episode["click"]) if xy]
    assert len(clicks) == 2
    frame, (cx, cy) = clicks[1]
    w, h = episode["screen"]
    assert (cx * w, cy * h) == pytest.approx((876 - 366, 541 - 307), abs=0.01)
    # The episode's video (sampled frames re-encoded) a frame later (the click may precede the redraw).
    image = decord.VideoReader(episode["video"])[episode["frame_index"][frame + 1]].asnumpy().mean(axis=2)
    ys, xs = np.nonzero(image[120:530] < 100)                # dark pixels in the text area below "test text"
    assert len(xs) > 10
    assert abs(xs.mean() - cx * w) < 6 and abs(ys.mean() + 120 - cy * h) < 10


def test_variable_frame_rate_is_sampled_by_pts_into_a_seekable_video(tmp_path, vocab):
    """ocap writes frames when the screen changes; sampled frame i is the frame on screen at i / sample_fps,
    written to a constant-rate mp4 that decord reads correctly in any order (it mis-seeks the HEVC mkv)."""
    mkv = FIXTURES / "0.4.2.mkv"
    video = probe_video(mkv, frame_times=True)
    assert video.frame_count == 34 and video.frame_times[:3] == pytest.approx((0.02, 0.033, 0.32))
    episode, _ = prepare_recording(FIXTURES / "0.4.2.mcap", "0.4.2", 5.0, vocab, fmt="ocap", video_dir=tmp_path)
    assert episode["video"] == str(tmp_path / "0.4.2.mp4") and episode["video_fps"] == 5.0
    assert episode["frame_index"] == list(range(episode["num_frames"]))
    with av.open(str(mkv)) as container:
        source = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    reader = decord.VideoReader(episode["video"])
    assert len(reader) == episode["num_frames"]
    for i in (20, 3, 11, 0):                                 # random access
        shown = [k for k, t in enumerate(video.frame_times) if t <= i / 5.0 + 1e-6]
        expected = source[shown[-1] if shown else 0]
        assert np.abs(reader[i].asnumpy().astype(int) - expected).mean() < 3, i


@pytest.mark.parametrize("vk,shift,name", [(84, False, "t"), (84, True, "T"), (49, True, "!"), (13, False, "enter"),
                                           (190, False, "."), (162, False, "ctrl_l"), (112, False, "f1"),
                                           (255, False, "vk255")])
def test_virtual_key_codes(vk, shift, name):
    assert vk_name(vk, shift) == name


# Hand-made recordings ------------------------------------------------------------------------------
T0 = 1_700_000_000_000_000_000  # ns


def write_mkv(path: Path, times_ms: list[int], size=(64, 48)) -> None:
    """A variable-rate H.264 mkv with frames at `times_ms` (pts in ms)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=60)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 20 * i, np.uint8), format="rgb24")
            frame.pts = ms
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_mcap(path: Path, messages: list[tuple[str, int, dict]]) -> None:
    """(topic, ms after T0, JSON message) -> an mcap with json channels, as ocap writes them."""
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="owa")
        channels = {}
        for topic, ms, msg in messages:
            if topic not in channels:
                schema = writer.register_schema(name=f"desktop/{topic}", encoding="jsonschema", data=b"{}")
                channels[topic] = writer.register_channel(topic=topic, message_encoding="json", schema_id=schema)
            ns = T0 + ms * 1_000_000
            writer.add_message(channels[topic], log_time=ns, data=json.dumps(msg).encode(), publish_time=ns)
        writer.finish()


def screen(ms: int, pts_ms: int, name: str, shape=(64, 48)) -> tuple[str, int, dict]:
    return ("screen", ms, {"utc_ns": T0 + ms * 1_000_000, "shape": list(shape), "source_shape": list(shape),
                           "media_ref": {"uri": name, "pts_ns": pts_ms * 1_000_000}})


def mouse(ms, kind, x, y, **kw):
    return ("mouse", ms, {"event_type": kind, "x": x, "y": y, **kw})


def keyboard(ms, kind, vk):
    return ("keyboard", ms, {"event_type": kind, "vk": vk})


@pytest.mark.e2e
def test_hand_made_recordings_edge_cases_and_bad_input(tmp_path, vocab):
    rec = tmp_path / "ocap"
    rec.mkdir()
    frames = [0, 100, 450, 900, 1300, 1900]
    # good: window capture at desktop (200, 100) with a 10 px border; shift+a types "A"; a scroll; a click.
    write_mkv(rec / "good.mkv", frames)
    write_mcap(rec / "good.mcap", [
        ("window", 0, {"title": "other", "rect": [0, 0, 1920, 1080], "hWnd": 1}),
        ("window", 5, {"title": "app", "rect": [200, 100, 274, 153], "hWnd": 2}),
        screen(30, 0, "good.mkv"),                                  # video pts 0 at T0 + 30 ms
        keyboard(230, "press", 160), keyboard(250, "press", 65), keyboard(280, "release", 65),
        keyboard(300, "release", 160),
        mouse(630, "move", 210, 110), mouse(650, "click", 230, 120, button="left", pressed=True),
        mouse(700, "click", 230, 120, button="left", pressed=False),
        mouse(1030, "scroll", 230, 120, dx=0, dy=-1),
        mouse(1230, "click", 900, 900, button="left", pressed=True),   # outside the window: dropped
        mouse(1260, "click", 900, 900, button="left", pressed=False),
    ])
    # bad: no keyboard topic / no screen message for the video / a video size the screen messages disagree with.
    write_mkv(rec / "no_keyboard.mkv", frames)
    write_mcap(rec / "no_keyboard.mcap", [screen(0, 0, "no_keyboard.mkv"), mouse(10, "move", 1, 1)])
    write_mkv(rec / "no_start.mkv", frames)
    write_mcap(rec / "no_start.mcap", [screen(0, 0, "some_other.mkv"), mouse(10, "move", 1, 1),
                                       keyboard(20, "press", 65)])
    write_mkv(rec / "wrong_size.mkv", frames, size=(96, 48))
    write_mcap(rec / "wrong_size.mcap", [screen(0, 0, "wrong_size.mkv"), mouse(10, "move", 1, 1),
                                         keyboard(20, "press", 65)])

    episode, stats = prepare_recording(rec / "good.mcap", "good", 5.0, vocab, fmt="ocap", video_dir=tmp_path / "v")
    # Video time = event time - 30 ms: shift+a at 0.22 s -> frame 1, click 0.62 -> 3, scroll 1.0 -> 5.
    assert episode["num_frames"] == 9                          # (1.9 s + 1/60 s) * 5
    assert episode["frame_index"] == list(range(9))
    # Source frames (pts 0, 0.1, 0.45, 0.9, 1.3, 1.9 s) on screen at 0, 0.2, ... 1.6 s; frame k has grey 20 k.
    grey = decord.VideoReader(episode["video"]).get_batch(list(range(9))).asnumpy().mean(axis=(1, 2, 3))
    assert np.round(grey / 20).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert episode["action"][:6] == ["none", "type", "none", "click", "none", "scroll_down"]
    assert episode["key"][1] == "A" and episode["modifier"][1] == "shift"
    assert episode["click"][3] == pytest.approx([(230 - 205) / 64, (120 - 100) / 48], abs=1e-6)
    assert stats.dropped_events["outside_video"] == 2 and episode["screen"] == [64, 48]

    with pytest.raises(RecordingSkipped, match=r"no_keyboard.mcap: no messages on topic\(s\) keyboard"):
        read_ocap(rec / "no_keyboard.mcap", rec / "no_keyboard.mkv", (64, 48))
    out = tmp_path / "prepared"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"), "data=ocap",
                           f"data.recordings_dir={rec}", f"data.prepared_dir={out}", "data.val_fraction=0",
                           "data.test_fraction=0"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recordings"]["train"] == 1                  # the rest of the folder is still prepared
    skipped = summary["skipped_recordings"]
    assert set(skipped) == {"no_keyboard", "no_start", "wrong_size"}
    assert "no_start.mcap: no usable start time" in skipped["no_start"]
    assert "wrong_size.mcap: video wrong_size.mkv is 96x48 but the screen messages say 64x48" in skipped["wrong_size"]
    assert "skipped recordings: 3" in proc.stdout and "no_keyboard.mcap" in proc.stderr
