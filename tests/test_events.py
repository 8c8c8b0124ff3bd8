"""evaluation/events.py on hand-built label sequences: events from frames, matching within ±k frames
one-to-one nearest first, P/R/F1 per type and overall, click distance, typed-text similarity (data/README.md §8)."""
from __future__ import annotations

import math

import pytest

from action_decoder.evaluation.events import EventCounts, frames_to_events, match_events, text_similarity


def seq(n: int, **at) -> dict:
    """n frames of `none`; at={frame: (action, key, modifier, click)} (trailing fields may be left out)."""
    out = {"action": ["none"] * n, "key": [None] * n, "modifier": [None] * n, "click": [None] * n}
    for f, spec in at.items():
        f = int(f.lstrip("f"))
        spec = (spec,) if isinstance(spec, str) else spec
        for name, value in zip(("action", "key", "modifier", "click"), spec):
            out[name][f] = value
    return out


def events(n, **at):
    return frames_to_events(**seq(n, **at))


def test_frames_become_events():
    ev = events(20, f1=("click", None, "none", (0.1, 0.2)), f2=("double_click", None, "none", (0.1, 0.2)),
                f4=("drag", None, "none", (0.3, 0.3)), f5=("drag", None, "none", (0.4, 0.5)),
                f6=("drag", None, "none", (0.6, 0.7)), f8="scroll_down", f9="scroll_down", f10="scroll_up",
                f12=("type", "h", "shift"), f13=("type", "i", "none"), f14=("type", " ", "none"),
                f16=("key", "enter", "none"), f17=("hotkey", "s", "ctrl"), f18=("hotkey", "s", "ctrl"), f19="move")
    got = [(e.type, e.frame_start, e.frame_end) for e in ev]
    assert got == [("click", 1, 1), ("double_click", 2, 2), ("drag", 4, 6), ("scroll", 8, 9), ("scroll", 10, 10),
                   ("type", 12, 14), ("key", 16, 16), ("hotkey", 17, 17), ("hotkey", 18, 18)]
    drag = ev[2]
    assert (drag.x, drag.y, drag.x_end, drag.y_end) == (0.3, 0.3, 0.6, 0.7)
    assert [ev[3].direction, ev[4].direction] == ["down", "up"]
    assert ev[5].text == "hi " and ev[6].key == "enter" and (ev[7].key, ev[7].modifiers) == ("s", "ctrl")


def test_unknown_typed_key_is_a_replacement_character():
    assert events(3, f0=("type", "a"), f1=("type", "other"), f2=("type", "b"))[0].text == "a\ufffdb"


@pytest.mark.parametrize("shift, matched", [(0, True), (2, True), (-2, True), (3, False), (-3, False)])
def test_tolerance_edges(shift, matched):
    true = events(20, f10=("click", None, "none", (0.5, 0.5)))
    pred = events(20, **{f"f{10 + shift}": ("click", None, "none", (0.5, 0.5))})
    assert (match_events(pred, true, tolerance=2) == [(0, 0)]) == matched


def test_one_to_one_nearest_first():
    # One prediction between two true clicks takes the nearer one; the other true click is missed.
    assert match_events(events(12, f6="click"), events(12, f4="click", f7="click"), 2) == [(0, 1)]
    # Equal distance: the earlier true event. Each true event is matched once, each prediction once.
    assert match_events(events(12, f6="click"), events(12, f5="click", f7="click"), 2) == [(0, 0)]
    true, pred = events(12, f5="click", f9="click"), events(12, f6="click", f8="click")
    assert match_events(pred, true, 2) == [(0, 0), (1, 1)]
    # Two predictions near one true event: only the nearer one matches, the other is a false positive.
    true = events(12, f5="click")
    pred = events(12, f4="click", f5="click")
    assert match_events(pred, true, 2) == [(1, 0)]
    counts = EventCounts(2)
    counts.add(pred, true)
    m = counts.compute()
    assert (m["event_click_precision"], m["event_click_recall"], m["event_click_f1"]) == (0.5, 1.0, 2 / 3)


def test_types_and_details_must_agree():
    true = events(10, f2=("hotkey", "s", "ctrl"), f5=("key", "enter", "none"), f8="scroll_down")
    pred = events(10, f2=("hotkey", "s", "ctrl+shift"), f5=("key", "tab", "none"), f8="scroll_up")
    assert match_events(pred, true, 2) == []
    pred = events(10, f3=("hotkey", "s", "ctrl"), f4=("key", "enter", "none"), f9="scroll_down")
    assert match_events(pred, true, 2) == [(0, 0), (1, 1), (2, 2)]
    # a click is not a double click
    assert match_events(events(5, f2="click"), events(5, f2="double_click"), 2) == []


def test_overall_f1_click_distance_and_typed_text():
    counts = EventCounts(tolerance=2)
    # Episode 1: true click at 3 (0.2, 0.2), drag 6-8, typing "hello" at 10-14.
    true = events(20, f3=("click", None, "none", (0.2, 0.2)), f6=("drag", None, "none", (0.1, 0.1)),
                  f7=("drag", None, "none", (0.2, 0.2)), f8=("drag", None, "none", (0.3, 0.3)),
                  **{f"f{10 + i}": ("type", c, "none") for i, c in enumerate("hello")})
    # predicted: click at 4 (0.23, 0.24) -> distance 0.05; drag 7-8 (start 7, within 2); typing "helo" at 11-14;
    # plus a spurious right click at 17.
    pred = events(20, f4=("click", None, "none", (0.23, 0.24)), f7=("drag", None, "none", (0.2, 0.2)),
                  f8=("drag", None, "none", (0.3, 0.3)), f17=("right_click", None, "none", (0.9, 0.9)),
                  **{f"f{11 + i}": ("type", c, "none") for i, c in enumerate("helo")})
    counts.add(pred, true)
    # Episode 2: a true scroll the model missed.
    counts.add(events(10), events(10, f4="scroll_down"))
    m = counts.compute()
    # 3 matched of 4 predicted and 4 true: P = 3/4, R = 3/4, F1 = 2*3/(4+4)
    assert (m["event_precision"], m["event_recall"], m["event_f1"]) == (0.75, 0.75, 0.75)
    assert (m["event_n_true"], m["event_n_pred"]) == (4, 4)
    assert m["event_scroll_recall"] == 0.0 and m["event_scroll_precision"] is None and m["event_scroll_f1"] == 0.0
    assert m["event_right_click_precision"] == 0.0 and m["event_right_click_recall"] is None
    assert m["event_key_f1"] is None  # no key event on either side: undefined, not 0
    assert math.isclose(m["event_click_mean_dist"], 0.05)
    assert math.isclose(m["event_typed_text_similarity"], 1 - 1 / 5)  # one deletion in 5 characters


def test_move_frames_are_scored_per_frame():
    counts = EventCounts(2)
    counts.add_move_frames(["move", "move", "none", "move"], ["move", "none", "move", "move"])
    m = counts.compute()
    assert (m["move_frame_precision"], m["move_frame_recall"], m["move_frame_f1"]) == (2 / 3, 2 / 3, 2 / 3)
    assert m["event_f1"] is None  # moves are not events


def test_text_similarity_keeps_spaces_and_bounds():
    assert text_similarity("a b", "a b") == 1.0
    assert text_similarity("a b", "ab") == pytest.approx(2 / 3)
    assert text_similarity("abc", "xyz") == 0.0 and text_similarity("", "") == 1.0 and text_similarity("a", "") == 0.0


def test_negative_tolerance_is_an_error():
    with pytest.raises(ValueError, match="event_tolerance"):
        EventCounts(-1)
