"""Evaluate a checkpoint on a split with the same validation code and metrics the training loop uses."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from action_decoder.data.clips import build_clip_dataset
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.losses import build_loss
from action_decoder.training.checkpoint import load_checkpoint
from action_decoder.training.curriculum import build_stages
from action_decoder.training.loop import class_counts, validate


def load_model_from_checkpoint(path: str | Path, data_overrides: dict | None = None):
    """(model, tokenizer, cfg, ckpt): the model rebuilt from the checkpoint's own config, weights loaded strictly."""
    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(ckpt["config"])
    cfg.data = OmegaConf.merge(cfg.data, {k: v for k, v in (data_overrides or {}).items() if v is not None})
    tokenizer = build_tokenizer(cfg.backbone.text)
    model = build_model(cfg, tokenizer)
    model.load_trainable_state_dict(ckpt["state"])
    return model, tokenizer, cfg, ckpt


def _prepare(path: Path, split: str, data_overrides: dict | None):
    model, tokenizer, cfg, ckpt = load_model_from_checkpoint(path, data_overrides)
    cfg.train.max_val_steps = None  # evaluate the whole split
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = accelerator.prepare(model)
    stages = build_stages(cfg)
    stage = next((s for s in stages if s.name == ckpt["stage"]), stages[-1])  # the stage the checkpoint was saved in
    dataset = build_clip_dataset(cfg, split, tokenizer, data_cfg=stage.data)
    # The loss as in training (class weights from the training split when model.class_balance is on).
    train_set = build_clip_dataset(cfg, "train", tokenizer, data_cfg=stage.data) if cfg.model.get("class_balance") else None
    loss_fn = build_loss(cfg.model, stage.loss_weights, class_counts(cfg, train_set))

    def run():
        return validate(model, dataset, loss_fn, cfg, stage, tokenizer.pad_token_id, 0, accelerator)

    return accelerator.unwrap_model(model), cfg, ckpt, dataset, run


def eval_dir(path: Path, split: str) -> Path:
    """Where a checkpoint's evaluation files go: `<checkpoint dir>/eval/<checkpoint>_<split>/`."""
    out = path.parent / "eval" / f"{path.stem}_{split}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def evaluate_checkpoint(path: str | Path, split: str, data_overrides: dict | None = None,
                        out_dir: str | Path | None = None) -> tuple[dict, Path]:
    """Write `<out_dir>/eval.json` (default `<checkpoint dir>/eval/<checkpoint>_<split>/`) and return it."""
    path = Path(path)
    _, _, ckpt, dataset, run = _prepare(path, split, data_overrides)
    losses, summary = run()
    result = {"checkpoint": str(path), "split": split, "epoch": ckpt["epoch"], "stage": ckpt["stage"],
              "num_clips": len(dataset), "skipped_clips": getattr(dataset, "skipped", 0),
              "loss": losses, "metrics": summary}
    out_dir = Path(out_dir) if out_dir else eval_dir(path, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    return result, out_dir


TRANSCRIPT_METRICS = ("transcript_cer", "transcript_wer", "transcript_exact_match", "transcript_missed_rate",
                      "transcript_false_text_rate")


def sweep_eof_threshold(path: str | Path, split: str, thresholds,
                        data_overrides: dict | None = None) -> tuple[list[dict], Path]:
    """model=parallel: the split's transcript metrics decoded at each `model.eof_threshold` (None = plain argmax),
    written to `<eval dir>/eof_threshold.json` beside eval.json; returns (rows, eval dir).

    Use it on val to pick the speak/silent threshold, then set model.eof_threshold for training and eval.
    """
    path = Path(path)
    model, cfg, _, _, run = _prepare(path, split, data_overrides)
    if cfg.model.name != "parallel":
        raise ValueError(f"{path} is a model={cfg.model.name} checkpoint; eof_thresholds needs model=parallel")
    rows = []
    for threshold in thresholds:
        model.config.eof_threshold = None if threshold is None else float(threshold)
        summary = run()[1]
        rows.append({"eof_threshold": threshold, **{k: summary[k] for k in TRANSCRIPT_METRICS}})
    out_dir = eval_dir(path, split)
    (out_dir / "eof_threshold.json").write_text(json.dumps(rows, indent=1))
    return rows, out_dir
