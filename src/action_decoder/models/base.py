"""What both decoders share (docs/design.md §4): the towers, `encode`, the frame trunk, the click head, and
the "what trains" API (trainable_state_dict / load_trainable_state_dict / parameter_groups).

`original` (models/original.py) and `parallel` (models/parallel.py) subclass `TaskAwareDecoderBase`;
parameter names follow the March-10 ones (visual_proj, prompt_proj, token_pos, pool_*, time_embed,
null_prompt, layers, norm, ...); older checkpoint formats are upgraded on load (training/checkpoint.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from .lora import is_lora_parameter
from .onevision_encoder import OneVisionEncoder, select_visible_tokens
from .outputs import Features, Outputs
from .text_encoder import prompt_features

TOWERS = ("vision", "text")  # attribute names of the pretrained towers (frozen apart from LoRA)
POOLS = ("attention", "mean")
CLIP_ENCODINGS = ("video", "frames")


@dataclass
class DecoderConfig:
    """`cfg.model` sizes of the decoders (see conf/model/original.yaml for each knob)."""

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


class TaskAwareDecoderBase(nn.Module):
    """Towers + encoder-side projections; subclasses add the decoder and heads and define `decode`."""

    def __init__(self, vision: OneVisionEncoder, text: nn.Module, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = vision  # OneVisionEncoder (+ LoRA)
        self.text = text  # Qwen3ForCausalLM (+ LoRA); the LM head is kept for the transcript decoder
        self.patch_size = int(vision.config.patch_size)
        dv, dt, d = int(vision.config.hidden_size), int(text.config.hidden_size), config.d_model
        self.visual_proj = nn.Sequential(nn.LayerNorm(dv), nn.Linear(dv, d))
        self.prompt_proj = nn.Sequential(nn.LayerNorm(dt), nn.Linear(dt, d))
        self.token_pos = FourierXY(d, config.xy_frequencies)

    def _build_frame_trunk(self) -> None:
        """Frame pooling + temporal layers with prompt cross-attention (decode steps 1-3 of the original)."""
        config, d = self.config, self.config.d_model
        attention_pool = config.pool == "attention"
        self.pool_query = LearnedTokens(1, d) if attention_pool else None
        self.pool_attn = (
            nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)
            if attention_pool
            else None
        )
        self._build_motion()
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

    def _build_motion(self) -> None:
        """Motion summary (dense tokens only: sparse frames keep different patches, nothing to subtract).

        A cursor move or a typed character changes a handful of the frame's tokens; pooled together with
        the static rest it is lost, and the action labels are about exactly those changes. So each token's
        change to the previous and to the next frame is projected and max-pooled over the frame. The next
        frame is read even when `temporal_causal`: label t describes the interval [t, t+1), whose effect
        first shows in frame t+1, so frame t's heads need that one frame of look-ahead (streaming emits
        frame t when frame t+1 arrives).
        """
        d, dense = self.config.d_model, self.config.visible_tokens is None
        self.motion_prev = nn.Linear(d, d) if dense else None
        self.motion_next = nn.Linear(d, d) if dense else None
        self.motion_out = nn.Linear(2 * d, d) if dense else None

    def motion_summary(self, tokens: torch.Tensor) -> torch.Tensor | float:
        """tokens [B, T, N, D] -> [B, T, D]: max over the frame's tokens of their projected temporal change.

        The clip's first frame has no previous and its last no next frame: those changes are zero (the
        streaming path feeds the same zeros at the start and at the end of its source)."""
        if self.motion_prev is None:
            return 0.0
        step = tokens[:, 1:] - tokens[:, :-1]  # change from frame t to t+1, per token
        zero = torch.zeros_like(tokens[:, :1])
        prev = self.motion_prev(torch.cat([zero, step], dim=1)).amax(dim=2)  # v[t] - v[t-1]
        nxt = self.motion_next(torch.cat([step, zero], dim=1)).amax(dim=2)  # v[t+1] - v[t]
        return self.motion_out(torch.cat([prev, nxt], dim=-1))

    def _build_click_head(self) -> None:
        d = self.config.d_model
        self.actor_query = nn.Linear(d, d)
        self.click_key = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))

    # -- encode ------------------------------------------------------------------------------

    def encode(self, batch: Mapping[str, torch.Tensor]) -> Features:
        visual, token_xy, token_cell, visible = self.encode_visual(batch["pixels"])
        prompt_mask = batch["prompt_mask"].bool()
        text_hidden = prompt_features(self.text, batch["prompt_ids"], prompt_mask)
        prompt = self.prompt_proj(text_hidden.to(self.prompt_proj[1].weight.dtype))
        return Features(
            visual_tokens=visual,
            token_xy=token_xy,
            token_cell=token_cell,
            prompt_features=prompt,
            prompt_mask=prompt_mask,
            visible_indices=visible,
        )

    def encode_visual(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float], torch.Tensor]:
        """pixels [B, T, 3, H, W] -> (visual tokens [B, T, N, Dd], token_xy [B, T, N, 2], token_cell,
        visible_indices [B, T, N])."""
        if pixels.dim() != 5:
            raise ValueError(f"batch['pixels'] must be [B, T, 3, H, W]; got {tuple(pixels.shape)}")
        B, T, _, H, W = pixels.shape
        P = self.patch_size
        if H % P or W % P:
            raise ValueError(f"frames are {H}x{W}, not a multiple of the encoder patch size {P}: "
                             "set backbone.vision.image_size to a multiple of patch_size")
        Hp, Wp = H // P, W // P
        n = Hp * Wp
        k = self.config.visible_tokens
        k = None if k is None or int(k) == n else int(k)  # select_visible_tokens rejects k > n itself

        idx, pos = select_visible_tokens(pixels, P, k)  # [B, T*k] frame-major indices, [B, T*k, 3] (t, h, w)
        per_frame = idx.shape[1] // T
        enc_dtype = self.vision.embeddings.patch_embedding.weight.dtype
        if self.config.clip_encoding == "video":
            hidden, _ = self.vision(pixels.transpose(1, 2).to(enc_dtype), visible_indices=idx, patch_positions=pos)
        else:  # each frame alone: an image batch of B*T frames, t = 0
            frame_pos = pos.reshape(B * T, per_frame, 3).clone()
            frame_pos[..., 0] = 0
            hidden, _ = self.vision(
                pixels.flatten(0, 1).to(enc_dtype),
                visible_indices=(idx % n).reshape(B * T, per_frame),
                patch_positions=frame_pos,
            )
            hidden = hidden.reshape(B, T * per_frame, -1)

        # Per-frame tokens from the positions' t column (stable sort keeps raster order in a frame).
        order = torch.sort(pos[..., 0], dim=1, stable=True).indices
        pos = torch.gather(pos, 1, order.unsqueeze(-1).expand(-1, -1, 3))
        hidden = torch.gather(hidden, 1, order.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        t_col = pos[..., 0].reshape(B, T, per_frame)
        if not torch.equal(t_col, torch.arange(T, device=t_col.device).view(1, T, 1).expand_as(t_col)):
            raise RuntimeError("visible tokens are not split evenly over frames; expected k tokens per frame")
        pos = pos.reshape(B, T, per_frame, 3)
        hw = pos[..., 1:].to(torch.float32)
        token_xy = torch.stack(((hw[..., 1] + 0.5) / Wp, (hw[..., 0] + 0.5) / Hp), dim=-1)

        proj_dtype = self.visual_proj[1].weight.dtype
        visual = self.visual_proj(hidden.reshape(B, T, per_frame, -1).to(proj_dtype))
        return visual, token_xy, (1.0 / Wp, 1.0 / Hp), pos[..., 1] * Wp + pos[..., 2]

    # -- shared decode pieces ------------------------------------------------------------------

    def check_frames(self, T: int) -> None:
        if T > self.config.max_frames:
            raise ValueError(f"clip has {T} frames but model.max_frames={self.config.max_frames}; raise max_frames")

    def frame_trunk(self, tokens: torch.Tensor, prompt: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, N, D] (with their xy embedding), prompt [B, L, D] -> frame features [B, T, D]."""
        B, T, N, D = tokens.shape
        if self.pool_attn is not None:
            flat = tokens.reshape(B * T, N, D)
            frame = self.pool_attn(self.pool_query(B * T), flat, flat, need_weights=False)[0]
            frame = frame.reshape(B, T, D)
        else:
            frame = tokens.mean(dim=2)
        x = frame + self.time_embed(torch.arange(T, device=frame.device)) + self.motion_summary(tokens)

        memory = torch.cat([self.null_prompt(B), prompt], dim=1)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=memory.device), prompt_mask], dim=1)
        causal = (
            nn.Transformer.generate_square_subsequent_mask(T, device=x.device, dtype=x.dtype)
            if self.config.temporal_causal
            else None
        )
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=causal, tgt_is_causal=causal is not None, memory_key_padding_mask=~keep)
        return self.norm(x)

    def click_logits(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Actor query per frame (x [B, T, D]) over the frame's visual tokens [B, T, N, D] -> [B, T, N]."""
        query = self.actor_query(x)
        keys = self.click_key(tokens)
        return torch.einsum("btd,btnd->btn", query, keys) / math.sqrt(tokens.shape[-1])

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        return self.decode(self.encode(batch))

    # -- what trains -------------------------------------------------------------------------

    @staticmethod
    def is_trainable_name(name: str) -> bool:
        """LoRA adapters of the towers, and every parameter of the new layers."""
        return is_lora_parameter(name) if name.split(".", 1)[0] in TOWERS else True

    def _trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if self.is_trainable_name(n))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what trains (LoRA, projections, decoder layers, heads), under module-path names."""
        return {n: p.detach() for n, p in self._trainable()}

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strict load of `trainable_state_dict()` output; any missing/unexpected/mis-shaped key raises."""
        params = dict(self._trainable())
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        wrong = sorted(
            f"{n}: checkpoint {tuple(state_dict[n].shape)} vs model {tuple(params[n].shape)}"
            for n in set(params) & set(state_dict)
            if tuple(state_dict[n].shape) != tuple(params[n].shape)
        )
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
            if unexpected:
                parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
            if wrong:
                parts.append(f"shape mismatch ({len(wrong)}): {_listing(wrong)}")
            raise KeyError("trainable state dict does not match the model: " + "; ".join(parts))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state_dict[n].to(device=p.device, dtype=p.dtype))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"lora": adapter weights of both towers, "new": projections, decoder and heads}."""
        groups: dict[str, list[nn.Parameter]] = {"lora": [], "new": []}
        for n, p in self._trainable():
            groups["lora" if n.split(".", 1)[0] in TOWERS else "new"].append(p)
        return groups


def _listing(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")
