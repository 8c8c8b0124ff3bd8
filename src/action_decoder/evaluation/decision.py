"""How per-frame action probabilities become the action sequence that events are made from.

The heads give, per frame, a probability for each action class. Plain argmax turns every frame on its own
into a label, so one click seen on two frames becomes two click events, a drag whose middle frame dips below
`none` becomes two drags, and a rare class boosted by the class-balanced loss fires where nothing happened.
An `EventRule` decides at the level of events instead, from the same probabilities:

- `bias`: a log-probability offset per action class, added before the argmax (a per-class threshold:
  a negative offset makes a class need more evidence to fire);
- `merge`: for single-frame event classes (clicks, keys, hotkeys), frames of that class at most `merge[c]`
  frames apart are one event, kept at its most probable frame; the others become the best non-event class
  (`none` or `move`);
- `fill`: for run classes (drag, scroll, type), a gap of at most `fill[c]` frames between two runs of the
  class is filled, so the runs are one event.

`tune_event_rule` picks the rule that maximizes event F1 on a split (val), by coordinate ascent over small
grids. The tuned rule is stored in the checkpoint (`event_rule`, a plain dict) and applied by `decide_actions`
in eval.py and annotate.py alike. Event matching (events.py) is unchanged: the rule only changes the
predicted labels that go into it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from action_decoder.evaluation.events import POINT_TYPES, RUN_ACTIONS, EventCounts, frames_to_events

SINGLE_FRAME = POINT_TYPES + ("key", "hotkey")  # one event per frame under plain argmax
NON_EVENT = ("none", "move")  # what a suppressed frame falls back to
BIAS_GRID = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
MERGE_GRID = (0, 1, 2)
FILL_GRID = (0, 1, 2)


@dataclass(frozen=True)
class EventRule:
    bias: dict[str, float] = field(default_factory=dict)  # action class -> log-prob offset (absent: 0)
    merge: dict[str, int] = field(default_factory=dict)   # single-frame class -> frames within which hits are one
    fill: dict[str, int] = field(default_factory=dict)    # run class -> longest gap filled between two runs

    def as_dict(self) -> dict:
        return {"bias": dict(self.bias), "merge": dict(self.merge), "fill": dict(self.fill)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EventRule | None":
        if d is None:
            return None
        return cls({k: float(v) for k, v in d.get("bias", {}).items()},
                   {k: int(v) for k, v in d.get("merge", {}).items()},
                   {k: int(v) for k, v in d.get("fill", {}).items()})

    def is_identity(self) -> bool:
        return not any(self.bias.values()) and not any(self.merge.values()) and not any(self.fill.values())


def decide_actions(probs: torch.Tensor, names: Sequence[str], rule: EventRule | None,
                   temperature: float = 1.0) -> tuple[list[str], list[float]]:
    """probs [T, A] of one episode (or recording), in frame order -> (action name per frame, its probability).
    rule=None is plain argmax. `temperature`: probs were calibrated with it (evaluation/calibration.py); the rule
    was tuned on the raw softmax, so it decides on that (softmax(T * log p) undoes the calibration); the returned
    probabilities stay the given ones."""
    given = torch.as_tensor(probs, dtype=torch.float64)
    probs = given if temperature == 1.0 else torch.softmax(given.clamp_min(1e-12).log() * temperature, dim=-1)
    names = list(names)
    logp = probs.clamp_min(1e-12).log()
    if rule is not None and rule.bias:
        logp = logp + torch.tensor([rule.bias.get(n, 0.0) for n in names], dtype=torch.float64)
    ids = logp.argmax(-1).tolist()
    if rule is not None:
        fallback = [names.index(n) for n in NON_EVENT if n in names]
        for name, window in rule.merge.items():
            if window > 0 and name in names:
                _merge(ids, probs, logp, names.index(name), window, fallback)
        for name, gap in rule.fill.items():
            if gap > 0 and name in names:
                _fill(ids, names.index(name), gap)
    return [names[i] for i in ids], [float(given[f, i]) for f, i in enumerate(ids)]


def _merge(ids: list[int], probs, logp, c: int, window: int, fallback: list[int]) -> None:
    """Frames of class c at most `window` apart form a group; all but its most probable frame fall back."""
    frames = [f for f, i in enumerate(ids) if i == c]
    group: list[int] = []
    for f in frames + [None]:
        if group and (f is None or f - group[-1] > window):
            keep = max(group, key=lambda g: float(probs[g, c]))
            for g in group:
                if g != keep:
                    ids[g] = max(fallback, key=lambda k: float(logp[g, k])) if fallback else ids[g]
            group = []
        if f is not None:
            group.append(f)


def _fill(ids: list[int], c: int, gap: int) -> None:
    """A gap of at most `gap` frames between two frames of run class c becomes c."""
    frames = [f for f, i in enumerate(ids) if i == c]
    for a, b in zip(frames, frames[1:]):
        if 1 < b - a <= gap + 1:
            for f in range(a + 1, b):
                ids[f] = c


def decided_events(episodes: Sequence[tuple[torch.Tensor, dict, dict]], names: Sequence[str],
                   rule: EventRule | None) -> list[tuple[list, list]]:
    """(predicted events decided by `rule`, true events) of each of `episodes` ((probs [T, A], predicted
    frames, true frames) each, as EpisodeFrames.episodes_with_probs gives)."""
    out = []
    for probs, pred, true in episodes:
        action, score = decide_actions(probs, names, rule)
        out.append((frames_to_events(**{**pred, "action": action, "score": score}), frames_to_events(**true)))
    return out


def score_rule(episodes: Sequence[tuple[torch.Tensor, dict, dict]], names: Sequence[str], rule: EventRule | None,
               tolerance: int) -> EventCounts:
    """Event counts of `episodes` decided by `rule`."""
    counts = EventCounts(tolerance)
    for pred, true in decided_events(episodes, names, rule):
        counts.add(pred, true)
    return counts


def tune_event_rule(episodes: Sequence[tuple[torch.Tensor, dict, dict]], names: Sequence[str],
                    tolerance: int, rounds: int = 2) -> tuple[EventRule, float, float]:
    """Coordinate ascent over the bias of every event class, the merge window of single-frame classes and the
    fill gap of run classes, maximizing event F1. Returns (rule, event F1 of argmax, event F1 of the rule).
    A change is kept only when it raises F1, so the rule is never worse than argmax on these episodes."""
    def f1(rule: EventRule) -> float:
        return score_rule(episodes, names, rule, tolerance).compute()["event_f1"] or 0.0

    event_classes = [n for n in names if n not in NON_EVENT]
    rule = EventRule()
    base = best = f1(rule)
    for _ in range(rounds):
        improved = False
        for c in event_classes:
            knobs = [("bias", BIAS_GRID)]
            knobs += [("merge", MERGE_GRID)] if c in SINGLE_FRAME else []
            knobs += [("fill", FILL_GRID)] if c in RUN_ACTIONS else []
            for knob, grid in knobs:
                for value in grid:
                    current = getattr(rule, knob)
                    if current.get(c, 0) == value:
                        continue
                    trial = EventRule(**{**rule.__dict__, knob: {**current, c: value}})
                    score = f1(trial)
                    if score > best + 1e-9:
                        rule, best, improved = trial, score, True
        if not improved:
            break
    return rule, base, best


RULE_KEY = "event_rule"  # the checkpoint key holding the tuned rule (a plain dict: weights_only loads it)


def rule_of(ckpt: dict) -> EventRule | None:
    """The event rule stored in a loaded checkpoint, None when it has none (argmax)."""
    return EventRule.from_dict(ckpt.get(RULE_KEY))


def store_rule(path, rule: EventRule, tuned_on: dict) -> None:
    """Add the rule (and what it was tuned on) to a checkpoint file as one more key; everything else in the
    file stays as it was written. Written to a temp file and renamed, as checkpoints are."""
    import os
    from pathlib import Path

    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload[RULE_KEY] = {**rule.as_dict(), "tuned_on": dict(tuned_on)}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
