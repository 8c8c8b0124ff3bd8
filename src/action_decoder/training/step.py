"""One training micro-step: what train.py runs, and what everything that times a step runs (training/throughput.py's
`timed_step`: scripts/preflight.py, scripts/real_size_step.py, bench/bench_train.py, bench/bench_gpu.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class StepResult:
    taken: bool        # every rank had a batch and a finite loss, so the step was taken
    stop: bool         # some rank was asked to stop (a signal): stop at the next optimizer-step boundary
    losses: dict[str, torch.Tensor] | None  # this rank's losses (None without a batch)
    outputs: Any | None
    lr: float | None   # the rate this step used


def train_step(model, batch: dict | None, loss_fn, optimizer, scheduler, accelerator, max_grad_norm: float,
               stop_requested: bool = False) -> StepResult:
    """Forward, loss, the finite-loss and stop votes, backward, clipping at accumulation boundaries, optimizer and
    schedule steps. `batch` is on the device, or None (every item corrupt).

    Every rank calls this once per micro-step: accumulate() counts micro-steps, and the votes are collectives, so
    all ranks agree whether to step (DDP/ZeRO collectives follow) and whether to stop. A non-finite loss on any
    rank skips the step on all of them."""
    losses = outputs = None
    with accelerator.accumulate(model):
        ok = batch is not None
        if ok:
            outputs = model(batch)
            losses = loss_fn(outputs, batch)
            ok = bool(torch.isfinite(losses["total"]).item())
        votes = accelerator.reduce(torch.tensor([float(ok), float(stop_requested)], device=accelerator.device), "sum")
        taken, stop = votes[0].item() == accelerator.num_processes, votes[1].item() > 0
        lr = None
        if taken:
            lr = scheduler.get_last_lr()[-1] if scheduler is not None else optimizer.param_groups[-1]["lr"]
            accelerator.backward(losses["total"])  # DeepSpeed steps the schedule inside backward: lr read before
            if accelerator.sync_gradients and max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients and scheduler is not None:
                scheduler.step()
        optimizer.zero_grad()
    return StepResult(taken, stop, losses, outputs, lr)
