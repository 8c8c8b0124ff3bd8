"""Video readers (data/video.py) and frame preprocessing (data/frames.py) on real tiny H.264 files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from action_decoder.data.frames import preprocess_frames
from action_decoder.data.video import VideoDecodeError, read_frames, reader_available
from tests.episodes import frame_level, write_test_video

TORCHCODEC_OK, TORCHCODEC_WHY = reader_available("torchcodec")
needs_torchcodec = pytest.mark.skipif(
    not TORCHCODEC_OK,
    reason=f"optional reader absent ({TORCHCODEC_WHY}); install with `pip install torchcodec==0.13.0` "
           "and `apt-get install -y ffmpeg`",
)
READERS = ["decord", pytest.param("torchcodec", marks=needs_torchcodec)]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("v") / "video.mp4", num_frames=30, width=64, height=48)


@pytest.fixture(scope="module")
def truncated(tmp_path_factory, video):
    path = tmp_path_factory.mktemp("t") / "truncated.mp4"
    data = video.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut mid-file, as an interrupted copy leaves it
    return path


@pytest.mark.parametrize("reader", READERS)
def test_reads_requested_frames_in_requested_order(video, reader):
    indices = [0, 7, 29, 3, 3]  # unsorted, repeated: what a clip at a low sampling rate can ask for
    frames = read_frames(video, indices, reader)
    assert frames.dtype == np.uint8 and frames.shape == (5, 48, 64, 3)
    # Below the moving white square every pixel is the frame's flat gray level.
    levels = frames[:, 16:, :, :].reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [frame_level(i) for i in indices], atol=2.5)


@needs_torchcodec
def test_decord_and_torchcodec_return_identical_frames(video):
    indices = list(range(0, 30, 3)) + [29, 1]
    a = read_frames(video, indices, "decord")
    b = read_frames(video, indices, "torchcodec")
    assert a.shape == b.shape
    assert np.array_equal(a, b)


@pytest.mark.parametrize("reader", READERS)
def test_truncated_file_raises_decode_error_naming_path(truncated, reader):
    with pytest.raises(VideoDecodeError) as info:
        read_frames(truncated, [0, 1, 2], reader)
    assert info.value.path == str(truncated)
    assert str(truncated) in str(info.value)


@pytest.mark.parametrize("reader", READERS)
def test_garbage_missing_and_out_of_range(tmp_path, video, reader):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 64)
    with pytest.raises(VideoDecodeError, match="garbage.mp4"):
        read_frames(garbage, [0], reader)
    with pytest.raises(VideoDecodeError, match="file not found"):
        read_frames(tmp_path / "missing.mp4", [0], reader)
    with pytest.raises(VideoDecodeError, match="frame index 30 outside the video's 30 frames"):
        read_frames(video, [0, 30], reader)


def test_unknown_reader_is_rejected(video):
    with pytest.raises(ValueError, match="unknown video reader 'opencv'"):
        read_frames(video, [0], "opencv")


def test_preprocess_shapes_and_normalisation():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 51, 0  # flat colours survive any resize exactly
    out = preprocess_frames(frames, 32, mean, std)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 32, 32) and out.is_contiguous()
    expected = [(255 / 255 - 0.5) / 0.2, (51 / 255 - 0.4) / 0.25, (0 - 0.3) / 0.5]
    for c in range(3):
        torch.testing.assert_close(out[:, c], torch.full((3, 32, 32), expected[c]), rtol=0, atol=1e-5)
    assert preprocess_frames(frames, (16, 24), mean, std).shape == (3, 3, 16, 24)


def test_preprocess_resize_matches_float_antialiased_bilinear_within_one_level():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 90, 120, 3), dtype=np.uint8)
    out = preprocess_frames(frames, 40, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])  # = resized x / 255
    ref = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, size=(40, 40),
                        mode="bilinear", antialias=True, align_corners=False)
    assert (out - ref).abs().max() <= 1.0 / 255 + 1e-6  # uint8 kernel rounds to the nearest level
    # Not a copy of the input grid: downscaling averages neighbours, so variance drops.
    assert out.std() < torch.from_numpy(frames).float().div(255).std()


def test_preprocess_rejects_float_or_channels_first():
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        preprocess_frames(np.zeros((1, 8, 8, 3), np.float32), 8, [0] * 3, [1] * 3)
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        preprocess_frames(np.zeros((1, 3, 8, 8), np.uint8), 8, [0] * 3, [1] * 3)


def test_decode_threads_per_worker_keep_workers_times_threads_within_the_rank_cores(monkeypatch):
    from action_decoder.data.video import decode_threads_per_worker

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(96)))
    assert decode_threads_per_worker(8, processes_on_node=8) == 1  # 8 ranks x 8 workers x 1 thread on 96 cores
    assert decode_threads_per_worker(2, processes_on_node=8) == 6
    assert decode_threads_per_worker(0, processes_on_node=1) == 96  # decoding in the main process
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # what accelerate / torchrun set for each rank
    assert decode_threads_per_worker(4) == 6
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert decode_threads_per_worker(8) == 1  # never 0 (= FFmpeg's one per core)
