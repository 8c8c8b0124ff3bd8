"""`TaskAwareDecoder`: the towers and the decoder parts, composed (docs/design.md §2 layout, §4 contract).

  vision       OneVisionEncoder (+ LoRA)
  text         Qwen3ForCausalLM (+ LoRA): reads the prompt; with a transcript decoder also writes the narration
  visual_proj, prompt_proj, token_pos   encoder side: tokens and prompt to the decoder width Dd, (x, y) embedding
  trunk        FrameTrunk (trunk.py): pooling, motion summary, time embedding, temporal layers -> frame features
  heads        FrameHeads (heads.py): action / key / modifier / click, each from the frame features only
  transcript   TranscriptDecoder (transcript.py) or None: per-frame narration through the LM head

Which parts a `model.name` gets is the registry in build.py; the model says what it can do (`has_transcript`).

encode(batch) -> Features
  1. Visible tokens: `select_visible_tokens` keeps `visible_tokens` patches per frame (all by default).
  2. The OneVision encoder runs over the whole clip as a video [B, C, T, H, W] with 3-D RoPE (t = frame index,
     `clip_encoding: video`): the encoder's native video mode, in which every token attends to the other frames'
     tokens, so the features carry change over time (a pressed button, a typed character, a scrolled list).
     `clip_encoding: frames` encodes each frame alone (cheaper; needed to stream). Per-frame tokens are
     recovered through `patch_positions` (t column).
  3. Visual tokens -> LayerNorm + Linear to Dd ([B, T, N, Dd]); token_xy = patch centres.
  4. Prompt -> Qwen3 last hidden states -> LayerNorm + Linear to Dd. With a transcript decoder the prompt is
     read inside its one teacher-forced LM pass over [prompt, frame 0, text 0, eof, frame 1, ...].
decode(features) -> Outputs
  visual tokens + their (x, y) embedding -> trunk -> heads (+ the transcript's hidden states and the LM head).
stream(...) (models/streaming.py): the same heads and the generated text frame by frame as frames arrive.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch
from torch import nn

from .config import DecoderConfig
from .heads import FrameHeads
from .layers import FourierXY
from .towers.lora import is_lora_parameter
from .towers.onevision_encoder import OneVisionEncoder
from .outputs import Features, Outputs
from .streaming import FrameStep, stream
from .towers.text_encoder import prompt_features
from .transcript import TranscriptConfig, TranscriptDecoder
from .trunk import FrameTrunk
from .visible_tokens import select_visible_tokens

TOWERS = ("vision", "text")  # attribute names of the pretrained towers (frozen apart from LoRA)


class TaskAwareDecoder(nn.Module):
    def __init__(self, vision: OneVisionEncoder, text: nn.Module, config: DecoderConfig, num_actions: int,
                 num_keys: int, num_modifiers: int, transcript: TranscriptConfig | None = None,
                 tokenizer: Any | None = None) -> None:
        super().__init__()
        self.config = config
        self.vision = vision
        self.text = text
        self.patch_size = int(vision.config.patch_size)
        dv, dt, d = int(vision.config.hidden_size), int(text.config.hidden_size), config.d_model
        self.visual_proj = nn.Sequential(nn.LayerNorm(dv), nn.Linear(dv, d))
        self.prompt_proj = nn.Sequential(nn.LayerNorm(dt), nn.Linear(dt, d))
        self.token_pos = FourierXY(d, config.xy_frequencies)
        self.trunk = FrameTrunk(config)
        self.heads = FrameHeads(d, num_actions, num_keys, num_modifiers)
        self.transcript = (None if transcript is None else
                           TranscriptDecoder(d, config.num_heads, config.dropout, text, transcript, tokenizer))

    @property
    def has_transcript(self) -> bool:
        """Whether the model narrates each frame (Outputs carry transcript states; `stream` / `transcribe` work)."""
        return self.transcript is not None

    # -- encode ------------------------------------------------------------------------------

    def encode(self, batch: Mapping[str, torch.Tensor]) -> Features:
        visual, token_xy, token_cell, visible = self.encode_visual(batch["pixels"])
        lm: dict[str, torch.Tensor] = {}
        if self.transcript is None:
            prompt_hidden = prompt_features(self.text, batch["prompt_ids"], batch["prompt_mask"].bool())
        else:
            self.trunk.check_frames(visual.shape[1])
            tokens = visual + self.token_pos(token_xy)
            passed = self.transcript.teacher_forced(self.text, batch, tokens, self.trunk.motion(tokens))
            prompt_hidden = passed.prompt_hidden
            lm = dict(lm_frame_hidden=passed.frame_hidden, lm_text_hidden=passed.text_hidden,
                      transcript_targets=passed.targets)
        return Features(
            visual_tokens=visual,
            token_xy=token_xy,
            token_cell=token_cell,
            prompt_features=self.project_prompt(prompt_hidden),
            prompt_mask=batch["prompt_mask"].bool(),
            visible_indices=visible,
            **lm,
        )

    def project_prompt(self, hidden: torch.Tensor) -> torch.Tensor:
        """Prompt hidden states of the text tower [B, L, Dt] -> decoder width [B, L, Dd]."""
        return self.prompt_proj(hidden.to(self.prompt_proj[1].weight.dtype))

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

    # -- decode ------------------------------------------------------------------------------

    def decode(self, features: Features) -> Outputs:
        if self.transcript is not None and features.lm_text_hidden is None:
            raise ValueError("model=parallel decodes Features from its own encode() (they carry the LM pass)")
        self.trunk.check_frames(features.visual_tokens.shape[1])
        tokens = features.visual_tokens + self.token_pos(features.token_xy)
        x = self.trunk(tokens, features.prompt_features, features.prompt_mask)
        transcript = {} if self.transcript is None else dict(
            transcript_hidden=self.transcript.scaled(features.lm_text_hidden),
            transcript_targets=features.transcript_targets,
            transcript_head=self.text.lm_head,
        )
        return Outputs(**self.heads(x, tokens), token_xy=features.token_xy, token_cell=features.token_cell,
                       frame_features=x, **transcript)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Outputs:
        return self.decode(self.encode(batch))

    # -- inference with a transcript ---------------------------------------------------------

    def stream(self, clip_pixels, prompt_ids, prompt_mask=None, **kwargs: Any) -> Iterator[FrameStep]:
        """Heads + generated text per frame as frames arrive (see models/streaming.py for the arguments)."""
        return stream(self, clip_pixels, prompt_ids, prompt_mask, **kwargs)

    @torch.no_grad()
    def transcribe(self, batch: Mapping[str, torch.Tensor], **stream_kwargs: Any) -> list[list[str]]:
        """Greedy transcripts of a batch of clips: [clip][frame] -> text (streaming path)."""
        if self.transcript is None or self.transcript.tokenizer is None:
            raise ValueError("transcribe() needs a transcript decoder (model=parallel) built with the tokenizer "
                             "(build_model(cfg, tokenizer))")
        B = batch["pixels"].shape[0]
        out: list[list[str]] = [[] for _ in range(B)]
        for step in self.stream(batch["pixels"], batch["prompt_ids"], batch["prompt_mask"], **stream_kwargs):
            for b in range(B):
                out[b].append(step.texts[b])
        return out

    def reference_transcripts(self, batch: Mapping[str, torch.Tensor]) -> list[list[str]]:
        """The batch's own per-frame transcripts decoded back to text: [clip][frame] -> text."""
        ids, mask = batch["transcript_ids"], batch["transcript_mask"].bool()
        tokenizer = self.transcript.tokenizer
        return [[tokenizer.decode(ids[b, t][mask[b, t]].tolist(), skip_special_tokens=True)
                 for t in range(ids.shape[1])] for b in range(ids.shape[0])]

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
