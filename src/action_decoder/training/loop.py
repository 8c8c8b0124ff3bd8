"""The training loop, top to bottom: setup -> train (stages x epochs x steps, validate, checkpoint) -> cleanup.

One Accelerate loop for every launch mode: a plain `python train.py`, `accelerate launch` with DDP on CPU or
GPUs, DeepSpeed ZeRO-2/3, several nodes. Data order is ours (data/loader.py's EpochSampler: a seeded per-epoch
permutation, sharded by rank), which makes a resumed run continue on exactly the batches an uninterrupted run would
have seen. One step is training/step.py's `train_step`; validation is training/validate.py.
"""
from __future__ import annotations

import hashlib
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object, set_seed
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from action_decoder.cli import SettingError
from action_decoder.data.clips import build_clip_dataset, split_files
from action_decoder.data.loader import EpochSampler, make_loader, to_device
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.training import checkpoint as ckpt
from action_decoder.training.curriculum import Stage, build_stages, stage_at
from action_decoder.training.loggers import MetricsLogger
from action_decoder.training.run_dir import RESUME_DIRNAME, has_resume_state, resolve_resume_dir, share_run_dir
from action_decoder.training.setup import make_accelerator, make_loss, make_optimizer, warmup_cosine
from action_decoder.training.step import train_step
from action_decoder.training.train_state import RunLayout, TrainState
from action_decoder.training.validate import load_counts, new_metrics, reduce_counts, validate

SUMMARY_KEYS = ("action_acc", "action_macro_f1", "event_f1", "click_hit_rate", "key_acc")  # the printed val line


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Run:
    """Everything setup() builds and the epochs share."""
    cfg: DictConfig
    accelerator: Any
    run_dir: Path
    stages: list[Stage]
    datasets: dict[str, Any]   # stage name -> training clips
    val_sets: dict[str, Any]   # stage name -> validation clips (each frame once)
    model: Any
    optimizer: Any
    scheduler: Any
    logger: MetricsLogger
    state: TrainState
    pad_id: int
    stop: dict = field(default_factory=lambda: {"requested": False})  # set by SIGTERM/SIGINT

    def stop_agreed(self) -> bool:  # a collective: every rank stops at the same point
        flag = torch.tensor(float(self.stop["requested"]), device=self.accelerator.device)
        return self.accelerator.reduce(flag, "sum").item() > 0

    @property
    def optimizer_step(self) -> int:  # what curves plot; state.global_step counts micro-steps
        return self.state.global_step // self.cfg.train.grad_accum

    def steps_in_epoch(self, epoch: int) -> int:
        tc = self.cfg.train
        n = len(self.datasets[stage_at(self.stages, epoch).name]) // self.accelerator.num_processes // tc.batch_size
        n = min(n, tc.max_steps_per_epoch or n)
        # Whole accumulation cycles only: our loaders are not prepared, so accelerate cannot see the epoch end
        # and would carry a partial cycle's gradients into the next epoch.
        return n - n % tc.grad_accum


def train(cfg: DictConfig, hydra_run_dir: str | Path, overrides: list[str] | None = None) -> float | None:
    """Run (or resume) the training run `cfg`; returns its best `train.best_metric` (None if no epoch of the last
    stage was validated, e.g. a run stopped early). `overrides` are its command-line overrides, kept for `resume=`."""
    run = setup(cfg, hydra_run_dir, overrides)
    for epoch in range(run.state.epoch, cfg.train.epochs):
        if not train_epoch(run, epoch):
            return cleanup(run, stopped=True)
    return cleanup(run)


# ======================= setup =======================

