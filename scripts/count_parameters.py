"""Parameter counts and checkpoint size of a model config, built on the meta device (no download).

    python scripts/count_parameters.py                                  # the real towers (default)
    python scripts/count_parameters.py backbone=tiny                    # any Hydra overrides
    python scripts/count_parameters.py backbone.lora.r=16 --json out.json

Prints the frozen tower sizes, the LoRA adapters, the new decoder layers, and what
`trainable_state_dict()` (the part a checkpoint holds) weighs in bf16 and fp32.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from action_decoder.config import load_config
from action_decoder.models.build import build_model
from action_decoder.models.towers.lora import is_lora_parameter


def count(model) -> dict[str, int]:
    def total(module, lora: bool) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if is_lora_parameter(n) == lora)

    groups = model.parameter_groups()
    trainable = sum(p.numel() for p in model.trainable_state_dict().values())
    return {
        "vision_encoder": total(model.vision, lora=False),
        "text_model": total(model.text, lora=False),
        "vision_lora": total(model.vision, lora=True),
        "text_lora": total(model.text, lora=True),
        "decoder_new_layers": sum(p.numel() for p in groups["new"]),
        "trainable": trainable,
        "trainable_keys": len(model.trainable_state_dict()),
        "trainable_bytes_bf16": trainable * 2,
        "trainable_bytes_fp32": trainable * 4,
        "total": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default: backbone=onevision_qwen3_4b)")
    parser.add_argument("--json", type=Path, help="also write the counts to this JSON file")
    args = parser.parse_args(argv)
    overrides = args.overrides
    if not any(o.startswith("backbone=") for o in overrides):
        overrides = ["backbone=onevision_qwen3_4b", *overrides]
    cfg = load_config(overrides)
    tokenizer = None
    if cfg.backbone.text.get("vocab_size") is None:  # tiny: the vocabulary is the tokenizer's length
        from action_decoder.data.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(cfg.backbone.text)
    model = build_model(cfg, tokenizer, empty_weights=True)
    counts = count(model)
    print(f"config: {' '.join(overrides)}")
    for name, value in counts.items():
        extra = f"  ({value / 2**20:,.1f} MiB)" if name.endswith("bytes_bf16") or name.endswith("bytes_fp32") else ""
        print(f"{name:>22}: {value:>15,}{extra}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"overrides": overrides, **counts}, indent=2) + "\n")
    return counts


if __name__ == "__main__":
    main(sys.argv[1:])
