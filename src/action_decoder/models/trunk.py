"""The frame trunk: a clip's visual tokens and the prompt -> one feature vector per frame, read by every head.

  1. Each frame's tokens (with their xy embedding) pooled to one frame token: a learned query attending over
     them (`AttentionPool`), or their mean (`MeanPool`).
  2. + a learned temporal position embedding + the motion summary (`MotionSummary`): each token's change to
     the previous and next frame, projected and max-pooled over the frame. Without it the frame token is
     dominated by the static screen and the action head stays at the majority class.
  3. `num_layers` pre-norm layers of [self-attention over the clip's frames (causal with `temporal_causal`),
     cross-attention to the prompt (padding masked; a learned "no prompt" slot is always present so an empty
     prompt never gives an all-masked softmax), FFN], then a LayerNorm.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import DecoderConfig
from .layers import LearnedTokens


class AttentionPool(nn.Module):
    """A learned query per frame attending over that frame's tokens."""

    def __init__(self, d: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.query = LearnedTokens(1, d)
        self.attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, N, D] -> [B, T, D]."""
        B, T, N, D = tokens.shape
        flat = tokens.reshape(B * T, N, D)
        return self.attn(self.query(B * T), flat, flat, need_weights=False)[0].reshape(B, T, D)


class MeanPool(nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=2)


class MotionSummary(nn.Module):
    """tokens [B, T, N, D] -> [B, T, D]: max over the frame's tokens of their projected temporal change.

    A cursor move or a typed character changes a handful of the frame's tokens; pooled together with the
    static rest it is lost, and the action labels are about exactly those changes. The next frame is read
    even when `temporal_causal`: label t describes the interval [t, t+1), whose effect first shows in frame
    t+1, so frame t's heads need that one frame of look-ahead (streaming emits frame t when t+1 arrives).
    The clip's first frame has no previous and its last no next frame: those changes are zero (the streaming
    path feeds the same zeros at the start and at the end of its source).
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.prev = nn.Linear(d, d)
        self.next = nn.Linear(d, d)
        self.out = nn.Linear(2 * d, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        step = tokens[:, 1:] - tokens[:, :-1]  # change from frame t to t+1, per token
        zero = torch.zeros_like(tokens[:, :1])
        prev = self.prev(torch.cat([zero, step], dim=1)).amax(dim=2)  # v[t] - v[t-1]
        nxt = self.next(torch.cat([step, zero], dim=1)).amax(dim=2)  # v[t+1] - v[t]
        return self.out(torch.cat([prev, nxt], dim=-1))


class NoMotion(nn.Module):
    """Sparse tokens (`visible_tokens` set): frames keep different patches, there is nothing to subtract."""

    def forward(self, tokens: torch.Tensor) -> float:
        return 0.0


class FrameTrunk(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.causal = config.temporal_causal
        self.max_frames = config.max_frames
        self.pool = AttentionPool(d, config.num_heads, config.dropout) if config.pool == "attention" else MeanPool()
        self.motion = MotionSummary(d) if config.visible_tokens is None else NoMotion()
        self.time_embed = nn.Embedding(config.max_frames, d)
        self.null_prompt = LearnedTokens(1, d)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                d, config.num_heads, config.ffn_dim, config.dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d)

    def check_frames(self, T: int) -> None:
        if T > self.max_frames:
            raise ValueError(f"clip has {T} frames but model.max_frames={self.max_frames}; raise max_frames")

    def motion_of_frame(self, tokens: torch.Tensor, i: int) -> torch.Tensor | float:
        """The motion summary [B, 1, D] of frame i of tokens [B, T, N, D] (0.0 without motion), from frames
        i-1, i, i+1 only: what a stream has once frame i+1 has arrived (or the source has ended)."""
        lo = max(0, i - 1)
        motion = self.motion(tokens[:, lo:i + 2])
        return motion[:, i - lo:i - lo + 1] if torch.is_tensor(motion) else motion

    def forward(self, tokens: torch.Tensor, prompt: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, N, D] (with their xy embedding), prompt [B, L, D] -> frame features [B, T, D]."""
        B, T = tokens.shape[:2]
        frame = self.pool(tokens)
        x = frame + self.time_embed(torch.arange(T, device=frame.device)) + self.motion(tokens)

        memory = torch.cat([self.null_prompt(B), prompt], dim=1)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=memory.device), prompt_mask], dim=1)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=x.device, dtype=x.dtype) if self.causal else None
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=causal, tgt_is_causal=causal is not None, memory_key_padding_mask=~keep)
        return self.norm(x)
