"""The training loop, top to bottom: setup -> train (stages x epochs x steps, validate, checkpoint) -> cleanup.

One Accelerate loop for every launch mode: a plain `python train.py`, `accelerate launch` with DDP on CPU or
GPUs, DeepSpeed ZeRO-2/3, several nodes. Data order is ours (a seeded per-epoch permutation, sharded by
rank), which makes a resumed run continue on exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import time
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object, set_seed
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from action_decoder.cli import SettingError
from action_decoder.data.clips import build_clip_dataset, collate_clips, split_files
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.data.vocab import IGNORE_INDEX
from action_decoder.evaluation.events import EpisodeFrames
from action_decoder.evaluation.metrics import ActionMetrics
from action_decoder.models.build import build_model
from action_decoder.models.losses import ActionLoss, build_loss
from action_decoder.training import checkpoint as ckpt
from action_decoder.training.curriculum import build_stages, stage_at
from action_decoder.training.loggers import MetricsLogger
from action_decoder.training.run_dir import RESUME_DIRNAME, has_resume_state, resolve_resume_dir, share_run_dir
from action_decoder.training.train_state import RunLayout, TrainState


class NonFiniteLossError(RuntimeError):
    pass


# ---- data order ---------------------------------------------------------------------------------

class ShardedEpoch(Dataset):
    """This rank's share of one epoch: a seeded permutation of the dataset, cut into equal shards.

    Train shards drop the remainder so every rank runs the same number of steps. Validation pads the
    shards by repeating clips and marks the repeats `counted=False`, so metrics count each clip once
    while every rank still runs the same number of forwards (ZeRO-3 needs that).
    """

    def __init__(self, dataset, epoch: int, seed: int, rank: int, world: int, train: bool):
        self.dataset = dataset
        n = len(dataset)
        if train:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
            per_rank = n // world
            self.indices = order[rank * per_rank:(rank + 1) * per_rank]
            self.counted = [True] * per_rank
        else:
            per_rank = math.ceil(n / world) if n else 0
            mine = list(range(rank, n, world))
            self.counted = [True] * len(mine) + [False] * (per_rank - len(mine))
            self.indices = mine + [mine[0] if mine else 0] * (per_rank - len(mine))

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        return self.counted[j], self.dataset[self.indices[j]]


def make_loader(dataset, cfg: DictConfig, data_cfg: DictConfig, pad_id: int, epoch: int, accelerator,
                train: bool, skip_batches: int = 0) -> DataLoader:
    shard = ShardedEpoch(dataset, epoch, cfg.seed, accelerator.process_index, accelerator.num_processes, train)
    bs = cfg.train.batch_size
    start = skip_batches * bs  # resume mid-epoch: drop the batches already trained on
    sub = torch.utils.data.Subset(shard, range(start, len(shard)))

    def collate(pairs):
        pairs = [(c, item) for c, item in pairs if item is not None]  # None = corrupt video, already counted
        if not pairs:
            return None
        batch = collate_clips([item for _, item in pairs], pad_id)
        batch["counted"] = torch.tensor([c for c, _ in pairs])
        return batch

    # Own generator: iterating a DataLoader otherwise draws its worker base seed from the global RNG, so a
    # resumed run (RNG restored, loader re-created) would see different dropout masks than an uninterrupted one.
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    # persistent_workers=False: the loader is made anew each epoch (its shard is that epoch's permutation).
    return DataLoader(sub, batch_size=bs, shuffle=False, drop_last=train, collate_fn=collate,
                      num_workers=data_cfg.num_workers, persistent_workers=False, generator=generator,
                      pin_memory=torch.cuda.is_available())  # pinned host pages: the non_blocking copies overlap


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def select(obj, mask: torch.Tensor):
    """Rows where `mask` is True of every batch-leading tensor of a batch dict or an Outputs dataclass."""
    def pick(v):
        return v[mask] if torch.is_tensor(v) and v.shape[:1] == mask.shape else v
    if isinstance(obj, dict):
        return {k: pick(v) for k, v in obj.items()}
    return dataclasses.replace(obj, **{f.name: pick(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


def resolve_precision(configured: str | None, launcher: str | None) -> str:
    """One precision for the run from `train.mixed_precision` and the launcher's (`accelerate launch` passes its
    config's / --mixed_precision's value as ACCELERATE_MIXED_PRECISION). Accelerator(mixed_precision=...) would
    silently override the launcher, so a disagreement stops the run instead."""
    if configured is None:
        return launcher or "no"
    if launcher is not None and launcher != configured:
        raise ValueError(f"train.mixed_precision={configured} but the accelerate launcher says mixed_precision={launcher} "
                         f"(launch config or --mixed_precision); make them agree, e.g. train.mixed_precision={launcher} "
                         f"or --mixed_precision {configured}")
    return configured


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


# ---- the run ------------------------------------------------------------------------------------

def make_accelerator(cfg: DictConfig) -> Accelerator:
    """The run's Accelerator, for train.py and scripts/preflight.py alike; sets cfg.train.mixed_precision to the
    precision that runs (the run's config.yaml records it)."""
    tc = cfg.train
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if multi_cpu else []  # accelerate leaves it unset without a GPU
    tc.mixed_precision = resolve_precision(tc.mixed_precision, os.environ.get("ACCELERATE_MIXED_PRECISION"))
    return Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.grad_accum,
        log_with="wandb" if cfg.logger.get("wandb") else None,
        step_scheduler_with_optimizer=False,  # we step the schedule once per optimizer step, any world size
        kwargs_handlers=handlers,
    )


