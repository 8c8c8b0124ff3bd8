"""Real-size training steps on CPU: the published architectures with random-init towers, no download.

    python scripts/real_size_step.py                                   # march10_baseline and new_arch
    python scripts/real_size_step.py --experiments new_arch --steps 1 --json out.json
    python scripts/real_size_step.py --quick --experiments march10_baseline   # tiny widths: checks the path

For each experiment: builds the model at the real sizes (OneVision-encoder-large + Qwen3-4B, random init from
backbone.init_seed, bf16 towers, gradient checkpointing, LoRA on the real module names), runs `--steps` optimizer
steps on a clip of `--frames` frames at 224 px (batch 1, one micro-step a step; random pixels, a tokenized prompt
and narration), then saves the trainable state to a file, scrambles every trainable tensor, reloads the file
strictly and checks that the outputs are identical to those before the save. Prints and writes time and peak host
RAM (VmHWM). The step is train.py's: the Accelerator, optimizer, schedule and loss (of the last curriculum stage,
which trains every head) built by training/setup.py, each step training/throughput.py's `timed_step`.

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

from accelerate.utils import set_seed

from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.training.curriculum import build_stages
from action_decoder.training.real_size import SHRUNK, real_config, synthetic_batch
from action_decoder.training.setup import make_accelerator, make_loss, make_optimizer, warmup_cosine
from action_decoder.training.throughput import proc_status_bytes, reset_peak_rss, timed_step

OUTPUTS = ("action_logits", "key_logits", "modifier_logits", "click_logits", "transcript_hidden")
ONE_CLIP = ["train.batch_size=1", "train.grad_accum=1"]  # one clip a micro-step, one micro-step an optimizer step
QUICK = [*SHRUNK, "backbone.text.tokenizer=small", "backbone.text.vocab_size=null"]


def run(experiment: str, steps: int, frames: int, overrides: list[str] = ()) -> dict:
    cfg = real_config(experiment, f"data.clip_len={frames}", *ONE_CLIP, *overrides)
    tc = cfg.train
    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed)
    tokenizer = build_tokenizer(cfg.backbone.text)
    reset_peak_rss()  # peak RSS from here on
    t0 = time.perf_counter()
    model = build_model(cfg, tokenizer)
    build_s = time.perf_counter() - t0
    optimizer = make_optimizer(model, accelerator, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, int(tc.warmup_ratio * steps)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = make_loss(build_stages(cfg)[-1], cfg, accelerator, None)  # every loss (the transcript too, for new_arch)
    batch = synthetic_batch(cfg, tokenizer, 1, frames)
    model.train()
    step_s, losses = [], []
    for _ in range(steps):
        timed = timed_step(model, [batch], loss_fn, optimizer, scheduler, accelerator, tc.max_grad_norm)
        step_s.append(timed.seconds)
        losses.append({k: float(v.detach()) for k, v in timed.results[-1].losses.items()})
        print(f"{experiment}: step {len(step_s)} {step_s[-1]:.1f} s, losses {losses[-1]}", flush=True)
        if not timed.taken:
            raise RuntimeError(f"{experiment}: non-finite loss at step {len(step_s)}")

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
        "backbone_dtype": str(cfg.backbone.dtype), "mixed_precision": accelerator.mixed_precision,
        "gradient_checkpointing": bool(cfg.backbone.gradient_checkpointing),
        "parameters": sum(p.numel() for p in model.parameters()), "trainable_tensors": len(state),
        "build_s": build_s, "step_s": step_s, "losses": losses, "checkpoint_bytes": ckpt_bytes,
        "scramble_changed_outputs": not torch.equal(scrambled, before.action_logits),
        "reload_identical": identical, "compared": fields, "peak_rss_bytes": proc_status_bytes("VmHWM"),
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
    ap.add_argument("--quick", action="store_true", help="tiny widths (training/real_size.py SHRUNK): checks the path")
    args = ap.parse_args()
    if args.quick:
        args.overrides = [*QUICK, *args.overrides]
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
