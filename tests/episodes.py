"""Tiny real recordings for data tests: an H.264 mp4 written with PyAV + prepared-episode dicts.

Frame i of a video written here is a flat gray of level `frame_level(i)` with a small white square
whose position moves with i, so a test can tell which video frame was decoded (by mean level)
and that decoders agree pixel for pixel on non-flat content.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.videos import write_mp4


def frame_level(i: int) -> int:
    """Gray level of video frame i (distinct for i < 24, far apart enough to survive H.264)."""
    return 16 + (i % 24) * 9


def write_test_video(path: str | Path, num_frames: int, width: int = 64, height: int = 48, fps: int = 10) -> Path:
    """Frame i is gray level frame_level(i) with a white square moving right, so frames are told apart."""
    def frames():
        for i in range(num_frames):
            img = np.full((height, width, 3), frame_level(i), np.uint8)
            x = (i * 3) % (width - 8)
            img[4:12, x : x + 8] = 255
            yield img
    return write_mp4(path, frames(), fps, {"crf": "18", "g": "8"})  # short GOP: seeks are exercised


def make_episode(
    video: str | Path,
    num_frames: int,
    video_fps: float = 10.0,
    sample_fps: float = 5.0,
    episode_id: str = "ep",
    prompt: str = "Click the OK button",
    tags: list[str] | None = None,
    screen: tuple[int, int] = (64, 48),
) -> dict:
    """A prepared episode (data/README.md §2) with every sampled frame 'none' except what tests set."""
    step = video_fps / sample_fps
    return {
        "id": episode_id,
        "video": str(video),
        "video_fps": video_fps,
        "sample_fps": sample_fps,
        "num_frames": num_frames,
        "frame_index": [int(round(i * step)) for i in range(num_frames)],
        "screen": list(screen),
        "prompt": prompt,
        "tags": list(tags or ["synthetic"]),
        "action": ["none"] * num_frames,
        "key": [None] * num_frames,
        "modifier": [None] * num_frames,
        "click": [None] * num_frames,
        "transcript": [""] * num_frames,
    }


def write_jsonl(path: str | Path, episodes: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(ep) + "\n" for ep in episodes))
    return path
