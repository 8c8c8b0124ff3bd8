"""Per-frame labels from a recording's events: data/README.md §2, labelling rules 1-14.

One pass over the events in time order resolves what needs history (press/release pairing,
double clicks, held modifiers, cursor position) into labelled events; frame assignment, the
priority of rule 3 and cursor travel are then done with numpy over all events at once
(sort once, bucket), so the cost is O(events log events + frames), never events x frames.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from action_decoder.data.events import Event, Metadata, VideoClock
from action_decoder.data.srt import Cue
from action_decoder.data.vocab import MODIFIER_KEYS, LabelVocab, modifier_name

CLICK_MAX_DIST_PX = 5.0        # rules 4-6: press/release (and double-click partners) at most this far apart
DOUBLE_CLICK_MAX_S = 0.5       # rule 5: second press within this time of the previous click's press
MOVE_MIN_TRAVEL_PX = 2.0       # rule 11: cursor path in a frame longer than this is a `move`
# Rule 3, higher wins; scroll_up and scroll_down tie (then the earlier event wins).
PRIORITY = {"hotkey": 9, "key": 8, "type": 7, "drag": 6, "double_click": 5, "right_click": 4,
            "click": 3, "scroll_up": 2, "scroll_down": 2, "move": 1}
# Event times are differences of large clock readings; nudge by a microsecond so an event logged
# exactly on a frame boundary lands in the frame that starts there despite float rounding.
_BOUNDARY_EPS_S = 1e-6
_HOTKEY_MODIFIERS = frozenset({"ctrl", "alt", "cmd"})


@dataclass(frozen=True)
class VideoInfo:
    fps: float          # video frame rate (nominal, for a variable-rate video)
    frame_count: int    # decodable frames in the video
    # Variable frame rate (ocap writes a frame when the screen changes): each frame's pts in seconds.
    # None for a constant-rate video, whose frame k shows at k / fps.
    frame_times: tuple[float, ...] | None = None

    @property
    def duration(self) -> float:
        if self.frame_times:                # the last frame shows for one nominal frame period
            return self.frame_times[-1] + 1.0 / self.fps
        return self.frame_count / self.fps


@dataclass
class FrameLabels:
    """Per sampled frame, names as in conf/labels (None where a head does not apply, rule 12)."""

    num_frames: int
    frame_index: list[int]
    action: list[str]
    key: list[str | None]
    modifier: list[str | None]
    click: list[list[float] | None]
    transcript: list[str]


@dataclass
class LabelStats:
    """Counts for the prepare_data summary; add() sums recordings."""

    events: Counter = field(default_factory=Counter)            # raw log lines by kind
    labelled_events: Counter = field(default_factory=Counter)   # events classified onto a frame, before rule 3
    dropped_events: Counter = field(default_factory=Counter)    # by reason: during_pause/before_start/after_end
    unknown_keys: Counter = field(default_factory=Counter)      # logged key name -> presses mapped to `other`
    narration: Counter = field(default_factory=Counter)         # cues, words, words_dropped
    # Labelled events that did not become their frame's label: another event of the frame won under
    # rule 3 (higher priority, or the same class earlier). What the sample rate loses, by class.
    lost_events: Counter = field(default_factory=Counter)

    COUNTERS = ("events", "labelled_events", "lost_events", "dropped_events", "unknown_keys", "narration")

    def add(self, other: "LabelStats") -> None:
        for name in self.COUNTERS:
            getattr(self, name).update(getattr(other, name))

    def as_dict(self) -> dict:
        return {name: dict(sorted(getattr(self, name).items())) for name in self.COUNTERS}

    def lost_share(self) -> dict[str, list]:
        """class -> [lost, labelled] for every class that lost an event."""
        return {a: [n, self.labelled_events[a]] for a, n in sorted(self.lost_events.items()) if n}


def sampled_frames(video: VideoInfo, sample_fps: float) -> tuple[int, list[int]]:
    """Rule 2: number of sampled frames and the video frame decoded for each."""
    num_frames = max(0, math.floor(video.duration * sample_fps + 1e-9))
    if video.frame_times:
        # Variable rate: the frame on screen at i / sample_fps, i.e. the latest one shown by then (else the first).
        return num_frames, [max(bisect.bisect_right(video.frame_times, i / sample_fps + _BOUNDARY_EPS_S) - 1, 0)
                            for i in range(num_frames)]
    step = video.fps / sample_fps
    # Round half up (not Python's round-half-even), clipped to the last video frame.
    frame_index = [min(math.floor(i * step + 0.5), video.frame_count - 1) for i in range(num_frames)]
    return num_frames, frame_index


def _key_label(name: str | None, hotkey: bool, held: set[str]) -> tuple[str, str | None]:
    """(action, key as it should be labelled) of a non-modifier key press (rule 9)."""
    if name is None:
        return ("hotkey" if hotkey else "key"), None
    if name == "space":
        return ("hotkey" if hotkey else "type"), " "
    if len(name) == 1:
        if hotkey:
            # pynput reports ctrl+<letter> as the ASCII control character on Linux/Windows (ctrl+c -> "\x03").
            if 1 <= ord(name) <= 26 and "ctrl" in held:
                return "hotkey", chr(ord(name) + 96)
            return "hotkey", name.lower()
        if name.isprintable():
            return "type", name
    return ("hotkey" if hotkey else "key"), name


def scroll_action(dy: float, scroll_direction: int) -> str:
    """Rule 8. pynput logs dy after macOS applied natural scrolling (dy < 0: content moved up, the user
    scrolled down), so DuckTrack's scroll_direction, which only flips its replay, does not enter the label.
    Evidence: tests/fixtures/ducktrack_example (scroll_direction -1) scrolls freshly opened pages with dy -1."""
    del scroll_direction
    return "scroll_up" if dy > 0 else "scroll_down" if dy < 0 else "move"


@dataclass
class _Candidates:
    """Labelled events (one per candidate frame label), accumulated as parallel lists."""

    vt: list[float] = field(default_factory=list)
    action: list[str] = field(default_factory=list)
    key: list[str | None] = field(default_factory=list)
    modifier: list[str] = field(default_factory=list)
    xy: list[tuple[float, float] | None] = field(default_factory=list)

    def add(self, vt: float, action: str, modifier: str, key: str | None = None,
            xy: tuple[float, float] | None = None) -> None:
        self.vt.append(vt)
        self.action.append(action)
        self.key.append(key)
        self.modifier.append(modifier)
        self.xy.append(xy)


def label_events(events: list[Event], meta: Metadata, video: VideoInfo, sample_fps: float,
                 vocab: LabelVocab, cues: list[Cue] | None = None) -> tuple[FrameLabels, LabelStats]:
    """Resolve a recording's events (time-ordered, as from `read_events`) into per-frame labels."""
    stats = LabelStats()
    num_frames, frame_index = sampled_frames(video, sample_fps)

    # Rule 1: the clock, for every event at once.
    clock = VideoClock.from_events(events, meta.start)
    t = np.fromiter((e.t for e in events), dtype=np.float64, count=len(events))
    vt_all = clock.video_time(t)
    paused = clock.in_pause(t)
    frame_all = np.floor(vt_all * sample_fps + _BOUNDARY_EPS_S * sample_fps).astype(np.int64)
    # Why an event gets no frame; "" = kept. pause/resume lines mark the clock, they are never dropped.
    reason = np.full(len(events), "", dtype=object)
    reason[frame_all >= num_frames] = "after_end"
    reason[vt_all < 0] = "before_start"
    reason[paused] = "during_pause"
    for i, e in enumerate(events):
        if e.action in ("pause", "resume"):
            reason[i] = ""
    vt_list = vt_all.tolist()

    cand = _Candidates()
    held: set[str] = set()                                # pynput names of held modifier variants
    mod_change_vt: list[float] = [-math.inf]              # modifier timeline, for drag-continuation frames
    mod_change_name: list[str] = ["none"]
    pos_vt: list[float] = []                              # every cursor position report (move/click/scroll)
    pos_xy: list[tuple[float, float]] = []
    pos_is_kept_move: list[bool] = []
    left_press: tuple[int, str] | None = None             # (event index, modifier at press) awaiting release
    last_click: Event | None = None                       # press of the latest left click, for rule 5
    drags: list[tuple[float, float]] = []                 # (press vt, release vt)

    def held_modifiers() -> set[str]:
        return {MODIFIER_KEYS[n] for n in held}

    def resolve_left(release_xy: tuple[float, float], release_vt: float) -> None:
        """Rules 4-6 for the pending left press, now that its release position is known."""
        nonlocal left_press, last_click
        assert left_press is not None
        i, modifier = left_press
        press = events[i]
        left_press = None
        if math.hypot(release_xy[0] - press.x, release_xy[1] - press.y) > CLICK_MAX_DIST_PX:
            action = "drag"
            drags.append((vt_list[i], release_vt))
            last_click = None                             # a drag ends any click sequence
        else:
            action = "click"
            if (last_click is not None and press.t - last_click.t <= DOUBLE_CLICK_MAX_S
                    and math.hypot(press.x - last_click.x, press.y - last_click.y) <= CLICK_MAX_DIST_PX):
                action = "double_click"
            last_click = press
        if not reason[i]:
            cand.add(vt_list[i], action, modifier, xy=(press.x, press.y))
            stats.labelled_events[action] += 1

    for i, e in enumerate(events):
        kept = not reason[i]
        if e.action == "move":
            stats.events["move"] += 1
        elif e.action == "click":
            kind = e.button if e.button in ("left", "right", "middle") else "other_button"
            stats.events[f"{kind}_{'press' if e.pressed else 'release'}"] += 1
            if e.button == "left" and e.pressed:
                if left_press is not None:                # release never logged: it happened by now, here
                    stats.events["unreleased_left_press"] += 1
                    resolve_left((e.x, e.y), vt_list[i])
                left_press = (i, modifier_name(held_modifiers()))
            elif e.button == "left" and left_press is not None:
                resolve_left((e.x, e.y), vt_list[i])
            elif e.button == "right" and e.pressed and kept:
                cand.add(vt_list[i], "right_click", modifier_name(held_modifiers()), xy=(e.x, e.y))
                stats.labelled_events["right_click"] += 1
            # Middle and other buttons: counted above, never labelled (rule 7).
        elif e.action == "scroll":
            stats.events["scroll"] += 1
            if kept:
                action = scroll_action(e.dy, meta.scroll_direction)
                cand.add(vt_list[i], action, modifier_name(held_modifiers()))
                stats.labelled_events["horizontal_scroll" if action == "move" else action] += 1
        elif e.action == "press":
            stats.events["key_press"] += 1
            if e.name in MODIFIER_KEYS:
                held.add(e.name)
            else:
                mods = held_modifiers()
                action, key = _key_label(e.name, bool(mods & _HOTKEY_MODIFIERS), mods)
                if kept:
                    label = vocab.key_or_other(key) if key is not None else "other"
                    if label != key:
                        stats.unknown_keys["null" if e.name is None else e.name] += 1
                    cand.add(vt_list[i], action, modifier_name(mods), key=label)
                    stats.labelled_events[action] += 1
        elif e.action == "release":
            stats.events["key_release"] += 1
            held.discard(e.name)
        else:
            stats.events[e.action] += 1                   # pause / resume
        if e.action in ("press", "release") and e.name in MODIFIER_KEYS:
            name = modifier_name(held_modifiers())
            if name != mod_change_name[-1]:
                mod_change_vt.append(vt_list[i])
                mod_change_name.append(name)
        if e.action in ("move", "click", "scroll"):
            pos_vt.append(vt_list[i])
            pos_xy.append((e.x, e.y))
            pos_is_kept_move.append(e.action == "move" and kept)
        if reason[i]:
            stats.dropped_events[reason[i]] += 1
    if left_press is not None:                            # log ends with the button down
        stats.events["unreleased_left_press"] += 1
        last_xy = pos_xy[-1]
        resolve_left(last_xy, pos_vt[-1])

    pos_vt_arr = np.asarray(pos_vt, dtype=np.float64)
    pos_xy_arr = np.asarray(pos_xy, dtype=np.float64).reshape(-1, 2)

    num_logged = len(cand.vt)                             # candidates after this are drag continuations, not events

    # Rule 6: frames strictly between a drag's press and release frames continue the drag,
    # at the latest cursor position and modifiers as of the end of that frame.
    for press_vt, release_vt in drags:
        first = max(_frame_of(press_vt, sample_fps) + 1, 0)
        last = min(_frame_of(release_vt, sample_fps) - 1, num_frames - 1)
        for f in range(first, last + 1):
            frame_end = (f + 1) / sample_fps
            p = int(np.searchsorted(pos_vt_arr, frame_end, side="left")) - 1
            m = bisect.bisect_left(mod_change_vt, frame_end) - 1
            cand.add(f / sample_fps, "drag", mod_change_name[m], xy=tuple(pos_xy_arr[p]) if p >= 0 else None)

    labels = FrameLabels(num_frames=num_frames, frame_index=frame_index, action=["none"] * num_frames,
                         key=[None] * num_frames, modifier=[None] * num_frames, click=[None] * num_frames,
                         transcript=[""] * num_frames)

    # Rule 11: cursor path length per frame, from the previous position report through each move.
    if len(pos_vt_arr) > 1 and num_frames:
        seg = np.hypot(*np.diff(pos_xy_arr, axis=0).T)
        kept_move = np.asarray(pos_is_kept_move[1:], dtype=bool)
        frames = np.floor(pos_vt_arr[1:][kept_move] * sample_fps + _BOUNDARY_EPS_S * sample_fps).astype(np.int64)
        travel = np.bincount(frames, weights=seg[kept_move], minlength=num_frames)[:num_frames]
        for f in np.flatnonzero(travel > MOVE_MIN_TRAVEL_PX).tolist():
            labels.action[f] = "move"

    # Rule 3: per frame, the highest priority candidate, earliest first among equals.
    if cand.vt:
        vt = np.asarray(cand.vt)
        frame = np.floor(vt * sample_fps + _BOUNDARY_EPS_S * sample_fps).astype(np.int64)
        prio = np.array([PRIORITY[a] for a in cand.action])
        order = np.lexsort((np.arange(len(vt)), vt, -prio, frame))
        winners = order[np.unique(frame[order], return_index=True)[1]]
        lost = np.ones(len(vt), dtype=bool)
        lost[winners] = False
        for c in np.flatnonzero(lost[:num_logged]).tolist():
            action = cand.action[c]
            stats.lost_events["horizontal_scroll" if action == "move" else action] += 1
        for c in winners.tolist():
            f = int(frame[c])
            action = cand.action[c]
            labels.action[f] = action
            if action == "move":                         # horizontal scroll: heads do not apply (rule 12)
                continue
            labels.modifier[f] = cand.modifier[c]
            labels.key[f] = cand.key[c]
            xy = cand.xy[c]
            if xy is not None:
                labels.click[f] = [round(min(max(xy[0] / meta.screen_width, 0.0), 1.0), 6),
                                   round(min(max(xy[1] / meta.screen_height, 0.0), 1.0), 6)]

    _spread_narration(cues or [], labels, sample_fps, stats)
    return labels, stats


def _frame_of(vt: float, sample_fps: float) -> int:
    return math.floor(vt * sample_fps + _BOUNDARY_EPS_S * sample_fps)


def _spread_narration(cues: list[Cue], labels: FrameLabels, sample_fps: float, stats: LabelStats) -> None:
    """Rule 14: cue words spread evenly over the sampled frames whose interval overlaps the cue."""
    words_per_frame: list[list[str]] = [[] for _ in range(labels.num_frames)]
    for cue in cues:
        words = cue.words
        stats.narration["cues"] += 1
        stats.narration["words"] += len(words)
        first = _frame_of(cue.start, sample_fps)
        # Frames i with i/fps < end; a zero-length cue still gets the frame it starts in.
        last = max(first, math.ceil(cue.end * sample_fps - _BOUNDARY_EPS_S * sample_fps) - 1)
        last = min(last, labels.num_frames - 1)
        if first > last:
            stats.narration["words_dropped"] += len(words)
            continue
        m, n = last - first + 1, len(words)
        for j, word in enumerate(words):
            words_per_frame[first + (j * m) // n].append(word)
    labels.transcript = [" ".join(w) for w in words_per_frame]
