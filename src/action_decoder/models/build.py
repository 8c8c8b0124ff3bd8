"""`build_model(cfg, tokenizer)`: config tree -> towers + LoRA + decoder, checked at build time.

`cfg.backbone` picks the towers (tiny random init, or the published OneVision encoder and
Qwen3-4B), `cfg.backbone.lora` the adapters, `cfg.model` the decoder, `cfg.labels` the head sizes.
With `empty_weights=True` everything is built on the meta device from the config sizes alone
(no download, no memory): for counting parameters and checkpoint sizes.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from accelerate import init_empty_weights

from action_decoder.cli import MissingFileError
from action_decoder.config import plain

from .config import DecoderConfig
from .decoder import TaskAwareDecoder
from .towers.fingerprint import tower_fingerprint
from .towers.lora import apply_tower_lora
from .towers.onevision_encoder import OneVisionEncoder, OneVisionEncoderConfig
from .towers.text_encoder import build_text_model
from .transcript import TranscriptConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Architecture:
    """The parts a `model.name` is made of (every decoder has the towers, the trunk and the heads)."""

    transcript: bool  # a per-frame transcript decoder through the text tower's LM head


# `model.name` -> its parts: the names of the model card (conf/model/<name>.yaml holds each one's sizes).
ARCHITECTURES = {
    "original": Architecture(transcript=False),  # March-10: frame trunk + action/key/modifier/click heads
    "parallel": Architecture(transcript=True),   # parallel heads + a streaming per-frame transcript decoder
}
# backbone.vision keys that are OneVisionEncoderConfig fields.
VISION_ARCH_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
    "image_size", "layer_norm_type", "layer_norm_eps", "rope_theta", "use_head", "hidden_act",
)


def image_hw(image_size: Any) -> tuple[int, int]:
    """`backbone.vision.image_size` -> (height, width): an int is a square, [height, width] keeps the
    screen's shape (a non-square patch grid; the encoder's RoPE is relative, so any grid works)."""
    if isinstance(image_size, int):
        return int(image_size), int(image_size)
    size = tuple(int(v) for v in image_size)
    if len(size) != 2:
        raise ValueError(f"backbone.vision.image_size={list(size)}: give one int (square) or [height, width]")
    return size  # type: ignore[return-value]


def vision_config_from_cfg(vision_cfg: Mapping[str, Any]) -> OneVisionEncoderConfig:
    """OneVisionEncoderConfig from `backbone.vision` (its own checks name the head-size rule)."""
    fields = {k: vision_cfg[k] for k in VISION_ARCH_KEYS if vision_cfg.get(k) is not None}
    if "image_size" in fields:
        fields["image_size"] = list(image_hw(fields["image_size"])) if not isinstance(fields["image_size"], int) \
            else fields["image_size"]
    try:
        config = OneVisionEncoderConfig(**fields)
    except ValueError as err:
        raise ValueError(f"backbone.vision: {err}") from None
    if any(side % config.patch_size for side in image_hw(config.image_size)):
        raise ValueError(
            f"backbone.vision.image_size={config.image_size} is not a multiple of patch_size={config.patch_size}: "
            "the right/bottom strip would be dropped; pick a multiple"
        )
    return config


def build_vision_model(
    vision_cfg: Mapping[str, Any], dtype: torch.dtype, *, pretrained: bool, gradient_checkpointing: bool
) -> OneVisionEncoder:
    config = vision_config_from_cfg(vision_cfg)
    name = vision_cfg.get("name_or_path")
    if pretrained and name:
        model = OneVisionEncoder.from_pretrained(name, dtype=dtype, gradient_checkpointing=gradient_checkpointing)
        _check_same_sizes("backbone.vision", config, model.config, ("hidden_size", "num_hidden_layers", "patch_size"))
        check_fingerprint("backbone.vision", vision_cfg)
        return model
    return OneVisionEncoder(config, gradient_checkpointing=gradient_checkpointing).to(dtype)


def check_fingerprint(where: str, tower_cfg: Mapping[str, Any]) -> None:
    """A run config records its towers' fingerprint (conf/backbone/tiny.yaml); LoRA and heads trained
    on other towers would load without error and predict nonsense, so refuse changed towers."""
    want = tower_cfg.get("fingerprint")
    if not want:
        return
    got = tower_fingerprint(tower_cfg.get("name_or_path"))
    if got != want:
        raise ValueError(
            f"{where}.name_or_path={tower_cfg.get('name_or_path')} has fingerprint {got}, but this run/checkpoint "
            f"was trained on towers with fingerprint {want}: the towers were re-made or replaced since. "
            "Evaluate with the towers it was trained on, or train again on these."
        )


def _check_same_sizes(where: str, want: Any, got: Any, keys: tuple[str, ...]) -> None:
    """The config sizes are what count_parameters reports and what image_size assumes: keep them honest."""
    diff = [f"{k}: config {getattr(want, k)} vs checkpoint {getattr(got, k)}" for k in keys
            if getattr(want, k) != getattr(got, k)]
    if diff:
        raise ValueError(f"{where} sizes disagree with the loaded checkpoint ({'; '.join(diff)}); fix the config")


def build_model(
    cfg: Mapping[str, Any], tokenizer: Any | None, *, empty_weights: bool = False
) -> TaskAwareDecoder:
    """The decoder named by `cfg.model.name` (`ARCHITECTURES`) over the backbone `cfg.backbone`.

    tokenizer: from `action_decoder.data.tokenizer.build_tokenizer(cfg.backbone.text)`; a random-init
    Qwen3 takes `len(tokenizer)` as its vocabulary size. May be None only when
    `backbone.text.vocab_size` is set (e.g. counting parameters of the real config).
    """
    backbone, model_cfg = plain(cfg["backbone"]), plain(cfg["model"])
    labels = plain(cfg["labels"])
    if model_cfg.get("name") not in ARCHITECTURES:
        raise ValueError(f"model.name={model_cfg.get('name')!r}; build_model knows {list(ARCHITECTURES)}")
    if str(backbone.get("dtype", "float32")) not in DTYPES:
        raise ValueError(f"backbone.dtype={backbone.get('dtype')!r}; expected one of {list(DTYPES)}")
    dtype = DTYPES[str(backbone.get("dtype", "float32"))]
    arch = ARCHITECTURES[model_cfg["name"]]
    decoder_cfg = DecoderConfig.from_cfg(model_cfg)
    transcript_cfg = TranscriptConfig.from_cfg(model_cfg) if arch.transcript else None
    vision_config = vision_config_from_cfg(backbone["vision"])
    height, width = image_hw(vision_config.image_size)
    per_frame = (height // vision_config.patch_size) * (width // vision_config.patch_size)
    if decoder_cfg.visible_tokens is not None and decoder_cfg.visible_tokens > per_frame:
        raise ValueError(
            f"model.visible_tokens={decoder_cfg.visible_tokens} but a {height}x{width} frame has only "
            f"{per_frame} patches of {vision_config.patch_size}px: use at most {per_frame} (or null = all)"
        )

    try:
        return _build(backbone, labels, dtype, decoder_cfg, transcript_cfg, tokenizer, empty_weights)
    except FileNotFoundError as err:
        if "pretrain" not in backbone:
            raise
        raise MissingFileError(f"{err}\nThe tiny towers are made by `python scripts/pretrain_tiny_towers.py` "
                                "(or set backbone.vision.name_or_path=null backbone.text.name_or_path=null "
                                "for random-init towers).") from None


def _build(backbone, labels, dtype, decoder_cfg, transcript_cfg, tokenizer, empty_weights):
    checkpointing = bool(backbone.get("gradient_checkpointing", False))
    with init_empty_weights() if empty_weights else nullcontext():
        # Random-init towers are drawn from their own seed, not the global RNG: a checkpoint holds
        # only what trains, so reloading it must meet the very same frozen towers in any process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(backbone.get("init_seed", 0)))
            vision = build_vision_model(
                backbone["vision"], dtype, pretrained=not empty_weights, gradient_checkpointing=checkpointing
            )
            text_cfg = dict(backbone["text"])
            if empty_weights:
                text_cfg["name_or_path"] = None  # sizes from the config, nothing loaded
            text = build_text_model(text_cfg, tokenizer, dtype=dtype)
            if text_cfg.get("name_or_path"):
                check_fingerprint("backbone.text", text_cfg)
        lora_cfg = backbone.get("lora", {"r": 0})
        vision = apply_tower_lora(vision, lora_cfg, "vision")
        text = apply_tower_lora(text, lora_cfg, "text")
        # A transcript decoder needs the tokenizer's eof/pad ids and decodes with it.
        model = TaskAwareDecoder(vision, text, decoder_cfg, num_actions=len(labels["actions"]),
                                 num_keys=len(labels["keys"]), num_modifiers=len(labels["modifiers"]),
                                 transcript=transcript_cfg, tokenizer=tokenizer)
    if empty_weights:
        # accelerate's init_empty_weights re-creates every Parameter assigned inside it, which undoes
        # the LM-head/embedding tie; tie again outside it. Elsewhere the tie holds (peft keeps the tied
        # weight as lm_head.base_layer.weight when lm_head is a LoRA target) and re-tying would clash.
        model.text.tie_weights()
    if checkpointing:
        # Non-reentrant: the frozen embeddings' outputs need no grad, LoRA inside still gets one.
        if hasattr(text, "activation_checkpointing_enable"):  # transformers >= 5.x name
            text.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            text.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
