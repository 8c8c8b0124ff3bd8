"""Clip loading speed and memory against raw decord, plus tokenizer costs; writes bench/results/bench_data.json.

    python bench/bench_data.py                       # data: cfg.data.prepared_dir, else generated here
    python bench/bench_data.py --prepared DIR --clips 160 --rss-reads 3000 --workers 2
    python bench/bench_data.py --quick [--prepared DIR]   # 4 clips of 4 frames, 1 round, 1 worker: checks the path

Throughput (frames/s) of the same clips (same files, same frame indices), timed in interleaved
rounds so load from other processes hits every variant alike (medians reported):
  raw_decord          decord.VideoReader(path) (default threads) + get_batch, reopened per clip: the baseline
  raw_decord_1thread  the same with num_threads=1
  *_sized             threads per worker = the cores / workers (`decode_threads_per_worker`, data.decode_threads=null)
  read_frames         data/video.py decode only (default threads; *_1thread: data.decode_threads=1)
  clip_items          ClipDataset[i]: decode + resize + normalize + labels (what training consumes)
  preprocess_only     data/frames.py on already-decoded frames
and the same raw baseline vs ClipDataset through a DataLoader with worker processes.
RSS: process memory over many ClipDataset reads (one reader per item must not leak).
Tokenizer: build / tokenize times and what a 151,669-entry LM head adds to the tiny Qwen3.
Writes bench/results/bench_data.json (or --out).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from action_decoder.config import load_config
from action_decoder.data.clips import ClipDataset, collate_clips
from action_decoder.data.frames import preprocess_frames
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.data.video import decode_threads_per_worker, read_frames
from action_decoder.data.vocab import LabelVocab

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUICK = {"recordings": 4, "duration": 4.0, "clips": 4, "rounds": 1, "workers": 1, "batch_size": 2, "rss_reads": 20,
         "rss_warmup": 5, "rss_every": 5, "lm_batch": [2, 16], "overrides": ["data.clip_len=4", "data.clip_stride=4"],
         "data_set": "bench_data_set_quick"}
PROMPTS = ["Click the OK button", "Rename report.txt to final.txt", "Scroll down to the Budget item",
           "Type hello world into the search field", "Press ctrl+s to save the draft", "Drag Notes onto Backup"]
NARRATION = ["first I move the cursor over to the OK button and click it once",
             "now I open the file menu, choose rename and type the new name final.txt",
             "the list is long so I scroll down until Budget shows up near the bottom",
             "I click into the search field and type hello world, then press enter"]


# ---- data ---------------------------------------------------------------------------------------

def find_or_make_data(cfg, prepared: str | None, num_recordings: int, duration: float | None,
                      data_set: str = "bench_data_set") -> tuple[Path, str]:
    """train.jsonl to benchmark on, and where it came from."""
    if prepared:
        return Path(prepared) / "train.jsonl", "given"
    default = Path(cfg.data.prepared_dir) / "train.jsonl"
    if default.is_file():
        return default, f"existing {cfg.data.prepared_dir}"
    out = RESULTS / data_set
    make = ROOT / "scripts" / "make_synthetic_data.py"
    if make.is_file() and (ROOT / "scripts" / "prepare_data.py").is_file():
        rec, prep = out / "recordings", out / "prepared"
        if not (prep / "train.jsonl").is_file():
            common = [f"data.recordings_dir={rec}", f"data.prepared_dir={prep}"]
            length = [f"data.synthetic.duration={duration}"] if duration else []
            subprocess.run([sys.executable, str(make), *common, f"data.synthetic.num_recordings={num_recordings}",
                            *length], check=True, cwd=ROOT)
            subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_data.py"), *common], check=True, cwd=ROOT)
        return prep / "train.jsonl", "scripts/make_synthetic_data.py + scripts/prepare_data.py"
    return write_own_recordings(out / "own", cfg, num_recordings), "bench's own PyAV writer (no synthetic generator yet)"


def write_own_recordings(folder: Path, cfg, n: int) -> Path:
    """Desktop-like H.264 videos (flat panels, moving window, text-like stripes) + prepared episodes."""
    import av

    syn = cfg.data.synthetic
    w, h, fps, dur, sfps = int(syn.width), int(syn.height), int(syn.fps), float(syn.duration), float(cfg.data.sample_fps)
    jsonl = folder / "train.jsonl"
    if jsonl.is_file():
        return jsonl
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    episodes = []
    for r in range(n):
        path = folder / f"rec_{r:03d}.mp4"
        nframes = int(dur * fps)
        base = np.full((h, w, 3), 230, np.uint8)
        base[:16] = (40, 60, 90)  # title bar
        for y in range(30, h - 10, 12):  # lines of "text"
            xs = rng.integers(20, w - 60)
            base[y:y + 6, 20:xs] = 90
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(nframes):
                img = base.copy()
                x = (i * 4 + r * 13) % (w - 80)
                img[40:110, x:x + 80] = (200, 120 + r % 100, 60)  # a moving window
                img[100 + i % 40: 112 + i % 40, (i * 7) % (w - 10):(i * 7) % (w - 10) + 8] = (255, 0, 255)  # cursor
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        f = int(dur * sfps)
        # Narration like the synthetic generator's: one or two words on some frames.
        words = NARRATION[r % len(NARRATION)].split()
        transcript = [" ".join(words[2 * i:2 * i + 2]) if 2 * i < len(words) else "" for i in range(f)]
        episodes.append({
            "id": f"rec_{r:03d}", "video": str(path), "video_fps": fps, "sample_fps": sfps, "num_frames": f,
            "frame_index": [min(int(round(i / sfps * fps)), nframes - 1) for i in range(f)],
            "screen": [w, h], "prompt": PROMPTS[r % len(PROMPTS)], "tags": ["synthetic"],
            "action": ["none"] * f, "key": [None] * f, "modifier": [None] * f, "click": [None] * f,
            "transcript": transcript,
        })
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return jsonl


# ---- throughput -----------------------------------------------------------------------------------

class RawDecordClips(Dataset):
    """The baseline: the clips' frames straight from decord, nothing else."""

    def __init__(self, clips: list[tuple[str, list[int]]], num_threads: int = 0):
        self.clips, self.num_threads = clips, num_threads

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        import decord

        path, idx = self.clips[i]
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=self.num_threads)
        frames = vr.get_batch(idx).asnumpy()
        del vr
        return torch.from_numpy(frames)


