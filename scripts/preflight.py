"""Before a long job: check the data, build the model, time real steps, project the run.

    python scripts/preflight.py experiment=march10_baseline data=recordings data.prepared_dir=/data/prepared
    accelerate launch --config_file conf/accelerate/multi_gpu.yaml scripts/preflight.py experiment=... [preflight.steps=5]

Same launcher, same config tree and overrides as train.py (conf/preflight.yaml adds `preflight.*`). It decodes a
sample of the training clips (labels checked against the vocabulary as the dataset loads), builds the model and
optimizer exactly as training does, runs `preflight.steps` optimizer steps at `train.batch_size` (one untimed warm-up
step first) and prints per-step time, peak device and host memory, clips/s, MFU on CUDA, and the projected time of
an epoch and of the whole run. Nothing is saved. On any failure it exits 1 with one line saying why (out of memory at
which batch and dtype, missing data, a clip that does not decode, a non-finite loss).
"""
from __future__ import annotations

import math
import resource
import sys
import time

import hydra
import torch
from omegaconf import DictConfig

from action_decoder import cli

class PreflightError(RuntimeError):
    """A reason to stop, already phrased for the user."""


def host_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def check_data(dataset, n: int) -> int:
    """Decode n training clips spread over the split; a clip that does not decode is an error here."""
    if len(dataset) == 0:
        raise PreflightError("the training split holds no clip: check data.prepared_dir and data.clip_len")
    picks = sorted({int(i * len(dataset) / n) for i in range(min(n, len(dataset)))})
    for i in picks:
        if dataset[i] is None:
            raise PreflightError(f"training clip {i} of {len(dataset)} does not decode (see the warning above); "
                                 "run scripts/validate_data.py")
    return len(picks)


def preflight(cfg: DictConfig) -> dict:
    from accelerate.utils import set_seed

    from action_decoder.data.clips import build_clip_dataset
    from action_decoder.data.tokenizer import build_tokenizer
    from action_decoder.models.build import build_model
    from action_decoder.training.curriculum import build_stages, stage_at
    from action_decoder.data.loader import EpochSampler, make_loader, to_device
    from action_decoder.training.setup import make_accelerator, make_loss, make_optimizer
    from action_decoder.training.throughput import peak_bf16_flops, timed_step

    tc, pc = cfg.train, cfg.preflight
    accelerator = make_accelerator(cfg)
    say = accelerator.print
    set_seed(cfg.seed)
    tokenizer = build_tokenizer(cfg.backbone.text)
    stages = build_stages(cfg)
    stage = stages[0]
    datasets = {s.name: build_clip_dataset(cfg, "train", tokenizer, data_cfg=s.data) for s in stages}
    dataset = datasets[stage.name]
    checked = check_data(dataset, int(pc.sample_clips))
    say(f"data: {checked} training clips decoded of {len(dataset)} ({cfg.data.prepared_dir})")
    if len(dataset) // accelerator.num_processes < tc.batch_size:
        raise PreflightError(f"{len(dataset)} training clips are fewer than train.batch_size={tc.batch_size} x "
                             f"{accelerator.num_processes} processes")

    t0 = time.perf_counter()
    model = build_model(cfg, tokenizer)
    optimizer = make_optimizer(model, accelerator, tc)
    model, optimizer = accelerator.prepare(model, optimizer)
    say(f"model: built and prepared in {time.perf_counter() - t0:.0f} s "
        f"(backbone {cfg.backbone.dtype}, mixed_precision {tc.mixed_precision}, {accelerator.num_processes} process(es))")

    loss_fn = make_loss(stage, cfg, accelerator, dataset)
    sampler = EpochSampler(len(dataset), cfg.seed, accelerator.process_index, accelerator.num_processes, train=True)
    loader = make_loader(dataset, sampler, tc.batch_size, stage.data.num_workers, tokenizer.pad_token_id)
    device = accelerator.device
    cuda = device.type == "cuda"
    steps = int(pc.steps)
    if steps < 1:
        raise PreflightError(f"preflight.steps={steps}: time at least one step")
    model.train()
    times, flops = [], None
    batches = iter(loader)
    for step in range(steps + 1):  # step 0: warm-up (allocator, kernels, DeepSpeed buffers), also counts FLOPs
        batch = next(batches, None)
        if batch is None:
            raise PreflightError(f"the training loader ran out after {step} batches; lower preflight.steps")
        batch = to_device(batch, device)
        # the training loop's own step (train_step on each micro-batch), without a schedule
        timed = timed_step(model, [batch] * tc.grad_accum, loss_fn, optimizer, None, accelerator, tc.max_grad_norm,
                           count_flops=step == 0)
        bad = next((r for r in timed.results if not r.taken), None)
        if bad is not None:
            raise PreflightError(f"non-finite loss at step {step}: "
                                 f"{ {k: float(v.detach()) for k, v in bad.losses.items()} }")
        losses = timed.results[-1].losses
        if step == 0:
            flops = timed.flops  # this process, one optimizer step
        else:
            times.append(timed.seconds)
            say(f"step {step}: {times[-1]:.3f} s, loss {float(losses['total'].detach()):.4f}")

    step_s = sorted(times)[len(times) // 2]
    clips = tc.batch_size * tc.grad_accum * accelerator.num_processes
    per_epoch = [len(datasets[stage_at(stages, e).name]) // accelerator.num_processes // tc.batch_size
                 for e in range(tc.epochs)]
    per_epoch = [min(n, tc.max_steps_per_epoch or n) // tc.grad_accum for n in per_epoch]
    peak = peak_bf16_flops(device)
    result = {
        "step_s": step_s, "clips_per_s": clips / step_s,
        "peak_device_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
        "peak_host_bytes": host_peak_bytes(),
        "flops_per_step": flops, "mfu": flops / step_s / peak if peak and flops else None,
        "epoch_s": per_epoch[0] * step_s, "run_s": sum(per_epoch) * step_s,
    }
    gib = 2**30
    device_mem = f"{result['peak_device_bytes'] / gib:.2f} GiB" if cuda else "n/a (no CUDA)"
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a" + ("" if cuda else " (no CUDA)")
    say(f"preflight OK: {step_s:.3f} s/optimizer step (median of {steps}), {result['clips_per_s']:.2f} clips/s, "
        f"peak device memory {device_mem}, peak host memory {result['peak_host_bytes'] / gib:.2f} GiB, "
        f"{flops / 1e9:,.1f} GFLOP/step/process, MFU {mfu}")
    say(f"projected: epoch 0 = {per_epoch[0]} optimizer steps = {_hms(result['epoch_s'])}; "
        f"{tc.epochs} epochs = {_hms(result['run_s'])} (training steps only, validation not included)")
    return result


def _hms(seconds: float) -> str:
    h, rest = divmod(int(math.ceil(seconds)), 3600)
    return f"{h}h{rest // 60:02d}m{rest % 60:02d}s"


def _reason(err: BaseException, cfg: DictConfig) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    oom = isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower() \
        or "can't allocate memory" in str(err).lower()
    if oom:
        return (f"out of memory at train.batch_size={cfg.train.batch_size} (data.clip_len={cfg.data.clip_len}, "
                f"backbone.dtype={cfg.backbone.dtype}, mixed_precision={cfg.train.mixed_precision}): {text}")
    return text if isinstance(err, PreflightError) else f"{type(err).__name__}: {text}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="preflight")
def main(cfg: DictConfig) -> None:
    try:
        preflight(cfg)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line and exit status 1
        print(f"preflight FAILED: {_reason(err, cfg)}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    cli.entry(main)
