"""Pretrain the tiny OneVision encoder and the tiny Qwen3 on synthetic data the benchmark never uses.

    python scripts/pretrain_tiny_towers.py                      # -> backbone.{vision,text}.name_or_path
    python scripts/pretrain_tiny_towers.py backbone.pretrain.vision_steps=100

Writes the published layouts (encoder: config.json + model.safetensors; Qwen3: save_pretrained) and a
pretrain_report.json with the held-out probe metrics. Towers already made with the same settings are
reused (delete the folder to remake them). Objectives and why: pretraining/towers.py.
Overrides use Hydra syntax on the root config; knobs are in conf/backbone/tiny.yaml under `pretrain`.
"""
from __future__ import annotations

import sys
import time

from omegaconf import OmegaConf

from action_decoder.config import load_config
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.pretraining.towers import pretrain_towers


def main(argv: list[str]) -> None:
    cfg = load_config(argv)
    plain = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("backbone", "data")}
    start = time.perf_counter()
    folders = pretrain_towers(plain, build_tokenizer(cfg.backbone.text))
    print(f"tiny towers ready in {time.perf_counter() - start:.0f} s: "
          + ", ".join(f"{k} -> {v}" for k, v in folders.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
