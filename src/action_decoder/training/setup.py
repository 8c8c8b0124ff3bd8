"""What a training step needs, built the same way for train.py and what times its step (scripts/preflight.py,
scripts/real_size_step.py, bench/bench_train.py, bench/bench_gpu.py): the Accelerator (one precision for the run),
the optimizer (LoRA at its own rate), the schedule and the loss."""
from __future__ import annotations

import math
import os

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from omegaconf import DictConfig

from action_decoder.cli import SettingError
from action_decoder.models.losses import ActionLoss, build_loss
from action_decoder.training import checkpoint as ckpt


def resolve_precision(configured: str | None, launcher: str | None) -> str:
    """One precision for the run from `train.mixed_precision` and the launcher's (`accelerate launch` passes its
    config's / --mixed_precision's value as ACCELERATE_MIXED_PRECISION). Accelerator(mixed_precision=...) would
    silently override the launcher, so a disagreement stops the run instead."""
    if configured is None:
        return launcher or "no"
    if launcher is not None and launcher != configured:
        raise SettingError(f"train.mixed_precision={configured} but the accelerate launcher says mixed_precision={launcher} "
                         f"(launch config or --mixed_precision); make them agree, e.g. train.mixed_precision={launcher} "
                         f"or --mixed_precision {configured}")
    return configured


def make_accelerator(cfg: DictConfig) -> Accelerator:
    """The run's Accelerator; sets cfg.train.mixed_precision to the precision that runs (config.yaml records it)."""
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
        raise SettingError(f"the accelerate launch config sets gradient_accumulation_steps="
                         f"{accelerator.gradient_accumulation_steps} but train.grad_accum={tc.grad_accum}; remove it "
                         "from the launch config / command line and set train.grad_accum")
    return optimizer


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LambdaLR factor: linear warm-up over `warmup_steps`, then a cosine down to 0 at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def class_counts(cfg, train_set) -> dict | None:
    """Frames per class of the training clips, for `loss.class_balance` (None when it is off)."""
    if not cfg.loss.get("class_balance"):
        return None
    return train_set.label_counts({h: len(cfg.labels[f"{h}s"]) for h in ("action", "key", "modifier")})


def make_loss(stage, cfg: DictConfig, accelerator, train_set) -> ActionLoss:
    # Under ZeRO-3 the LM head is partitioned outside its forward: no checkpointed recompute of transcript logits.
    return build_loss(cfg.loss, stage.loss_weights, class_counts(cfg, train_set),
                      recompute_logits=not ckpt.is_zero3(accelerator))