def single_process(ds: ClipDataset, ds_1thread: ClipDataset, order: list[int], clips, rounds: int) -> dict:
    """clips[i] = (file, frame indices) of ds[order[i]]."""
    n = len(order)
    t_frames = ds.clip_len
    raw, raw1 = RawDecordClips(clips, 0), RawDecordClips(clips, 1)
    decoded = [read_frames(p, idx) for p, idx in clips[: min(n, 32)]]
    variants = {
        "raw_decord": lambda i: raw[i],
        "raw_decord_1thread": lambda i: raw1[i],
        "read_frames": lambda i: read_frames(*clips[i]),
        "read_frames_1thread": lambda i: read_frames(*clips[i], threads=1),
        "clip_items": lambda i: ds[order[i]],
        "clip_items_1thread": lambda i: ds_1thread[order[i]],
        "preprocess_only": lambda i: preprocess_frames(decoded[i % len(decoded)], ds.image_size, ds.mean, ds.std),
    }
    for fn in variants.values():  # warm caches / lazy imports
        fn(0)
    # Interleaved per clip (variant order rotating), so a burst of load from other processes lands on
    # every variant alike instead of on whichever happened to run then.
    names = list(variants)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        spent = dict.fromkeys(names, 0.0)
        for i in range(n):
            for j in range(len(names)):
                k = names[(i + j + r) % len(names)]
                t = time.perf_counter()
                variants[k](i)
                spent[k] += time.perf_counter() - t
        for k in names:
            rates[k].append(n * t_frames / spent[k])
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "frames_per_s": med, "rounds": rates, "clips_per_round": n,
        "ratio_clip_items_vs_raw_decord": med["clip_items"] / med["raw_decord"],
        "ratio_read_frames_vs_raw_decord": med["read_frames"] / med["raw_decord"],
        "ratio_clip_items_1thread_vs_raw_decord_1thread": med["clip_items_1thread"] / med["raw_decord_1thread"],
        "ms_per_frame": {k: 1000.0 / v for k, v in med.items()},
        "preprocess_share_of_clip_item_time": med["clip_items"] / med["preprocess_only"],
    }


