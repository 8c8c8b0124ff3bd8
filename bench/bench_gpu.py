"""Real configuration on one GPU under DeepSpeed ZeRO-2: step time, clips/s, frames/s, MFU and peak memory, original
vs parallel, with and without gradient checkpointing.

    python bench/bench_gpu.py                                  # 4 runs: {original, parallel} x {checkpointing on, off}
    python bench/bench_gpu.py --batch 4 --frames 16 --steps 5 --models parallel --checkpointing on
    python bench/bench_gpu.py --launch plain                   # one process without DeepSpeed (no deepspeed installed)
    python bench/bench_gpu.py --quick                          # tiny widths, 2 frames, 1 step; runs on a CPU too

Each run is its own process started by `accelerate launch --config_file conf/accelerate/deepspeed_zero2.yaml
--num_processes 1` (as train.py is launched for the presets), and builds `experiment=march10_baseline` (original) or
`experiment=new_arch` (parallel) with random-init towers at the published sizes (bf16). Everything a training step
needs is built as train.py builds it (training/setup.py: make_accelerator, make_optimizer, make_loss of the last
curriculum stage, which trains every head; the warmup-cosine schedule; accelerator.prepare), and every optimizer step
is training/throughput.py's `timed_step`: `train_step` on `train.grad_accum` micro-batches of a synthetic batch of the
preset's shape (training/real_size.py: random pixels, a tokenized prompt and narration). One warm-up step (it also
counts the FLOPs with torch's FlopCounterMode), then `--steps` timed steps, the median reported; MFU = FLOPs / step
time / the device's dense bf16 peak. Peak memory: `torch.cuda.max_memory_allocated` over the timed steps; on a CPU
(no CUDA: `--quick` in CI) precision is fp32 and the peak is the host's resident set (VmHWM). An out-of-memory run is
recorded as such; any other failure makes the exit status 1. Writes bench/results/bench_gpu.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_gpu.json"
EXPERIMENTS = {"original": "march10_baseline", "parallel": "new_arch"}
ZERO2 = ROOT / "conf" / "accelerate" / "deepspeed_zero2.yaml"
QUICK = {"models": ["original"], "checkpointing": ["on"], "batch": 1, "frames": 2, "steps": 1}


def measure(model_name: str, checkpointing: bool, batch: int, frames: int, steps: int, quick: bool) -> dict:
    from accelerate.utils import set_seed

    from action_decoder.data.loader import to_device
    from action_decoder.data.tokenizer import build_tokenizer
    from action_decoder.models.build import build_model
    from action_decoder.training.curriculum import build_stages
    from action_decoder.training.real_size import SHRUNK, real_config, synthetic_batch
    from action_decoder.training.setup import make_accelerator, make_loss, make_optimizer, warmup_cosine
    from action_decoder.training.throughput import peak_bf16_flops, proc_status_bytes, reset_peak_rss, timed_step

    cuda = torch.cuda.is_available()
    overrides = [f"data.clip_len={frames}", f"train.batch_size={batch}",
                 f"backbone.gradient_checkpointing={str(checkpointing).lower()}"]
    if quick:  # the char-level tokenizer: the Qwen3 BPE's 151,669 entries take longer to load than the step
        overrides += [*SHRUNK, "backbone.text.tokenizer=small", "backbone.text.vocab_size=null"]
    if not cuda:
        overrides.append("train.mixed_precision=no")  # bf16 autocast is a GPU measurement
    cfg = real_config(EXPERIMENTS[model_name], *overrides)
    tc = cfg.train
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    set_seed(cfg.seed)
    tokenizer = build_tokenizer(cfg.backbone.text)
    t0 = time.perf_counter()
    model = build_model(cfg, tokenizer)
    build_s = time.perf_counter() - t0
    optimizer = make_optimizer(model, accelerator, tc)
    total = steps + 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, int(tc.warmup_ratio * total)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    loss_fn = make_loss(build_stages(cfg)[-1], cfg, accelerator, None)  # no class balance in the presets
    micro = [to_device(synthetic_batch(cfg, tokenizer, batch, frames, seed=i), device) for i in range(tc.grad_accum)]
    model.train()

    def step(count_flops: bool = False):
        timed = timed_step(model, micro, loss_fn, optimizer, scheduler, accelerator, tc.max_grad_norm, count_flops)
        if not timed.taken:
            raise RuntimeError(f"non-finite loss: { {k: float(v) for k, v in timed.results[-1].losses.items()} }")
        return timed

    flops = step(count_flops=True).flops  # warm-up: allocator, kernels, DeepSpeed buffers
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    timed = [step() for _ in range(steps)]
    times = [t.seconds for t in timed]
    step_s = sorted(times)[len(times) // 2]
    clips = batch * tc.grad_accum
    peak = peak_bf16_flops(device)
    return {"model": model_name, "experiment": EXPERIMENTS[model_name], "gradient_checkpointing": checkpointing,
            "distributed_type": str(accelerator.distributed_type), "mixed_precision": accelerator.mixed_precision,
            "batch": batch, "grad_accum": int(tc.grad_accum), "frames": frames,
            "image_size": cfg.backbone.vision.image_size if isinstance(cfg.backbone.vision.image_size, int)
            else list(cfg.backbone.vision.image_size), "quick": quick,
            "build_s": build_s, "step_s": step_s, "step_times": times, "clips_per_s": clips / step_s,
            "frames_per_s": clips * frames / step_s, "flops_per_step": flops,
            "mfu": flops / step_s / peak if peak else None,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else proc_status_bytes("VmHWM"),
            "peak_memory": "cuda max_memory_allocated" if cuda else "host resident set (VmHWM)",
            "last_loss": float(timed[-1].results[-1].losses["total"].detach()),
            "device": torch.cuda.get_device_name(device) if cuda else "cpu"}


def child_command(args, name: str, ckpt: str, out: Path) -> list[str]:
    script = [__file__, "--child", f"{name},{ckpt}", "--child-out", str(out), "--batch", str(args.batch),
              "--frames", str(args.frames), "--steps", str(args.steps), *(["--quick"] if args.quick else [])]
    if args.launch == "plain":
        return [sys.executable, *script]
    # One process, ZeRO-2 as the presets train; fp32 where there is no GPU (the config says bf16).
    precision = [] if torch.cuda.is_available() else ["--mixed_precision", "no"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO2), "--num_processes", "1",
            "--main_process_port", "0", *precision, *script]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["original", "parallel"], choices=list(EXPERIMENTS))
    ap.add_argument("--checkpointing", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--batch", type=int, default=4, help="clips per micro-step (the presets' train.batch_size)")
    ap.add_argument("--frames", type=int, default=16, help="frames per clip (the presets' data.clip_len)")
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run (median reported)")
    ap.add_argument("--launch", choices=["zero2", "plain"], default="zero2",
                    help="zero2: accelerate launch with conf/accelerate/deepspeed_zero2.yaml on one process; "
                         "plain: one process, no DeepSpeed")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="tiny widths, 2 frames, 1 step (explicit flags still win); "
                    "runs on a CPU, so CI catches a change that breaks this path")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # "model,on|off": one run in this process
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    if ap.parse_known_args(argv)[0].quick:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    if args.child:
        name, ckpt = args.child.split(",")
        try:
            got = measure(name, ckpt == "on", args.batch, args.frames, args.steps, args.quick)
        except torch.cuda.OutOfMemoryError as err:
            got = {"model": name, "gradient_checkpointing": ckpt == "on", "batch": args.batch,
                   "frames": args.frames, "out_of_memory": str(err).splitlines()[0]}
        args.child_out.write_text(json.dumps(got))
        return 0
    if not torch.cuda.is_available() and not args.quick:
        print("bench_gpu.py measures a CUDA GPU and none is visible here (torch.cuda.is_available() is False); "
              "nothing measured (--quick runs the same path on a CPU at tiny sizes)", file=sys.stderr)
        return 2
    runs, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for ckpt in args.checkpointing:
                out = Path(tmp) / f"{name}_{ckpt}.json"
                proc = subprocess.run(child_command(args, name, ckpt, out), capture_output=True, text=True)
                if proc.returncode != 0 or not out.is_file():
                    failed = True
                    print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", file=sys.stderr)
                    runs.append({"model": name, "gradient_checkpointing": ckpt == "on",
                                 "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
                else:
                    runs.append(json.loads(out.read_text()))
                r = runs[-1]
                if "step_s" in r:
                    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
                    print(f"{name:8s} checkpointing {ckpt:3s}: {r['step_s']:.3f} s/step, {r['clips_per_s']:.2f} "
                          f"clips/s, {r['frames_per_s']:.1f} frames/s, MFU {mfu}, peak "
                          f"{r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['peak_memory']})", flush=True)
                else:
                    print(f"{name:8s} checkpointing {ckpt:3s}: {r.get('out_of_memory') or r.get('error')}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"what": "real configuration, random-init towers, one GPU, DeepSpeed ZeRO-2, bf16",
                                    "launch": args.launch, "quick": args.quick, "torch": torch.__version__,
                                    "machine": platform.machine(), "runs": runs}, indent=1))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
