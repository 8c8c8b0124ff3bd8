"""Real-desktop recorder: scripted tasks on real X11 applications under Xvfb, recorded the DuckTrack way.

Each recording `<out>/desk_<NNNNN>/` is made on its own Xvfb display (several in parallel, one per worker
process) with real applications (xterm, xcalc) placed at random, driven by `xdotool` (XTEST) with
human-like timing: the pointer travels in eased steps, dwells before clicks, keys come 80-200 ms apart.
The recording itself is what DuckTrack does: pynput's mouse/keyboard listeners write events.jsonl on the
`time.perf_counter()` clock; the video is `ffmpeg -f x11grab -draw_mouse 1` and
`OBS_WEBSOCKET_OUTPUT_STARTED` is the perf_counter time of video frame 0, measured from the wall-clock
stamps x11grab puts on its packets (`-copyts`) minus `time.time() - time.perf_counter()` of this process.
A pause stops the capture (the span is missing from the video; events.jsonl gets `pause`/`resume` at the
measured end of the first segment and start of the second) and the segments are concatenated.

Needs the system packages of data/README.md §5 (`apt-get install -y xvfb xdotool ffmpeg xterm x11-apps
x11-utils xfonts-base`) and `pynput`, `python-xlib`; nothing else in the repo imports this module.

Files per recording: video.mp4, events.jsonl, metadata.json, task.txt, narration.srt (DuckTrack layout)
and script.json (what the script did: each action's class and event-clock time, measured around the
xdotool call that made it, and the cursor checks: where the cursor was drawn in a decoded frame against
the logged position).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from action_decoder.recorders import common
from action_decoder.recorders.common import config_from_node
from action_decoder.recorders.x11 import Capture, Driver, EventLog, XSession, clock_offset, write_constant_rate

SYSTEM_TOOLS = ("Xvfb", "xdotool", "ffmpeg", "xterm", "xcalc", "xwininfo")
TASKS = ("type_command", "calculator", "double_click_word", "right_click", "drag_select", "scroll",
         "hotkey", "key_edit")
WORDS = ("alpha", "bravo", "delta", "echo", "golf", "hotel", "india", "kilo", "lima", "mike", "oscar", "papa",
         "romeo", "sierra", "tango", "victor", "whiskey", "yankee", "zulu", "data", "frame", "model", "train",
         "video", "label", "click", "screen", "window", "desktop", "record")
_CURSOR_MIN_BRIGHT = 128         # the X root cursor is drawn black and white over the black (-br) root


@dataclass(frozen=True)
class DesktopConfig:
    """The `data.desktop` config block (conf/data/desktop.yaml documents each knob)."""
    num_recordings: int = 100
    width: int = 640
    height: int = 400
    fps: int = 10
    pause_fraction: float = 0.2
    steps: tuple = (3, 5)            # scripted steps per recording, inclusive range
    tasks: tuple = TASKS
    seed: int = 0
    crf: int = 23
    workers: int = 2

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "steps", tuple(self.steps))
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown desktop tasks {unknown}; known: {list(TASKS)}")
        if self.width < 640 or self.height < 360 or self.width % 2 or self.height % 2:
            raise ValueError(f"desktop width/height must be even and at least 640x360 (xterm and xcalc side by "
                             f"side with bare root between them), got {self.width}x{self.height}")

    @classmethod
    def from_cfg(cls, node) -> "DesktopConfig":
        return config_from_node(cls, node, "data.desktop")


def missing_tools() -> list[str]:
    """System tools the recorder needs that are not on PATH, and Python packages not installed."""
    missing = [t for t in SYSTEM_TOOLS if shutil.which(t) is None]
    for module in ("pynput", "Xlib"):       # find, not import: pynput's import needs a DISPLAY
        if importlib.util.find_spec(module) is None:
            missing.append(f"python package {module}")
    return missing


# --- tasks -------------------------------------------------------------------------------------------
@dataclass
class Layout:
    term: tuple[int, int, int, int]      # xterm x, y, w, h
    calc: tuple[int, int, int, int]
    buttons: list[tuple[int, int, int, int]]
    empty: tuple[int, int, int, int]     # a rectangle of bare root window (for cursor checks)


def _inside(rng, rect, margin=12) -> tuple[int, int]:
    x, y, w, h = rect
    return int(rng.integers(x + margin, x + w - margin)), int(rng.integers(y + margin, y + h - margin))


def _text_point(rng, term, line: int | None = None) -> tuple[int, int]:
    """A point on a text line of the xterm (6x13 'fixed' font, 2 px border)."""
    x, y, w, h = term
    rows = max(1, (h - 4) // 13)
    row = int(rng.integers(0, rows - 1)) if line is None else line
    return int(rng.integers(x + 8, x + min(w, 200))), y + 2 + 13 * row + 6


def task_steps(task: str, rng: np.random.Generator, layout: Layout) -> tuple[str, callable]:
    """(narration line, function that scripts the step on a Driver)."""
    term = layout.term
    if task == "type_command":
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
        text = f"echo {words}"

        def play(d: Driver):
            d.move(*_inside(rng, term))
            d.click()
            d.type(text)
            d.key("Return", "key", "enter")
        return f"In the terminal, type {text} and press Enter.", play
    if task == "calculator":
        n = int(rng.integers(2, 5))
        picks = [layout.buttons[int(i)] for i in rng.choice(len(layout.buttons), size=n, replace=False)]

        def play(d: Driver):
            for b in picks:
                d.move(b[0] + b[2] // 2 + int(rng.integers(-5, 6)), b[1] + b[3] // 2 + int(rng.integers(-4, 5)))
                d.click()
        return f"Press {n} buttons on the calculator.", play
    if task == "double_click_word":
        def play(d: Driver):
            d.move(*_text_point(rng, term))
            d.double_click()
        return "Double-click a word in the terminal to select it.", play
    if task == "right_click":
        def play(d: Driver):
            d.move(*_inside(rng, term))
            d.click(button=3)
        return "Right-click in the terminal.", play
    if task == "drag_select":
        def play(d: Driver):
            x, y = _text_point(rng, term)
            d.move(x, y)
            d.drag(min(x + int(rng.integers(40, 160)), term[0] + term[2] - 8), y + 13 * int(rng.integers(0, 3)))
        return "Drag across the text in the terminal to select it.", play
    if task == "scroll":
        up, down = int(rng.integers(2, 5)), int(rng.integers(2, 5))

        def play(d: Driver):
            d.move(*_inside(rng, term))
            d.scroll(True, up)
            d.scroll(False, down)
        return f"Scroll the terminal up {up} times, then down {down} times.", play
    if task == "hotkey":
        combo = str(rng.choice(["l", "u", "e", "a"]))

        def play(d: Driver):
            d.move(*_inside(rng, term))
            d.dwell()
            d.key(f"ctrl+{combo}", "hotkey", combo)
        return f"Press ctrl+{combo} in the terminal.", play
    if task == "key_edit":
        word = str(rng.choice(WORDS))

        def play(d: Driver):
            d.move(*_inside(rng, term))
            d.dwell()
            d.type(word)
            d.key("BackSpace", "key", "backspace")
            d.key("Left", "key", "left")
        return f"Type {word} in the terminal, delete its last letter and move the cursor left.", play
    raise ValueError(task)


# --- one recording -----------------------------------------------------------------------------------
def recording_id(index: int) -> str:
    return common.recording_id("desk", index)


def cursor_offset(video: Path, frame: int, xy: tuple[float, float], box: int = 12) -> float | None:
    """Distance from `xy` to the X root cursor drawn in decoded `frame` (centre of its bright pixels; the
    root cursor's hotspot is its centre); None if no cursor pixels are near."""
    with av.open(str(video)) as c:
        for k, f in enumerate(c.decode(video=0)):
            if k == frame:
                image = f.to_ndarray(format="gray")
                break
        else:
            return None
    x, y = int(round(xy[0])), int(round(xy[1]))
    y0, x0 = max(0, y - box), max(0, x - box)
    ys, xs = np.nonzero(image[y0:y + box, x0:x + box] >= _CURSOR_MIN_BRIGHT)
    if len(xs) < 5:
        return None
    return float(np.hypot((xs.min() + xs.max()) / 2 + x0 - xy[0], (ys.min() + ys.max()) / 2 + y0 - xy[1]))


def record_recording(out_root: str | Path, index: int, cfg: DesktopConfig) -> Path:
    """Script, play and record one recording; returns its folder. Run it in a process of its own (as
    `record_recordings` does): pynput's listeners connect to this process's DISPLAY, set here."""
    rng = np.random.default_rng([cfg.seed, index])
    out = Path(out_root) / recording_id(index)
    tmp = Path(tempfile.mkdtemp(prefix="desk_"))
    session = XSession(cfg.width, cfg.height)
    os.environ["DISPLAY"] = session.display
    try:
        # Random placement: xterm on one side, xcalc on the other, bare root between them for cursor checks.
        calc_w, calc_h = 180, int(rng.integers(300, min(340, cfg.height - 20)))
        cols, rows = int(rng.integers(50, 60)), int(rng.integers(14, 22))
        term_left = bool(rng.integers(0, 2))
        term_x = int(rng.integers(5, 25)) if term_left else cfg.width - cols * 6 - 4 - int(rng.integers(5, 25))
        calc_x = cfg.width - calc_w - int(rng.integers(5, 25)) if term_left else int(rng.integers(5, 25))
        term_y, calc_y = int(rng.integers(5, 40)), int(rng.integers(5, cfg.height - calc_h - 5))
        filler = tmp / "filler.txt"
        filler.write_text("\n".join(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 8))))
                                    for _ in range(int(rng.integers(40, 80)))) + "\n")
        session.start("xterm", "-geometry", f"{cols}x{rows}+{term_x}+{term_y}", "-sl", "500",
                      "-e", "sh", "-c", f"cat {filler}; PS1='$ ' exec sh")
        session.start("xcalc", "-geometry", f"{calc_w}x{calc_h}+{calc_x}+{calc_y}")
        deadline = time.monotonic() + 15
        while True:
            wins = session.windows()
            buttons = [b for b in session.children("xcalc") if 20 <= b[2] <= 80 and 14 <= b[3] <= 40]
            # Both mapped at their final size (a window first shows up small, then takes its geometry).
            if ("xterm" in wins and "xcalc" in wins and len(buttons) >= 20
                    and wins["xterm"][2] >= cols * 6 and wins["xterm"][3] >= rows * 13 and wins["xcalc"][3] >= calc_h):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"xterm/xcalc did not appear on {session.display}: {wins}")
            time.sleep(0.1)
        time.sleep(0.3)                                    # let xterm print its filler text
        term, calc = wins["xterm"], wins["xcalc"]
        gap_x0 = term[0] + term[2] + 10 if term_left else calc[0] + calc[2] + 10
        gap_x1 = calc[0] - 10 if term_left else term[0] - 10
        empty = (gap_x0, 20, gap_x1 - gap_x0, cfg.height - 40)   # >= 40 px wide at width >= 640
        layout = Layout(term=term, calc=calc, buttons=buttons, empty=empty)

        n_steps = int(rng.integers(cfg.steps[0], cfg.steps[1] + 1))
        tasks = [str(t) for t in rng.choice(cfg.tasks, size=n_steps, replace=n_steps > len(cfg.tasks))]
        steps = [task_steps(t, rng, layout) for t in tasks]
        pause_after = int(rng.integers(1, n_steps)) if rng.random() < cfg.pause_fraction else None

        start_xy = _inside(rng, empty, margin=16)
        session.run("xdotool", "mousemove", str(start_xy[0]), str(start_xy[1]))
        offset = clock_offset()
        driver = Driver(session, rng, start_xy)
        checks: list[dict] = []
        cues: list[tuple[float, float, str]] = []
        segments: list[Capture] = []

        def cursor_check() -> None:
            """Rest the pointer on bare root for a moment; the frame then shows the cursor at the logged spot."""
            driver.move(*_inside(rng, empty, margin=16))
            time.sleep(0.5)
            checks.append({"t": time.perf_counter() - 0.25, "xy": list(driver.xy)})

        with EventLog() as log:
            segments.append(Capture(session, tmp / "seg0.mkv", cfg.width, cfg.height, cfg.fps, cfg.crf))
            time.sleep(0.3)
            cursor_check()
            pause_events: list[dict] = []
            for i, (line, play) in enumerate(steps):
                t_start = time.perf_counter()
                play(driver)
                cues.append((t_start, time.perf_counter(), line))
                time.sleep(float(rng.uniform(0.2, 0.5)))
                if pause_after is not None and i + 1 == pause_after:
                    segments[-1].stop()
                    pause_events.append({"time_stamp": time.perf_counter(), "action": "pause"})
                    driver.move(*_inside(rng, term))          # input while paused: logged, not in the video
                    time.sleep(0.3)
                    segments.append(Capture(session, tmp / f"seg{len(segments)}.mkv", cfg.width, cfg.height,
                                            cfg.fps, cfg.crf))
                    pause_events.append({"time_stamp": time.perf_counter(), "action": "resume"})
                    time.sleep(0.2)
                    cursor_check()
            cursor_check()
            time.sleep(0.2)
            segments[-1].stop()
            stop_time = time.perf_counter()
        events = log.events

        # Video clock from the packets' wall-clock stamps; a pause spans from the end of one segment's
        # last frame to the next segment's first frame.
        seg_times = [[t - offset for t in s.frame_times()] for s in segments]
        final, out = out, common.staging_dir(out)
        video = out / "video.mp4"
        counts = write_constant_rate([(s.path, t) for s, t in zip(segments, seg_times)], video, cfg.fps, cfg.crf)
        start = seg_times[0][0]
        for k, (p, r) in enumerate(zip(pause_events[::2], pause_events[1::2])):
            p["time_stamp"] = seg_times[k][0] + counts[k] / cfg.fps     # the end of the segment's last frame
            r["time_stamp"] = seg_times[k + 1][0]
        events = sorted(events + pause_events, key=lambda e: e["time_stamp"])

        def video_time(t: float) -> float:
            paused = sum(max(0.0, min(r["time_stamp"], t) - p["time_stamp"])
                         for p, r in zip(pause_events[::2], pause_events[1::2]))
            return t - start - paused

        with open(out / "events.jsonl", "w") as f:
            for e in events:
                f.write(json.dumps({**e, "time_stamp": round(e["time_stamp"], 6)}) + "\n")
        prompt = " Then ".join(line for _, _, line in cues)
        (out / "task.txt").write_text(prompt + "\n")
        common.write_srt(out / "narration.srt", [(video_time(a), video_time(b), line) for a, b, line in cues])
        metadata = {
            "system": "Linux", "screen_width": cfg.width, "screen_height": cfg.height, "scroll_direction": 1,
            "obs_record_state_timings": {"OBS_WEBSOCKET_OUTPUT_STARTED": [round(start, 6)],
                                         "OBS_WEBSOCKET_OUTPUT_STOPPING": [round(stop_time, 6)]},
            "description": prompt, "tags": ["desktop", *sorted(set(tasks))],
        }
        (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        for c in checks:
            c["frame"] = int(np.floor(video_time(c["t"]) * cfg.fps))
            c["offset_px"] = cursor_offset(video, c["frame"], c["xy"])
        script = {"display": session.display, "tasks": tasks, "layout": layout.__dict__,
                  "clock_offset": offset, "segment_frames": counts,
                  "captured_frames": [len(t) for t in seg_times],
                  "actions": [{**a, "video_time": round(video_time(a["t"]), 4)} for a in driver.actions],
                  "cursor_checks": checks}
        (out / "script.json").write_text(json.dumps(script, indent=1) + "\n")
        return common.finish(out, final)
    finally:
        session.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _job(args) -> tuple[int, str | None, str | None]:
    out_root, index, cfg = args
    try:
        return index, str(record_recording(out_root, index, cfg)), None
    except Exception as err:  # one failed recording (an app that did not start, ...) must not end the run
        return index, None, f"{type(err).__name__}: {err}"


def record_recordings(out_root: str | Path, cfg: DesktopConfig, progress: bool = True) -> list[Path]:
    """Record 0 .. num_recordings-1 under `out_root`, `cfg.workers` displays at once (spawned processes:
    each opens its own display for its pynput listeners)."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out_root), i, cfg) for i in range(cfg.num_recordings)]
    done: list[Path] = []
    failed: dict[int, str] = {}
    for index, path, error in common.run_jobs(_job, jobs, cfg.workers, "desktop recordings", progress, spawn=True):
        if error:
            failed[index] = error
            warnings.warn(f"{recording_id(index)}: recording failed, skipped: {error}", stacklevel=2)
        else:
            done.append(Path(path))
    if failed:
        warnings.warn(f"{len(failed)} of {len(jobs)} recordings failed: {sorted(failed)}", stacklevel=2)
    return sorted(done)
