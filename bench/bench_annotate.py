"""annotate.py's throughput vs raw decoding of the same frames, with where the time goes.

    python bench/bench_annotate.py                 # 8 synthetic recordings of 20 s, experiment=smoke, random init
    python bench/bench_annotate.py --quick         # tiny sizes, a few seconds (CI)
    python bench/bench_annotate.py --real-size     # + march10_baseline frames/s at real size (random-init towers)
    python bench/bench_annotate.py --only-real-size --threads 2   # that measurement alone

Renders synthetic recordings (320x200, 10 fps), writes a checkpoint of the experiment's model with random-init
towers (speed does not depend on the weights), then times over all recordings:
  raw:        read_frames() of every sampled frame (5 frames/s), one call per recording, one decode thread:
              decoding alone, the goal's reference;
  serial:     the AnnotationEngine with decoding in the main process (num_workers=0): the time splits into
              decode (+ resize), encoder, decoder, and the rest (batching, bookkeeping);
  annotate:   the AnnotationEngine as annotate.py runs it (decoding in --workers DataLoader workers, ahead of the
              model), the predictions only;
  end to end: the same + writing each recording's files (frames.jsonl, actions.jsonl, annotate.json, timeline.png;
              `writing` is that part alone).
Frames/s are sampled frames per second of wall time; torch runs --threads threads. Writes
bench/results/bench_annotate.json (bench_annotate_quick.json for --quick).
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
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.data.video import read_frames
from action_decoder.inference.annotate import Annotator, Options, find_inputs, recording_prompt, write_recording
from action_decoder.models.build import build_model
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, generate_recordings
from action_decoder.training.checkpoint import save_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
RANDOM_TOWERS = ["backbone.vision.name_or_path=null", "backbone.text.name_or_path=null"]
# The test suite's smallest model (tests/conftest.py TINY): every part runs, in milliseconds.
QUICK = ["backbone.vision.image_size=32", "backbone.vision.patch_size=8", "model.d_model=32", "model.num_heads=4",
         "model.ffn_dim=64", "data.clip_len=4", "data.clip_stride=2"]


def checkpoint_config(overrides: list[str]):
    full = load_config(overrides)
    return OmegaConf.create({k: OmegaConf.to_container(full[k], resolve=True) if OmegaConf.is_config(full[k])
                             else full[k] for k in full if k != "hydra"})  # what train.py's checkpoints hold


def time_engine(annotator: Annotator, recordings, workers: int) -> tuple[float, dict, list]:
    annotator.engine.num_workers = workers
    annotator.engine.timers = dict.fromkeys(annotator.engine.timers, 0.0)
    t0 = time.perf_counter()
    preds = list(annotator.predict_many([(r.video, recording_prompt(r, "")) for r in recordings]))
    return time.perf_counter() - t0, dict(annotator.engine.timers), preds


def real_size(frames: int, threads: int) -> dict:
    """march10_baseline at real size, random-init towers (bf16 as trained): the engine over one synthetic
    recording, no checkpoint file (the model is handed to the engine)."""
    from action_decoder.inference.engine import AnnotationEngine, Job

    cfg = checkpoint_config(["experiment=march10_baseline", *RANDOM_TOWERS, "backbone.text.tokenizer=qwen3_offline"])
    tokenizer = build_tokenizer(cfg.backbone.text)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(cfg, tokenizer).eval()
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        duration = frames / float(cfg.data.sample_fps)
        generate_recordings(Path(tmp), SyntheticConfig(num_recordings=1, duration=duration, workers=1), progress=False)
        rec = find_inputs(tmp)[0]
        info = probe_video(rec.video)
        n, index = sampled_frames(info, float(cfg.data.sample_fps))
        ids = tokenizer(["Click the OK button"], add_special_tokens=False)["input_ids"][0]
        engine = AnnotationEngine(model, cfg, torch.device("cpu"), batch_size=2, num_workers=1)
        t0 = time.perf_counter()
        list(engine.run([Job(0, str(rec.video), torch.tensor(index).numpy(), ids)]))
        wall = time.perf_counter() - t0
    return {"experiment": "march10_baseline", "towers": "random init, bf16", "mode": engine.mode,
            "frames": n, "clip_len": int(cfg.data.clip_len), "image_size": list(cfg.backbone.vision.image_size)
            if not isinstance(cfg.backbone.vision.image_size, int) else cfg.backbone.vision.image_size,
            "build_s": build_s, "wall_s": wall, "frames_per_s": n / wall, **engine.timers,
            "real_time_factor_at_5fps": n / wall / 5.0, "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, 3 short recordings: seconds")
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of video per recording")
    ap.add_argument("--experiment", default="smoke")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decode workers of the pipelined run")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per decoder batch")
    ap.add_argument("--real-size", action="store_true", help="also march10_baseline at real size (~11 GiB RAM)")
    ap.add_argument("--real-frames", type=int, default=16, help="sampled frames of the real-size recording")
    ap.add_argument("--only-real-size", action="store_true", help="the real-size measurement alone")
    args = ap.parse_args()
    if args.only_real_size:
        torch.set_num_threads(args.threads)
        r = real_size(args.real_frames, args.threads)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_annotate_real_size.json").write_text(json.dumps(r, indent=1))
        print(f"march10_baseline real size: {r['frames_per_s']:.3f} frames/s ({r['real_time_factor_at_5fps']:.3f}x "
              f"real time at 5 frames/s) over {r['frames']} frames -> {RESULTS / 'bench_annotate_real_size.json'}")
        return
    if args.quick:
        args.recordings, args.duration = 3, 4.0
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_recordings(tmp / "recordings", SyntheticConfig(num_recordings=args.recordings,
                                                                duration=args.duration, workers=1), progress=False)
        cfg = checkpoint_config([f"experiment={args.experiment}", *RANDOM_TOWERS, *(QUICK if args.quick else [])])
        tokenizer = build_tokenizer(cfg.backbone.text)
        torch.manual_seed(0)
        model = build_model(cfg, tokenizer)
        save_checkpoint(tmp / "bench.pt", model.trainable_state_dict(), cfg, 0, "main", {})
        annotator = Annotator(tmp / "bench.pt", torch.device("cpu"), batch_size=args.batch_size)
        recordings = find_inputs(tmp / "recordings")
        time_engine(annotator, recordings[:1], 0)  # warm-up

        frames = 0
        t0 = time.perf_counter()
        for rec in recordings:
            n, index = sampled_frames(probe_video(rec.video), annotator.sample_fps)
            read_frames(rec.video, index, annotator.reader, threads=1)
            frames += n
        t_raw = time.perf_counter() - t0
        t_serial, timers, _ = time_engine(annotator, recordings, 0)
        t_ann, piped, _ = time_engine(annotator, recordings, args.workers)
        t0 = time.perf_counter()
        write_s = 0.0
        out = tmp / "out"
        for (i, pred) in time_engine(annotator, recordings, args.workers)[2]:
            w0 = time.perf_counter()
            (out / recordings[i].id).mkdir(parents=True)
            write_recording(annotator, recordings[i], pred, out / recordings[i].id, Options())
            write_s += time.perf_counter() - w0
        t_e2e = time.perf_counter() - t0

    decode_s = timers["wait_decode_s"]
    rest = max(t_serial - decode_s - timers["encoder_s"] - timers["decoder_s"], 0.0)
    serial_total = t_serial + write_s
    share = {"decode": decode_s / serial_total, "encoder": timers["encoder_s"] / serial_total,
             "decoder": timers["decoder_s"] / serial_total, "writing": write_s / serial_total,
             "other": rest / serial_total}
    fps = lambda s: frames / s  # noqa: E731
    result = {
        "what": "annotate frames/s vs raw decoding of the same sampled frames",
        "experiment": args.experiment, "quick": args.quick, "engine_mode": annotator.engine.mode,
        "recordings": len(recordings), "frames": frames, "batch_size": args.batch_size, "workers": args.workers,
        "raw_decode_frames_per_s": fps(t_raw), "serial_frames_per_s": fps(t_serial),
        "annotate_frames_per_s": fps(t_ann), "end_to_end_frames_per_s": fps(t_e2e),
        "ratio_annotate_vs_raw": t_raw / t_ann, "ratio_end_to_end_vs_raw": t_raw / t_e2e,
        "ratio_serial_vs_raw": t_raw / t_serial, "goal_ratio": 0.5,
        "seconds": {"raw": t_raw, "serial": t_serial, "annotate": t_ann, "end_to_end": t_e2e, "writing": write_s,
                    **{f"serial_{k}": v for k, v in timers.items()},
                    **{f"pipelined_{k}": v for k, v in piped.items()}},
        "share_of_serial_end_to_end": share,
        "threads": args.threads, "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    if args.real_size:
        result["real_size"] = real_size(args.real_frames, args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("bench_annotate_quick.json" if args.quick else "bench_annotate.json")
    path.write_text(json.dumps(result, indent=1))
    print(f"raw decode {fps(t_raw):.0f} frames/s; annotate {fps(t_ann):.0f} frames/s (ratio {t_raw / t_ann:.2f}), "
          f"end to end {fps(t_e2e):.0f} frames/s (ratio {t_raw / t_e2e:.2f}) over {frames} frames, "
          f"{annotator.engine.mode} mode")
    print("serial time: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
    if args.real_size:
        r = result["real_size"]
        print(f"march10_baseline real size: {r['frames_per_s']:.3f} frames/s ({r['real_time_factor_at_5fps']:.3f}x "
              f"real time at 5 frames/s) over {r['frames']} frames")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
