"""Real-size training steps on CPU: the published architectures with random-init towers, no download.

    python scripts/real_size_step.py                                   # march10_baseline and new_arch
    python scripts/real_size_step.py --experiments new_arch --steps 1 --json out.json

For each experiment: builds the model at the real sizes (OneVision-encoder-large + Qwen3-4B, random init from
backbone.init_seed, bf16 towers, gradient checkpointing, LoRA on the real module names), runs `--steps` AdamW
steps on a clip of `--frames` frames at 224 px (batch 1, random pixels, a tokenized prompt and narration), then
saves the trainable state to a file, scrambles every trainable tensor, reloads the file strictly and checks that
the outputs are identical to those before the save. Prints and writes time and peak host RAM (VmHWM).

Needs ~11 GiB of free RAM per experiment (8.15 GiB of towers + activations); they run one after the other.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from action_decoder.config import load_config
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.losses import build_loss

RANDOM_INIT = ["backbone.vision.name_or_path=null", "backbone.text.name_or_path=null",
               "backbone.text.tokenizer=qwen3_offline"]  # the Qwen3 BPE rebuilt offline
PROMPT = "Rename the file report.txt to final.txt, then open it"
NARRATION = ["", "now I right-click the file and pick rename", "", "type final.txt and press enter"]
OUTPUTS = ("action_logits", "key_logits", "modifier_logits", "click_logits", "transcript_hidden")


def real_config(experiment: str, *overrides: str):
    return load_config([f"experiment={experiment}", *RANDOM_INIT, *overrides])


def synthetic_batch(cfg, tokenizer, batch: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the documented shapes (data/README.md §3) at cfg's image size: random pixels, real tokens."""
    g = torch.Generator().manual_seed(seed)
    size, S = int(cfg.backbone.vision.image_size), int(cfg.data.max_transcript_tokens)
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
        "pixels": torch.randn(batch, frames, 3, size, size, generator=g),
        "prompt_ids": prompt["input_ids"], "prompt_mask": prompt["attention_mask"].bool(),
        "action": torch.randint(0, len(cfg.labels.actions), (batch, frames), generator=g),
        "key": torch.randint(0, len(cfg.labels["keys"]), (batch, frames), generator=g),
        "modifier": torch.randint(0, len(cfg.labels.modifiers), (batch, frames), generator=g),
        "click_xy": torch.rand(batch, frames, 2, generator=g), "click_mask": click,
        "transcript_ids": ids, "transcript_mask": mask,
    }


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def run(experiment: str, steps: int, frames: int, overrides: list[str] = ()) -> dict:
    cfg = real_config(experiment, f"data.clip_len={frames}", *overrides)
    tokenizer = build_tokenizer(cfg.backbone.text)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on
    t0 = time.perf_counter()
    model = build_model(cfg, tokenizer)
    build_s = time.perf_counter() - t0
    batch = synthetic_batch(cfg, tokenizer, 1, frames)
    loss_fn = build_loss(cfg.loss)  # every loss at its configured weight (the transcript too, for new_arch)
    groups = model.parameter_groups()
    optimizer = torch.optim.AdamW([{"params": groups["lora"], "lr": cfg.train.lora_lr},
                                   {"params": groups["new"], "lr": cfg.train.lr}])
    model.train()
    step_s, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = loss_fn(model(batch), batch)
        loss["total"].backward()
        optimizer.step()
        optimizer.zero_grad()
        step_s.append(time.perf_counter() - t0)
        losses.append({k: float(v.detach()) for k, v in loss.items()})
        print(f"{experiment}: step {len(step_s)} {step_s[-1]:.1f} s, losses {losses[-1]}", flush=True)

    model.eval()
    with torch.no_grad():
        before = model(batch)
        state = model.trainable_state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trainable.pt"
            torch.save(state, path)
            ckpt_bytes = path.stat().st_size
            for name, p in model.named_parameters():  # scramble what trains; the towers come from init_seed
                if name in state:
                    p.copy_(torch.randn_like(p))
            scrambled = model(batch).action_logits
            model.load_trainable_state_dict(torch.load(path, weights_only=True))
        after = model(batch)
    fields = [f for f in OUTPUTS if getattr(before, f, None) is not None]
    identical = all(torch.equal(getattr(before, f), getattr(after, f)) for f in fields)
    result = {
        "experiment": experiment, "frames": frames, "image_size": int(cfg.backbone.vision.image_size), "batch": 1,
        "backbone_dtype": str(cfg.backbone.dtype), "gradient_checkpointing": bool(cfg.backbone.gradient_checkpointing),
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_tensors": len(state),
        "build_s": build_s, "step_s": step_s, "losses": losses, "checkpoint_bytes": ckpt_bytes,
        "scramble_changed_outputs": not torch.equal(scrambled, before.action_logits),
        "reload_identical": identical, "compared": fields, "peak_rss_bytes": _rss("VmHWM"),
    }
    print(f"{experiment}: built in {build_s:.0f} s, steps {', '.join(f'{s:.1f}' for s in step_s)} s, "
          f"peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB, save -> strict reload identical: {identical}",
          flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", nargs="+", default=["march10_baseline", "new_arch"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides (e.g. smaller sizes for a check)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if len(args.experiments) == 1:
        results = [run(args.experiments[0], args.steps, args.frames, args.overrides)]
    else:  # one process per experiment: one model in memory at a time, and its own peak RSS
        results = []
        for experiment in args.experiments:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                cmd = [sys.executable, __file__, "--experiments", experiment, "--steps", str(args.steps),
                       "--frames", str(args.frames), "--threads", str(args.threads), "--json", str(out),
                       "--overrides", *args.overrides]
                subprocess.run(cmd, check=False)
                if not out.is_file():
                    print(f"{experiment}: failed (see above)", file=sys.stderr)
                    return 1
                results += json.loads(out.read_text())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    ok = all(r["reload_identical"] and r["scramble_changed_outputs"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
