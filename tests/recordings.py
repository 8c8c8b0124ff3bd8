"""Hand-built raw recordings (DuckTrack layout, data/README.md §1) for tests."""
from __future__ import annotations

import json
from pathlib import Path

from tests.videos import write_blank_video

START = 1000.0  # OBS_WEBSOCKET_OUTPUT_STARTED in the event clock of test recordings


def write_recording(folder: str | Path, events: list[dict], *, n_video_frames: int | None = 20, fps: int = 10,
                    screen: tuple[int, int] = (1000, 500), start: float = START, scroll_direction: int = 1,
                    task: str | None = None, srt: str | None = None, extra_metadata: dict | None = None,
                    raw_lines: list[str] | None = None) -> Path:
    """Write events.jsonl (events in the event clock), metadata.json and optionally video.mp4/task.txt/narration.srt.

    `raw_lines` are written verbatim after the events (to build malformed logs).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e) for e in events] + list(raw_lines or [])
    (folder / "events.jsonl").write_text("".join(line + "\n" for line in lines))
    metadata = {"screen_width": screen[0], "screen_height": screen[1], "scroll_direction": scroll_direction,
                "obs_record_state_timings": {"OBS_WEBSOCKET_OUTPUT_STARTED": [start]}, **(extra_metadata or {})}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    if n_video_frames is not None:
        write_blank_video(folder / "video.mp4", n_video_frames, fps=fps)
    if task is not None:
        (folder / "task.txt").write_text(task)
    if srt is not None:
        (folder / "narration.srt").write_text(srt)
    return folder


# Event builders; `t` is video time in seconds (START is added).
def move(t: float, x: float, y: float) -> dict:
    return {"time_stamp": START + t, "action": "move", "x": x, "y": y}


def click(t: float, x: float, y: float, pressed: bool, button: str = "left") -> dict:
    return {"time_stamp": START + t, "action": "click", "x": x, "y": y, "button": button, "pressed": pressed}


def tap(t: float, x: float, y: float, button: str = "left", hold: float = 0.05) -> list[dict]:
    """Press and release at the same spot."""
    return [click(t, x, y, True, button), click(t + hold, x, y, False, button)]


def scroll(t: float, dy: float, dx: float = 0, x: float = 10, y: float = 10) -> dict:
    return {"time_stamp": START + t, "action": "scroll", "x": x, "y": y, "dx": dx, "dy": dy}


def press(t: float, name: str | None) -> dict:
    return {"time_stamp": START + t, "action": "press", "name": name}


def release(t: float, name: str | None) -> dict:
    return {"time_stamp": START + t, "action": "release", "name": name}


def key(t: float, name: str, hold: float = 0.03) -> list[dict]:
    return [press(t, name), release(t + hold, name)]


def mark(t: float, action: str) -> dict:
    """pause / resume."""
    return {"time_stamp": START + t, "action": action}
