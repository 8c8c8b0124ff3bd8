"""Frames -> encoder input: the one place where decoded video frames are resized and normalized.

Used by the clip dataset and by anything that feeds frames to the vision encoder at inference,
so training and inference see the same pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    image_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] -> float32 [N, 3, S, S]: bilinear antialiased resize, then (x/255 - mean) / std.

    The resize runs on uint8 (torch's channels-last uint8 kernel, ~10x faster than float on CPU;
    at most 1 gray level of rounding, the same quantisation PIL-based image processors apply).
    `image_size` is an int (square) or (height, width).
    """
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"preprocess_frames expects uint8 [N, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    size = (int(image_size), int(image_size)) if isinstance(image_size, (int, np.integer)) else tuple(map(int, image_size))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean/std need 3 values (RGB), got {list(mean)} / {list(std)}")
    x = x.permute(0, 3, 1, 2)  # NCHW view with channels-last strides: what the fast uint8 kernel wants
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    # (x/255 - mean)/std folded into one multiply-add per pixel.
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))
    shift = -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
    out = torch.empty((x.shape[0], 3, *size), dtype=torch.float32)
    out.copy_(x)
    out.mul_(scale.view(1, 3, 1, 1)).add_(shift.view(1, 3, 1, 1))
    return out