def with_workers(ds: ClipDataset, ds_1thread: ClipDataset, order: list[int], clips, workers: int, batch: int,
                 rounds: int, ds_sized: ClipDataset) -> dict:
    """Whole passes over the clips through a DataLoader (worker start-up included, as in an epoch)."""
    def run_raw(threads):
        loader = DataLoader(RawDecordClips(clips, threads), batch_size=batch, num_workers=workers,
                            collate_fn=lambda items: torch.stack(items))
        return sum(b.shape[0] * b.shape[1] for b in loader)

    def run_ours(dset):
        loader = DataLoader(Subset(dset, order), batch_size=batch, num_workers=workers,
                            collate_fn=lambda items: collate_clips(items, dset.pad_id))
        return sum(b["pixels"].shape[0] * b["pixels"].shape[1] for b in loader if b is not None)

    variants = {"raw_decord": lambda: run_raw(0), "raw_decord_1thread": lambda: run_raw(1),
                "clip_items": lambda: run_ours(ds), "clip_items_1thread": lambda: run_ours(ds_1thread),
                "raw_decord_sized": lambda: run_raw(ds_sized.decode_threads),
                "clip_items_sized": lambda: run_ours(ds_sized)}  # data.decode_threads=null: the default
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            t = time.perf_counter()
            frames = fn()
            rates[k].append(frames / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"workers": workers, "batch_size": batch, "clips": len(clips), "frames_per_s": med, "rounds": rates,
            "ratio_clip_items_vs_raw_decord": med["clip_items"] / med["raw_decord"],
            "ratio_clip_items_1thread_vs_raw_decord_1thread": med["clip_items_1thread"] / med["raw_decord_1thread"],
            "sized_decode_threads": ds_sized.decode_threads,
            "ratio_clip_items_sized_vs_raw_decord": med["clip_items_sized"] / med["raw_decord"],
            "ratio_clip_items_sized_vs_raw_decord_sized": med["clip_items_sized"] / med["raw_decord_sized"]}


