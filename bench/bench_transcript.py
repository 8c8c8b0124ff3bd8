"""Transcript loss at Qwen3-4B's LM head: chunked logits at target rows vs full logits at every slot.

    python bench/bench_transcript.py [--batch 1 4] [--frames 16] [--slots 16] [--repeats 2] [--out FILE]
    python bench/bench_transcript.py --quick      # a 4,096-token vocabulary 64 wide, B=1, T=2, S=4: checks the path

Both paths compute the same mean next-token CE (checked) and its gradient w.r.t. the LM hidden states (and
the logit temperature), from the same bf16 hidden states [B, T, S+1, 2560] and the same frozen bf16 LM head
(2560 -> 151,936, bias-free, as Qwen3-4B's tied head):
  ours      `losses.transcript_loss` on the temperature-scaled hidden states: logits only at target rows,
            `LOGITS_PER_CHUNK` at a time, remade in the backward pass.
  baseline  the previous implementation: logits at all B*T*(S+1) slots, times the temperature (a second
            vocab-wide tensor), then fp32 cross-entropy over the target rows.
Frame texts have random lengths 0..S (a third of the frames silent, one frame per clip at S), as narration is.

Peak memory = the loss's forward + backward on top of what was allocated before it: on CUDA
`max_memory_allocated`; on CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs) minus the
resident set before, each path in its own fresh process so one path's freed pages do not hide the other's.
Writes bench/results/bench_transcript.json (or --out).
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
import torch.nn.functional as F

from action_decoder.data.vocab import IGNORE_INDEX
from action_decoder.models.losses import LOGITS_PER_CHUNK, transcript_loss
from action_decoder.training.throughput import proc_status_bytes, reset_peak_rss

RESULTS = Path(__file__).resolve().parent / "results" / "bench_transcript.json"
VOCAB, WIDTH = 151_936, 2560  # Qwen3-4B: vocab_size, hidden_size
QUICK = {"vocab": 4096, "width": 64, "batch": [1], "frames": 2, "slots": 4, "repeats": 1}


def make_inputs(B: int, T: int, S: int, device: str, vocab: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(width, vocab, bias=False, dtype=torch.bfloat16, device=device).requires_grad_(False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, width, generator=g) * 0.02)
    hidden = (torch.randn(B, T, S + 1, width, generator=g) * 3).to(torch.bfloat16).to(device).requires_grad_(True)
    scale = torch.zeros((), device=device, requires_grad=True)  # the learned log-temperature
    lengths = torch.randint(0, S + 1, (B, T), generator=g)
    lengths[torch.rand(B, T, generator=g) < 1 / 3] = 0
    lengths[:, 0] = S
    slot = torch.arange(S + 1)
    targets = torch.randint(0, vocab, (B, T, S + 1), generator=g)
    targets[slot > lengths.unsqueeze(-1)] = IGNORE_INDEX
    return head, hidden, scale, targets.to(device)


def loss_ours(head, hidden, scale, targets):
    return transcript_loss(hidden * scale.exp().to(hidden.dtype), targets, head)


def loss_baseline(head, hidden, scale, targets):
    logits = head(hidden) * scale.exp().to(hidden.dtype)
    valid = targets != IGNORE_INDEX
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1])[valid.reshape(-1)].float(), targets[valid])


def measure(path: str, B: int, T: int, S: int, repeats: int, device: str, vocab: int, width: int) -> dict:
    """One path, in this process: peak extra memory of one forward + backward, best time of `repeats`."""
    fn = {"ours": loss_ours, "baseline": loss_baseline}[path]
    head, hidden, scale, targets = make_inputs(B, T, S, device, vocab, width)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        before = proc_status_bytes("VmRSS")
    t0 = time.perf_counter()
    loss = fn(head, hidden, scale, targets)
    grads = torch.autograd.grad(loss, [hidden, scale])
    if cuda:
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda else proc_status_bytes("VmHWM")) - before
    times = [first]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        torch.autograd.grad(fn(head, hidden, scale, targets), [hidden, scale])
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"path": path, "loss": float(loss), "grad_hidden_norm": float(grads[0].float().norm()),
            "grad_scale": float(grads[1]), "target_rows": int((targets != IGNORE_INDEX).sum()),
            "slots": B * T * (S + 1), "peak_bytes": peak, "seconds": min(times)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--slots", type=int, default=16, help="S: text slots per frame (the longest text)")
    ap.add_argument("--repeats", type=int, default=2, help="best time of this many forward + backward passes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab", type=int, default=VOCAB, help="LM head rows (Qwen3-4B's by default)")
    ap.add_argument("--width", type=int, default=WIDTH, help="LM hidden size (Qwen3-4B's by default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (explicit flags still win): checks the path")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # "path,B": measure one path in this process
    if ap.parse_known_args(argv)[0].quick:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    T, S = args.frames, args.slots
    if args.child:
        path, B = args.child.split(",")
        print(json.dumps(measure(path, int(B), T, S, args.repeats, args.device, args.vocab, args.width)))
        return

    rows = []
    for B in args.batch:
        got = {}
        for path in ("baseline", "ours"):
            cmd = [sys.executable, __file__, "--child", f"{path},{B}", "--frames", str(T), "--slots", str(S),
                   "--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device,
                   "--vocab", str(args.vocab), "--width", str(args.width)]
            got[path] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        ours, base = got["ours"], got["baseline"]
        row = {"B": B, "T": T, "S": S, "target_rows": ours["target_rows"], "slots": ours["slots"],
               "ours": ours, "baseline": base,
               "memory_ratio": base["peak_bytes"] / max(1, ours["peak_bytes"]),
               "time_ratio": base["seconds"] / ours["seconds"],
               "loss_abs_diff": abs(ours["loss"] - base["loss"]),
               "grad_scale_abs_diff": abs(ours["grad_scale"] - base["grad_scale"])}
        rows.append(row)
        print(f"B={B} T={T} S={S} ({row['target_rows']} target rows of {row['slots']} slots): "
              f"peak {ours['peak_bytes'] / 2**20:,.0f} MiB vs {base['peak_bytes'] / 2**20:,.0f} MiB "
              f"({row['memory_ratio']:.1f}x less), {ours['seconds']:.2f} s vs {base['seconds']:.2f} s; "
              f"loss {ours['loss']:.4f} vs {base['loss']:.4f}")

    result = {"what": "transcript loss fwd+bwd at Qwen3-4B's LM head: chunked target-row logits vs full logits",
              "vocab": args.vocab, "width": args.width, "quick": args.quick, "logits_per_chunk": LOGITS_PER_CHUNK, "device": args.device,
              "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
              "machine": platform.machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
