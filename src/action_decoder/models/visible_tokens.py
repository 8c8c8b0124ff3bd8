"""The visible-token policy: which patches of each frame the encoder sees (codec-style, `model.visible_tokens`)."""
from __future__ import annotations

import torch


@torch.no_grad()
def select_visible_tokens(
    pixels: torch.Tensor, patch_size: int, k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k most-changing patches of every frame, like a video codec spends bits on residuals.

    pixels: [B, T, C, H, W] (our batch layout, frames-major). Patches are the encoder's
    (H//P x W//P grid; a remainder strip at the right/bottom is ignored, as the conv does).

    Energy of a patch (summed over channels and its P*P pixels):
    - frame t > 0: temporal residual, sum (x_t - x_{t-1})^2 against the same patch of the previous frame;
    - frame 0 (no previous frame, an "I-frame"): its detail, sum (x - mean)^2 with the patch's own
      per-channel mean, so text, icons and edges win over flat background.
    The k highest-energy patches of each frame are kept; ties go to the earlier patch in raster
    order (stable sort), so the result is deterministic.

    Returns (encoder conventions):
      visible_indices [B, T*k] int64: indices into the frame-major token array of length T*Hp*Wp
        (t*Hp*Wp + h*Wp + w), frame by frame, ascending within each frame;
      patch_positions [B, T*k, 3] int64: (t, h, w) of each kept token, t = frame index, the same
        angles the encoder's own grid would give, so passing them or not gives the same output.
    k=None keeps every patch: dense indices 0..N-1 and their positions.
    """
    if pixels.dim() != 5:
        raise ValueError(f"select_visible_tokens expects pixels [B, T, C, H, W]; got {tuple(pixels.shape)}.")
    B, T, C, H, W = pixels.shape
    P = int(patch_size)
    Hp, Wp = H // P, W // P
    n = Hp * Wp
    if n == 0:
        raise ValueError(f"frames of {H}x{W} are smaller than one {P}x{P} patch.")
    device = pixels.device

    if k is None:
        idx = torch.arange(T * n, device=device).expand(B, T * n).clone()
    else:
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"k={k} visible patches per frame; must be in [1, {n}] (Hp*Wp = {Hp}*{Wp}).")
        x = pixels[..., : Hp * P, : Wp * P].float()
        patches = x.reshape(B, T, C, Hp, P, Wp, P).permute(0, 1, 3, 5, 2, 4, 6).reshape(B, T, n, C, P * P)
        energy = torch.empty(B, T, n, device=device)
        first = patches[:, 0]
        energy[:, 0] = (first - first.mean(dim=-1, keepdim=True)).square().sum(dim=(-1, -2))
        if T > 1:
            energy[:, 1:] = (patches[:, 1:] - patches[:, :-1]).square().sum(dim=(-1, -2))
        order = torch.sort(energy, dim=-1, descending=True, stable=True).indices[..., :k]  # [B, T, k]
        order = order.sort(dim=-1).values
        frame_offset = (torch.arange(T, device=device) * n).view(1, T, 1)
        idx = (order + frame_offset).reshape(B, T * k)

    positions = torch.stack((idx // n, (idx // Wp) % Hp, idx % Wp), dim=-1)
    return idx, positions
