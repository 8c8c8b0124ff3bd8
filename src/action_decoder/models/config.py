"""`cfg.model` sizes of the parts every decoder has (conf/model/original.yaml documents each knob)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

POOLS = ("attention", "mean")
CLIP_ENCODINGS = ("video", "frames")


@dataclass(frozen=True)
class DecoderConfig:
    d_model: int = 256
    num_layers: int = 2
    num_heads: int = 8
    ffn_dim: int = 1024
    dropout: float = 0.1
    visible_tokens: int | None = None
    max_frames: int = 64
    pool: str = "attention"
    clip_encoding: str = "video"
    temporal_causal: bool = False
    xy_frequencies: int = 8

    @classmethod
    def from_cfg(cls, model_cfg: Mapping[str, Any]) -> "DecoderConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: model_cfg[k] for k in names if k in model_cfg})

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.num_heads <= 0 or self.d_model % self.num_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.num_heads={self.num_heads}: "
                "change one so that d_model / num_heads is a whole head size"
            )
        if self.num_layers < 0 or self.ffn_dim <= 0 or self.max_frames <= 0 or self.xy_frequencies <= 0:
            raise ValueError("model.num_layers must be >= 0 and model.ffn_dim, max_frames, xy_frequencies >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must lie in [0, 1)")
        if self.visible_tokens is not None and int(self.visible_tokens) < 1:
            raise ValueError(f"model.visible_tokens={self.visible_tokens}: use null (all) or a count >= 1")
        if self.pool not in POOLS:
            raise ValueError(f"model.pool={self.pool!r}; expected one of {POOLS}")
        if self.clip_encoding not in CLIP_ENCODINGS:
            raise ValueError(f"model.clip_encoding={self.clip_encoding!r}; expected one of {CLIP_ENCODINGS}")
