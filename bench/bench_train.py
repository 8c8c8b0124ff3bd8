"""Time per optimizer step of our training step against a bare PyTorch loop; writes bench/results/bench_train.json.

    python bench/bench_train.py                          # experiment=smoke sizes, batch 4, 16 steps, 4 rounds
    python bench/bench_train.py --steps 40 --rounds 3 train.batch_size=8 model.d_model=128
    python bench/bench_train.py --quick [--prepared DIR]  # tiny model, 3 steps, 1 round: checks the path

Both loops train the same model (build_model, same seed) on the same batches, decoded and collated beforehand so
that video decoding is not part of either time:
  ours  training/step.py's `train_step`, what train.py runs every micro-step (the finite-loss and stop votes reduced
        across ranks, accumulate(), backward through the Accelerator, clipping, optimizer and schedule steps), with
        the Accelerator, optimizer, schedule and loss built as train.py builds them (training/setup.py), each step
        timed by training/throughput.py's `timed_step`.
  bare  forward, the same loss, backward, clip_grad_norm_, AdamW step, zero_grad.
The batches are the first of the loop's own epoch-0 order (data/loader.py's EpochSampler) over the real ClipDataset.
Rounds alternate ours/bare so load from other processes hits both alike; per round, the median step time after
`--warmup` steps of ours over bare; the median of those round ratios is the result. Goal: ratio <= 1.05.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed

from action_decoder.config import load_config
from action_decoder.data.clips import build_clip_dataset, collate_clips
from action_decoder.data.importer import prepare_dataset
from action_decoder.data.loader import EpochSampler, to_device
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.data.vocab import LabelVocab
from action_decoder.models.build import build_model
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, generate_recordings
from action_decoder.training.curriculum import build_stages
from action_decoder.training.setup import make_accelerator, make_loss, make_optimizer, warmup_cosine
from action_decoder.training.throughput import timed_step

RESULTS = Path(__file__).resolve().parent / "results"
FULL = {"steps": 16, "warmup": 3, "rounds": 4, "recordings": 24, "duration": None,
        "data": str(RESULTS / "bench_train_data")}
QUICK = {"steps": 3, "warmup": 1, "rounds": 1, "recordings": 4, "duration": 4.0,
         "data": str(RESULTS / "bench_train_data_quick")}
# A model of the smoke preset's parts at the smallest sizes that still run all of them (random-init towers).
QUICK_OVERRIDES = ["backbone.vision.name_or_path=null", "backbone.text.name_or_path=null",
                   "backbone.vision.image_size=32", "backbone.vision.patch_size=8", "model.d_model=32",
                   "model.num_heads=4", "model.ffn_dim=64", "data.clip_len=4", "data.clip_stride=4",
                   "train.batch_size=2"]


def make_data(root: Path, num_recordings: int, duration: float | None) -> Path:
    prepared = root / "prepared"
    if (prepared / "train.jsonl").is_file():
        return prepared
    cfg = load_config()
    syn = SyntheticConfig.from_cfg(cfg.data.synthetic)
    syn = SyntheticConfig(**{**syn.__dict__, "num_recordings": num_recordings,
                             **({"duration": duration} if duration else {})})
    generate_recordings(root / "recordings", syn, progress=False)
    prepare_dataset(root / "recordings", prepared, cfg.data.sample_fps, 0.1, 0.1, LabelVocab.from_config(cfg.labels),
                    progress=False)
    return prepared


def fresh_model(cfg, tokenizer):
    set_seed(cfg.seed)  # before each build: both loops start from the same weights and dropout draws
    model = build_model(cfg, tokenizer)
    model.train()
    return model


def our_step_times(cfg, batches: list[dict], tokenizer, loss_fn, accelerator) -> tuple[list[float], float]:
    tc = cfg.train
    model = fresh_model(cfg, tokenizer)
    optimizer = make_optimizer(model, accelerator, tc)
    n = len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(n, int(tc.warmup_ratio * n)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    times, first_loss = [], None
    for batch in batches:
        timed = timed_step(model, [to_device(batch, accelerator.device)], loss_fn, optimizer, scheduler, accelerator,
                           tc.max_grad_norm)
        times.append(timed.seconds)
        if first_loss is None:
            first_loss = float(timed.results[0].losses["total"].detach())
    accelerator.free_memory()  # drop the prepared references before the next model is built
    return times, first_loss


def bare_step_times(cfg, batches: list[dict], tokenizer, loss_fn) -> tuple[list[float], float]:
    tc = cfg.train
    model = fresh_model(cfg, tokenizer)
    groups = model.parameter_groups()
    optimizer = torch.optim.AdamW([{"params": groups["lora"], "lr": tc.lora_lr}, {"params": groups["new"], "lr": tc.lr}],
                                  weight_decay=tc.weight_decay, betas=tuple(tc.betas))
    params = [p for p in model.parameters() if p.requires_grad]
    times, first_loss = [], None
    for batch in batches:
        t0 = time.perf_counter()
        losses = loss_fn(model(batch), batch)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
        if first_loss is None:
            first_loss = float(losses["total"].detach())
    return times, first_loss


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, help=f"optimizer steps per loop per round ({FULL['steps']})")
    ap.add_argument("--warmup", type=int, help=f"first steps of each loop left out of the medians ({FULL['warmup']})")
    ap.add_argument("--rounds", type=int, help=f"ours/bare alternations ({FULL['rounds']})")
    ap.add_argument("--recordings", type=int, help=f"synthetic recordings to generate ({FULL['recordings']})")
    ap.add_argument("--duration", type=float, help="seconds per generated recording (default: the recorder's)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both loops (1: steadiest when other processes share the CPU)")
    ap.add_argument("--data", help="where the bench data is made/reused (bench/results/bench_train_data[_quick])")
    ap.add_argument("--prepared", help="an existing prepared folder (train.jsonl) to use instead of --data")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_train.json")
    ap.add_argument("--quick", action="store_true", help="tiny model, 3 steps, 1 round (explicit flags still win)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the root config (default: experiment=smoke)")
    quick = ap.parse_known_args(argv)[0].quick
    ap.set_defaults(**(QUICK if quick else FULL))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    prepared = Path(args.prepared) if args.prepared else make_data(Path(args.data), args.recordings, args.duration)
    overrides = ["train.batch_size=4", *(QUICK_OVERRIDES if quick else []), *args.overrides,
                 f"data.prepared_dir={prepared}", "data.num_workers=0", "train.grad_accum=1", "curriculum=single_stage"]
    cfg = load_config(overrides)
    tc = cfg.train
    tokenizer = build_tokenizer(cfg.backbone.text)
    bs = tc.batch_size
    train_set = build_clip_dataset(cfg, "train", tokenizer)
    if len(train_set) < args.steps * bs:
        raise SystemExit(f"{len(train_set)} train clips < {args.steps} steps x batch {bs}: raise --recordings")
    sampler = EpochSampler(len(train_set), cfg.seed, 0, 1, train=True)
    sampler.set_epoch(0)
    order = sampler.indices()[:args.steps * bs]
    batches = [collate_clips([train_set[i] for i in order[k * bs:(k + 1) * bs]], tokenizer.pad_token_id)
               for k in range(args.steps)]
    accelerator = make_accelerator(cfg)
    loss_fn = make_loss(build_stages(cfg)[0], cfg, accelerator, train_set)  # one loss for both: the step is compared

    ours, bare, paired, first_losses = [], [], [], []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        o, o_loss = our_step_times(cfg, batches, tokenizer, loss_fn, accelerator)
        b, b_loss = bare_step_times(cfg, batches, tokenizer, loss_fn)
        o, b = o[args.warmup:], b[args.warmup:]
        ours, bare = ours + o, bare + b
        first_losses.append([o_loss, b_loss])
        paired.append(statistics.median(o) / statistics.median(b))
        print(f"round {r}: ours {statistics.median(o):.3f} s/step, bare {statistics.median(b):.3f} s/step, "
              f"ratio {paired[-1]:.3f}", flush=True)
    med_ours, med_bare = statistics.median(ours), statistics.median(bare)
    result = {
        "what": "seconds per optimizer step: training.step.train_step vs a bare PyTorch loop, same model/batches",
        "quick": quick,
        "config": {"overrides": overrides, "batch_size": bs, "clip_len": cfg.data.clip_len,
                   "image_size": cfg.backbone.vision.image_size, "d_model": cfg.model.d_model,
                   "trainable_params": sum(p.numel() for p in build_model(cfg, tokenizer).parameters()
                                           if p.requires_grad)},
        "steps_timed_per_loop": len(ours), "rounds": args.rounds, "warmup_steps_dropped": args.warmup,
        "ours_s_per_step": {"median": med_ours, "mean": statistics.mean(ours), "min": min(ours)},
        "bare_s_per_step": {"median": med_bare, "mean": statistics.mean(bare), "min": min(bare)},
        "ratio_median": med_ours / med_bare,
        "ratio_min": min(ours) / min(bare),
        "ratio_per_round": paired,
        "ratio_median_of_rounds": statistics.median(paired),
        "goal_ratio": 1.05,
        "meets_goal": statistics.median(paired) <= 1.05,
        # before any update both loops see the same weights, batch and RNG: equal first losses say they train the
        # same model on the same data
        "first_loss_ours_bare_per_round": first_losses,
        "same_first_loss": all(o == b for o, b in first_losses),
        # 1-minute load average before/after: above the core count, other processes share the CPU and
        # single steps vary by several x (read the ratios with that in mind)
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
