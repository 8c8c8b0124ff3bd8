"""The per-frame heads: action / key / modifier classes and the click heatmap, all read from the trunk's frame
features (no head reads another head's output)."""
from __future__ import annotations

import math

import torch
from torch import nn


class ClickHead(nn.Module):
    """An actor query per frame (from its frame feature) over that frame's visual tokens: the scaled
    dot-product attention logits ARE the click heatmap."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.query = nn.Linear(d, d)
        self.key = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], tokens [B, T, N, D] -> [B, T, N]."""
        return torch.einsum("btd,btnd->btn", self.query(x), self.key(tokens)) / math.sqrt(tokens.shape[-1])


class FrameHeads(nn.Module):
    def __init__(self, d: int, num_actions: int, num_keys: int, num_modifiers: int) -> None:
        super().__init__()
        self.action = nn.Linear(d, num_actions)
        self.key = nn.Linear(d, num_keys)
        self.modifier = nn.Linear(d, num_modifiers)
        self.click = ClickHead(d)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frame features x [..., D] (+ the frames' tokens [..., N, D] for click) -> the `Outputs` logits."""
        return {
            "action_logits": self.action(x),
            "key_logits": self.key(x),
            "modifier_logits": self.modifier(x),
            "click_logits": self.click(x, tokens),
        }
