"""Validation: losses and metrics of a model over a split, each sampled frame counted once. The training loop calls
it every `train.val_every_steps` and at each epoch's end; eval.py calls it through evaluation/evaluate.py."""
from __future__ import annotations

import dataclasses

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from action_decoder.data.loader import EpochSampler, counted_mask, make_loader, to_device
from action_decoder.data.vocab import IGNORE_INDEX
from action_decoder.evaluation.events import EpisodeFrames
from action_decoder.evaluation.metrics import ActionMetrics


def select(obj, mask: torch.Tensor):
    """Rows where `mask` is True of every batch-leading tensor of a batch dict or an Outputs dataclass."""
    def pick(v):
        return v[mask] if torch.is_tensor(v) and v.shape[:1] == mask.shape else v
    if isinstance(obj, dict):
        return {k: pick(v) for k, v in obj.items()}
    return dataclasses.replace(obj, **{f.name: pick(getattr(obj, f.name)) for f in dataclasses.fields(obj)})


def new_metrics(cfg) -> ActionMetrics:
    names = cfg.labels
    return ActionMetrics(names["actions"], names["keys"], names["modifiers"], cfg.train.click_radius)


def reduce_counts(accelerator, metrics: ActionMetrics) -> dict[str, torch.Tensor]:
    """The metric counts summed over ranks (a collective), on CPU."""
    return {k: accelerator.reduce(v.to(accelerator.device), "sum").cpu() for k, v in metrics.state().items()}


def load_counts(metrics: ActionMetrics, counts: dict[str, list]) -> None:
    """Metric counts saved as JSON lists, back in each count's own dtype (float64 sums stay exact)."""
    own = metrics.state()
    metrics.load_state({k: torch.tensor(v, dtype=own[k].dtype) for k, v in counts.items()})


@torch.no_grad()
def validate(model, dataset, loss_fn, cfg, stage, pad_id, accelerator, should_stop=None):
    """(losses, summary) over `dataset`, built with `every_frame_once=True` so each sampled frame counts once
    (frames scored in another window carry -100 labels and `scored=False`). Per-frame metrics (ActionMetrics) and
    event metrics (evaluation/events.py, over whole episodes) in one summary. None when `should_stop()` (a
    collective, checked between batches) says so."""
    metrics = new_metrics(cfg)
    frames = EpisodeFrames()
    sampler = EpochSampler(len(dataset), cfg.seed, accelerator.process_index, accelerator.num_processes, train=False)
    loader = make_loader(dataset, sampler, cfg.train.batch_size, stage.data.num_workers, pad_id)
    seen = set() if sampler.real_count() else {dataset.clip_id(0)}  # an empty shard runs clip 0 for the collectives
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
        keep = counted_mask(batch["clip_id"], seen).to(accelerator.device)
        outputs = model(batch)
        scored = batch["scored"] & keep[:, None]
        if outputs.transcript_targets is not None:  # frames scored in another window: no teacher-forced score
            outputs.transcript_targets = outputs.transcript_targets.masked_fill(~scored[..., None], IGNORE_INDEX)
        if inner.has_transcript:  # generated vs reference text per frame -> CER/WER
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
    metrics.load_state(reduce_counts(accelerator, metrics))
    summary = metrics.compute()
    if accelerator.num_processes > 1:  # an episode's windows are spread over ranks: rebuild episodes on each
        frames.rows = gather_object(frames.rows)
    names = cfg.labels
    tolerance = int((cfg.get("eval") or {}).get("event_tolerance", 2))
    summary.update(frames.event_counts(names["actions"], names["keys"], names["modifiers"], tolerance).compute())
    return val_losses, summary
