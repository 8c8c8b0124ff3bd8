"""Time per optimizer step of our training loop against a bare PyTorch loop; writes bench/results/bench_train.json.

    python bench/bench_train.py                          # experiment=smoke sizes, batch 4, 16 steps, 4 rounds
    python bench/bench_train.py --steps 40 --rounds 3 train.batch_size=8 model.d_model=128

Both loops train the same model (build_model, same seed) on the same batches, held decoded in memory so that
video decoding is not part of either time:
  ours  `training.loop.train()` itself (Accelerator, accumulate(), the finite-loss and stop flags reduced
        across ranks, clipping, scheduler, metrics update, metrics.jsonl line each step); per-step time read
        from its metrics.jsonl (train.log_every=1: clips_per_s over one step), validation and checkpoints
        are outside the timed steps.
  bare  forward, ActionLoss, backward, clip_grad_norm_, AdamW step, zero_grad; batches pre-collated.
The data the loop reads is swapped for an in-memory copy of the real ClipDataset items (the loop still
shards, orders and collates them itself). Rounds alternate ours/bare so load from other processes hits
both alike; per round, the median step time after `--warmup` steps of ours over bare; the median of those
round ratios is the result. Goal: ratio <= 1.05.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import open_dict
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from action_decoder.config import load_config  # noqa: E402
from action_decoder.data.clips import build_clip_dataset, collate_clips  # noqa: E402
from action_decoder.data.importer import prepare_dataset  # noqa: E402
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, generate_recordings  # noqa: E402
from action_decoder.data.tokenizer import build_tokenizer  # noqa: E402
from action_decoder.data.vocab import LabelVocab  # noqa: E402
from action_decoder.models.build import build_model  # noqa: E402
from action_decoder.models.losses import ActionLoss  # noqa: E402
from action_decoder.training import loop  # noqa: E402
from action_decoder.training.curriculum import build_stages  # noqa: E402

RESULTS = ROOT / "bench" / "results"


class InMemoryClips(Dataset):
    """Already-decoded ClipDataset items (the loop indexes, shards and collates them as usual)."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def make_data(root: Path, num_recordings: int) -> Path:
    prepared = root / "prepared"
    if (prepared / "train.jsonl").is_file():
        return prepared
    cfg = load_config()
    syn = SyntheticConfig.from_cfg(cfg.data.synthetic)
    syn = SyntheticConfig(**{**syn.__dict__, "num_recordings": num_recordings})
    generate_recordings(root / "recordings", syn, progress=False)
    prepare_dataset(root / "recordings", prepared, cfg.data.sample_fps, 0.1, 0.1, LabelVocab.from_config(cfg.labels),
                    progress=False)
    return prepared


def our_step_times(cfg, items: dict[str, list[dict]], out_dir: Path) -> list[float]:
    """Run the real training loop for one epoch of cfg.train.max_steps_per_epoch steps; seconds per step."""
    real_builder = loop.build_clip_dataset
    loop.build_clip_dataset = lambda cfg, split, tok, data_cfg=None: InMemoryClips(items[split])
    try:
        run_dir = loop.train(cfg, out_dir)
    finally:
        loop.build_clip_dataset = real_builder
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    bs = cfg.train.batch_size
    return [bs / r["clips_per_s"] for r in lines if r["split"] == "train"]


def bare_step_times(cfg, batches: list[dict], tokenizer) -> list[float]:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tokenizer)
    model.train()
    groups = model.parameter_groups()
    tc = cfg.train
    optimizer = torch.optim.AdamW([{"params": groups["lora"], "lr": tc.lora_lr}, {"params": groups["new"], "lr": tc.lr}],
                                  weight_decay=tc.weight_decay, betas=tuple(tc.betas))
    loss_fn = ActionLoss(build_stages(cfg)[0].loss_weights, cfg.loss.click_sigma)
    params = [p for p in model.parameters() if p.requires_grad]
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        losses = loss_fn(model(batch), batch)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per loop per round")
    ap.add_argument("--warmup", type=int, default=3, help="first steps of each loop left out of the medians")
    ap.add_argument("--rounds", type=int, default=4, help="ours/bare alternations")
    ap.add_argument("--recordings", type=int, default=24, help="synthetic recordings to generate (8 s each)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both loops (1: steadiest when other processes share the CPU)")
    ap.add_argument("--data", default=str(RESULTS / "bench_train_data"), help="where the bench data is made/reused")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the root config (default: experiment=smoke)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    prepared = make_data(Path(args.data), args.recordings)
    overrides = ["train.batch_size=4", *args.overrides,
                 f"data.prepared_dir={prepared}", "data.num_workers=0", "train.epochs=1", "train.grad_accum=1",
                 f"train.max_steps_per_epoch={args.steps}", "train.max_val_steps=1", "train.log_every=1",
                 "logger=local", "curriculum=single_stage"]
    cfg = load_config(overrides)
    with open_dict(cfg):
        del cfg["hydra"]  # as in train.py: the job config only (the loop writes it resolved into the run dir)
    tokenizer = build_tokenizer(cfg.backbone.text)
    bs = cfg.train.batch_size
    train_set = build_clip_dataset(cfg, "train", tokenizer)
    if len(train_set) < args.steps * bs:
        raise SystemExit(f"{len(train_set)} train clips < {args.steps} steps x batch {bs}: raise --recordings")
    # the loop's own epoch-0 order (seeded permutation), so both loops see the same batches
    order = loop.ShardedEpoch(range(len(train_set)), 0, cfg.seed, 0, 1, train=True).indices[:args.steps * bs]
    decoded = {i: train_set[i] for i in order}
    items = {"train": [decoded.get(i, decoded[order[0]]) for i in range(len(train_set))],
             "val": [decoded[i] for i in order[:bs]]}
    batches = [collate_clips([decoded[i] for i in order[k * bs:(k + 1) * bs]], tokenizer.pad_token_id)
               for k in range(args.steps)]

    ours, bare, paired = [], [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            o = our_step_times(cfg, items, Path(tmp) / f"ours_{r}")[args.warmup:]
            b = bare_step_times(cfg, batches, tokenizer)[args.warmup:]
            ours, bare = ours + o, bare + b
            paired.append(statistics.median(o) / statistics.median(b))
            print(f"round {r}: ours {statistics.median(o):.3f} s/step, bare {statistics.median(b):.3f} s/step, "
                  f"ratio {paired[-1]:.3f}", flush=True)
    med_ours, med_bare = statistics.median(ours), statistics.median(bare)
    result = {
        "what": "seconds per optimizer step: training.loop.train() vs a bare PyTorch loop, same model/batches",
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
        # 1-minute load average before/after: above the core count, other processes share the CPU and
        # single steps vary by several x (read the ratios with that in mind)
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_train.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
