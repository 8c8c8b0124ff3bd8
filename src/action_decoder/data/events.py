"""Read and validate a DuckTrack recording's event log and metadata; map event time to video time.

data/README.md §1 (raw layout) and rule 1 (clock). Every malformed input raises `DataFormatError`
whose message is `<path>:<line>: <reason>` (or `<path>: <reason>` for whole-file problems).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ACTIONS = ("move", "click", "scroll", "press", "release", "pause", "resume")
# Fields each action must carry (beyond time_stamp/action) and their kinds.
_NUMERIC_FIELDS = {"move": ("x", "y"), "click": ("x", "y"), "scroll": ("x", "y", "dx", "dy")}
# Mouse and keyboard are logged by separate listener threads, so neighbouring lines can be out of
# order by a few milliseconds; anything later than this is a broken log, not thread jitter.
TIME_BACKWARD_TOLERANCE_S = 0.05


class DataFormatError(ValueError):
    """Malformed raw input; the message names the file (and line) and the reason."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


class RecordingSkipped(DataFormatError):
    """A recording the importer cannot use (no usable start time, topics or video size): it is skipped,
    named with the reason, and the rest of the folder is still prepared."""


@dataclass(slots=True)
class Event:
    """One events.jsonl line. Fields an action does not use stay None."""

    t: float                  # event clock (seconds), as logged
    line: int                 # 1-based line number in events.jsonl, for messages
    action: str
    x: float | None = None
    y: float | None = None
    dx: float | None = None
    dy: float | None = None
    button: str | None = None
    pressed: bool | None = None
    name: str | None = None   # press/release: pynput key name; None when pynput logged no char


@dataclass(frozen=True)
class Metadata:
    screen_width: int
    screen_height: int
    start: float              # OBS_WEBSOCKET_OUTPUT_STARTED[0]: video time 0 in the event clock
    scroll_direction: int     # DuckTrack's natural-scrolling flag (-1 on) for replay; labels ignore it (rule 8)
    description: str = ""
    tags: list[str] = field(default_factory=list)


