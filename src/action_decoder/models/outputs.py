"""What `encode` hands to `decode`, and what `decode` returns (docs/design.md §4).

Plain dataclasses of tensors so that both architectures (original, parallel) share them and a
caller can cache `Features` (e.g. encode once, decode with several heads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Features:
    """Encoder side of one batch of clips, already in decoder width Dd."""

    visual_tokens: torch.Tensor  # [B, T, N, Dd] projected encoder tokens, N visible tokens per frame
    token_xy: torch.Tensor  # [B, T, N, 2] normalized (x, y) centre of each visible token's patch
    token_cell: tuple[float, float]  # (width, height) of one patch in normalized units (1/Wp, 1/Hp)
    prompt_features: torch.Tensor  # [B, L, Dd] projected Qwen3 last hidden states of the prompt
    prompt_mask: torch.Tensor  # [B, L] bool, True on real prompt tokens
    visible_indices: torch.Tensor  # [B, T, N] patch index within its frame (h * Wp + w)
    # parallel only (None for original): the LM's teacher-forced pass over
    # [prompt, visual tokens of frame 0, transcript 0, eof, visual tokens of frame 1, ...].
    lm_frame_hidden: torch.Tensor | None = None  # [B, T, v, Dt] LM hidden states at each frame's v visual tokens
    lm_text_hidden: torch.Tensor | None = None  # [B, T, S+1, Dt] hidden states that predict frame t's tokens + eof
    transcript_targets: torch.Tensor | None = None  # [B, T, S+1] the tokens they predict; -100 past the eof


@dataclass
class Outputs:
    """Per-frame predictions of the decoder."""

    action_logits: torch.Tensor  # [B, T, num_actions]
    key_logits: torch.Tensor  # [B, T, num_keys]
    modifier_logits: torch.Tensor  # [B, T, num_modifiers]
    click_logits: torch.Tensor  # [B, T, N] actor-query attention logits over the frame's visual tokens
    token_xy: torch.Tensor  # [B, T, N, 2] where each click logit sits (from Features)
    token_cell: tuple[float, float]  # patch size in normalized units (from Features)
    frame_features: torch.Tensor  # [B, T, Dd] frame tokens after the temporal/prompt layers
    # parallel only (None for original): the LM hidden states at the positions that predict each frame's
    # transcript tokens and its end-of-frame marker (row j predicts token j; row len(text) the eof), already
    # temperature-scaled, and the LM head that turns them into logits. No logits are made here: at Qwen's
    # 151,936 words they would be the largest tensor of the step; the loss makes them at target rows only,
    # a chunk at a time (losses.transcript_loss).
    transcript_hidden: torch.Tensor | None = None  # [B, T, S+1, Dt]
    transcript_targets: torch.Tensor | None = None  # [B, T, S+1] target ids, -100 on rows past the eof
    transcript_head: Callable[[torch.Tensor], torch.Tensor] | None = None  # [..., Dt] -> logits [..., vocab]

    @property
    def click_xy(self) -> torch.Tensor:
        """[B, T, 2] predicted click position (see `decode_click_xy`); computed on access, no grad."""
        return decode_click_xy(self.click_logits, self.token_xy, self.token_cell)

    def transcript_logits_at(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits [M, vocab] at the M slots where rows [B, T, S+1] is True (row-major order)."""
        return self.transcript_head(self.transcript_hidden[rows])


@torch.no_grad()
def decode_click_xy(
    click_logits: torch.Tensor, token_xy: torch.Tensor, token_cell: tuple[float, float]
) -> torch.Tensor:
    """Click heatmap over tokens -> normalized (x, y), finer than the token grid.

    1. Take the argmax token.
    2. Refine with a local soft-argmax: softmax of the logits restricted to the visible tokens
       whose centre lies within one patch of the argmax centre on each axis (its 3x3
       neighbourhood; fewer where tokens are not visible or at the border), and return the
       probability-weighted mean of their centres.
    A sharp peak returns the peak token's centre; two equal neighbouring logits return the point
    between them. Restricting to the neighbourhood keeps a second, distant mode from pulling
    the estimate into empty space between the two (a global soft-argmax would).

    click_logits [..., N], token_xy [..., N, 2], token_cell (cell_w, cell_h) -> [..., 2].
    """
    logits = click_logits.float()
    xy = token_xy.float()
    best = logits.argmax(dim=-1, keepdim=True)  # [..., 1]
    centre = torch.gather(xy, -2, best.unsqueeze(-1).expand(*best.shape, 2))  # [..., 1, 2]
    cell = torch.tensor(token_cell, dtype=xy.dtype, device=xy.device)
    # 1.01: tolerate float error in token centres exactly one cell away.
    near = ((xy - centre).abs() <= cell * 1.01).all(dim=-1)  # [..., N]
    weights = torch.softmax(logits.masked_fill(~near, float("-inf")), dim=-1)
    return (weights.unsqueeze(-1) * xy).sum(dim=-2)
