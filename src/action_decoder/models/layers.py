"""Small building blocks of the decoder parts (trunk, heads, transcript)."""
from __future__ import annotations

import math

import torch
from torch import nn


class FourierXY(nn.Module):
    """(x, y) in [0, 1] -> d_model: sin/cos at octave frequencies, then a Linear.

    The encoder's RoPE is relative, so its tokens do not say where on the screen they are; the
    pooling query and the click keys get the absolute position from here.
    """

    def __init__(self, d_model: int, num_frequencies: int) -> None:
        super().__init__()
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32), persistent=False
        )
        self.proj = nn.Linear(4 * num_frequencies, d_model)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        # Angles in fp32 whatever the weights' dtype: at 2^7 * pi a bf16 angle is off by a whole turn.
        # The features then follow the Linear's dtype (DeepSpeed bf16 casts weights, not this buffer).
        angles = xy.float().unsqueeze(-1) * self.frequencies.float()  # [..., 2, F]
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return self.proj(features.to(self.proj.weight.dtype))


class LearnedTokens(nn.Module):
    """`n` learned d-vectors, read through forward(): ZeRO-3 gathers a module's weights around its forward, so a
    bare nn.Parameter of the parent, used in the parent's forward, would be seen partitioned (size 0)."""

    def __init__(self, n: int, d: int, std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, n, d) * std)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.weight.expand(batch_size, -1, -1)


class LogitScale(nn.Module):
    """x * exp(s), s learned from 0 (a logit temperature, applied to a bias-free head's input). A module
    (ZeRO-3 gathers it around forward) holding shape [1] (DeepSpeed's bf16 broadcast of a 0-dim tensor fails on gloo)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.exp().to(x.dtype)