def _number(obj: dict, key: str, path: Path, line: int) -> float:
    if key not in obj:
        raise DataFormatError(path, line, f"missing field {key!r} for action {obj.get('action')!r}")
    value = obj[key]
    # bool is an int subclass in Python; a boolean coordinate is a broken log, not 0/1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataFormatError(path, line, f"field {key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_event(text: str, path: Path, line: int) -> Event:
    """Parse and validate one events.jsonl line."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, line, f"bad JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    if "action" not in obj:
        raise DataFormatError(path, line, "missing field 'action'")
    action = obj["action"]
    if action not in ACTIONS:
        raise DataFormatError(path, line, f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    if "time_stamp" not in obj:
        raise DataFormatError(path, line, "missing field 'time_stamp'")
    event = Event(t=_number(obj, "time_stamp", path, line), line=line, action=action)
    for key in _NUMERIC_FIELDS.get(action, ()):
        setattr(event, key, _number(obj, key, path, line))
    if action == "click":
        for key in ("button", "pressed"):
            if key not in obj:
                raise DataFormatError(path, line, f"missing field {key!r} for action 'click'")
        if not isinstance(obj["button"], str):
            raise DataFormatError(path, line, f"field 'button' must be a string, got {obj['button']!r}")
        if not isinstance(obj["pressed"], bool):
            raise DataFormatError(path, line, f"field 'pressed' must be true/false, got {obj['pressed']!r}")
        event.button, event.pressed = obj["button"], obj["pressed"]
    elif action in ("press", "release"):
        if "name" not in obj:
            raise DataFormatError(path, line, f"missing field 'name' for action {action!r}")
        name = obj["name"]
        # pynput reports no character for some keys (dead keys, some media keys): DuckTrack logs null.
        if name is not None and (not isinstance(name, str) or name == ""):
            raise DataFormatError(path, line, f"field 'name' must be a non-empty string or null, got {name!r}")
        event.name = name
    return event


def read_events(path: str | Path) -> list[Event]:
    """All events of an events.jsonl, validated, in time order (stable for equal times)."""
    path = Path(path)
    events: list[Event] = []
    latest_t, latest_line = -math.inf, 0
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            event = parse_event(text, path, line_no)
            if event.t < latest_t - TIME_BACKWARD_TOLERANCE_S:
                raise DataFormatError(path, line_no, (
                    f"time_stamp {event.t} goes back {latest_t - event.t:.3f} s before line {latest_line} "
                    f"(more than the {TIME_BACKWARD_TOLERANCE_S} s listener jitter tolerated)"))
            if event.t > latest_t:
                latest_t, latest_line = event.t, line_no
            events.append(event)
    events.sort(key=lambda e: e.t)  # stable: equal times keep file order
    return events


def read_metadata(path: str | Path) -> Metadata:
    """metadata.json with the fields the importer needs, validated."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"bad JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, None, "expected a JSON object")

    def positive_int(key: str) -> int:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
            raise DataFormatError(path, None, f"{key!r} must be a positive integer, got {value!r}")
        return int(value)

    try:
        start = obj["obs_record_state_timings"]["OBS_WEBSOCKET_OUTPUT_STARTED"][0]
    except (KeyError, IndexError, TypeError):
        raise RecordingSkipped(path, None, "missing obs_record_state_timings.OBS_WEBSOCKET_OUTPUT_STARTED[0] "
                                          "(video time 0 in the event clock)") from None
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start):
        raise RecordingSkipped(path, None, f"OBS_WEBSOCKET_OUTPUT_STARTED[0] must be a number, got {start!r}")
    scroll_direction = obj.get("scroll_direction", 1)
    if scroll_direction not in (1, -1) or isinstance(scroll_direction, bool):
        raise DataFormatError(path, None, f"'scroll_direction' must be 1 or -1, got {scroll_direction!r}")
    description = obj.get("description") or ""
    tags = obj.get("tags") or []
    if not isinstance(description, str):
        raise DataFormatError(path, None, f"'description' must be a string, got {description!r}")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataFormatError(path, None, f"'tags' must be a list of strings, got {tags!r}")
    return Metadata(screen_width=positive_int("screen_width"), screen_height=positive_int("screen_height"),
                    start=float(start), scroll_direction=int(scroll_direction), description=description,
                    tags=list(tags))


@dataclass(frozen=True)
class VideoClock:
    """Event time -> video time, with paused spans cut out (rule 1)."""

    start: float
    pauses: np.ndarray  # [P, 2] (pause, resume) event times; resume = inf for a pause never resumed

    @classmethod
    def from_events(cls, events: list[Event], start: float) -> "VideoClock":
        spans: list[tuple[float, float]] = []
        paused_at: float | None = None
        for e in events:
            if e.action == "pause" and paused_at is None:
                paused_at = e.t
            elif e.action == "resume" and paused_at is not None:
                spans.append((paused_at, e.t))
                paused_at = None
            # A second pause while paused, or a resume while running, changes nothing.
        if paused_at is not None:
            spans.append((paused_at, math.inf))
        return cls(start=start, pauses=np.asarray(spans, dtype=np.float64).reshape(-1, 2))

    def in_pause(self, t: np.ndarray) -> np.ndarray:
        """True for event times strictly inside a pause ... resume span (the pause/resume lines excluded)."""
        t = np.asarray(t, dtype=np.float64)[..., None]
        return np.any((t > self.pauses[:, 0]) & (t < self.pauses[:, 1]), axis=-1)

    def video_time(self, t: np.ndarray) -> np.ndarray:
        """t - start - (time paused between start and t). Paused spans only shorten the video after start."""
        t = np.asarray(t, dtype=np.float64)
        lo = np.maximum(self.pauses[:, 0], self.start)                      # [P]
        hi = np.minimum(self.pauses[:, 1][None, :], t[..., None])           # [..., P]
        paused = np.clip(hi - lo, 0.0, None).sum(axis=-1) if len(self.pauses) else 0.0
        return t - self.start - paused
