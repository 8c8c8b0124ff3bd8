"""Peak host RAM and time to build a model with random-init towers: towers made in their dtype vs fp32-then-cast.

    python bench/bench_build.py                                   # ours at the real size + both paths smaller
    python bench/bench_build.py --real-only                       # ours at the real size only
    python bench/bench_build.py --small-layers 4 --overrides experiment=new_arch

Each build runs in its own fresh process (`build_model(cfg)` of `experiment=march10_baseline` with both
`name_or_path`s set to null: the published sizes, random init, bf16 towers) and reports the peak resident set
(VmHWM) minus the resident set before the build, against the bytes of the towers' weights:
  ours      `build_model` as it is: Qwen3 created directly in bf16, the encoder in fp32 then cast (it is
            built first and is 0.6 GB in bf16, so its fp32 copy is gone before Qwen3 starts).
  baseline  the previous build: Qwen3 created in fp32, then cast to bf16 (measured at 18.3 GB for the real
            size; this machine is shared, so the baseline runs with `--small-layers` Qwen3 layers, both paths).
Writes bench/results/bench_build.json.
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

RESULTS = Path(__file__).resolve().parent / "results" / "bench_build.json"
RANDOM_INIT = ["experiment=march10_baseline", "backbone.vision.name_or_path=null", "backbone.text.name_or_path=null"]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def child(path: str, overrides: list[str]) -> dict:
    import torch

    from action_decoder.config import load_config
    from action_decoder.models.towers import text_encoder
    from action_decoder.models.build import build_model

    cfg = load_config(overrides)
    if path == "baseline":  # what build_text_model did before: create in fp32, then cast
        qwen = text_encoder.Qwen3ForCausalLM
        dtype = getattr(torch, str(cfg.backbone.dtype))
        text_encoder.default_dtype = lambda _dtype: nullcontext()
        text_encoder.Qwen3ForCausalLM = lambda config: qwen(config).to(dtype)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _status("VmRSS")
    t0 = time.perf_counter()
    model = build_model(cfg, None)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM") - before
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
    print(f"{path:8s} {' '.join(overrides[1:]) or 'real size':60s} peak {got['peak_bytes'] / gib:6.2f} GiB for "
          f"{sum(got['tower_bytes'].values()) / gib:6.2f} GiB of tower weights ({got['peak_over_towers']:.2f}x), "
          f"{got['seconds']:.0f} s")
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    ap.add_argument("--small-layers", type=int, default=4, help="Qwen3 layers of the ours-vs-baseline builds")
    ap.add_argument("--real-only", action="store_true", help="skip the ours-vs-baseline builds")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    overrides = RANDOM_INIT + args.overrides
    if args.child:
        print(json.dumps(child(args.child, args.overrides)))
        return
    result = {"what": "peak host RSS of build_model with random-init towers (bf16): ours vs fp32-then-cast",
              "python": platform.python_version(), "machine": platform.machine()}
    result["real"] = run("ours", overrides)
    if not args.real_only:
        small = overrides + [f"backbone.text.num_hidden_layers={args.small_layers}"]
        result["small"] = {path: run(path, small) for path in ("baseline", "ours")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