def setup(cfg: DictConfig, hydra_run_dir: str | Path, overrides: list[str] | None) -> Run:
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

    model = build_model(cfg, tokenizer)
    optimizer = make_optimizer(model, accelerator, tc)
    run = Run(cfg, accelerator, run_dir, stages, datasets, val_sets, model, optimizer, None, None, state,
              tokenizer.pad_token_id)
    if run.steps_in_epoch(0) == 0:
        raise SettingError(f"an epoch holds fewer than train.grad_accum={tc.grad_accum} micro-steps; lower train.grad_accum "
                         "or train.batch_size, or raise train.max_steps_per_epoch")
    optimizer_steps = sum(run.steps_in_epoch(e) // tc.grad_accum for e in range(tc.epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(optimizer_steps, int(tc.warmup_ratio * optimizer_steps)))
    run.model, run.optimizer, run.scheduler = accelerator.prepare(model, optimizer, scheduler)
    ckpt.install_trainable_only_hooks(accelerator)

    if resume_dir is not None:
        state.load_state_dict(ckpt.load_resume_state(accelerator, run_dir))
        accelerator.print(f"resumed {run_dir} at epoch {state.epoch} step {state.step_in_epoch} (stage {state.stage})")
    run.logger = MetricsLogger(accelerator, run_dir, cfg, state.wandb_run_id)
    state.wandb_run_id = run.logger.wandb_run_id

    def request_stop(signum, frame):  # SIGTERM/SIGINT (SLURM preemption, Ctrl-C): finish the step, save, exit 0
        run.stop["requested"] = True
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return run


# ======================= train =======================

class EpochProgress:
    """The epoch's training counts on this rank, and their fold into the resume state (a collective)."""

    def __init__(self, run: Run, stage: Stage):
        self.run, self.dataset = run, run.datasets[stage.name]
        self.metrics = new_metrics(run.cfg)
        if run.state.epoch_metric_counts is not None and run.accelerator.is_main_process:  # resumed mid-epoch
            load_counts(self.metrics, run.state.epoch_metric_counts)
        self.skipped_at_fold = self.dataset.skipped

    def fold(self) -> None:
        """Every rank's counts so far into run.state, so a resume state holds the whole epoch up to here."""
        acc, state = self.run.accelerator, self.run.state
        state.epoch_metric_counts = {k: v.tolist() for k, v in reduce_counts(acc, self.metrics).items()}
        new_skips = torch.tensor(self.dataset.skipped - self.skipped_at_fold, device=acc.device)
        state.epoch_skipped_clips += int(acc.reduce(new_skips, "sum").item())
        self.skipped_at_fold = self.dataset.skipped


def train_epoch(run: Run, epoch: int) -> bool:
    """Train one epoch (from where a resumed run stopped), validate and checkpoint; False if a stop was requested."""
    cfg, acc, state, tc = run.cfg, run.accelerator, run.state, run.cfg.train
    stage = stage_at(run.stages, epoch)
    acc.print(f"epoch {epoch}: stage {stage.index} {stage.name!r} "
              f"(clip_len={stage.data.clip_len}, loss weights {stage.loss_weights})")
    if epoch != state.epoch:
        state.start_epoch(epoch)
    state.stage = stage.name
    loss_fn = make_loss(stage, cfg, acc, run.datasets[stage.name])
    skip = state.step_in_epoch
    sampler = EpochSampler(len(run.datasets[stage.name]), cfg.seed, acc.process_index, acc.num_processes,
                           train=True, start=skip * tc.batch_size)
    sampler.set_epoch(epoch)
    loader = make_loader(run.datasets[stage.name], sampler, tc.batch_size, stage.data.num_workers, run.pad_id)
    n_steps = run.steps_in_epoch(epoch)
    progress = EpochProgress(run, stage)
    run.model.train()
    bar = tqdm(total=n_steps, initial=skip, desc=f"epoch {epoch} [{stage.name}]", disable=not acc.is_main_process,
               dynamic_ncols=True)
    t_log, clips_since_log, nonfinite_in_a_row = time.perf_counter(), 0, 0
    step_in_epoch = skip
    for batch in loader:
        if step_in_epoch >= n_steps:
            break
        batch = to_device(batch, acc.device) if batch is not None else None
        result = train_step(run.model, batch, loss_fn, run.optimizer, run.scheduler, acc, tc.max_grad_norm,
                            run.stop["requested"])
        if result.taken:
            nonfinite_in_a_row = 0
            progress.metrics.update(result.outputs, batch)
            for k, v in result.losses.items():
                state.epoch_loss_sums[k] = state.epoch_loss_sums.get(k, 0.0) + float(v.detach())
            state.epoch_loss_count += 1
            clips_since_log += batch["action"].shape[0] * acc.num_processes
        else:
            nonfinite_in_a_row += 1
            state.nonfinite_skipped += 1
            check_divergence(run, epoch, step_in_epoch, nonfinite_in_a_row)
        step_in_epoch += 1
        state.global_step += 1
        bar.update(1)
        if result.taken and (state.global_step % tc.log_every == 0 or step_in_epoch == n_steps):
            dt = time.perf_counter() - t_log
            rate = clips_since_log / dt if dt > 0 else None
            run.logger.log({"split": "train", "epoch": epoch, "step": state.global_step, "optimizer_step": run.optimizer_step, "stage": stage.name,
                            "stage_index": stage.index, "lr": result.lr,
                            "loss": {k: float(v.detach()) for k, v in result.losses.items()}, "clips_per_s": rate})
            bar.set_postfix(loss=f"{float(result.losses['total'].detach()):.3f}", clips_s=f"{rate or 0:.1f}")
            t_log, clips_since_log = time.perf_counter(), 0
        if not acc.sync_gradients:
            continue  # below: between optimizer steps only, so no half-accumulated gradient is lost
        state.step_in_epoch = step_in_epoch
        if result.stop:
            bar.close()
            progress.fold()
            save_and_report_stop(run, f"at epoch {epoch} step {step_in_epoch}")
            return False
        if tc.val_every_steps and run.optimizer_step % tc.val_every_steps == 0 and step_in_epoch < n_steps:
            # Not interruptible (a stop waits for it): a resume state saved mid-validation would skip it.
            val_losses, val_summary = validate(run.model, run.val_sets[stage.name], loss_fn, cfg, stage, run.pad_id, acc)
            log_validation(run, epoch, stage, val_losses, val_summary)
            keep_if_best(run, epoch, stage, val_summary, {"val": scalars(val_summary), "val_loss": val_losses})
            progress.fold()
            ckpt.save_resume_state(acc, run.run_dir, state.state_dict())
    bar.close()
    return end_of_epoch(run, epoch, stage, loss_fn, n_steps, progress)


def check_divergence(run: Run, epoch: int, step: int, in_a_row: int) -> None:
    warnings.warn(f"epoch {epoch} step {step}: non-finite loss or empty batch on some rank; step skipped "
                  f"({run.state.nonfinite_skipped} so far, {in_a_row} in a row)")
    if in_a_row >= run.cfg.train.max_nonfinite_in_a_row:
        last = (f"the last resume state: python train.py resume={run.run_dir}" if has_resume_state(run.run_dir)
                else "no resume state was saved yet")
        raise NonFiniteLossError(f"{in_a_row} steps in a row had a non-finite loss (epoch {epoch}, step {step}); the "
                                 f"run diverged. Lower train.lr / train.lora_lr or check the data; {last}")


def end_of_epoch(run: Run, epoch: int, stage: Stage, loss_fn, n_steps: int, progress: EpochProgress) -> bool:
    """Train summary, validation, checkpoints and the resume state; False if a stop was requested."""
    acc, state, tc = run.accelerator, run.state, run.cfg.train
    state.step_in_epoch = n_steps
    progress.fold()
    load_counts(progress.metrics, state.epoch_metric_counts)
    train_summary = progress.metrics.compute()
    mean_losses = {k: v / max(1, state.epoch_loss_count) for k, v in state.epoch_loss_sums.items()}
    val = validate(run.model, run.val_sets[stage.name], loss_fn, run.cfg, stage, run.pad_id, acc, run.stop_agreed)
    if val is None:  # stopped during validation: resuming re-runs this epoch's validation, no step is repeated
        save_and_report_stop(run, f"after epoch {epoch}'s training steps, before its validation")
        return False
    val_losses, val_summary = val
    # Logged after validation, so that an epoch whose validation was interrupted is logged once, on resume.
    run.logger.log({"split": "train_epoch", "epoch": epoch, "step": state.global_step, "optimizer_step": run.optimizer_step, "stage": stage.name,
                    "stage_index": stage.index, "loss": mean_losses, "metrics": scalars(train_summary),
                    "skipped_clips": state.epoch_skipped_clips})
    log_validation(run, epoch, stage, val_losses, val_summary)

    metrics = {"val": scalars(val_summary), "val_loss": val_losses, "train_loss": mean_losses}
    trainable = keep_if_best(run, epoch, stage, val_summary, metrics)
    if acc.is_main_process and ((epoch + 1) % tc.save_every == 0 or epoch + 1 == tc.epochs):
        ckpt.save_checkpoint(run.run_dir / f"epoch_{epoch:03d}.pt", trainable, run.cfg, epoch, stage.name, metrics)
        ckpt.prune_epoch_snapshots(run.run_dir, tc.keep_last)
    check_ranks_in_sync(run, trainable, epoch)
    state.start_epoch(epoch + 1)
    ckpt.save_resume_state(acc, run.run_dir, state.state_dict())
    if run.stop_agreed():  # a stop that arrived during the checkpoint writes: all of them are done now
        acc.print(f"stop requested: saved resume state after epoch {epoch} in {run.run_dir}; "
                  f"continue with: python train.py resume={run.run_dir}")
        return False
    return True


def log_validation(run: Run, epoch: int, stage: Stage, val_losses: dict, val_summary: dict) -> None:
    state = run.state
    run.logger.log({"split": "val", "epoch": epoch, "step": state.global_step, "optimizer_step": run.optimizer_step, "stage": stage.name,
                    "stage_index": stage.index, "loss": val_losses, "metrics": scalars(val_summary)})
    run.accelerator.print(f"epoch {epoch} step {state.global_step}: val " + "  ".join(
        f"{k}={fmt(val_summary.get(k))}" for k in SUMMARY_KEYS)
        + (f"  skipped corrupt clips={state.epoch_skipped_clips}" if state.epoch_skipped_clips else ""))


def keep_if_best(run: Run, epoch: int, stage: Stage, val_summary: dict, metrics: dict) -> dict:
    """best.pt: the best train.best_metric among validations of the last stage, where every head trains. Returns
    the trainable weights (gathered: a collective under ZeRO-3)."""
    tc, state = run.cfg.train, run.state
    if tc.best_metric not in val_summary:
        raise SettingError(f"train.best_metric={tc.best_metric!r} is not a validation metric; choose from "
                         f"{sorted(scalars(val_summary))}")
    value = val_summary[tc.best_metric] if val_summary[tc.best_metric] is not None else -1.0  # None: undefined
    improved = stage.index == len(run.stages) - 1 and (state.best_epoch is None or value > state.best_value)
    trainable = ckpt.gather_trainable_state(run.accelerator, run.model)
    if improved and run.accelerator.is_main_process:
        ckpt.save_checkpoint(run.run_dir / "best.pt", trainable, run.cfg, epoch, stage.name,
                             {**metrics, "step": state.global_step})
    if improved:
        state.best_value, state.best_epoch, state.best_step = value, epoch, state.global_step
    return trainable


def check_ranks_in_sync(run: Run, trainable: dict, epoch: int) -> None:
    """Every rank must hold the same trained weights; log one hash per rank and warn if they differ."""
    if run.accelerator.num_processes == 1:
        return
    digest = hashlib.sha256()
    for k in sorted(trainable):
        digest.update(k.encode())
        digest.update(trainable[k].float().numpy().tobytes())
    hashes = gather_object([digest.hexdigest()[:16]])
    run.logger.log({"split": "sync", "epoch": epoch, "step": run.state.global_step, "rank_weight_hashes": hashes})
    if len(set(hashes)) > 1:
        warnings.warn(f"epoch {epoch}: trained weights differ across ranks {hashes}; the processes are out of sync")


def save_and_report_stop(run: Run, where: str) -> None:
    ckpt.save_resume_state(run.accelerator, run.run_dir, run.state.state_dict())
    run.accelerator.print(f"stop requested: saved resume state {where} in {run.run_dir}; "
                          f"continue with: python train.py resume={run.run_dir}")


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def scalars(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float))}


# ======================= cleanup =======================

def cleanup(run: Run, stopped: bool = False) -> float | None:
    state, tc = run.state, run.cfg.train
    if not stopped and state.best_epoch is not None:
        run.accelerator.print(f"done: best val {tc.best_metric}={state.best_value:.3f} at epoch {state.best_epoch} "
                              f"step {state.best_step}; run dir {run.run_dir}")
    # Barrier first: end_training() destroys the process group (a barrier after it fails), and letting
    # every rank finish its last collective before teardown avoids gloo aborting at exit.
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return state.best_value if state.best_epoch is not None else None
