"""Open World Agents `ocap` recordings (`<name>.mkv` + `<name>.mcap`) -> the importer's event representation.

data/README.md §4. The mcap is read with the `mcap` package; its `keyboard`, `mouse` and `screen` topics
become `events.Event`s (Windows virtual-key codes mapped to pynput key names), `Metadata` (screen = the
video frame size, start = the event time of video pts 0) and `VideoInfo` (ocap's video has a variable frame
rate: a frame is written when the screen changes, so the frame times come from the container). From there
the recording goes through the same labelling rules (`labels.label_events`) as a DuckTrack one.

The mkv itself is not used for training: decord 0.6.0 (the default reader) decodes these HEVC files
sequentially but returns wrong frames after a seek (random access: mean abs. difference 117 of 255 against
PyAV's sequential decode on tests/fixtures/owa_ocap/0.3.2.mkv). `write_sampled_video` decodes the mkv once
with PyAV and writes the frame on screen at each sampled instant to a constant-rate H.264 mp4 beside the
prepared episodes, which every reader seeks correctly.

Unusable recordings raise `RecordingSkipped` (file + reason); the importer skips them and prepares the rest.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from action_decoder.data.events import DataFormatError, Event, Metadata, RecordingSkipped

NEEDED_TOPICS = ("keyboard", "mouse", "screen")
# Windows 10/11 window rects include an invisible resize border (left, right, bottom; about 7 px at 100 %
# scaling, more at higher DPI); a window capture is this much smaller than the rect.
MAX_WINDOW_BORDER_PX = 24
# Video encoders pad odd frame sizes to even ones (yuv420p): 1025x1017 is stored as 1026x1018.
MAX_PAD_PX = 1

# Windows virtual-key code -> pynput key name (the names of data/README.md §1). Letters and digits are
# handled in `vk_name` (case and shifted digits follow the held shift; caps lock is not logged by ocap).
_VK_NAMES = {
    8: "backspace", 9: "tab", 12: "clear", 13: "enter", 16: "shift", 17: "ctrl", 18: "alt", 19: "pause",
    20: "caps_lock", 27: "esc", 32: "space", 33: "page_up", 34: "page_down", 35: "end", 36: "home",
    37: "left", 38: "up", 39: "right", 40: "down", 44: "print_screen", 45: "insert", 46: "delete",
    91: "cmd", 92: "cmd_r", 93: "menu", 144: "num_lock", 145: "scroll_lock",
    160: "shift", 161: "shift_r", 162: "ctrl_l", 163: "ctrl_r", 164: "alt_l", 165: "alt_gr",
    173: "media_volume_mute", 174: "media_volume_down", 175: "media_volume_up", 176: "media_next",
    177: "media_previous", 179: "media_play_pause",
    # Numeric keypad: the character it types (num lock on).
    96: "0", 97: "1", 98: "2", 99: "3", 100: "4", 101: "5", 102: "6", 103: "7", 104: "8", 105: "9",
    106: "*", 107: "+", 109: "-", 110: ".", 111: "/",
    **{112 + i: f"f{i + 1}" for i in range(24)},                               # F1 .. F24
}
# OEM keys on a US layout: (unshifted, shifted) character.
_VK_OEM = {186: (";", ":"), 187: ("=", "+"), 188: (",", "<"), 189: ("-", "_"), 190: (".", ">"),
           191: ("/", "?"), 192: ("`", "~"), 219: ("[", "{"), 220: ("\\", "|"), 221: ("]", "}"), 222: ("'", '"')}
_SHIFTED_DIGITS = ")!@#$%^&*("
_SHIFT_VKS = frozenset({16, 160, 161})


def vk_name(vk: int, shift: bool) -> str:
    """pynput-style key name of a Windows virtual-key code; unknown codes become `vk<code>` (-> `other`)."""
    if 65 <= vk <= 90:                                     # A-Z: the vk is the upper-case letter
        return chr(vk) if shift else chr(vk).lower()
    if 48 <= vk <= 57:                                     # top-row digits, US layout symbols with shift
        return _SHIFTED_DIGITS[vk - 48] if shift else chr(vk)
    if vk in _VK_OEM:
        return _VK_OEM[vk][shift]
    return _VK_NAMES.get(vk, f"vk{vk}")


@dataclass(frozen=True)
class OcapRecording:
    events: list[Event]
    meta: Metadata
    outside_video: int              # clicks and scrolls outside the captured area (another window): dropped


def _messages(mcap_path: Path) -> dict[str, list[tuple[int, dict]]]:
    """topic -> [(log_time ns, decoded JSON message)] for the topics the importer uses."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    wanted = (*NEEDED_TOPICS, "window")
    out: dict[str, list[tuple[int, dict]]] = {t: [] for t in wanted}
    try:
        with open(mcap_path, "rb") as f:
            for _, channel, message in make_reader(f).iter_messages(topics=list(wanted), log_time_order=True):
                if channel.message_encoding != "json":
                    raise RecordingSkipped(mcap_path, None, f"topic {channel.topic!r} is encoded as "
                                                            f"{channel.message_encoding!r}, expected json")
                try:
                    out[channel.topic].append((message.log_time, json.loads(message.data)))
                except json.JSONDecodeError as err:
                    raise RecordingSkipped(mcap_path, None, f"topic {channel.topic!r}: bad JSON message at "
                                                            f"log time {message.log_time} ({err.msg})") from None
    except (McapError, ValueError, EOFError) as err:
        if isinstance(err, DataFormatError):
            raise
        raise RecordingSkipped(mcap_path, None, f"cannot read mcap ({err})") from None
    missing = [t for t in NEEDED_TOPICS if not out[t]]
    if missing:
        raise RecordingSkipped(mcap_path, None, f"no messages on topic(s) {', '.join(missing)} "
                                                f"(ocap writes keyboard, mouse and screen)")
    return out