def rss_growth(ds: ClipDataset, reads: int, warmup: int, every: int) -> dict:
    proc = psutil.Process()
    samples = []
    for i in range(reads + warmup):
        item = ds[i % len(ds)]
        del item
        if i >= warmup and (i - warmup) % every == 0:
            samples.append((i - warmup, proc.memory_info().rss / 2**20))
    gc.collect()
    samples.append((reads, proc.memory_info().rss / 2**20))
    first, last = samples[0][1], samples[-1][1]
    # Slope over the second half: a leak keeps rising, allocator warm-up does not.
    half = samples[len(samples) // 2:]
    slope = np.polyfit([s[0] for s in half], [s[1] for s in half], 1)[0] * 1000 if len(half) > 1 else 0.0
    return {"reads": reads, "warmup_reads": warmup, "rss_mib_after_warmup": first, "rss_mib_end": last,
            "growth_mib": last - first, "slope_mib_per_1000_reads_second_half": float(slope),
            "samples": samples}


# ---- tokenizer ----------------------------------------------------------------------------------

def tokenizer_costs(cfg, jsonl: Path, vocab: LabelVocab, rounds: int, lm_batch: tuple[int, int] = (8, 128)) -> dict:
    from action_decoder.models.towers.text_encoder import qwen3_config_from_cfg
    from transformers import Qwen3ForCausalLM

    out: dict = {}
    cache = Path(tempfile.mkdtemp(prefix="tokcache_"))
    t = time.perf_counter(); small = build_tokenizer("small"); out["build_s_small"] = time.perf_counter() - t
    t = time.perf_counter(); qwen = build_tokenizer({"tokenizer": "qwen3_offline", "tokenizer_cache": str(cache)})
    out["build_s_qwen3_offline_first"] = time.perf_counter() - t
    t = time.perf_counter(); build_tokenizer({"tokenizer": "qwen3_offline", "tokenizer_cache": str(cache)})
    out["build_s_qwen3_offline_cached"] = time.perf_counter() - t
    shutil.rmtree(cache, ignore_errors=True)

    eps = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    texts = [e["prompt"] for e in eps] + [t for e in eps for t in e["transcript"] if t]
    out["corpus"] = {"episodes": len(eps), "strings": len(texts), "chars": sum(map(len, texts))}
    for name, tok in (("small", small), ("qwen3_offline", qwen)):
        times, n_tokens = [], 0
        for _ in range(rounds):
            t = time.perf_counter()
            ids = tok(texts, add_special_tokens=False)["input_ids"]
            times.append(time.perf_counter() - t)
            n_tokens = sum(map(len, ids))
        t = time.perf_counter()
        ClipDataset(jsonl, clip_len=int(cfg.data.clip_len), clip_stride=int(cfg.data.clip_stride),
                    image_size=list(cfg.backbone.vision.image_size) if not isinstance(cfg.backbone.vision.image_size, int) else cfg.backbone.vision.image_size, mean=list(cfg.backbone.vision.image_mean),
                    std=list(cfg.backbone.vision.image_std), tokenizer=tok, vocab=vocab,
                    max_transcript_tokens=int(cfg.data.max_transcript_tokens),
                    max_prompt_tokens=int(cfg.data.max_prompt_tokens))
        out[name] = {"vocab": len(tok), "tokenize_corpus_s": statistics.median(times), "tokens": n_tokens,
                     "tokens_per_char": n_tokens / max(1, out["corpus"]["chars"]),
                     "dataset_construction_s": time.perf_counter() - t}

    # LM-head cost on the tiny Qwen3 (conf/backbone/tiny.yaml sizes): a training step's forward + backward
    # with next-token loss over every position (the transcript decoder's case), batch 8 x 128 tokens.
    b, l = lm_batch
    heads = {}
    for name, tok in (("small", small), ("qwen3_offline", qwen)):
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(qwen3_config_from_cfg(cfg.backbone.text, len(tok)))
        ids = torch.randint(0, len(tok), (b, l))
        params = sum(p.numel() for p in model.parameters())
        emb = model.get_input_embeddings().weight.numel()
        fwd, step = [], []
        for _ in range(rounds + 1):
            with torch.no_grad():
                t = time.perf_counter(); model(input_ids=ids); fwd.append(time.perf_counter() - t)
            t = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            step.append(time.perf_counter() - t)
            model.zero_grad(set_to_none=True)
        heads[name] = {"vocab": len(tok), "params": params, "embedding_params": emb,
                       "forward_ms": 1000 * statistics.median(fwd[1:]),
                       "forward_backward_ms": 1000 * statistics.median(step[1:]),
                       "logits_mib": b * l * len(tok) * 4 / 2**20}
        del model
    heads["batch_tokens"] = [b, l]
    heads["forward_ratio_qwen_vs_small"] = heads["qwen3_offline"]["forward_ms"] / heads["small"]["forward_ms"]
    heads["forward_backward_ratio_qwen_vs_small"] = (heads["qwen3_offline"]["forward_backward_ms"]
                                                     / heads["small"]["forward_backward_ms"])
    out["tiny_qwen3_lm_head"] = heads
    return out


# ---- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", help="folder with train.jsonl (default: cfg.data.prepared_dir, else generated)")
    ap.add_argument("--recordings", type=int, default=24, help="recordings to generate when no data exists")
    ap.add_argument("--duration", type=float, default=None, help="seconds per generated recording (the recorder's)")
    ap.add_argument("--data-set", default="bench_data_set", help="folder under bench/results/ for generated data")
    ap.add_argument("--clips", type=int, default=120, help="clips per timing round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default cfg.data.num_workers)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rss-reads", type=int, default=3000, help="ClipDataset reads while watching RSS")
    ap.add_argument("--rss-warmup", type=int, default=200, help="reads before the RSS watch starts")
    ap.add_argument("--rss-every", type=int, default=250, help="reads between RSS samples")
    ap.add_argument("--lm-batch", type=int, nargs=2, default=[8, 128], help="sequences x tokens of the LM-head step")
    ap.add_argument("--skip-tokenizer", action="store_true")
    ap.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of the root config")
    ap.add_argument("--out", default=str(RESULTS / "bench_data.json"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (explicit flags still win): checks the path")
    if ap.parse_known_args(argv)[0].quick:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)  # what each DataLoader worker gets; keeps the single-process numbers comparable
    cfg = load_config(args.overrides)
    jsonl, source = find_or_make_data(cfg, args.prepared, args.recordings, args.duration, args.data_set)
    vocab = LabelVocab.from_config(cfg.labels)
    tok = build_tokenizer(cfg.backbone.text)
    ds = ClipDataset(jsonl, clip_len=int(cfg.data.clip_len), clip_stride=int(cfg.data.clip_stride),
                     image_size=list(cfg.backbone.vision.image_size) if not isinstance(cfg.backbone.vision.image_size, int) else cfg.backbone.vision.image_size, mean=list(cfg.backbone.vision.image_mean),
                     std=list(cfg.backbone.vision.image_std), tokenizer=tok, vocab=vocab, reader="decord",
                     max_transcript_tokens=int(cfg.data.max_transcript_tokens),
                     max_prompt_tokens=int(cfg.data.max_prompt_tokens))
    ds_1thread = ClipDataset(jsonl, clip_len=ds.clip_len, clip_stride=ds.clip_stride, image_size=ds.image_size,
                             mean=ds.mean, std=ds.std, tokenizer=tok, vocab=vocab, decode_threads=1,
                             max_transcript_tokens=int(cfg.data.max_transcript_tokens),
                             max_prompt_tokens=int(cfg.data.max_prompt_tokens))
    # Spread the timed clips over all episodes (every episode's file is opened), fixed order.
    order = np.random.default_rng(0).permutation(len(ds))[: args.clips].tolist()
    clips = []
    for i in order:
        e, s = ds.index[i][:2]  # (episode, start, scored lo, scored hi)
        ep = ds.episodes[e]
        clips.append((ep.video, ep.frame_index[s:s + ds.clip_len].tolist()))
    first = read_frames(*clips[0])
    workers = int(args.workers if args.workers is not None else cfg.data.num_workers)
    result = {
        "quick": args.quick, "overrides": args.overrides,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "data": {"source": source, "jsonl": str(jsonl), "episodes": ds.num_episodes, "clips": len(ds),
                 "clip_len": ds.clip_len, "video_hw": list(first.shape[1:3]), "image_size": ds.image_size},
    }
    print(f"data: {source}: {ds.num_episodes} episodes, {len(ds)} clips, video {first.shape[1:3]} -> {ds.image_size}")
    result["single_process"] = single_process(ds, ds_1thread, order, clips, args.rounds)
    print("single process frames/s:", {k: round(v) for k, v in result["single_process"]["frames_per_s"].items()})
    ds_sized = ClipDataset(jsonl, clip_len=ds.clip_len, clip_stride=ds.clip_stride, image_size=ds.image_size,
                           mean=ds.mean, std=ds.std, tokenizer=tok, vocab=vocab,
                           decode_threads=decode_threads_per_worker(workers),
                           max_transcript_tokens=int(cfg.data.max_transcript_tokens),
                           max_prompt_tokens=int(cfg.data.max_prompt_tokens))
    result["dataloader"] = with_workers(ds, ds_1thread, order, clips, workers, args.batch_size, args.rounds, ds_sized)
    print(f"DataLoader x{workers} frames/s:", {k: round(v) for k, v in result["dataloader"]["frames_per_s"].items()})
    result["rss"] = rss_growth(ds, args.rss_reads, warmup=args.rss_warmup, every=args.rss_every)
    print(f"RSS over {args.rss_reads} reads: {result['rss']['rss_mib_after_warmup']:.1f} -> "
          f"{result['rss']['rss_mib_end']:.1f} MiB")
    if not args.skip_tokenizer:
        result["tokenizer"] = tokenizer_costs(cfg, jsonl, vocab, args.rounds, tuple(args.lm_batch))
        h = result["tokenizer"]["tiny_qwen3_lm_head"]
        print("tiny Qwen3 fwd+bwd ms: small", round(h["small"]["forward_backward_ms"], 1), "qwen",
              round(h["qwen3_offline"]["forward_backward_ms"], 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
