"""Measuring steps: one optimizer step of `train_step` timed, model FLOPs utilisation against the device's datasheet
peak, and this process's resident memory (the figures preflight, scripts/real_size_step.py and bench/ report)."""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from action_decoder.training.step import StepResult, train_step

# Dense bf16 tensor-core peak per device (datasheet, no sparsity); devices not listed get no MFU.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_bf16_flops(device: torch.device) -> float | None:
    """Datasheet bf16 peak of a CUDA device, None on CPU or an unlisted device."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


@dataclass
class TimedStep:
    seconds: float               # wall time of the optimizer step, the device synchronized at both ends
    results: list[StepResult]    # one per micro-step
    flops: int | None            # this process's FLOPs over the step, when counted

    @property
    def taken(self) -> bool:
        return all(r.taken for r in self.results)


def timed_step(model, micro_batches: list[dict], loss_fn, optimizer, scheduler, accelerator, max_grad_norm: float,
               count_flops: bool = False) -> TimedStep:
    """One optimizer step: `train_step` on each of `micro_batches` (already on the device; as many as the
    accelerator accumulates), timed as a whole. FLOPs counting slows the step: time another one."""
    device = accelerator.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    counter = FlopCounterMode(display=False) if count_flops else None
    start = time.perf_counter()
    with counter or nullcontext():
        results = [train_step(model, batch, loss_fn, optimizer, scheduler, accelerator, max_grad_norm)
                   for batch in micro_batches]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return TimedStep(time.perf_counter() - start, results, counter.get_total_flops() if counter else None)


# ---- host memory (Linux /proc) ----------------------------------------------------------------------------

def proc_status_bytes(field: str) -> int:
    """A memory line of /proc/self/status in bytes: VmRSS (resident now), VmHWM (peak resident since start or since
    `reset_peak_rss`). ru_maxrss would not do for a peak after a reset: Linux never lowers it, and carries it over
    from the parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Lower VmHWM to the current resident set, so that the next peak counts only what follows
    (clear_refs value 5; raises OSError where the kernel does not allow it)."""
    Path("/proc/self/clear_refs").write_text("5")
