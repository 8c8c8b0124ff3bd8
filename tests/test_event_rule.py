"""The event decision rule (evaluation/decision.py): what turns per-frame action probabilities into events."""
from __future__ import annotations

import torch

from action_decoder.evaluation.decision import (EventRule, decide_actions, rule_of, score_rule, store_rule,
                                                tune_event_rule)
from action_decoder.evaluation.events import frames_to_events

NAMES = ["none", "move", "click", "drag", "hotkey"]


def probs_of(rows: list[dict[str, float]]) -> torch.Tensor:
    """One row of class probabilities per frame; unnamed mass goes to `none`."""
    out = torch.zeros(len(rows), len(NAMES), dtype=torch.float64)
    for f, row in enumerate(rows):
        for name, p in row.items():
            out[f, NAMES.index(name)] = p
        out[f, 0] += 1.0 - out[f].sum()
    return out


def test_argmax_without_a_rule_and_with_the_identity_rule():
    probs = probs_of([{}, {"click": 0.7}, {"move": 0.6}])
    assert decide_actions(probs, NAMES, None)[0] == ["none", "click", "move"]
    assert decide_actions(probs, NAMES, EventRule())[0] == ["none", "click", "move"]


def test_merge_keeps_one_click_at_its_most_probable_frame():
    probs = probs_of([{}, {"click": 0.6, "move": 0.3}, {"click": 0.8}, {}, {}, {"click": 0.9}])
    assert decide_actions(probs, NAMES, None)[0] == ["none", "click", "click", "none", "none", "click"]
    actions, score = decide_actions(probs, NAMES, EventRule(merge={"click": 1}))
    # frame 1 falls back to its best non-event class (move); frame 5 is 3 frames later: its own event
    assert actions == ["none", "move", "click", "none", "none", "click"]
    assert score[2] == 0.8
    assert len(frames_to_events(actions)) == 2


def test_fill_joins_a_drag_split_by_one_frame():
    probs = probs_of([{"drag": 0.9}, {"drag": 0.4}, {"drag": 0.9}, {}])
    assert [e.type for e in frames_to_events(decide_actions(probs, NAMES, None)[0])] == ["drag", "drag"]
    actions, _ = decide_actions(probs, NAMES, EventRule(fill={"drag": 1}))
    assert actions == ["drag", "drag", "drag", "none"]


def test_a_negative_bias_is_a_higher_threshold():
    probs = probs_of([{"hotkey": 0.55}, {"hotkey": 0.95}])
    assert decide_actions(probs, NAMES, EventRule(bias={"hotkey": -1.0}))[0] == ["none", "hotkey"]


def test_tuning_finds_a_rule_that_removes_split_clicks_and_never_does_worse():
    true = {"action": ["none", "click", "none", "none", "none", "none"], "click": [None, (0.5, 0.5)] + [None] * 4}
    probs = probs_of([{}, {"click": 0.9}, {"click": 0.7}, {}, {}, {}])
    pred = {"action": ["none"] * 6, "click": [(0.5, 0.5)] * 6}
    episodes = [(probs, pred, true)] * 3
    rule, base, best = tune_event_rule(episodes, NAMES, tolerance=2)
    assert base < 1.0 and best == 1.0
    assert score_rule(episodes, NAMES, rule, 2).compute()["event_f1"] == 1.0


def test_the_rule_is_one_more_checkpoint_key(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format_version": 3, "state": {"w": torch.ones(2)}, "config": {"a": 1}, "epoch": 2, "stage": "s",
                "metrics": {"event_f1": 0.5}}, path)
    rule = EventRule(bias={"drag": -1.0}, merge={"click": 1}, fill={"drag": 2})
    store_rule(path, rule, {"split": "val"})
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"format_version", "state", "config", "epoch", "stage", "metrics", "event_rule"}
    assert torch.equal(ckpt["state"]["w"], torch.ones(2)) and ckpt["format_version"] == 3
    assert rule_of(ckpt) == rule and ckpt["event_rule"]["tuned_on"] == {"split": "val"}
    assert rule_of({}) is None


def test_false_events_are_told_apart_by_cause():
    from action_decoder.evaluation.false_events import count_false_events

    true = frames_to_events(["none", "click", "none", "none", "none", "none", "hotkey", "none", "none", "none"],
                            key=[None] * 6 + ["c"] + [None] * 3, modifier=[None] * 6 + ["ctrl"] + [None] * 3)
    pred = frames_to_events(["none", "click", "click", "none", "double_click", "none", "hotkey", "none", "none", "drag"],
                            key=[None] * 6 + ["v"] + [None] * 3, modifier=[None] * 6 + ["ctrl"] + [None] * 3)
    table = count_false_events([(pred, true)], tolerance=2)
    assert table["click"]["duplicate"] == 1  # frame 2 next to the matched click on frame 1
    assert table["double_click"]["wrong_type"] == 1  # the click 3 frames back is out of reach, the hotkey is not
    assert table["hotkey"]["wrong_detail"] == 1  # ctrl+v where ctrl+c happened
    assert table["drag"]["spurious"] == 1
    assert table["all"] == {"duplicate": 1, "wrong_detail": 1, "wrong_type": 1, "spurious": 1}


def test_calibrated_probabilities_are_decided_as_the_raw_ones_the_rule_was_tuned_on():
    logits = torch.tensor([[2.0, 1.0, 1.6, 0.0, 0.0], [0.0, 0.0, 3.0, 2.7, 0.0]], dtype=torch.float64)
    rule = EventRule(bias={"click": -0.2})
    raw = torch.softmax(logits, -1)
    calibrated = torch.softmax(logits / 2.5, -1)  # annotate's probabilities under a fitted temperature of 2.5
    actions, score = decide_actions(calibrated, NAMES, rule, temperature=2.5)
    assert actions == decide_actions(raw, NAMES, rule)[0] == ["none", "click"]
    assert decide_actions(calibrated, NAMES, rule)[0] == ["none", "drag"]  # the offset means less on softer scores
    assert score == [float(calibrated[f, NAMES.index(a)]) for f, a in enumerate(actions)]
