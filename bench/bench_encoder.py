"""Native OneVision encoder (SDPA) vs a plain eager encoder (explicit softmax attention), same weights.

Times forward+backward per call and measures peak memory of one forward+backward, for
  eager      : baseline, softmax(QK^T/sqrt(hd))V written out (attn_implementation="eager")
  sdpa       : ours, torch scaled_dot_product_attention
  sdpa_ckpt  : ours + gradient checkpointing per layer
All variants share one set of weights and one input; timings are interleaved per iteration so the
shared CPU's load hits every variant alike. Memory:
  cuda: torch.cuda.max_memory_allocated() minus the allocation before the step;
  cpu : peak RSS (/proc VmHWM) minus RSS before the step, each variant in a fresh child
        process (tracemalloc does not see torch's allocator);
  both: bytes autograd saves for backward (distinct non-parameter storages), a deterministic figure.

    python bench/bench_encoder.py                          # D=256, 4 layers, 8 frames 112x112, patch 14
    python bench/bench_encoder.py --device cuda --frames 16 --image-size 224
    python bench/bench_encoder.py --quick                  # D=64, 1 layer, 2 frames 28x28, 2 timed calls
Writes bench/results/bench_encoder.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from action_decoder.models.towers.onevision_encoder import OneVisionEncoder, OneVisionEncoderConfig
from action_decoder.training.throughput import proc_status_bytes, reset_peak_rss

VARIANTS = ("eager", "sdpa", "sdpa_ckpt")
BASELINE = "eager"
QUICK = {"hidden_size": 64, "layers": 1, "heads": 2, "batch": 1, "frames": 2, "image_size": 28, "iters": 2,
         "warmup": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=256)  # D
    p.add_argument("--layers", type=int, default=4)  # encoder layers
    p.add_argument("--heads", type=int, default=4)  # attention heads (head_dim must be a multiple of 32)
    p.add_argument("--intermediate-size", type=int, default=None)  # MLP width; default 4*D
    p.add_argument("--batch", type=int, default=2)  # clips per call
    p.add_argument("--frames", type=int, default=8)  # T frames per clip
    p.add_argument("--image-size", type=int, default=112)  # frame side in pixels
    p.add_argument("--patch-size", type=int, default=14)  # P
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--iters", type=int, default=20)  # timed calls per variant
    p.add_argument("--warmup", type=int, default=2)  # untimed calls per variant first
    p.add_argument("--threads", type=int, default=None)  # torch CPU threads; default torch's choice
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_encoder.json"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (explicit flags still win): checks the path")
    p.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one CPU memory probe
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)
    return p.parse_args(argv)


def build(args):
    torch.manual_seed(0)
    cfg = OneVisionEncoderConfig(
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        patch_size=args.patch_size,
        image_size=args.image_size,
    )
    dtype = getattr(torch, args.dtype)
    model = OneVisionEncoder(cfg).to(args.device, dtype).train()
    video = torch.randn(
        args.batch, 3, args.frames, args.image_size, args.image_size, device=args.device, dtype=dtype
    )
    return model, video


def set_variant(model, variant):
    model.attn_implementation = "eager" if variant == "eager" else "sdpa"
    model.gradient_checkpointing = variant == "sdpa_ckpt"


def step(model, video):
    hidden, pooled = model(video)
    (hidden.float().square().mean() + pooled.float().square().mean()).backward()
    model.zero_grad(set_to_none=True)
    return hidden.detach(), pooled.detach()


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def saved_for_backward_bytes(model, video):
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden, pooled = model(video)
    (hidden.float().square().mean() + pooled.float().square().mean()).backward()
    model.zero_grad(set_to_none=True)
    return total


def cpu_peak_child(args, variant):
    """Runs in a fresh process: peak RSS growth of one forward+backward.

    VmHWM (this process's RSS high-water mark) rather than ru_maxrss, which Linux carries over
    from the parent across exec. Writing 5 to clear_refs resets the mark so building the model
    and the warm-up step do not count.
    """
    model, video = build(args)
    set_variant(model, variant)
    # The first step in a process maps one-off kernel/library state: warm up, then measure.
    step(model, video)
    try:
        reset_peak_rss()
    except OSError:
        pass  # no reset: the build's own peak may then hide part of the step's
    before = proc_status_bytes("VmRSS")
    step(model, video)
    return max(0, proc_status_bytes("VmHWM") - before)


def peak_memory(args, model, video, variant):
    if torch.device(args.device).type == "cuda":
        set_variant(model, variant)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(model, video)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    cmd = [sys.executable, __file__, "--memory-child", variant] + args.argv
    # A fixed mmap threshold makes glibc map/unmap every large tensor, so RSS follows live
    # tensors instead of malloc's cached heap (the dynamic threshold otherwise skews the peak).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a memory child is started with
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(cpu_peak_child(args, args.memory_child))
        return

    model, video = build(args)
    tokens = args.frames * (args.image_size // args.patch_size) ** 2

    outputs = {}
    for v in VARIANTS:
        set_variant(model, v)
        for _ in range(args.warmup):
            outputs[v] = step(model, video)
    times = {v: [] for v in VARIANTS}
    for _ in range(args.iters):
        for v in VARIANTS:
            set_variant(model, v)
            sync(args.device)
            t0 = time.perf_counter()
            step(model, video)
            sync(args.device)
            times[v].append(time.perf_counter() - t0)

    results = {}
    for v in VARIANTS:
        set_variant(model, v)
        results[v] = {
            "fwd_bwd_ms_median": 1000 * statistics.median(times[v]),
            "fwd_bwd_ms_min": 1000 * min(times[v]),
            "peak_memory_mb": peak_memory(args, model, video, v) / 2**20,
            "saved_for_backward_mb": saved_for_backward_bytes(model, video) / 2**20,
            "max_abs_diff_vs_eager": max(
                (a - b).abs().max().item() for a, b in zip(outputs[v], outputs[BASELINE])
            ),
        }
    base = results[BASELINE]
    for v in VARIANTS:
        r = results[v]
        r["time_ratio_vs_eager"] = r["fwd_bwd_ms_median"] / base["fwd_bwd_ms_median"]
        # Min over interleaved calls: the figure least disturbed by other load on a shared CPU.
        r["time_ratio_vs_eager_min"] = r["fwd_bwd_ms_min"] / base["fwd_bwd_ms_min"]
        r["peak_memory_ratio_vs_eager"] = r["peak_memory_mb"] / base["peak_memory_mb"] if base["peak_memory_mb"] else None
        r["saved_ratio_vs_eager"] = r["saved_for_backward_mb"] / base["saved_for_backward_mb"]

    report = {
        "benchmark": "onevision_encoder forward+backward: sdpa (ours) vs eager softmax attention",
        "config": {
            "hidden_size": args.hidden_size,
            "layers": args.layers,
            "heads": args.heads,
            "intermediate_size": args.intermediate_size or 4 * args.hidden_size,
            "batch": args.batch,
            "frames": args.frames,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "tokens_per_sample": tokens,
            "dtype": args.dtype,
            "iters": args.iters,
            "warmup": args.warmup,
        },
        "device": args.device,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "memory_method": "cuda max_memory_allocated delta"
        if torch.device(args.device).type == "cuda"
        else "peak RSS delta (/proc/self/status VmHWM, reset via clear_refs) in a fresh child process per variant",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for v in VARIANTS:
        r = results[v]
        print(
            f"{v:10s} median {r['fwd_bwd_ms_median']:7.1f} ms (x{r['time_ratio_vs_eager']:.2f})  "
            f"min {r['fwd_bwd_ms_min']:7.1f} ms (x{r['time_ratio_vs_eager_min']:.2f})  "
            f"peak {r['peak_memory_mb']:7.1f} MB (x{r['peak_memory_ratio_vs_eager'] or float('nan'):.2f})  "
            f"saved {r['saved_for_backward_mb']:7.1f} MB (x{r['saved_ratio_vs_eager']:.2f})  "
            f"max|diff| {r['max_abs_diff_vs_eager']:.1e}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