def make_optimizer(model, accelerator, tc: DictConfig) -> torch.optim.Optimizer:
    """AdamW over what trains (LoRA at its own rate), and DeepSpeed told what train.* says."""
    groups = model.parameter_groups()
    optimizer = torch.optim.AdamW(
        [{"params": groups["lora"], "lr": tc.lora_lr, "name": "lora"},
         {"params": groups["new"], "lr": tc.lr, "name": "new"}],
        weight_decay=tc.weight_decay, betas=tuple(tc.betas),
    )
    if accelerator.state.deepspeed_plugin is not None:
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = tc.batch_size  # our loaders are not prepared: tell DeepSpeed
        # DeepSpeed clips and accumulates inside engine.step(); train.* is the one source for both.
        ds_config["gradient_accumulation_steps"] = tc.grad_accum
        ds_config["gradient_clipping"] = float(tc.max_grad_norm)
    if accelerator.gradient_accumulation_steps != tc.grad_accum:  # the launcher's env var wins over our argument
        raise ValueError(f"the accelerate launch config sets gradient_accumulation_steps="
                         f"{accelerator.gradient_accumulation_steps} but train.grad_accum={tc.grad_accum}; remove it "
                         "from the launch config / command line and set train.grad_accum")
    return optimizer


def make_loss(stage, cfg: DictConfig, accelerator, train_set) -> ActionLoss:
    # Under ZeRO-3 the LM head is partitioned outside its forward: no checkpointed recompute of transcript logits.
    return build_loss(cfg.loss, stage.loss_weights, class_counts(cfg, train_set),
                      recompute_logits=not ckpt.is_zero3(accelerator))


