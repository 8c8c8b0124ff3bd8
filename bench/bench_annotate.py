"""annotate.py's throughput vs raw decoding of the same frames.

    python bench/bench_annotate.py [--recordings 4] [--duration 20] [--experiment smoke]

Renders synthetic recordings (320x200, 10 fps), writes a checkpoint of the experiment's model (random init:
speed does not depend on the weights), then, per recording, times
  raw:       read_frames() of every sampled frame (5 frames/s) in one call: decoding alone;
  annotate:  Annotator.predict(): decoding + resizing + the model over the evaluation windows (each frame
             decoded once), what annotate.py does before writing its files;
  end to end: annotate_recording(): the above + frames.jsonl, actions.jsonl, annotate.json, timeline.png.
Frames/s are sampled frames per second of wall time, one thread. Writes bench/results/bench_annotate.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from action_decoder.config import load_config
from action_decoder.data.importer import probe_video
from action_decoder.data.labels import sampled_frames
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, generate_recordings
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.data.video import read_frames
from action_decoder.inference.annotate import Annotator, annotate_recording, find_inputs
from action_decoder.models.build import build_model
from action_decoder.training.checkpoint import save_checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "bench_annotate.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=4)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of video per recording")
    ap.add_argument("--experiment", default="smoke")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_recordings(tmp / "recordings", SyntheticConfig(num_recordings=args.recordings,
                                                                duration=args.duration, workers=1), progress=False)
        full = load_config([f"experiment={args.experiment}"])
        cfg = OmegaConf.create({k: OmegaConf.to_container(full[k], resolve=True) if OmegaConf.is_config(full[k])
                                else full[k] for k in full if k != "hydra"})  # what train.py's checkpoints hold
        tokenizer = build_tokenizer(cfg.backbone.text)
        torch.manual_seed(0)
        model = build_model(cfg, tokenizer)
        save_checkpoint(tmp / "bench.pt", model.trainable_state_dict(), cfg, 0, "main", {})
        annotator = Annotator(tmp / "bench.pt", torch.device("cpu"))
        recordings = find_inputs(tmp / "recordings")
        annotator.predict(recordings[0].video, "")  # warm-up

        rows = []
        for rec in recordings:
            info = probe_video(rec.video)
            n, index = sampled_frames(info, annotator.sample_fps)
            t0 = time.perf_counter()
            read_frames(rec.video, index)
            t_raw = time.perf_counter() - t0
            t0 = time.perf_counter()
            annotator.predict(rec.video, "")
            t_ann = time.perf_counter() - t0
            t0 = time.perf_counter()
            annotate_recording(annotator, rec, tmp / "out" / rec.id, 2, "", 18)
            t_e2e = time.perf_counter() - t0
            rows.append({"recording": rec.id, "frames": n, "raw_s": t_raw, "annotate_s": t_ann, "end_to_end_s": t_e2e})

    frames = sum(r["frames"] for r in rows)
    raw, ann, e2e = (frames / sum(r[k] for r in rows) for k in ("raw_s", "annotate_s", "end_to_end_s"))
    result = {
        "what": "annotate frames/s vs raw decoding of the same sampled frames",
        "experiment": args.experiment, "recordings": len(rows), "frames": frames,
        "raw_decode_frames_per_s": raw, "annotate_frames_per_s": ann, "end_to_end_frames_per_s": e2e,
        "ratio_annotate_vs_raw": ann / raw, "ratio_end_to_end_vs_raw": e2e / raw, "goal_ratio": 0.5,
        "threads": args.threads, "per_recording": rows,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"raw decode {raw:.0f} frames/s, annotate {ann:.0f} frames/s (ratio {ann / raw:.2f}), "
          f"end to end {e2e:.0f} frames/s (ratio {e2e / raw:.2f}) over {frames} frames -> {RESULTS}")


if __name__ == "__main__":
    main()
