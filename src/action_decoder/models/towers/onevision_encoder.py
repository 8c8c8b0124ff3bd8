"""Native OneVision vision encoder (no remote code).

Re-implemented from the facts in `docs/onevision_encoder.md` (read from
EvolvingLMMs-Lab/OneVision-Encoder @ c2cd3e0d and checked against its golden fixture).
State-dict names are identical to the published `lmms-lab-encoder/onevision-encoder-large-lang`
checkpoint, so its safetensors load with strict=True.

Input conventions are the reference's, not our batch layout:
- an image is [B, C, H, W], a video is [B, C, T, H, W] (channels before time);
  our batches hold pixels [B, T, C, H, W], so pass `pixels.transpose(1, 2)`.
- tokens are frame-major, then patch row, then patch column (n = t*Hp*Wp + h*Wp + w).
- pixels arrive already resized and normalised (IMAGE_MEAN / IMAGE_STD below); the model does
  no normalisation. Resizing/normalising frames lives in `action_decoder.data`, not here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .hub import checkpoint_files

# Normalisation the published encoder was trained with (CLIP statistics; also in conf/backbone).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# The published large checkpoint on the hub.
LARGE_HUB_ID = "lmms-lab-encoder/onevision-encoder-large-lang"

_ACTIVATIONS = {
    # The reference's "gelu" is the exact erf GELU (tanh moves fixture outputs by ~6e-4).
    "gelu": lambda x: F.gelu(x),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
}
_NORM_TYPES = ("layer_norm", "rms_norm")
_ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass
class OneVisionEncoderConfig:
    """The config.json fields the forward pass uses (defaults = the large model)."""

    hidden_size: int = 1024  # D, token width
    intermediate_size: int = 4096  # MLP width, encoder layers and pooling head alike
    num_hidden_layers: int = 24  # number of pre-norm transformer layers
    num_attention_heads: int = 16  # heads in encoder layers and pooling head; head_dim = D / heads
    num_channels: int = 3  # input image channels
    image_size: int = 448  # informational only: no absolute position embeddings exist
    patch_size: int = 14  # P, conv kernel and stride
    hidden_act: str = "gelu"  # MLP activation; "gelu" is the exact erf GELU
    layer_norm_eps: float = 1e-6  # eps of every norm, the head's RMSNorm included
    layer_norm_type: str = "layer_norm"  # "layer_norm" (weight+bias) or "rms_norm" (weight only)
    rope_theta: float = 10000.0  # RoPE base
    rope_temporal_size: int | None = 64  # RoPE grid frames for video without patch_positions; None = actual T
    use_head: bool = True  # False drops layernorm_post and the pooling head (pooler_output None)
    attention_dropout: float = 0.0  # dropout on attention probabilities, training only
    attn_implementation: str = "sdpa"  # ours, not in config.json: "sdpa" or "eager" (explicit softmax, for checks)

    def __post_init__(self) -> None:
        D, H = self.hidden_size, self.num_attention_heads
        if H <= 0 or D % H != 0:
            raise ValueError(
                f"OneVisionEncoderConfig: hidden_size={D} must be divisible by num_attention_heads={H}."
            )
        head_dim = D // H
        if (head_dim // 2) % 16 != 0 or head_dim % 2 != 0:
            good = [h for h in range(1, D + 1) if D % h == 0 and (D // h) % 32 == 0]
            raise ValueError(
                f"OneVisionEncoderConfig: head_dim = hidden_size/num_attention_heads = {D}/{H} = {head_dim}, "
                "but the 3-D RoPE splits head_dim/2 into 16 units (4 t : 6 h : 6 w), so head_dim//2 must "
                "also be divisible by 16 (head_dim a multiple of 32). Change num_attention_heads "
                f"(for hidden_size={D}: one of {good or 'none; make hidden_size a multiple of 32'}) "
                "or hidden_size."
            )
        if self.layer_norm_type not in _NORM_TYPES:
            raise ValueError(f"layer_norm_type={self.layer_norm_type!r}; expected one of {_NORM_TYPES}.")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r}; supported: {sorted(_ACTIVATIONS)}.")
        if self.attn_implementation not in _ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation={self.attn_implementation!r}; expected one of {_ATTN_IMPLEMENTATIONS}."
            )
        if self.rope_temporal_size is not None and self.rope_temporal_size < 1:
            raise ValueError(f"rope_temporal_size={self.rope_temporal_size} must be >= 1 or None.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OneVisionEncoderConfig":
        """Build from a config.json dict; fields we do not use (model_type, id2label, ...) are ignored."""
        if "vision_config" in d and "hidden_size" not in d:
            d = d["vision_config"]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "OneVisionEncoderConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# 3-D rotary position embedding


class VisionRotaryEmbedding3D(nn.Module):
    """Per-axis inverse frequencies and the [f, f] angle vector of the reference's 3-D RoPE.

    head_dim/2 is split 4:6:6 units (t:h:w), each axis with its own ladder 1/theta^(j/size).
    The frequencies are recomputed per call in float32 on the CPU (a few dozen numbers) instead
    of being kept as buffers: they stay exact after `model.to(bfloat16)`, after meta-device
    construction + assign-loading, and bit-identical across devices.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        half = head_dim // 2
        unit = half // 16
        self.sizes = (4 * unit, 6 * unit, 6 * unit)
        self.theta = float(theta)

    def inv_freqs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def ladder(size: int) -> torch.Tensor:
            return 1.0 / (self.theta ** (torch.arange(0, size, dtype=torch.float32) / size))

        return tuple(ladder(s) for s in self.sizes)  # type: ignore[return-value]

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [B, K, 3] (t, h, w) -> angles [B, K, head_dim] float32."""
        pos = positions.to(torch.float32)
        inv_t, inv_h, inv_w = (f.to(pos.device) for f in self.inv_freqs())
        f = torch.cat(
            [pos[..., 0:1] * inv_t, pos[..., 1:2] * inv_h, pos[..., 2:3] * inv_w], dim=-1
        )
        # The whole half-vector is repeated once ([f, f]), NOT pairwise: reproduce exactly.
        return torch.cat([f, f], dim=-1)


def _rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, Hn, K, hd]; cos/sin [B, 1, K, hd] already in x's dtype."""
    return x * cos + _rotate_half_interleaved(x) * sin


