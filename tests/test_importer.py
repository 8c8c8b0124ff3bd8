"""Labelling rules of data/README.md §2, one test per rule, on hand-built event logs with known answers."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from action_decoder.config import load_config
from action_decoder.data.events import DataFormatError, read_events, read_metadata
from action_decoder.data.importer import prepare_dataset, prepare_recording, probe_video, split_of
from action_decoder.data.labels import LabelStats, VideoInfo, label_events, sampled_frames
from action_decoder.data.srt import parse_srt
from action_decoder.data.vocab import LabelVocab, all_modifier_names, modifier_name
from tests.recordings import click, key, mark, move, press, release, scroll, tap, write_recording

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FPS = 5.0  # frame i covers video time [0.2 i, 0.2 i + 0.2)


@pytest.fixture(scope="module")
def vocab() -> LabelVocab:
    return LabelVocab.from_config(load_config().labels)


def label(tmp_path, vocab, events, *, seconds=2.0, srt=None, **metadata):
    """Labels of a recording with `events` and a `seconds`-long 10 fps video (probe result given, no file)."""
    rec = write_recording(tmp_path / "rec", events, n_video_frames=None, **metadata)
    cues = parse_srt(srt) if srt else None
    return label_events(read_events(rec / "events.jsonl"), read_metadata(rec / "metadata.json"),
                        VideoInfo(fps=10.0, frame_count=int(seconds * 10)), SAMPLE_FPS, vocab, cues)


def flat(*groups):
    return [e for g in groups for e in (g if isinstance(g, list) else [g])]


# Rule 2 ------------------------------------------------------------------------------------------
def test_frame_intervals_and_frame_index_from_a_real_video(tmp_path, vocab):
    # 23 frames at 10 fps = 2.3 s; at 4 samples/s: floor(9.2) = 9 frames of 0.25 s.
    rec = write_recording(tmp_path / "r", flat(key(0.2499, "a"), tap(0.25, 500, 10)), n_video_frames=23)
    assert probe_video(rec / "video.mp4") == VideoInfo(fps=10.0, frame_count=23)
    episode, _ = prepare_recording(rec, "r", 4.0, vocab)
    assert episode["num_frames"] == 9
    # round(i * 2.5) half up: 0, 2.5 -> 3, 5, 7.5 -> 8, ...
    assert episode["frame_index"] == [0, 3, 5, 8, 10, 13, 15, 18, 20]
    assert episode["action"][:3] == ["type", "click", "none"]           # 0.2499 s -> frame 0, 0.25 s -> frame 1
    assert episode["click"][:2] == [None, [0.5, 0.02]]
    assert all(len(episode[k]) == 9 for k in ("action", "key", "modifier", "click", "transcript"))
    assert Path(episode["video"]).is_absolute() and episode["video_fps"] == 10.0


def test_sampled_frames_count_and_index():
    num, index = sampled_frames(VideoInfo(fps=30.0, frame_count=10), 30.0)
    assert num == 10 and index == list(range(10))
    # Sampling faster than the video: half-up rounding would ask for frame 3 of 3; clipped to the last.
    num, index = sampled_frames(VideoInfo(fps=10.0, frame_count=3), 20.0)
    assert num == 6 and index == [0, 1, 1, 2, 2, 2]
    num, index = sampled_frames(VideoInfo(fps=10.0, frame_count=20), 3.0)  # 2 s -> 6 frames, step 3.33
    assert num == 6 and index == [0, 3, 7, 10, 13, 17]


# Rule 1 ------------------------------------------------------------------------------------------
def test_events_before_start_after_end_and_in_pauses_are_dropped_and_counted(tmp_path, vocab):
    events = flat(tap(-0.5, 10, 10),                 # before video time 0
                  mark(0.5, "pause"), tap(0.7, 20, 20), mark(1.5, "resume"),   # 1 s cut out of the clock
                  tap(1.7, 30, 30),                  # video time 0.7 -> frame 3
                  tap(2.9, 40, 40),                  # video time 1.9 -> frame 9 (last)
                  tap(3.05, 50, 50))                 # video time 2.05 >= 2.0 -> after the end
    labels, stats = label(tmp_path, vocab, events)
    assert [i for i, a in enumerate(labels.action) if a != "none"] == [3, 9]
    assert labels.click[3] == [0.03, 0.06]
    assert stats.dropped_events == {"before_start": 2, "during_pause": 2, "after_end": 2}
    assert stats.events["pause"] == 1 and stats.events["resume"] == 1


def test_a_pause_that_is_never_resumed_drops_the_rest(tmp_path, vocab):
    labels, stats = label(tmp_path, vocab, flat(tap(0.1, 5, 5), mark(0.3, "pause"), tap(1.0, 5, 5)))
    assert labels.action.count("click") == 1 and stats.dropped_events["during_pause"] == 2


# Rule 3 ------------------------------------------------------------------------------------------
def test_highest_priority_event_wins_a_frame_and_brings_its_labels(tmp_path, vocab):
    events = flat(
        # frame 0: move, click, scroll, type -> type
        move(0.01, 0, 0), move(0.02, 50, 0), tap(0.03, 100, 100), scroll(0.05, -1), key(0.1, "q"),
        # frame 1: click then right click -> right_click (priority), at the right press position
        tap(0.21, 300, 100), tap(0.3, 200, 400, button="right"),
        # frame 2: scroll down then scroll up -> tie, the earlier wins
        scroll(0.45, -1), scroll(0.5, 1),
        # frame 3: key then hotkey -> hotkey
        key(0.61, "enter"), press(0.65, "ctrl_l"), key(0.7, "s"), release(0.75, "ctrl_l"),
        # frame 4: click, double click, drag -> drag
        tap(0.81, 600, 300), tap(0.85, 600, 300), click(0.9, 10, 10, True), click(0.95, 300, 10, False),
    )
    labels, _ = label(tmp_path, vocab, events)
    assert labels.action[:5] == ["type", "right_click", "scroll_down", "hotkey", "drag"]
    assert labels.key[:5] == ["q", None, None, "s", None]
    assert labels.modifier[:5] == ["none", "none", "none", "ctrl", "none"]
    assert labels.click[:5] == [None, [0.2, 0.8], None, None, [0.01, 0.02]]


# Rules 4 and 5 -----------------------------------------------------------------------------------
def test_click_and_double_click(tmp_path, vocab):
    events = flat(
        tap(0.1, 100, 100), tap(0.3, 103, 104),        # 5 px, 0.2 s apart -> click, double_click
        tap(1.0, 500, 200), tap(1.2, 500, 200), tap(1.4, 500, 200),  # triple: each press chains
        tap(1.6, 800, 100), tap(1.75, 800, 108),       # 8 px apart -> two clicks, both in frame 8
    )
    labels, stats = label(tmp_path, vocab, events, seconds=3.0)
    assert labels.action[0] == "click" and labels.action[1] == "double_click"
    assert labels.click[1] == [0.103, 0.208]          # the second press's position
    assert labels.action[5:8] == ["click", "double_click", "double_click"]
    assert labels.action[8] == "click" and labels.action[9] == "none"
    assert stats.labelled_events == {"click": 4, "double_click": 3}

    slow = flat(tap(0.1, 100, 100), tap(0.65, 100, 100))  # 0.55 s apart: two single clicks
    labels, _ = label(tmp_path, vocab, slow)
    assert labels.action[:4] == ["click", "none", "none", "click"]


def test_a_press_released_within_5px_is_a_click_at_the_press_position(tmp_path, vocab):
    events = [click(0.1, 100, 100, True), move(0.15, 103, 104), click(0.25, 103, 104, False)]
    labels, _ = label(tmp_path, vocab, events)
    assert labels.action[:2] == ["click", "none"] and labels.click[0] == [0.1, 0.2]


# Rule 6 ------------------------------------------------------------------------------------------
def test_drag_labels_the_press_frame_and_frames_strictly_between(tmp_path, vocab):
    events = [click(0.1, 100, 100, True), move(0.25, 150, 100), move(0.35, 200, 100),
              # frame 2 has no move: the cursor stays at the last position (200, 100)
              move(0.65, 250, 200), click(0.9, 300, 200, False), move(1.05, 400, 200)]
    labels, stats = label(tmp_path, vocab, events)
    # The release frame is not a drag; it has no move event either (a release is not a move).
    assert labels.action[:6] == ["drag", "drag", "drag", "drag", "none", "move"]
    assert labels.click[:4] == [[0.1, 0.2], [0.2, 0.2], [0.2, 0.2], [0.25, 0.4]]
    assert labels.modifier[:5] == ["none"] * 4 + [None]
    assert stats.labelled_events == {"drag": 1}


# Rule 7 ------------------------------------------------------------------------------------------
def test_right_click_any_distance_and_middle_click_ignored(tmp_path, vocab):
    events = [click(0.1, 100, 50, True, "right"), move(0.2, 400, 50), click(0.5, 400, 50, False, "right"),
              *tap(1.1, 10, 10, button="middle")]
    labels, stats = label(tmp_path, vocab, events)
    assert labels.action[0] == "right_click" and labels.click[0] == [0.1, 0.1]
    assert labels.action[1:3] == ["move", "none"]      # no drag for the right button
    assert labels.action[5] == "none"                   # middle press: nothing
    assert stats.events["middle_press"] == 1


# Rule 8 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scroll_direction", [1, -1])
def test_scroll_direction_is_the_sign_of_dy_whatever_the_natural_scrolling_flag(tmp_path, vocab, scroll_direction):
    events = [scroll(0.1, 1), scroll(0.3, -2), scroll(0.5, 0, dx=3), press(0.65, "shift"), scroll(0.7, -1)]
    labels, stats = label(tmp_path, vocab, events, scroll_direction=scroll_direction)
    assert labels.action[:4] == ["scroll_up", "scroll_down", "move", "scroll_down"]
    assert labels.modifier[:4] == ["none", "none", None, "shift"]
    assert labels.click[:4] == [None] * 4
    assert stats.labelled_events == {"scroll_up": 1, "scroll_down": 2, "horizontal_scroll": 1}


# Rule 9 ------------------------------------------------------------------------------------------
def test_type_vs_named_key_vs_hotkey(tmp_path, vocab):
    events = flat(
        key(0.05, "a"),                                                  # 0 type a
        press(0.21, "shift"), key(0.25, "A"), release(0.3, "shift"),     # 1 type A, shift
        key(0.45, "space"),                                              # 2 type " "
        key(0.65, "enter"),                                              # 3 key enter
        press(0.81, "ctrl"), key(0.85, "C"), release(0.95, "ctrl"),      # 4 hotkey c
        press(1.01, "ctrl_r"), key(1.05, "\x16"), release(1.15, "ctrl_r"),  # 5 ctrl+v as pynput logs it
        press(1.21, "cmd"), press(1.22, "shift_r"), key(1.25, "z"),      # 6 hotkey z, shift+cmd
        release(1.3, "shift_r"), release(1.31, "cmd"),
        press(1.41, "alt"), key(1.45, "tab"), release(1.5, "alt"),       # 7 hotkey tab
        press(1.61, "shift"), release(1.65, "shift"),                    # 8 a modifier alone: no action
        press(1.81, "x"), press(1.85, "x"),                              # 9 key repeat, counted twice
    )
    labels, stats = label(tmp_path, vocab, events)
    assert labels.action == ["type", "type", "type", "key", "hotkey", "hotkey", "hotkey", "hotkey", "none", "type"]
    assert labels.key == ["a", "A", " ", "enter", "c", "v", "z", "tab", None, "x"]
    assert labels.modifier == ["none", "shift", "none", "none", "ctrl", "ctrl", "shift+cmd", "alt", None, "none"]
    assert stats.labelled_events == {"type": 5, "key": 1, "hotkey": 4}
    assert stats.events["key_press"] == 17


def test_unknown_keys_map_to_other_and_are_counted(tmp_path, vocab):
    events = flat(key(0.05, "f13"), key(0.25, "é"), key(0.45, None), key(0.65, "media_play_pause"),
                  key(0.85, "f13"))
    labels, stats = label(tmp_path, vocab, events)
    assert labels.action[:5] == ["key", "type", "key", "key", "key"]
    assert labels.key[:5] == ["other"] * 5
    assert stats.unknown_keys == {"f13": 2, "é": 1, "null": 1, "media_play_pause": 1}


# Rule 10 -----------------------------------------------------------------------------------------
def test_modifiers_held_across_events_with_left_right_variants(tmp_path, vocab):
    events = flat(
        press(-0.5, "ctrl_l"),                                   # held since before the video starts
        tap(0.05, 10, 10),                                       # 0 ctrl-click
        press(0.21, "shift_l"), press(0.22, "shift_r"), release(0.23, "shift_r"), key(0.25, "k"),  # 1 ctrl+shift
        release(0.41, "shift_l"), key(0.45, "k"),                # 2 ctrl
        press(0.61, "alt_gr"), key(0.65, "k"),                   # 3 ctrl+alt
        release(0.81, "ctrl_l"), release(0.82, "alt_gr"), key(0.85, "k"),  # 4 none
        press(1.01, "ctrl"), press(1.02, "shift"), press(1.03, "alt_l"), press(1.04, "cmd_r"),
        scroll(1.05, 1),                                         # 5 all four, on a scroll
    )
    labels, _ = label(tmp_path, vocab, events)
    assert labels.action[:6] == ["click", "hotkey", "hotkey", "hotkey", "type", "scroll_up"]
    assert labels.modifier[:6] == ["ctrl", "ctrl+shift", "ctrl", "ctrl+alt", "none", "ctrl+shift+alt+cmd"]


def test_modifier_names_are_the_16_config_combinations(vocab):
    assert sorted(all_modifier_names()) == sorted(vocab.modifiers.names)
    assert modifier_name({"cmd", "ctrl"}) == "ctrl+cmd" and modifier_name(set()) == "none"


# Rule 11 -----------------------------------------------------------------------------------------
def test_move_needs_more_than_2px_of_cursor_travel_in_the_frame(tmp_path, vocab):
    events = [move(0.05, 100, 100),                                    # frame 0: first report, no travel
              move(0.25, 101, 100), move(0.3, 101, 101),                # frame 1: 2 px -> none
              move(0.45, 102, 101), move(0.5, 101, 101), move(0.55, 102, 101)]  # frame 2: 3 px back and forth
    labels, _ = label(tmp_path, vocab, events)
    assert labels.action[:3] == ["none", "none", "move"]
    assert labels.modifier[:3] == [None] * 3 and labels.click[:3] == [None] * 3


# Rule 13 -----------------------------------------------------------------------------------------
def test_clicks_are_normalized_by_screen_size_and_clipped(tmp_path, vocab):
    events = flat(tap(0.05, 500, 250), tap(0.45, 1200, -3))
    labels, _ = label(tmp_path, vocab, events, screen=(1000, 500))
    assert labels.click[0] == [0.5, 0.5] and labels.click[2] == [1.0, 0.0]
    labels, _ = label(tmp_path, vocab, events, screen=(2000, 1000))
    assert labels.click[0] == [0.25, 0.25]


# Rule 14 -----------------------------------------------------------------------------------------
SRT = ("\ufeff1\r\n00:00:00,000 --> 00:00:00,600\r\nnow <i>click</i> the\r\nOK button\r\n\r\n"
       "00:00:01.000 --> 00:00:01.100\r\ntwo words\r\n\r\n"
       "3\r\n00:00:05,000 --> 00:00:06,000\r\nafter the end\r\n")


def test_srt_parsing():
    cues = parse_srt(SRT)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (0.0, 0.6, "now click the OK button"), (1.0, 1.1, "two words"), (5.0, 6.0, "after the end")]
    with pytest.raises(DataFormatError, match=r"x.srt:2: expected a cue timing"):
        parse_srt("1\n00:00:01 -> 00:00:02\nhi\n", "x.srt")


def test_narration_words_are_spread_evenly_over_overlapping_frames(tmp_path, vocab):
    labels, stats = label(tmp_path, vocab, [], srt=SRT)
    # 5 words over frames 0..2 (m = 3): word j -> frame floor(j * 3 / 5) = 0, 0, 1, 1, 2
    assert labels.transcript[:3] == ["now click", "the OK", "button"]
    assert labels.transcript[5] == "two words"          # 1.0-1.1 s lies in frame 5
    assert labels.transcript.count("") == 6
    assert stats.narration == {"cues": 3, "words": 10, "words_dropped": 3}


# Rule 15 -----------------------------------------------------------------------------------------
def test_splits_are_a_deterministic_function_of_the_recording_id(tmp_path, vocab):
    ids = [f"rec_{i:04d}" for i in range(2000)]
    splits = [split_of(i, 0.1, 0.2) for i in ids]
    for rec_id, split in zip(ids[:50], splits):
        u = int(hashlib.sha1(rec_id.encode()).hexdigest()[:16], 16) / 2 ** 64
        assert split == ("val" if u < 0.1 else "test" if u < 0.3 else "train")
    assert 0.07 < splits.count("val") / 2000 < 0.13 and 0.17 < splits.count("test") / 2000 < 0.23
    # Through the real importer: a recording keeps its split whatever else is in the folder.
    names = ["a", "b", "c", "d", "e", "f", "g", "h"]
    for name in names:
        write_recording(tmp_path / "all" / name, tap(0.1, 5, 5), n_video_frames=5)
    prepare_dataset(tmp_path / "all", tmp_path / "out_all", SAMPLE_FPS, 0.3, 0.3, vocab, progress=False)
    write_recording(tmp_path / "few" / "c", tap(0.1, 5, 5), n_video_frames=5)
    prepare_dataset(tmp_path / "few", tmp_path / "out_few", SAMPLE_FPS, 0.3, 0.3, vocab, progress=False)

    def where(out):
        return {json.loads(line)["id"]: s for s in ("train", "val", "test")
                for line in (out / f"{s}.jsonl").read_text().splitlines()}

    everything = where(tmp_path / "out_all")
    assert sorted(everything) == names and everything == {n: split_of(n, 0.3, 0.3) for n in names}
    assert where(tmp_path / "out_few") == {"c": everything["c"]}


def test_unseen_task_tags_form_their_own_split_and_the_rest_split_by_id(tmp_path, vocab):
    names = [f"r{i}" for i in range(12)]
    for i, name in enumerate(names):
        write_recording(tmp_path / "rec" / name, tap(0.1, 5, 5), n_video_frames=5,
                        extra_metadata={"tags": ["miniwob", "drag-box" if i % 3 == 0 else "click-test"]})
    summary = prepare_dataset(tmp_path / "rec", tmp_path / "out", SAMPLE_FPS, 0.3, 0.3, vocab, progress=False,
                              unseen_tags=["drag-box"])
    got = {json.loads(line)["id"]: s for s in ("train", "val", "test", "test_unseen")
           for line in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()}
    assert {n for n, s in got.items() if s == "test_unseen"} == {names[i] for i in range(0, 12, 3)}
    assert all(got[n] == split_of(n, 0.3, 0.3) for i, n in enumerate(names) if i % 3)
    assert summary["recordings"]["test_unseen"] == 4 and summary["test_unseen_tags"] == ["drag-box"]
    # Without the list nothing changes: three splits, no test_unseen file.
    prepare_dataset(tmp_path / "rec", tmp_path / "plain", SAMPLE_FPS, 0.3, 0.3, vocab, progress=False)
    assert not (tmp_path / "plain" / "test_unseen.jsonl").exists()


# Summary and CLI ---------------------------------------------------------------------------------
def test_prepare_dataset_writes_splits_and_summary(tmp_path, vocab):
    write_recording(tmp_path / "rec" / "one", flat(tap(0.1, 5, 5), key(0.5, "f13")), task="Open the file\n",
                    srt="1\n00:00:00,000 --> 00:00:01,000\nhello there\n", extra_metadata={"tags": ["demo"]})
    write_recording(tmp_path / "rec" / "two", tap(0.1, 5, 5, button="middle"), extra_metadata={
        "description": "From metadata"})
    (tmp_path / "rec" / "broken").mkdir()
    (tmp_path / "rec" / "broken" / "events.jsonl").write_text("")   # no metadata, no video: skipped, counted
    write_recording(tmp_path / "rec" / ".ipynb_checkpoints" / "x", [], n_video_frames=None)  # hidden: not a recording
    with pytest.warns(UserWarning, match="broken: skipped, missing metadata.json, video.mp4"):
        summary = prepare_dataset(tmp_path / "rec", tmp_path / "out", SAMPLE_FPS, 0.0, 0.0, vocab, progress=False)
    episodes = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert [e["id"] for e in episodes] == ["one", "two"]
    assert episodes[0]["prompt"] == "Open the file" and episodes[0]["tags"] == ["demo"]
    assert episodes[1]["prompt"] == "From metadata" and episodes[1]["tags"] == []
    assert (tmp_path / "out" / "val.jsonl").read_text() == "" and (tmp_path / "out" / "test.jsonl").exists()
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert summary["recordings"] == {"train": 2, "val": 0, "test": 0}
    assert summary["frames_per_action"]["train"]["click"] == 1 and summary["frames_per_action"]["train"]["key"] == 1
    assert summary["frames"]["train"] == 20 and sum(summary["frames_per_action"]["train"].values()) == 20
    assert summary["events"]["middle_press"] == 1 and summary["unknown_keys"] == {"f13": 1}
    assert summary["skipped_recordings"] == {"broken": "missing metadata.json, video.mp4"}
    assert summary["narration"] == {"cues": 1, "words": 2}


# Malformed input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_line, reason", [
    ('{"time_stamp": 1000.5, "action": "move", "x": 1', "bad JSON"),
    ('{"time_stamp": 1000.5, "action": "move", "x": 1}', "missing field 'y' for action 'move'"),
    ('{"action": "move", "x": 1, "y": 2}', "missing field 'time_stamp'"),
    ('{"time_stamp": 1000.5, "action": "teleport"}', "unknown action 'teleport'"),
    ('{"time_stamp": 1000.5, "action": "click", "x": "12", "y": 2, "button": "left", "pressed": true}',
     "field 'x' must be a finite number"),
    ('{"time_stamp": 1000.5, "action": "click", "x": 12, "y": 2, "button": "left", "pressed": "yes"}',
     "field 'pressed' must be true/false"),
    ('{"time_stamp": 1000.0, "action": "move", "x": 1, "y": 2}', "goes back 0.900 s before line 2"),
    ('[1, 2]', "expected a JSON object"),
])
def test_malformed_event_line_raises_file_and_line(tmp_path, vocab, bad_line, reason):
    rec = write_recording(tmp_path / "rec", [move(0.1, 1, 1), move(0.9, 2, 2)], raw_lines=[bad_line],
                          n_video_frames=None)
    with pytest.raises(DataFormatError) as info:
        read_events(rec / "events.jsonl")
    assert str(info.value).startswith(f"{rec / 'events.jsonl'}:3: ")
    assert reason in str(info.value)


def test_bad_metadata_and_unreadable_video_name_the_file(tmp_path, vocab):
    rec = write_recording(tmp_path / "rec", [move(0.1, 1, 1)], n_video_frames=None,
                          extra_metadata={"obs_record_state_timings": {}})
    with pytest.raises(DataFormatError, match=r"metadata.json: missing obs_record_state_timings"):
        read_metadata(rec / "metadata.json")
    (rec / "video.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(DataFormatError, match=r"video.mp4: cannot read video"):
        probe_video(rec / "video.mp4")


def test_recording_without_a_start_time_is_skipped_and_named_the_rest_prepared(tmp_path, vocab):
    write_recording(tmp_path / "recs" / "good", flat(tap(0.3, 10, 10)))
    write_recording(tmp_path / "recs" / "no_start", flat(tap(0.3, 10, 10)),
                    extra_metadata={"obs_record_state_timings": {"OBS_WEBSOCKET_OUTPUT_STARTED": ["soon"]}})
    with pytest.warns(UserWarning, match="no_start/metadata.json: OBS_WEBSOCKET_OUTPUT_STARTED"):
        summary = prepare_dataset(tmp_path / "recs", tmp_path / "out", 5.0, 0.0, 0.0, vocab, progress=False)
    assert summary["recordings"]["train"] == 1
    assert list(summary["skipped_recordings"]) == ["no_start"]
    assert "must be a number, got 'soon'" in summary["skipped_recordings"]["no_start"]


def test_probe_counts_frames_when_the_container_header_has_no_count(tmp_path):
    import av
    import numpy as np
    path = tmp_path / "video.mp4"      # Matroska inside, as a renamed OBS .mkv would be: no frame count
    with av.open(str(path), mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(7):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    assert probe_video(path) == VideoInfo(fps=10.0, frame_count=7)


def test_small_out_of_order_jitter_is_sorted_not_rejected(tmp_path):
    rec = write_recording(tmp_path / "rec", [move(0.1, 1, 1), key(0.13, "a")[0], move(0.12, 2, 2)],
                          n_video_frames=None)
    assert [e.line for e in read_events(rec / "events.jsonl")] == [1, 3, 2]


@pytest.mark.e2e
def test_prepare_cli_reports_a_malformed_line_without_traceback(tmp_path):
    write_recording(tmp_path / "rec" / "bad", [move(0.1, 1, 1)], raw_lines=['{"time_stamp": 1000.2, "action": "jump"}'],
                    n_video_frames=5)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_data.py"),
                           f"data.recordings_dir={tmp_path / 'rec'}", f"data.prepared_dir={out}"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert f"{tmp_path / 'rec' / 'bad' / 'events.jsonl'}:2: unknown action 'jump'" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_label_stats_add_sums_recordings():
    a, b = LabelStats(), LabelStats()
    a.events["move"], b.events["move"], b.unknown_keys["f13"] = 2, 3, 1
    a.add(b)
    assert a.as_dict()["events"] == {"move": 5} and a.as_dict()["unknown_keys"] == {"f13": 1}
