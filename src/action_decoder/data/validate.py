"""Check a prepared dataset (`<prepared_dir>/{train,val,test}.jsonl`) against data/README.md §2.

Every problem is reported as `<split>.jsonl:<line>: <problem>`; nothing stops at the first one.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from action_decoder.data.vocab import CLICK_ACTIONS, KEY_ACTIONS, NO_MODIFIER_ACTIONS, LabelVocab

SPLITS = ("train", "val", "test")
PER_FRAME = ("action", "key", "modifier", "click", "transcript")
FPS_TOLERANCE = 0.01     # relative difference allowed between the episode's video_fps and the decoder's
_MAX_FRAMES_LISTED = 5   # per problem kind and episode; the rest is counted


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # do not fail validation
    episodes: int = 0
    frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _frame_problems(episode: dict, n: int, vocab: LabelVocab) -> list[str]:
    """Per-frame label problems, one line per kind of problem with the frames where it occurs."""
    found: dict[str, list[int]] = {}

    def bad(kind: str, i: int) -> None:
        found.setdefault(kind, []).append(i)

    for i in range(n):
        action, key, modifier = episode["action"][i], episode["key"][i], episode["modifier"][i]
        click, text = episode["click"][i], episode["transcript"][i]
        known_action = action in vocab.actions
        if not known_action:
            bad(f"action {action!r} not in labels.actions", i)
        if key is not None and key not in vocab.keys:
            bad(f"key {key!r} not in labels.keys", i)
        # Rule 12 (which heads apply) is only meaningful for a known action.
        if known_action and (key is not None) != (action in KEY_ACTIONS):
            bad(f"key is {'missing' if key is None else 'set'} on a {action!r} frame (rule 12)", i)
        if modifier is not None and modifier not in vocab.modifiers:
            bad(f"modifier {modifier!r} not in labels.modifiers", i)
        if known_action and (modifier is not None) == (action in NO_MODIFIER_ACTIONS):
            bad(f"modifier is {'missing' if modifier is None else 'set'} on a {action!r} frame (rule 12)", i)
        if click is not None:
            if not (isinstance(click, list) and len(click) == 2 and all(_is_number(c) for c in click)):
                bad(f"click {click!r} is not [x, y]", i)
            elif not all(0.0 <= c <= 1.0 for c in click):
                bad(f"click {click!r} outside [0, 1]", i)
        if known_action and (click is not None) != (action in CLICK_ACTIONS):
            bad(f"click is {'missing' if click is None else 'set'} on a {action!r} frame (rule 12)", i)
        if not isinstance(text, str):
            bad(f"transcript {text!r} is not a string", i)
    lines = []
    for kind, frames in found.items():
        listed = ", ".join(map(str, frames[:_MAX_FRAMES_LISTED]))
        more = f" and {len(frames) - _MAX_FRAMES_LISTED} more" if len(frames) > _MAX_FRAMES_LISTED else ""
        lines.append(f"{kind} at frame{'s' if len(frames) > 1 else ''} {listed}{more}")
    return lines


def _structure_problems(episode: dict) -> list[str]:
    """Field presence and types; per-frame checks need these to pass."""
    problems = []
    for name, ok, expected in (
        ("id", lambda v: isinstance(v, str) and v, "a non-empty string"),
        ("video", lambda v: isinstance(v, str) and Path(v).is_absolute(), "an absolute path"),
        ("video_fps", lambda v: _is_number(v) and v > 0, "a positive number"),
        ("sample_fps", lambda v: _is_number(v) and v > 0, "a positive number"),
        ("num_frames", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
        ("frame_index", lambda v: isinstance(v, list) and all(isinstance(i, int) and i >= 0 for i in v),
         "a list of non-negative integers"),
        ("screen", lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) and i > 0 for i in v),
         "[width, height]"),
        ("prompt", lambda v: isinstance(v, str), "a string"),
        ("tags", lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings"),
        *((name, lambda v: isinstance(v, list), "a list") for name in PER_FRAME),
    ):
        if name not in episode:
            problems.append(f"missing field {name!r}")
        elif not ok(episode[name]):
            problems.append(f"{name} must be {expected}, got {str(episode[name])[:60]}")
    if problems:
        return problems
    n = episode["num_frames"]
    for name in ("frame_index", *PER_FRAME):
        if len(episode[name]) != n:
            problems.append(f"{name} has {len(episode[name])} entries, num_frames is {n}")
    index = episode["frame_index"]
    if any(b < a for a, b in zip(index, index[1:])):
        problems.append("frame_index decreases")
    return problems


def _video_problems(episode: dict) -> list[str]:
    """The video exists, decodes at every sampled frame, and its frame count covers frame_index."""
    import decord  # only here: validation is the one data step that decodes

    path = Path(episode["video"])
    if not path.is_file():
        return [f"video {path} does not exist"]
    try:
        reader = decord.VideoReader(str(path))
    except Exception as err:  # decord raises bare DECORDError/RuntimeError subclasses
        return [f"video {path} does not open: {str(err).splitlines()[0]}"]
    problems = []
    count, fps = len(reader), reader.get_avg_fps()
    index = episode["frame_index"]
    if index and index[-1] >= count:
        problems.append(f"video {path} has {count} frames, frame_index needs {index[-1] + 1}")
    if abs(fps - episode["video_fps"]) > FPS_TOLERANCE * episode["video_fps"]:
        problems.append(f"video {path} plays at {fps:.3f} fps, episode says video_fps {episode['video_fps']}")
    wanted = sorted({i for i in index if i < count})
    try:
        frames = reader.get_batch(wanted).asnumpy()
        if frames.shape[0] != len(wanted):
            problems.append(f"video {path} returned {frames.shape[0]} of {len(wanted)} sampled frames")
    except Exception as err:
        problems.append(f"video {path} does not decode: {str(err).splitlines()[0]}")
    return problems


def lost_event_warnings(summary: dict, max_lost_share: float) -> list[str]:
    """One warning per recording and action class whose share of labelled events that lost their frame
    under rule 3 (summary.json `lost_by_recording`) exceeds max_lost_share: the sample rate is too low there."""
    warnings = []
    fps = summary.get("sample_fps")
    for rec_id, classes in summary.get("lost_by_recording", {}).items():
        for action, (lost, labelled) in classes.items():
            if labelled and lost / labelled > max_lost_share:
                warnings.append(f"warning: {rec_id}: {lost} of {labelled} {action} events ({lost / labelled:.0%}) "
                                f"share a frame with another labelled event and are not labelled at {fps:g} fps "
                                f"(over data.max_lost_share={max_lost_share:g}; a higher data.sample_fps keeps them)")
    return warnings


def validate_prepared(prepared_dir: str | Path, vocab: LabelVocab, check_videos: bool = True,
                      max_lost_share: float = 1.0) -> ValidationReport:
    """All problems of a prepared dataset, in file order, and lost-event warnings from its summary.json."""
    prepared_dir = Path(prepared_dir)
    report = ValidationReport()
    summary_path = prepared_dir / "summary.json"
    if summary_path.is_file():
        report.warnings += lost_event_warnings(json.loads(summary_path.read_text(encoding="utf-8")), max_lost_share)
    seen_ids: dict[str, str] = {}
    optional = ("test_unseen",) if (prepared_dir / "test_unseen.jsonl").is_file() else ()
    for split in SPLITS + optional:
        name = f"{split}.jsonl"
        path = prepared_dir / name
        if not path.is_file():
            report.problems.append(f"{name}: missing (prepare_data.py writes all of {', '.join(SPLITS)})")
            continue
        with open(path, encoding="utf-8") as f:
            for line_no, text in enumerate(f, start=1):
                where = f"{name}:{line_no}"
                if not text.strip():
                    report.problems.append(f"{where}: empty line")
                    continue
                try:
                    episode = json.loads(text)
                except json.JSONDecodeError as err:
                    report.problems.append(f"{where}: bad JSON ({err.msg})")
                    continue
                if not isinstance(episode, dict):
                    report.problems.append(f"{where}: expected a JSON object")
                    continue
                report.episodes += 1
                problems = _structure_problems(episode)
                if isinstance(episode.get("id"), str):
                    if episode["id"] in seen_ids:
                        problems.append(f"id {episode['id']!r} already used at {seen_ids[episode['id']]}")
                    seen_ids.setdefault(episode["id"], where)
                if not problems:
                    report.frames += episode["num_frames"]
                    problems += _frame_problems(episode, episode["num_frames"], vocab)
                    if check_videos:
                        problems += _video_problems(episode)
                report.problems += [f"{where}: {p}" for p in problems]
    return report