def _frame_ref(msg: dict) -> tuple[str | None, int | None, list | None, list | None]:
    """(video file name, pts ns, stored [w, h], captured [w, h]) of a screen message, across ocap versions:
    0.3.x {path, pts}; 0.4.x {path, pts, shape, original_shape}; 0.5.x {media_ref: {uri, pts_ns}, shape, source_shape}."""
    ref = msg.get("media_ref") or {}
    uri = ref.get("uri", msg.get("path"))
    pts = ref.get("pts_ns", msg.get("pts"))
    shape = msg.get("shape")
    return (Path(uri).name if isinstance(uri, str) else None, pts if isinstance(pts, int) else None,
            shape, msg.get("source_shape", msg.get("original_shape", shape)))


def read_ocap(mcap_path: str | Path, video_path: str | Path, video_size: tuple[int, int]) -> OcapRecording:
    """Convert one ocap recording. `video_size` (w, h) is the decoded mkv's frame size."""
    mcap_path, video_path = Path(mcap_path), Path(video_path)
    topics = _messages(mcap_path)
    t0 = min(topics[t][0][0] for t in NEEDED_TOPICS)       # event clock origin: keeps float64 at ns precision

    def seconds(ns: int) -> float:
        return (ns - t0) / 1e9

    # Start: a screen message for this video stamps a frame's wall clock (utc_ns) and its pts.
    refs = [(msg, *_frame_ref(msg)) for _, msg in topics["screen"]]
    refs = [r for r in refs if r[1] == video_path.name and r[2] is not None and isinstance(r[0].get("utc_ns"), int)]
    if not refs:
        raise RecordingSkipped(mcap_path, None, f"no usable start time: no screen message with utc_ns and pts "
                                                f"refers to {video_path.name}")
    first, _, pts_ns, shape, source = refs[0]
    start = seconds(first["utc_ns"] - pts_ns)

    # Sizes: stored frame size (`shape`, older versions: the video itself) against the decoded video.
    if shape is None:
        shape = source = list(video_size)
    if not (isinstance(shape, list) and len(shape) == 2 and isinstance(source, list) and len(source) == 2):
        raise RecordingSkipped(mcap_path, None, f"screen message shape {shape!r} is not [width, height]")
    if any(not 0 <= v - s <= MAX_PAD_PX for v, s in zip(video_size, shape)):
        raise RecordingSkipped(mcap_path, None, f"video {video_path.name} is {video_size[0]}x{video_size[1]} but "
                                                f"the screen messages say {shape[0]}x{shape[1]}")
    scale = (shape[0] / source[0], shape[1] / source[1])

    # Mouse positions are desktop coordinates. A window capture (the video is a window's rect less its
    # invisible border) starts at the window's left edge + half the border, top edge; else the full screen.
    windows: list[tuple[float, float, float]] = []         # (event time, origin x, origin y) of the captured window
    hwnd = None
    for ns, msg in topics["window"]:
        rect = msg.get("rect")
        if not (isinstance(rect, list) and len(rect) == 4):
            continue
        border_x, border_y = rect[2] - rect[0] - source[0], rect[3] - rect[1] - source[1]
        fits = 0 <= border_x <= MAX_WINDOW_BORDER_PX and 0 <= border_y <= MAX_WINDOW_BORDER_PX
        if fits and hwnd in (None, msg.get("hWnd")):
            hwnd = msg.get("hWnd")
            windows.append((seconds(ns), rect[0] + border_x / 2, rect[1]))

    def to_video(t: float, x: float, y: float) -> tuple[float, float]:
        ox, oy = windows[0][1:] if windows else (0.0, 0.0)
        for wt, wx, wy in windows:                          # latest window position at or before t (else the first)
            if wt > t:
                break
            ox, oy = wx, wy
        return (x - ox) * scale[0], (y - oy) * scale[1]

    events: list[Event] = []
    outside = 0
    for ns, msg in topics["mouse"]:
        t, kind = seconds(ns), msg.get("event_type")
        try:
            x, y = to_video(t, float(msg["x"]), float(msg["y"]))
            if kind in ("click", "scroll") and not (0 <= x < shape[0] and 0 <= y < shape[1]):
                outside += 1                                 # not in the video: no visible target to label
            elif kind == "move":
                events.append(Event(t=t, line=0, action="move", x=x, y=y))
            elif kind == "click":
                events.append(Event(t=t, line=0, action="click", x=x, y=y, button=str(msg["button"]),
                                    pressed=bool(msg["pressed"])))
            elif kind == "scroll":
                events.append(Event(t=t, line=0, action="scroll", x=x, y=y, dx=float(msg["dx"]), dy=float(msg["dy"])))
            else:
                raise KeyError("event_type")
        except (KeyError, TypeError, ValueError) as err:
            raise RecordingSkipped(mcap_path, None, f"mouse message at log time {ns} lacks {err}: {msg}") from None
    shift_held: set[int] = set()
    for ns, msg in topics["keyboard"]:
        kind, vk = msg.get("event_type"), msg.get("vk")
        if kind not in ("press", "release") or not isinstance(vk, int):
            raise RecordingSkipped(mcap_path, None, f"keyboard message at log time {ns} is not a press/release "
                                                    f"with an integer vk: {msg}")
        name = vk_name(vk, bool(shift_held))
        if vk in _SHIFT_VKS:
            (shift_held.add if kind == "press" else shift_held.discard)(vk)
        events.append(Event(t=seconds(ns), line=0, action=kind, name=name))
    events.sort(key=lambda e: e.t)
    meta = Metadata(screen_width=int(shape[0]), screen_height=int(shape[1]), start=start, scroll_direction=1,
                    tags=["ocap"])
    return OcapRecording(events=events, meta=meta, outside_video=outside)


def write_sampled_video(src: str | Path, dst: str | Path, frame_index: list[int], fps: float, crf: int = 18) -> None:
    """Decode `src` in order (PyAV) and write its frames `frame_index` (non-decreasing) as a constant-rate
    H.264 mp4 at `fps`: output frame i is source frame frame_index[i]."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as source, av.open(str(dst), mode="w") as out:
        rate = Fraction(fps).limit_denominator(1000)
        stream = out.add_stream("libx264", rate=rate)
        stream.codec_context.time_base = 1 / rate
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "veryfast", "crf": str(crf)}
        i = 0
        for k, frame in enumerate(source.decode(video=0)):
            if i == 0:
                stream.width, stream.height = frame.width, frame.height
            while i < len(frame_index) and frame_index[i] == k:
                image = frame.reformat(format="yuv420p")
                image.pts, image.time_base = i, 1 / rate
                for packet in stream.encode(image):
                    out.mux(packet)
                i += 1
            if i == len(frame_index):
                break
        if i != len(frame_index):
            raise RecordingSkipped(src, None, f"video decodes to fewer frames than frame {frame_index[i]}")
        for packet in stream.encode():
            out.mux(packet)
