"""Decode chosen frames of a video file: `read_frames(path, indices, reader) -> uint8 [N, H, W, 3]`.

Two decoders behind one name (cfg.data.reader): `decord` (default, pip wheel) and `torchcodec`
(optional: `pip install torchcodec==0.13.0` CPU build + FFmpeg shared libraries, e.g.
`apt-get install -y ffmpeg`). Both return identical frames (tests/test_video.py).

Each call opens the file, decodes and releases the decoder: a clip dataset touches thousands of
files per epoch, and a cached reader per file would hold decoder buffers for all of them
(RSS grows per file) and does not survive fork into DataLoader workers cleanly.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_READER = "decord"
# 0 = FFmpeg picks (about one thread per core). Measured faster than 1 thread on the 2-core dev machine,
# in one process and with 2 DataLoader workers (bench/bench_data.py); with many workers per node,
# FFmpeg's choice would start workers x cores decode threads: `decode_threads_per_worker` sizes them.
DEFAULT_THREADS = 0


def decode_threads_per_worker(num_workers: int, processes_on_node: int | None = None) -> int:
    """Decode threads per loader worker so that workers x threads <= this rank's share of the node's cores.

    processes_on_node: ranks sharing the node (default LOCAL_WORLD_SIZE, set by accelerate / torchrun).
    An 8-GPU node of 96 cores with 8 workers per rank: 96 / 8 ranks / 8 workers = 1 thread each (FFmpeg's
    default would start 8 x 8 x 96 threads).
    """
    procs = processes_on_node or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, procs) // max(1, num_workers))


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded (corrupt, truncated, missing, index past the end)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot decode video: {reason}")


def _read_decord(path: str, indices: list[int], threads: int) -> np.ndarray:
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    except Exception as err:  # decord raises its own DECORDError / RuntimeError kinds
        raise VideoDecodeError(path, f"decord cannot open it ({_first_line(err)})") from err
    try:
        n = len(vr)
        _check_indices(path, indices, n)
        frames = vr.get_batch(indices).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(path, f"decord failed on frames {_span(indices)} ({_first_line(err)})") from err
    finally:
        del vr  # releases the demuxer/decoder now, not at some later garbage collection
    return frames


def _read_torchcodec(path: str, indices: list[int], threads: int) -> np.ndarray:
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as err:  # not installed, or its FFmpeg libraries are missing
        raise ImportError(
            "reader=torchcodec needs `pip install torchcodec==0.13.0` (CPU build) and FFmpeg shared "
            f"libraries (`apt-get install -y ffmpeg`): {_first_line(err)}"
        ) from err
    try:
        # exact seek mode scans the file once so frame i is the i-th frame, as with decord.
        dec = VideoDecoder(path, dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=threads)
    except Exception as err:
        raise VideoDecodeError(path, f"torchcodec cannot open it ({_first_line(err)})") from err
    try:
        n = dec.metadata.num_frames if dec.metadata.num_frames is not None else len(dec)
        _check_indices(path, indices, n)
        frames = dec.get_frames_at(indices).data.numpy()
    except VideoDecodeError:
        raise
    except Exception as err:
        raise VideoDecodeError(path, f"torchcodec failed on frames {_span(indices)} ({_first_line(err)})") from err
    finally:
        del dec
    return frames


def _read_pyav(path: str, indices: list[int], threads: int) -> np.ndarray:
    """Frame i = the i-th frame in presentation order (sorted packet pts, as probe_video(frame_times=True) counts
    them), decoded in order from the start (no seek: mkv seeks land on the wrong frame here too). For variable-rate
    or HEVC files (ocap's mkv) where decord's seeks return wrong frames (data/README.md §4): one call per file."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO" if threads != 1 else "SLICE"
            pts = sorted(p.pts for p in container.demux(stream) if p.size > 0 and p.pts is not None)
            _check_indices(path, indices, len(pts))
            wanted = {pts[i]: i for i in sorted(set(indices))}
            last = max(wanted)
            container.seek(0, stream=stream)
            got: dict[int, np.ndarray] = {}
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    got[wanted[frame.pts]] = frame.to_ndarray(format="rgb24")
                if frame.pts is not None and frame.pts >= last:
                    break
    except VideoDecodeError:
        raise
    except Exception as err:  # av.error.FFmpegError kinds, a file with no video stream
        raise VideoDecodeError(path, f"PyAV failed on frames {_span(indices)} ({_first_line(err)})") from err
    missing = [i for i in indices if i not in got]
    if missing:
        raise VideoDecodeError(path, f"PyAV decoded no frame {missing[0]} (of {len(pts)})")
    return np.stack([got[i] for i in indices])


READERS: dict[str, Callable[[str, list[int], int], np.ndarray]] = {
    "decord": _read_decord,
    "torchcodec": _read_torchcodec,
    "pyav": _read_pyav,
}


def read_frames(
    path: str | os.PathLike, indices: Sequence[int], reader: str = DEFAULT_READER, threads: int = DEFAULT_THREADS
) -> np.ndarray:
    """Frames `indices` (0-based video frame numbers, any order, repeats allowed) as uint8 RGB [N, H, W, 3].

    `threads`: FFmpeg decode threads per reader; 0 = FFmpeg's automatic choice (decord's default).

    Raises VideoDecodeError (with the path) when the file is missing, corrupt, truncated, or an index
    is past its last frame; ImportError when the chosen reader is not installed.
    """
    if reader not in READERS:
        raise ValueError(f"unknown video reader {reader!r}; choose one of {sorted(READERS)}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError(f"{path}: read_frames needs at least one frame index")
    frames = READERS[reader](path, idx, int(threads))
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != len(idx) or frames.shape[3] != 3:
        raise VideoDecodeError(path, f"{reader} returned {frames.dtype} {frames.shape}, expected uint8 [{len(idx)}, H, W, 3]")
    return np.ascontiguousarray(frames)


def reader_available(reader: str) -> tuple[bool, str]:
    """(usable, why not) for a reader name, without decoding anything."""
    try:
        if reader == "decord":
            import decord  # noqa: F401
        elif reader == "torchcodec":
            from torchcodec.decoders import VideoDecoder  # noqa: F401
        else:
            return False, f"unknown reader {reader!r}"
    except Exception as err:
        return False, f"{reader} not importable: {_first_line(err)}"
    return True, ""


def _check_indices(path: str, indices: list[int], num_frames: int) -> None:
    bad = [i for i in indices if i < 0 or i >= num_frames]
    if bad:
        raise VideoDecodeError(path, f"frame index {bad[0]} outside the video's {num_frames} frames (truncated file?)")


def _span(indices: list[int]) -> str:
    return f"{min(indices)}..{max(indices)}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
