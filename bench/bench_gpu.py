"""Real configuration on one CUDA GPU: step time, clips/s, MFU and peak memory, original vs parallel, with and
without gradient checkpointing. Runs only where CUDA exists.

    python bench/bench_gpu.py                                  # 4 runs: {original, parallel} x {checkpointing on, off}
    python bench/bench_gpu.py --batch 4 --frames 16 --steps 5 --models parallel --checkpointing on

Each run builds `experiment=march10_baseline` (original) or `experiment=new_arch` (parallel) with random-init towers
at the published sizes (bf16), in its own process, and times `--steps` AdamW steps (after 2 warm-up steps) under bf16
autocast on a synthetic batch of the preset's shape (scripts/real_size_step.py's batch: random pixels, a tokenized
prompt and narration). FLOPs per step are counted by torch's FlopCounterMode on one step; MFU = FLOPs / step time /
the device's dense bf16 peak. An out-of-memory run is recorded as such. Writes bench/results/bench_gpu.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_gpu.json"
EXPERIMENTS = {"original": "march10_baseline", "parallel": "new_arch"}


def measure(model_name: str, checkpointing: bool, batch: int, frames: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    from real_size_step import real_config, synthetic_batch
    from torch.utils.flop_counter import FlopCounterMode

    from action_decoder.data.tokenizer import build_tokenizer
    from action_decoder.models.build import build_model
    from action_decoder.models.losses import build_loss
    from action_decoder.training.throughput import peak_bf16_flops

    device = torch.device("cuda")
    cfg = real_config(EXPERIMENTS[model_name], f"data.clip_len={frames}",
                      f"backbone.gradient_checkpointing={str(checkpointing).lower()}")
    tokenizer = build_tokenizer(cfg.backbone.text)
    t0 = time.perf_counter()
    model = build_model(cfg, tokenizer).to(device)
    build_s = time.perf_counter() - t0
    data = {k: v.to(device) for k, v in synthetic_batch(cfg, tokenizer, batch, frames).items()}
    loss_fn = build_loss(cfg.loss)
    groups = model.parameter_groups()
    optimizer = torch.optim.AdamW([{"params": groups["lora"], "lr": 1e-4}, {"params": groups["new"], "lr": 1e-4}])
    model.train()

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(data), data)["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    peak = peak_bf16_flops(device)
    return {"model": model_name, "experiment": EXPERIMENTS[model_name], "gradient_checkpointing": checkpointing,
            "batch": batch, "frames": frames, "image_size": int(cfg.backbone.vision.image_size),
            "build_s": build_s, "step_s": step_s, "step_times": times, "clips_per_s": batch / step_s,
            "flops_per_step": flops, "mfu": flops / step_s / peak if peak else None,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(), "last_loss": loss,
            "device": torch.cuda.get_device_name(device)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["original", "parallel"], choices=list(EXPERIMENTS))
    ap.add_argument("--checkpointing", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--batch", type=int, default=4, help="clips per step (the presets' train.batch_size)")
    ap.add_argument("--frames", type=int, default=16, help="frames per clip (the presets' data.clip_len)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run (median reported)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # "model,on|off": one run in this process
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False); "
              "nothing measured", file=sys.stderr)
        return 2
    if args.child:
        name, ckpt = args.child.split(",")
        try:
            print(json.dumps(measure(name, ckpt == "on", args.batch, args.frames, args.steps)))
        except torch.cuda.OutOfMemoryError as err:
            print(json.dumps({"model": name, "gradient_checkpointing": ckpt == "on", "batch": args.batch,
                              "frames": args.frames, "out_of_memory": str(err).splitlines()[0]}))
        return 0
    runs = []
    for name in args.models:
        for ckpt in args.checkpointing:
            cmd = [sys.executable, __file__, "--child", f"{name},{ckpt}", "--batch", str(args.batch),
                   "--frames", str(args.frames), "--steps", str(args.steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                runs.append({"model": name, "gradient_checkpointing": ckpt == "on",
                             "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            if "step_s" in r:
                mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
                print(f"{name:8s} checkpointing {ckpt:3s}: {r['step_s']:.3f} s/step, {r['clips_per_s']:.2f} clips/s, "
                      f"MFU {mfu}, peak {r['peak_memory_bytes'] / 2**30:.1f} GiB", flush=True)
            else:
                print(f"{name:8s} checkpointing {ckpt:3s}: {r.get('out_of_memory') or r.get('error')}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"what": "real configuration, random-init towers, one GPU, bf16 autocast",
                                   "torch": torch.__version__, "machine": platform.machine(), "runs": runs}, indent=1))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