def train(cfg: DictConfig, hydra_run_dir: str | Path, overrides: list[str] | None = None) -> Path:
    """Run (or resume) the training run `cfg`; `overrides` are its command-line overrides, kept for `resume=`."""
    # ======================= setup =======================
    tc = cfg.train
    accelerator = make_accelerator(cfg)
    resume_dir = resolve_resume_dir(cfg.resume, cfg.output_root, cfg.experiment_name)
    run_dir = share_run_dir(accelerator, resume_dir or hydra_run_dir)
    if resume_dir is not None and (resume_dir / "config.yaml").is_file():  # fail before load_state(strict=False) would
        saved_cfg = OmegaConf.to_container(OmegaConf.load(resume_dir / "config.yaml"))
        ckpt.check_compatible({"config": saved_cfg}, cfg, resume_dir / "config.yaml")
    set_seed(cfg.seed)

    tokenizer = build_tokenizer(cfg.backbone.text)
    stages = build_stages(cfg)
    datasets = {s.name: build_clip_dataset(cfg, "train", tokenizer, data_cfg=s.data) for s in stages}
    val_sets = {s.name: build_clip_dataset(cfg, "val", tokenizer, data_cfg=s.data, every_frame_once=True) for s in stages}
    for name, ds in datasets.items():
        if len(ds) // accelerator.num_processes < tc.batch_size:
            raise SettingError(f"stage {name!r}: {len(ds)} training clips are fewer than batch_size={tc.batch_size} x "
                             f"{accelerator.num_processes} processes; make more recordings or lower train.batch_size")

    data_files = sorted({f for s in stages for split in ("train", "val") for f in split_files(s.data, split)})
    state = TrainState(stage=stages[0].name, layout=RunLayout.of(
        accelerator.num_processes, tc.batch_size, tc.grad_accum, data_files))
    if resume_dir is not None:  # before anything is built: the saved data position must mean the same clips
        saved = ckpt.read_trainer_state(run_dir).get("layout")
        changes = state.layout.changes_from(RunLayout(**saved)) if saved else []
        if changes:
            raise SettingError(f"resume={run_dir}: the run's layout changed since its resume state was saved:\n  "
                             + "\n  ".join(changes))
        ckpt.verify_resume_state(run_dir / RESUME_DIRNAME)
    if accelerator.is_main_process:  # only once every check passed: a refused resume leaves the run as it was
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if resume_dir is not None and overrides is not None:  # what the next resume=latest reapplies
            (run_dir / ".hydra").mkdir(exist_ok=True)
            kept = [o for o in overrides if not o.startswith("resume=")]
            (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(kept)))

    def steps_in_epoch(epoch: int) -> int:
        n = len(datasets[stage_at(stages, epoch).name]) // accelerator.num_processes // tc.batch_size
        n = min(n, tc.max_steps_per_epoch or n)
        # Whole accumulation cycles only: our loaders are not prepared, so accelerate cannot see the epoch end
        # and would carry a partial cycle's gradients into the next epoch.
        return n - n % tc.grad_accum

    if steps_in_epoch(0) == 0:
        raise ValueError(f"an epoch holds fewer than train.grad_accum={tc.grad_accum} micro-steps; lower train.grad_accum "
                         "or train.batch_size, or raise train.max_steps_per_epoch")
    optimizer_steps = sum(steps_in_epoch(e) // tc.grad_accum for e in range(tc.epochs))

    model = build_model(cfg, tokenizer)
    optimizer = make_optimizer(model, accelerator, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(optimizer_steps, int(tc.warmup_ratio * optimizer_steps)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ckpt.install_trainable_only_hooks(accelerator)

    if resume_dir is not None:
        state.load_state_dict(ckpt.load_resume_state(accelerator, run_dir))
        accelerator.print(f"resumed {run_dir} at epoch {state.epoch} step {state.step_in_epoch} (stage {state.stage})")
    logger = MetricsLogger(accelerator, run_dir, cfg, state.wandb_run_id)
    state.wandb_run_id = logger.wandb_run_id

    stop = {"requested": False}  # SIGTERM/SIGINT (SLURM preemption, Ctrl-C): finish the step, save, exit 0

    def request_stop(signum, frame):
        stop["requested"] = True
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    def stop_agreed() -> bool:  # a collective: every rank stops at the same point
        return accelerator.reduce(torch.tensor(float(stop["requested"]), device=accelerator.device), "sum").item() > 0

    def save_and_exit(where: str) -> Path:
        ckpt.save_resume_state(accelerator, run_dir, state.state_dict())
        accelerator.print(f"stop requested: saved resume state {where} in {run_dir}; "
                          f"continue with: python train.py resume={run_dir}")
        return _cleanup(accelerator, run_dir)

    names = cfg.labels
    pad_id = tokenizer.pad_token_id
    nonfinite_in_a_row = 0

    # ======================= train =======================
    for epoch in range(state.epoch, tc.epochs):
        stage = stage_at(stages, epoch)
        accelerator.print(f"epoch {epoch}: stage {stage.index} {stage.name!r} "
                          f"(clip_len={stage.data.clip_len}, loss weights {stage.loss_weights})")
        if epoch != state.epoch:
            state.start_epoch(epoch)
        state.stage = stage.name
        loss_fn = make_loss(stage, cfg, accelerator, datasets[stage.name])
        skip = state.step_in_epoch
        loader = make_loader(datasets[stage.name], cfg, stage.data, pad_id, epoch, accelerator, train=True,
                             skip_batches=skip)
        n_steps = steps_in_epoch(epoch)
        train_metrics = ActionMetrics(names["actions"], names["keys"], names["modifiers"], cfg.train.click_radius)
        if state.epoch_metric_counts is not None and accelerator.is_main_process:  # resumed mid-epoch: the steps before
            _load_counts(train_metrics, state.epoch_metric_counts)
        skipped_at_start = datasets[stage.name].skipped

        def epoch_so_far() -> None:  # collective: fold this rank's counts since the last save into the state
            reduced = _reduce_counts(accelerator, train_metrics)
            state.epoch_metric_counts = {k: v.tolist() for k, v in reduced.items()}
            state.epoch_skipped_clips += int(accelerator.reduce(
                torch.tensor(datasets[stage.name].skipped - skipped_at_start, device=accelerator.device), "sum").item())
        model.train()
        bar = tqdm(total=n_steps, initial=skip, desc=f"epoch {epoch} [{stage.name}]",
                   disable=not accelerator.is_main_process, dynamic_ncols=True)
        t_log, clips_since_log = time.perf_counter(), 0
        step_in_epoch = skip
        for batch in loader:
            if step_in_epoch >= n_steps:
                break
            # Every rank enters accumulate() once per step (it counts micro-steps) and all ranks agree
            # whether to step (DDP/ZeRO collectives) and whether to stop.
            with accelerator.accumulate(model):
                ok = batch is not None
                if ok:
                    batch = to_device(batch, accelerator.device)
                    outputs = model(batch)
                    losses = loss_fn(outputs, batch)
                    ok = bool(torch.isfinite(losses["total"]).item())
                flags = accelerator.reduce(torch.tensor([float(ok), float(stop["requested"])],
                                                        device=accelerator.device), "sum")
                all_ok, any_stop = flags[0].item() == accelerator.num_processes, flags[1].item() > 0
                if all_ok:
                    lr = scheduler.get_last_lr()[-1]  # this step's rate (DeepSpeed steps the schedule inside backward)
                    accelerator.backward(losses["total"])
                    if accelerator.sync_gradients and tc.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients:
                        scheduler.step()
                optimizer.zero_grad()
            if all_ok:
                nonfinite_in_a_row = 0
                train_metrics.update(outputs, batch)
                for k, v in losses.items():
                    state.epoch_loss_sums[k] = state.epoch_loss_sums.get(k, 0.0) + float(v.detach())
                state.epoch_loss_count += 1
                clips_since_log += batch["action"].shape[0] * accelerator.num_processes
            else:
                nonfinite_in_a_row += 1
                state.nonfinite_skipped += 1
                warnings.warn(f"epoch {epoch} step {step_in_epoch}: non-finite loss or empty batch on some rank; "
                              f"step skipped ({state.nonfinite_skipped} so far, {nonfinite_in_a_row} in a row)")
                if nonfinite_in_a_row >= tc.max_nonfinite_in_a_row:
                    last = (f"the last resume state: python train.py resume={run_dir}" if has_resume_state(run_dir)
                            else "no resume state was saved yet")
                    raise NonFiniteLossError(
                        f"{nonfinite_in_a_row} steps in a row had a non-finite loss (epoch {epoch}, step {step_in_epoch}); "
                        f"the run diverged. Lower train.lr / train.lora_lr or check the data; {last}")
            step_in_epoch += 1
            state.global_step += 1
            bar.update(1)
            if all_ok and (state.global_step % tc.log_every == 0 or step_in_epoch == n_steps):
                dt = time.perf_counter() - t_log
                rate = clips_since_log / dt if dt > 0 else None
                logger.log({"split": "train", "epoch": epoch, "step": state.global_step, "stage": stage.name,
                            "stage_index": stage.index, "lr": lr,
                            "loss": {k: float(v.detach()) for k, v in losses.items()}, "clips_per_s": rate})
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}", clips_s=f"{rate or 0:.1f}")
                t_log, clips_since_log = time.perf_counter(), 0
            if any_stop and accelerator.sync_gradients:  # stop between optimizer steps: no half-accumulated gradient lost
                bar.close()
                state.step_in_epoch = step_in_epoch
                epoch_so_far()
                return save_and_exit(f"at epoch {epoch} step {step_in_epoch}")
        bar.close()

        # ---- end of epoch: train summary, validation, checkpoints
        state.step_in_epoch = n_steps
        epoch_so_far()
        _load_counts(train_metrics, state.epoch_metric_counts)
        train_summary = train_metrics.compute()
        mean_losses = {k: v / max(1, state.epoch_loss_count) for k, v in state.epoch_loss_sums.items()}
        val = validate(model, val_sets[stage.name], loss_fn, cfg, stage, pad_id, epoch, accelerator, stop_agreed)
        if val is None:  # stopped during validation: resuming re-runs this epoch's validation, no step is repeated
            return save_and_exit(f"after epoch {epoch}'s training steps, before its validation")
        val_losses, val_summary = val
        # Logged after validation, so that an epoch whose validation was interrupted is logged once, on resume.
        logger.log({"split": "train_epoch", "epoch": epoch, "step": state.global_step, "stage": stage.name,
                    "stage_index": stage.index, "loss": mean_losses, "metrics": _scalars(train_summary),
                    "skipped_clips": state.epoch_skipped_clips})
        logger.log({"split": "val", "epoch": epoch, "step": state.global_step, "stage": stage.name,
                    "stage_index": stage.index, "loss": val_losses, "metrics": _scalars(val_summary)})
        accelerator.print(f"epoch {epoch}: val " + "  ".join(
            f"{k}={_fmt(val_summary.get(k))}" for k in ("action_acc", "action_macro_f1", "event_f1", "click_hit_rate",
                                                       "key_acc"))
            + (f"  skipped corrupt clips={state.epoch_skipped_clips}" if state.epoch_skipped_clips else ""))

        # best.pt: the best train.best_metric among epochs of the last stage, where every head trains.
        if tc.best_metric not in val_summary:
            raise SettingError(f"train.best_metric={tc.best_metric!r} is not a validation metric; choose from "
                             f"{sorted(_scalars(val_summary))}")
        value = val_summary[tc.best_metric] if val_summary[tc.best_metric] is not None else -1.0  # None: undefined
        improved = stage.index == len(stages) - 1 and (state.best_epoch is None or value > state.best_value)
        trainable = ckpt.gather_trainable_state(accelerator, model)  # collective under ZeRO-3
        _check_ranks_in_sync(accelerator, trainable, logger, epoch, state.global_step)
        metrics_for_ckpt = {"val": _scalars(val_summary), "val_loss": val_losses, "train_loss": mean_losses}
        if accelerator.is_main_process:
            if (epoch + 1) % tc.save_every == 0 or epoch + 1 == tc.epochs:
                ckpt.save_checkpoint(run_dir / f"epoch_{epoch:03d}.pt", trainable, cfg, epoch, stage.name, metrics_for_ckpt)
                ckpt.prune_epoch_snapshots(run_dir, tc.keep_last)
            if improved:
                ckpt.save_checkpoint(run_dir / "best.pt", trainable, cfg, epoch, stage.name, metrics_for_ckpt)
        if improved:
            state.best_value, state.best_epoch = value, epoch
        state.start_epoch(epoch + 1)
        ckpt.save_resume_state(accelerator, run_dir, state.state_dict())
        if stop_agreed():  # a stop that arrived during the checkpoint writes: all of them are done now
            accelerator.print(f"stop requested: saved resume state after epoch {epoch} in {run_dir}; "
                              f"continue with: python train.py resume={run_dir}")
            return _cleanup(accelerator, run_dir)

    # ======================= cleanup =======================
    accelerator.print(f"done: best val {tc.best_metric}={state.best_value:.3f} at epoch {state.best_epoch}; "
                      f"run dir {run_dir}")
    return _cleanup(accelerator, run_dir)


def class_counts(cfg, train_set) -> dict | None:
    """Frames per class of the training clips, for `loss.class_balance` (None when it is off)."""
    if not cfg.loss.get("class_balance"):
        return None
    return train_set.label_counts({h: len(cfg.labels[f"{h}s"]) for h in ("action", "key", "modifier")})


@torch.no_grad()
def validate(model, dataset, loss_fn, cfg, stage, pad_id, epoch, accelerator, should_stop=None):
    """Losses and metrics over `dataset`, built with `every_frame_once=True` so each sampled frame counts
    once (frames scored in another window carry -100 labels and `scored=False`). Per-frame metrics
    (ActionMetrics) and event metrics (evaluation/events.py, over whole episodes) in one summary.
    The training loop and eval.py both call this. None when `should_stop()` (a collective, checked between
    batches) says so."""
    names = cfg.labels
    metrics = ActionMetrics(names["actions"], names["keys"], names["modifiers"], cfg.train.click_radius)
    frames = EpisodeFrames()
    loader = make_loader(dataset, cfg, stage.data, pad_id, epoch, accelerator, train=False)
    model.eval()
    sums = torch.zeros(0)
    keys: list[str] = []
    n = 0
    limit = min(cfg.train.max_val_steps or len(loader), len(loader))
    inner = accelerator.unwrap_model(model)
    for i, batch in enumerate(tqdm(loader, total=limit, desc="val", leave=False,
                                   disable=not accelerator.is_main_process)):
        if i >= limit:
            break  # every rank stops at the same batch (equal shards)
        if should_stop is not None and should_stop():
            model.train()
            return None
        if batch is None:
            continue
        batch = to_device(batch, accelerator.device)
        outputs = model(batch)
        keep = batch["counted"]
        scored = batch["scored"] & keep[:, None]
        if outputs.transcript_targets is not None:  # frames scored in another window: no teacher-forced score
            outputs.transcript_targets = outputs.transcript_targets.masked_fill(~scored[..., None], IGNORE_INDEX)
        if inner.has_transcript:  # model=parallel: generated vs reference text per frame -> CER/WER
            # Every rank transcribes every batch, with a fixed step count when distributed (ZeRO-3 collectives).
            preds = inner.transcribe(batch, early_stop=accelerator.num_processes == 1)
            refs = inner.reference_transcripts(batch)
            mask = scored.tolist()
            metrics.update_transcripts([t for c, m in zip(preds, mask) for t, s in zip(c, m) if s],
                                       [t for c, m in zip(refs, mask) for t, s in zip(c, m) if s])
        frames.add_batch(outputs, batch, keep)
        if keep.any():
            sel_out, sel_batch = select(outputs, keep), select(batch, keep)
            metrics.update(sel_out, sel_batch)
            losses = loss_fn(sel_out, sel_batch)
            keys = sorted(losses)
            weight = int(scored.sum())  # batch-mean losses weighted by the frames they scored
            vals = torch.stack([losses[k].detach().float() for k in keys]) * weight
            sums = vals if sums.numel() == 0 else sums + vals
            n += weight
    model.train()
    if not keys:
        keys = ["total"]
        sums = torch.zeros(1)
    total = accelerator.reduce(torch.cat([sums.to(accelerator.device), torch.tensor([float(n)], device=accelerator.device)]), "sum")
    val_losses = {k: float(total[i] / max(1.0, float(total[-1]))) for i, k in enumerate(keys)}
    metrics.load_state(_reduce_counts(accelerator, metrics))
    summary = metrics.compute()
    if accelerator.num_processes > 1:  # an episode's windows are spread over ranks: rebuild episodes on each
        frames.rows = gather_object(frames.rows)
    tolerance = int((cfg.get("eval") or {}).get("event_tolerance", 2))
    summary.update(frames.event_counts(names["actions"], names["keys"], names["modifiers"], tolerance).compute())
    return val_losses, summary


def _reduce_counts(accelerator, metrics: ActionMetrics) -> dict[str, torch.Tensor]:
    """The metric counts summed over ranks (a collective), on CPU."""
    return {k: accelerator.reduce(v.to(accelerator.device), "sum").cpu() for k, v in metrics.state().items()}


def _load_counts(metrics: ActionMetrics, counts: dict[str, list]) -> None:
    """Metric counts saved as JSON lists, back in each count's own dtype (float64 sums stay exact)."""
    own = metrics.state()
    metrics.load_state({k: torch.tensor(v, dtype=own[k].dtype) for k, v in counts.items()})


def _check_ranks_in_sync(accelerator, trainable: dict, logger, epoch: int, step: int) -> None:
    """Every rank must hold the same trained weights; log one hash per rank and warn if they differ."""
    if accelerator.num_processes == 1:
        return
    digest = hashlib.sha256()
    for k in sorted(trainable):
        digest.update(k.encode())
        digest.update(trainable[k].float().numpy().tobytes())
    hashes = gather_object([digest.hexdigest()[:16]])
    logger.log({"split": "sync", "epoch": epoch, "step": step, "rank_weight_hashes": hashes})
    if len(set(hashes)) > 1:
        warnings.warn(f"epoch {epoch}: trained weights differ across ranks {hashes}; the processes are out of sync")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _scalars(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float))}


def _cleanup(accelerator, run_dir: Path) -> Path:
    # Barrier first: end_training() destroys the process group (a barrier after it fails), and letting
    # every rank finish its last collective before teardown avoids gloo aborting at exit.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run_dir
