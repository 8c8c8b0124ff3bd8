"""Tiny real videos for tests: H.264 mp4 written with PyAV, decodable by decord and PyAV."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import av
import numpy as np


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: int, options: dict[str, str] | None = None) -> Path:
    """Encode RGB uint8 frames [H, W, 3] (all the same size) to an H.264 mp4 at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for img in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = img.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast", **(options or {})}
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode() if stream is not None else ():
            container.mux(packet)
    return path


def write_blank_video(path: str | Path, n_frames: int, fps: int = 10, size: tuple[int, int] = (64, 48),
                      color: tuple[int, int, int] = (40, 80, 160)) -> Path:
    """Write `n_frames` frames of one solid colour at `fps` to `path` (size = (width, height))."""
    width, height = size
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = color
    return write_mp4(path, (frame for _ in range(n_frames)), fps)