# ---------------------------------------------------------------------------------------------
# Building blocks (attribute names = checkpoint names)


def _make_norm(config: OneVisionEncoderConfig) -> nn.Module:
    if config.layer_norm_type == "rms_norm":
        return nn.RMSNorm(config.hidden_size, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class OneVisionEmbeddings(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        P = config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=P, stride=P, bias=False
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, C, H, W] -> tokens [B, T*Hp*Wp, D], frame-major then row then column."""
        B, T = frames.shape[:2]
        x = self.patch_embedding(frames.flatten(0, 1).to(self.patch_embedding.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # [B*T, Hp*Wp, D]
        return x.reshape(B, T * x.shape[1], x.shape[2])


class OneVisionMLP(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.act = _ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class OneVisionAttention(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.attn_implementation = config.attn_implementation
        D = config.hidden_size
        # Registration order k, v, q, out_proj = the checkpoint's key order.
        self.k_proj = nn.Linear(D, D)
        self.v_proj = nn.Linear(D, D)
        self.q_proj = nn.Linear(D, D)
        self.out_proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, K, D = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, K, self.num_heads, self.head_dim).transpose(1, 2)

        q = apply_rope(heads(self.q_proj(x)), cos, sin)
        k = apply_rope(heads(self.k_proj(x)), cos, sin)
        v = heads(self.v_proj(x))
        p_drop = self.dropout if self.training else 0.0
        if self.attn_implementation == "eager":
            out = eager_attention(q, k, v, p_drop)
        else:
            # Default scale is head_dim**-0.5, the reference's (not D**-0.5). No mask: all kept
            # tokens of a sample attend to each other.
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop)
        return self.out_proj(out.transpose(1, 2).reshape(B, K, D))


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) v written out, as the reference's eager path (scale after the matmul)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(probs, v)


class OneVisionEncoderLayer(nn.Module):
    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        # Order self_attn, layer_norm1, mlp, layer_norm2 = the checkpoint's key order.
        self.self_attn = OneVisionAttention(config)
        self.layer_norm1 = _make_norm(config)
        self.mlp = OneVisionMLP(config)
        self.layer_norm2 = _make_norm(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), cos, sin)
        return x + self.mlp(self.layer_norm2(x))


class OneVisionEncoderStack(nn.Module):
    """Holds `layers` (keys encoder.layers.i.*); runs them, optionally checkpointed."""

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(OneVisionEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # Checkpoint only when a backward can follow; use_reentrant=False works with frozen
        # inputs (LoRA: pixels and base weights need no grad) and keeps dropout RNG consistent.
        use_ckpt = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if use_ckpt:
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        return x


class OneVisionPoolingHead(nn.Module):
    """Siglip2-style attention pooling: one learned probe attends over the post-normed tokens."""

    def __init__(self, config: OneVisionEncoderConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.probe = nn.Parameter(torch.randn(1, 1, D))
        # LoRA note: MultiheadAttention reads out_proj.weight directly, so a peft wrapper on
        # head.attention.out_proj would get no gradient; models/towers/lora.py scopes targets around it.
        self.attention = nn.MultiheadAttention(D, config.num_attention_heads, batch_first=True)
        self.norm = nn.RMSNorm(D, eps=config.layer_norm_eps)  # always RMSNorm, whatever layer_norm_type
        self.mlp = OneVisionMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)
        a = self.attention(probe, x, x, need_weights=False)[0]
        # No residual with the probe: the attention output itself is the residual stream.
        a = a + self.mlp(self.norm(a))
        return a[:, 0]


# ---------------------------------------------------------------------------------------------
# The encoder


class OneVisionEncoder(nn.Module):
    """OneVision encoder: patch conv -> pre-norm -> [gather visible] -> L layers (3-D RoPE)
    -> post-norm -> attention-pooling head.

    forward(pixel_values, visible_indices=None, patch_positions=None)
      -> (last_hidden_state [B, K, D], pooler_output [B, D] or None when use_head=False)
    """

    def __init__(self, config: OneVisionEncoderConfig, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.config = config
        # Registration order = the checkpoint's key order.
        self.embeddings = OneVisionEmbeddings(config)
        self.layernorm_pre = _make_norm(config)
        self.encoder = OneVisionEncoderStack(config)
        self.video_rope = VisionRotaryEmbedding3D(config.head_dim, config.rope_theta)
        if config.use_head:
            self.layernorm_post = _make_norm(config)
            self.head = OneVisionPoolingHead(config)
        else:
            self.layernorm_post = None
            self.head = None
        self.gradient_checkpointing = gradient_checkpointing

    # -- switches ------------------------------------------------------------------------------

    @property
    def gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.encoder.gradient_checkpointing = bool(value)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """transformers/peft-style hook (kwargs accepted for compatibility; always non-reentrant)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    @property
    def attn_implementation(self) -> str:
        return self.config.attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value: str) -> None:
        if value not in _ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation={value!r}; expected one of {_ATTN_IMPLEMENTATIONS}.")
        self.config.attn_implementation = value
        for layer in self.encoder.layers:
            layer.self_attn.attn_implementation = value

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor,
        visible_indices: torch.Tensor | None = None,
        patch_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        if pixel_values.dim() == 4:
            frames = pixel_values.unsqueeze(1)  # image = one frame
            t_grid = 1
        elif pixel_values.dim() == 5:
            frames = pixel_values.transpose(1, 2)  # [B, C, T, H, W] -> [B, T, C, H, W]
            t_grid = cfg.rope_temporal_size if cfg.rope_temporal_size is not None else frames.shape[1]
        else:
            raise ValueError(
                f"pixel_values must be [B, C, H, W] or [B, C, T, H, W]; got shape {tuple(pixel_values.shape)}."
            )
        B, T, C, H, W = frames.shape
        P = cfg.patch_size
        if C != cfg.num_channels:
            raise ValueError(
                f"pixel_values has {C} channels, config.num_channels={cfg.num_channels} "
                "(videos are [B, C, T, H, W]; our batches are [B, T, C, H, W] -> pass pixels.transpose(1, 2))."
            )
        h_grid, w_grid = H // P, W // P
        if h_grid == 0 or w_grid == 0:
            raise ValueError(f"frames of {H}x{W} are smaller than one {P}x{P} patch.")
        n_tokens = T * h_grid * w_grid

        x = self.embeddings(frames)  # [B, N, D]
        device = x.device

        if visible_indices is None:
            visible_indices = torch.arange(n_tokens, device=device).expand(B, n_tokens)
        else:
            visible_indices = visible_indices.to(device=device, dtype=torch.long)
            if visible_indices.dim() != 2 or visible_indices.shape[0] != B:
                raise ValueError(f"visible_indices must be [B={B}, K]; got {tuple(visible_indices.shape)}.")
            if visible_indices.numel() and (visible_indices.min() < 0 or visible_indices.max() >= n_tokens):
                raise ValueError(
                    f"visible_indices must lie in [0, {n_tokens}) (T*Hp*Wp = {T}*{h_grid}*{w_grid}); "
                    f"got range [{int(visible_indices.min())}, {int(visible_indices.max())}]."
                )
        K = visible_indices.shape[1]

        if patch_positions is not None:
            if tuple(patch_positions.shape) != (B, K, 3):
                raise ValueError(
                    f"patch_positions must be [B, K, 3] = [{B}, {K}, 3] (t, h, w per kept token); "
                    f"got {tuple(patch_positions.shape)}."
                )
            positions = patch_positions.to(device)
        else:
            # Row n of the reference's (t_grid, h_grid, w_grid) table, computed directly.
            table_len = t_grid * h_grid * w_grid
            if K and int(visible_indices.max()) >= table_len:
                raise ValueError(
                    f"video has {T} frames but rope_temporal_size={cfg.rope_temporal_size} RoPE frames: "
                    "pass patch_positions (e.g. from select_visible_tokens) or set rope_temporal_size=None."
                )
            idx = visible_indices
            positions = torch.stack(
                (idx // (h_grid * w_grid), (idx // w_grid) % h_grid, idx % w_grid), dim=-1
            )
        angles = self.video_rope(positions).unsqueeze(1)  # [B, 1, K, hd] float32
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)

        x = self.layernorm_pre(x)
        # Reference quirk kept on purpose: with K == N nothing is gathered, even for a
        # permutation (the RoPE angles above still follow visible_indices).
        if K != n_tokens:
            x = torch.gather(x, 1, visible_indices.unsqueeze(-1).expand(B, K, x.shape[-1]))

        x = self.encoder(x, cos, sin)
        if self.head is None:
            return x, None
        x = self.layernorm_post(x)
        return x, self.head(x)

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        gradient_checkpointing: bool = False,
        **config_overrides: Any,
    ) -> "OneVisionEncoder":
        """Load config.json + model.safetensors (or a sharded index) from a local folder or a hub id.

        Weights load with strict=True into a model built on the meta device (no random init of
        315 M parameters). `config_overrides` (e.g. attn_implementation="eager") replace config fields.
        """
        folder_files = checkpoint_files(name_or_path, "the OneVision encoder", "backbone.vision.name_or_path",
                                        revision=revision, cache_dir=cache_dir)
        try:
            cfg_dict = json.loads(Path(folder_files["config"]).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{folder_files['config']}: not a valid config.json ({e})") from None
        cfg_dict.update(config_overrides)
        config = OneVisionEncoderConfig.from_dict(cfg_dict)

        from safetensors import SafetensorError, safe_open

        # One tensor at a time, cast as it is read: the model in `dtype` is the only full copy in memory.
        state: dict[str, torch.Tensor] = {}
        for f in folder_files["weights"]:
            try:
                with safe_open(str(f), framework="pt", device=str(device)) as shard:
                    for k in shard.keys():
                        v = shard.get_tensor(k)
                        state[k] = v.to(dtype) if v.is_floating_point() else v
            except (SafetensorError, OSError) as e:  # truncated / corrupted file, or not safetensors at all
                raise ValueError(f"{f}: cannot read the encoder weights ({e}); re-download or re-make it") from None

        with torch.device("meta"):
            model = cls(config, gradient_checkpointing=gradient_checkpointing)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise RuntimeError(
                f"{name_or_path}: checkpoint does not match OneVisionEncoder(config from its config.json); "
                f"expected the published key names.\n{e}"
            ) from None
        return model
