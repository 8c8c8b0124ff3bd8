"""Streaming (KV-cached) vs naive (re-run the whole sequence every step) inference of model=parallel.

    python bench/bench_inference.py [--lengths 8 16 32] [--batch 4] [--repeats 1] [--out FILE]
    python bench/bench_inference.py --quick        # T = 2 / 4, B = 2, a 32-token prompt: checks the path

Same model, same clips, same run: frames/s of `stream(use_cache=True)` vs `stream(use_cache=False)`
for each clip length T (B=1), and batched streaming (B=--batch clips at once) vs one clip at a time.
Every frame gets the same number of transcript tokens (teacher-forced through the same step loop
as generation, `forced_ids`), so both paths do the same work whatever the random model would say;
the bench also checks both paths emit the same tokens and log-probs.

Model: the LM is where streaming saves work, so it is sized to dominate, as with Qwen3-4B behind a
small per-frame vision cost: tiny encoder (32 px frames, 16 tokens), a 4-layer 256-wide Qwen3, a
256-token prompt (--prompt-tokens), 4 visual tokens + 8 text tokens + eof per frame.
Writes bench/results/bench_inference.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from action_decoder.config import load_config
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "bench_inference.json"
QUICK = {"lengths": [2, 4], "batch": 2, "batch_length": 2, "prompt_tokens": 32}
OVERRIDES = [
    "backbone.vision.name_or_path=null",  # random-init towers: timing does not depend on the weights
    "backbone.text.name_or_path=null",
    "model=parallel", "model.d_model=64", "model.num_heads=4", "model.ffn_dim=128",
    "model.lm_visual_tokens=4", "model.max_text_tokens=8", "model.dropout=0",
    "backbone.vision.image_size=32",
    "backbone.vision.patch_size=8",
    "backbone.text.hidden_size=256", "backbone.text.intermediate_size=768", "backbone.text.num_hidden_layers=4",
    "backbone.text.num_attention_heads=4", "backbone.text.num_key_value_heads=2", "backbone.text.head_dim=64",
    "backbone.text.max_position_embeddings=2048",
]
TEXT_TOKENS = 8


def make_inputs(tokenizer, B: int, T: int, prompt_tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(B, T, 3, 32, 32, generator=g)
    prompt = torch.randint(4, len(tokenizer), (B, prompt_tokens), generator=g)
    text = torch.randint(4, len(tokenizer), (B, T, TEXT_TOKENS), generator=g)
    return pixels, prompt, torch.ones_like(prompt, dtype=torch.bool), text, torch.ones_like(text, dtype=torch.bool)


def timed(model, inputs, use_cache: bool, repeats: int):
    pixels, prompt, pmask, text, tmask = inputs
    best, steps = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        steps = list(model.stream(pixels, prompt, pmask, use_cache=use_cache, forced_ids=text, forced_mask=tmask))
        best = min(best, time.perf_counter() - t0)
    return best, steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batch-length", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (explicit flags still win): checks the path")
    if ap.parse_known_args(argv)[0].quick:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer("small")
    torch.manual_seed(0)
    model = build_model(load_config(OVERRIDES), tokenizer).eval()
    text = model.text.config
    timed(model, make_inputs(tokenizer, 1, 2, args.prompt_tokens), True, 1)  # warm-up (allocator, kernels)

    rows = []
    for T in args.lengths:
        inputs = make_inputs(tokenizer, 1, T, args.prompt_tokens)
        t_stream, s_stream = timed(model, inputs, True, args.repeats)
        t_naive, s_naive = timed(model, inputs, False, args.repeats)
        same_tokens = [s.token_ids for s in s_stream] == [s.token_ids for s in s_naive]
        max_logprob_diff = max(abs(a - b) for x, y in zip(s_stream, s_naive)
                               for a, b in zip(sum(x.token_logprobs, []), sum(y.token_logprobs, [])))
        rows.append({"T": T, "B": 1, "stream_s": t_stream, "naive_s": t_naive,
                     "stream_frames_per_s": T / t_stream, "naive_frames_per_s": T / t_naive,
                     "speedup": t_naive / t_stream, "same_tokens": same_tokens,
                     "max_logprob_diff": max_logprob_diff})
        print(f"T={T:3d}  stream {T / t_stream:7.1f} frames/s  naive {T / t_naive:7.1f} frames/s  "
              f"speed-up {t_naive / t_stream:5.1f}x  same tokens: {same_tokens}")

    Tb, Bb = args.batch_length, args.batch
    batched_inputs = make_inputs(tokenizer, Bb, Tb, args.prompt_tokens, seed=1)
    t_batched, s_batched = timed(model, batched_inputs, True, args.repeats)
    t_single = 0.0
    same = True
    for b in range(Bb):
        one = tuple(x[b:b + 1] for x in batched_inputs)
        t_one, s_one = timed(model, one, True, args.repeats)
        t_single += t_one
        same &= [s.token_ids[0] for s in s_one] == [s.token_ids[b] for s in s_batched]
    batched = {"T": Tb, "B": Bb, "batched_s": t_batched, "one_by_one_s": t_single,
               "batched_frames_per_s": Bb * Tb / t_batched, "one_by_one_frames_per_s": Bb * Tb / t_single,
               "speedup": t_single / t_batched, "same_tokens": same}
    print(f"batched streaming B={Bb} T={Tb}: {Bb * Tb / t_batched:.1f} frames/s vs one clip at a time "
          f"{Bb * Tb / t_single:.1f} frames/s ({t_single / t_batched:.1f}x)")

    result = {
        "what": "model=parallel inference: KV-cached streaming vs naive full re-run per step; batched streaming",
        "model": {"lm_hidden": text.hidden_size, "lm_layers": text.num_hidden_layers, "vocab": text.vocab_size,
                  "prompt_tokens": args.prompt_tokens, "visual_tokens_per_frame": model.transcript.config.lm_visual_tokens,
                  "text_tokens_per_frame": TEXT_TOKENS, "image_size": 32, "overrides": OVERRIDES},
        "quick": args.quick, "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "machine": platform.machine(), "per_length": rows, "batched": batched,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
