"""The published architectures at their real sizes without a download (random-init towers, the Qwen3 BPE rebuilt
offline) and a batch of the presets' shape, for timing real steps (scripts/real_size_step.py, bench/bench_gpu.py)."""
from __future__ import annotations

import torch

from action_decoder.config import load_config

RANDOM_INIT = ["backbone.vision.name_or_path=null", "backbone.text.name_or_path=null",
               "backbone.text.tokenizer=qwen3_offline"]
# The same towers, parts and LoRA targets at tiny widths and depths: --quick runs of the scripts above on a CPU take
# the real path (bf16 towers, checkpointing, the Qwen3 vocabulary) in seconds.
SHRUNK = ["backbone.vision.hidden_size=64", "backbone.vision.intermediate_size=128",
          "backbone.vision.num_hidden_layers=1", "backbone.vision.num_attention_heads=2",
          "backbone.vision.image_size=28",
          "backbone.text.hidden_size=64", "backbone.text.intermediate_size=128", "backbone.text.num_hidden_layers=1",
          "backbone.text.num_attention_heads=4", "backbone.text.num_key_value_heads=2", "backbone.text.head_dim=16",
          "model.d_model=32", "model.num_heads=4", "model.ffn_dim=64"]
PROMPT = "Rename the file report.txt to final.txt, then open it"
NARRATION = ["", "now I right-click the file and pick rename", "", "type final.txt and press enter"]


def real_config(experiment: str, *overrides: str):
    return load_config([f"experiment={experiment}", *RANDOM_INIT, *overrides])


def synthetic_batch(cfg, tokenizer, batch: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the documented shapes (data/README.md §3) at cfg's image size: random pixels, real tokens."""
    g = torch.Generator().manual_seed(seed)
    size = cfg.backbone.vision.image_size
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    S = int(cfg.data.max_transcript_tokens)
    prompt = tokenizer([PROMPT] * batch, padding="max_length", max_length=int(cfg.data.max_prompt_tokens),
                       truncation=True, return_tensors="pt")
    ids = torch.full((batch, frames, S), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(batch, frames, S, dtype=torch.bool)
    for t in range(frames):
        tok = tokenizer(NARRATION[t % len(NARRATION)])["input_ids"][:S]
        ids[:, t, :len(tok)] = torch.tensor(tok, dtype=torch.long)
        mask[:, t, :len(tok)] = True
    click = torch.rand(batch, frames, generator=g) < 0.5
    return {
        "pixels": torch.randn(batch, frames, 3, h, w, generator=g),
        "prompt_ids": prompt["input_ids"], "prompt_mask": prompt["attention_mask"].bool(),
        "action": torch.randint(0, len(cfg.labels.actions), (batch, frames), generator=g),
        "key": torch.randint(0, len(cfg.labels["keys"]), (batch, frames), generator=g),
        "modifier": torch.randint(0, len(cfg.labels.modifiers), (batch, frames), generator=g),
        "click_xy": torch.rand(batch, frames, 2, generator=g), "click_mask": click,
        "transcript_ids": ids, "transcript_mask": mask,
    }
