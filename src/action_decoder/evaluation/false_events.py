"""Where false events come from: each predicted event that matched no true one, by cause.

    duplicate    a predicted event of the same type and detail matched the true event it sits next to
                 (one click seen on two frames, a drag or typing run split in two)
    wrong_detail a true event of the same type lies within the tolerance, but its key / modifiers /
                 direction differ (a hotkey with the wrong letter)
    wrong_type   a true event of another type lies within the tolerance (a double click where a click
                 happened)
    spurious     no true event within the tolerance: nothing happened there

eval.json's `false_events` holds these counts per predicted type, for the events eval.py scored.
"""
from __future__ import annotations

from collections.abc import Sequence

from action_decoder.evaluation.events import ActionEvent, match_events

CAUSES = ("duplicate", "wrong_detail", "wrong_type", "spurious")


def false_event_causes(pred: Sequence[ActionEvent], true: Sequence[ActionEvent], tolerance: int) -> list[tuple[str, str]]:
    """(predicted type, cause) of every unmatched predicted event of one episode."""
    pairs = match_events(pred, true, tolerance)
    matched_pred = {i for i, _ in pairs}
    out = []
    for i, p in enumerate(pred):
        if i in matched_pred:
            continue
        near = [t for t in true if abs(t.frame_start - p.frame_start) <= tolerance]
        if any(pred[j].type == p.type and pred[j].detail() == p.detail()
               and abs(pred[j].frame_start - p.frame_start) <= tolerance for j in matched_pred):
            cause = "duplicate"
        elif any(t.type == p.type for t in near):
            cause = "wrong_detail"
        elif near:
            cause = "wrong_type"
        else:
            cause = "spurious"
        out.append((p.type, cause))
    return out


def count_false_events(episodes: Sequence[tuple[Sequence[ActionEvent], Sequence[ActionEvent]]], tolerance: int) -> dict:
    """{predicted type: {cause: count}} over episodes of (predicted, true) events, plus `all`."""
    table: dict[str, dict[str, int]] = {"all": dict.fromkeys(CAUSES, 0)}
    for pred, true in episodes:
        for kind, cause in false_event_causes(pred, true, tolerance):
            table.setdefault(kind, dict.fromkeys(CAUSES, 0))[cause] += 1
            table["all"][cause] += 1
    return table
