"""Peak host RAM and time to build a model with random-init towers: towers made in their dtype vs fp32-then-cast.

    python bench/bench_build.py                                   # ours at the real size + both paths smaller
    python bench/bench_build.py --real-only                       # ours at the real size only
    python bench/bench_build.py --small-layers 4 --overrides experiment=new_arch
    python bench/bench_build.py --quick                           # the same builds at tiny widths: checks the path

Each build runs in its own fresh process (`build_model(cfg)` of `experiment=march10_baseline` with both
`name_or_path`s set to null: the published sizes, random init, bf16 towers) and reports the peak resident set
(VmHWM) minus the resident set before the build, against the bytes of the towers' weights:
  ours      `build_model` as it is: Qwen3 created directly in bf16, the encoder in fp32 then cast (it is
            built first and is 0.6 GB in bf16, so its fp32 copy is gone before Qwen3 starts).
  baseline  the previous build: Qwen3 created in fp32, then cast to bf16 (measured at 18.3 GB for the real
            size; this machine is shared, so the baseline runs with `--small-layers` Qwen3 layers, both paths).
Writes bench/results/bench_build.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from action_decoder.training.real_size import RANDOM_INIT, SHRUNK

RESULTS = Path(__file__).resolve().parent / "results" / "bench_build.json"
BUILD = ["experiment=march10_baseline", *RANDOM_INIT]


def child(path: str, overrides: list[str]) -> dict:
    import torch

    from action_decoder.config import load_config
    from action_decoder.models.towers import text_encoder
    from action_decoder.models.build import build_model
    from action_decoder.training.throughput import proc_status_bytes, reset_peak_rss

    cfg = load_config(overrides)
    if path == "baseline":  # what build_text_model did before: create in fp32, then cast
        qwen = text_encoder.Qwen3ForCausalLM
        dtype = getattr(torch, str(cfg.backbone.dtype))
        text_encoder.default_dtype = lambda _dtype: nullcontext()
        text_encoder.Qwen3ForCausalLM = lambda config: qwen(config).to(dtype)
    reset_peak_rss()
    before = proc_status_bytes("VmRSS")
    t0 = time.perf_counter()
    model = build_model(cfg, None)
    seconds = time.perf_counter() - t0
    peak = proc_status_bytes("VmHWM") - before
    towers = {}
    for name in ("vision", "text"):
        tensors = {t.data_ptr(): t for t in [*getattr(model, name).parameters(), *getattr(model, name).buffers()]}
        towers[name] = sum(t.numel() * t.element_size() for t in tensors.values())
    dtypes = sorted({str(p.dtype) for p in model.text.parameters()})
    return {"path": path, "overrides": overrides, "seconds": seconds, "peak_bytes": peak,
            "rss_before_bytes": before, "tower_bytes": towers, "text_dtypes": dtypes,
            "peak_over_towers": peak / sum(towers.values())}


def run(path: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--overrides", *overrides]
    got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    gib = 2**30
    shown = " ".join(o for o in overrides[len(BUILD):] if o not in SHRUNK) or "real size"
    shown += " (tiny widths)" if set(SHRUNK) <= set(overrides) else ""
    print(f"{path:8s} {shown:60s} peak {got['peak_bytes'] / gib:6.2f} GiB for "
          f"{sum(got['tower_bytes'].values()) / gib:6.2f} GiB of tower weights ({got['peak_over_towers']:.2f}x), "
          f"{got['seconds']:.0f} s")
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    ap.add_argument("--small-layers", type=int, default=4, help="Qwen3 layers of the ours-vs-baseline builds")
    ap.add_argument("--real-only", action="store_true", help="skip the ours-vs-baseline builds")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="every build at tiny widths (training/real_size.py SHRUNK, "
                    "one Qwen3 layer for the small pair): checks the path")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    if ap.parse_known_args()[0].quick:
        ap.set_defaults(small_layers=1)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.overrides)))
        return
    overrides = BUILD + (SHRUNK if args.quick else []) + args.overrides
    result = {"what": "peak host RSS of build_model with random-init towers (bf16): ours vs fp32-then-cast",
              "quick": args.quick, "python": platform.python_version(), "machine": platform.machine()}
    result["real"] = run("ours", overrides)
    if not args.real_only:
        small = overrides + [f"backbone.text.num_hidden_layers={args.small_layers}"]
        result["small"] = {path: run(path, small) for path in ("baseline", "ours")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
