"""Tiny real videos for tests: H.264 mp4 written with PyAV, decodable by decord and PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_blank_video(path: str | Path, n_frames: int, fps: int = 10, size: tuple[int, int] = (64, 48),
                      color: tuple[int, int, int] = (40, 80, 160)) -> Path:
    """Write `n_frames` frames of one solid colour at `fps` to `path` (size = (width, height))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = color
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for _ in range(n_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
