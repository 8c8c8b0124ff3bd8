"""Qwen3 prompt side: build the causal LM and read prompt features from it.

The whole `Qwen3ForCausalLM` is kept (not only the base `Qwen3Model`): the transcript decoder of
the `parallel` architecture reuses this same copy through its LM head, so the prompt encoder and
the transcript decoder share weights and LoRA.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from .hub import hub_error, is_hub_id

# backbone.text keys that are Qwen3Config fields (the architecture of a random-init / meta model).
QWEN3_ARCH_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "tie_word_embeddings",
    "vocab_size",
)


def qwen3_config_from_cfg(text_cfg: Mapping[str, Any], vocab_size: int | None) -> Qwen3Config:
    """Qwen3Config from `backbone.text` (`vocab_size: null` -> the tokenizer's length)."""
    fields = {k: text_cfg[k] for k in QWEN3_ARCH_KEYS if k in text_cfg and text_cfg[k] is not None}
    if "vocab_size" not in fields:
        if vocab_size is None:
            raise ValueError("backbone.text.vocab_size is null: pass the tokenizer so its length sets it")
        fields["vocab_size"] = int(vocab_size)
    check_qwen3_sizes(fields)
    rope = {"rope_type": "default", "rope_theta": float(text_cfg.get("rope_theta", 1_000_000.0))}
    return Qwen3Config(**fields, rope_parameters=rope, attention_bias=False, use_cache=False)


def check_qwen3_sizes(fields: Mapping[str, Any]) -> None:
    """Fail at build time, naming the knob, on sizes Qwen3 (or its RoPE) cannot take."""
    heads = int(fields.get("num_attention_heads", 0))
    kv = int(fields.get("num_key_value_heads", heads))
    head_dim = int(fields.get("head_dim", 0) or 0)
    if heads <= 0 or kv <= 0 or heads % kv:
        raise ValueError(
            f"backbone.text: num_attention_heads={heads} must be a positive multiple of "
            f"num_key_value_heads={kv} (grouped-query attention); change one of them"
        )
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(
            f"backbone.text.head_dim={head_dim}: RoPE rotates pairs of channels, so head_dim must be a "
            "positive even number (Qwen3-4B uses 128); change backbone.text.head_dim"
        )


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Floating-point tensors created inside (parameters of a module built here) default to `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def load_qwen3(
    name_or_path: str | os.PathLike, dtype: torch.dtype = torch.float32
) -> Qwen3ForCausalLM:
    """`Qwen3ForCausalLM.from_pretrained` from a hub id or a local folder, with a clear error offline."""
    name = str(name_or_path)
    # A folder path (a hub id is exactly "owner/name"): name the missing folder instead of asking the hub.
    if Path(name).expanduser().exists() or not is_hub_id(name):
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"backbone.text.name_or_path={name}: no config.json in that folder (expected a "
                "save_pretrained folder or a hub snapshot of Qwen/Qwen3-4B)"
            )
        _check_readable_weights(path)
        name = str(path)
    try:
        model = Qwen3ForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as err:
        raise hub_error("Qwen3", name, err, "backbone.text.name_or_path") from err
    if not isinstance(model, Qwen3ForCausalLM):  # pragma: no cover - from_pretrained of the class
        raise TypeError(f"{name}: expected a Qwen3ForCausalLM checkpoint, got {type(model).__name__}")
    return model


def _check_readable_weights(folder: Path) -> None:
    """Name the file when a local checkpoint's weights are missing or corrupted (transformers' own
    errors do not always say which file)."""
    from safetensors import SafetensorError, safe_open

    shards = sorted(folder.glob("*.safetensors"))
    if not shards and not any(folder.glob("*.bin")):
        raise FileNotFoundError(f"{folder}: no model.safetensors (or shards) next to config.json")
    for f in shards:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    sf.get_slice(key)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{f}: cannot read the Qwen3 weights ({e}); re-download or re-make it") from None


def build_text_model(
    text_cfg: Mapping[str, Any], tokenizer: Any | None, dtype: torch.dtype = torch.float32
) -> Qwen3ForCausalLM:
    """Random-init Qwen3 from the config sizes, or pretrained weights when `name_or_path` is set."""
    vocab = len(tokenizer) if tokenizer is not None else None
    name = text_cfg.get("name_or_path")
    if name:
        model = load_qwen3(name, dtype=dtype)
        model.config.use_cache = False
    else:
        # Created directly in `dtype` (no fp32 copy first: Qwen3-4B is 16 GB in fp32, 8 GB in bf16). Its
        # init draws normal_ in that dtype, which gives the same numbers as drawing in fp32 then rounding.
        with default_dtype(dtype):
            model = Qwen3ForCausalLM(qwen3_config_from_cfg(text_cfg, vocab))
    # Tied embeddings: lm_head and embed_tokens must be one tensor (also under init_empty_weights,
    # where the tie is what makes the parameter count 4,022,468,096 and not +389 M).
    model.tie_weights()
    if vocab is not None and vocab > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {vocab} entries but the Qwen3 embedding has {model.config.vocab_size} rows: "
            "token ids past the table would crash; use the model's own tokenizer (backbone.text.tokenizer)"
        )
    return model


def prompt_features(
    model: Qwen3ForCausalLM, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
) -> torch.Tensor:
    """Last hidden states [B, L, Dt] of the (right-padded) prompt tokens; pad rows are zeroed.

    Read through the base model (`model.model`), so the LM head is not run over the prompt.
    """
    if prompt_ids.shape[1] == 0:
        return torch.zeros(*prompt_ids.shape, model.config.hidden_size, device=prompt_ids.device,
                           dtype=model.get_input_embeddings().weight.dtype)
    mask = prompt_mask.bool()
    # A prompt with no token at all (empty task text) would give an all-masked attention row; let
    # it attend to its pad tokens instead (their output is zeroed below and masked downstream).
    attend = mask | ~mask.any(dim=1, keepdim=True)
    hidden = model.model(input_ids=prompt_ids, attention_mask=attend.long(), use_cache=False).last_hidden_state
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)
