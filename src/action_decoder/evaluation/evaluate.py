"""Evaluate a checkpoint on a split with the same validation code and metrics the training loop uses."""
from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from action_decoder.cli import MissingFileError, SettingError
from action_decoder.data.clips import build_clip_dataset, prepared_dirs
from action_decoder.evaluation.decision import decided_events, rule_of, store_rule, tune_event_rule
from action_decoder.evaluation.events import EpisodeFrames
from action_decoder.evaluation.export import META_FILE, is_export, load_export
from action_decoder.evaluation.false_events import count_false_events
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.losses import LOSS_NAMES, build_loss
from action_decoder.training.checkpoint import load_checkpoint
from action_decoder.training.curriculum import build_stages
from action_decoder.training.setup import class_counts
from action_decoder.training.validate import validate


CHECKPOINT_HINT = "give a best.pt / epoch_NNN.pt of a run, or a folder written by scripts/export_checkpoint.py"


def load_checkpoint_file(path: str | Path) -> dict:
    """The checkpoint dict ({state, config, epoch, stage, metrics}) of a best.pt / epoch_NNN.pt or an export folder."""
    path = Path(path)
    if path.is_dir():
        if not is_export(path):
            raise MissingFileError(f"checkpoint={path}: a folder without {META_FILE}, so not an export; {CHECKPOINT_HINT}")
        return load_export(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint={path}: no such file or folder; {CHECKPOINT_HINT}")
    return load_checkpoint(path)  # refuses a file that is no checkpoint of this format, naming it


def load_model_from_checkpoint(path: str | Path, data_overrides: dict | None = None):
    """(model, tokenizer, cfg, ckpt): the model rebuilt from the checkpoint's own config, weights loaded strictly.
    `path`: a .pt checkpoint or an export folder (evaluation/export.py)."""
    ckpt = load_checkpoint_file(path)
    cfg = OmegaConf.create(ckpt["config"])
    cfg.data = OmegaConf.merge(cfg.data, {k: v for k, v in (data_overrides or {}).items() if v is not None})
    tokenizer = build_tokenizer(cfg.backbone.text)
    model = build_model(cfg, tokenizer)
    model.load_trainable_state_dict(ckpt["state"])
    return model, tokenizer, cfg, ckpt


def _prepare(path: Path, split: str, data_overrides: dict | None, event_tolerance: int | None = None,
             prompt: str = "true"):
    model, tokenizer, cfg, ckpt = load_model_from_checkpoint(path, data_overrides)
    dirs = prepared_dirs(cfg.data)
    if len(dirs) > 1:  # a run trained on several datasets: each is scored (and its eval dir named) on its own
        raise SettingError(f"{path} was trained on {len(dirs)} prepared datasets ({', '.join(map(str, dirs))}); "
                         "eval.py scores one at a time: add data.prepared_dir=<one of them>")
    cfg.data.prepared_dir = str(dirs[0])
    cfg.train.max_val_steps = None  # evaluate the whole split
    if event_tolerance is not None:
        cfg.eval = OmegaConf.merge(cfg.get("eval") or {}, {"event_tolerance": int(event_tolerance)})
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = accelerator.prepare(model)
    stages = build_stages(cfg)
    stage = next((s for s in stages if s.name == ckpt["stage"]), stages[-1])  # the stage the checkpoint was saved in
    scored = set(LOSS_NAMES) - (set() if accelerator.unwrap_model(model).has_transcript else {"transcript"})
    untrained = sorted(h for h, w in stage.loss_weights.items() if w == 0 and h in scored)
    if untrained:
        warnings.warn(f"{path} was saved in curriculum stage {stage.name!r}, where the loss weight of "
                      f"{untrained} was 0: those heads never trained and their scores are not the model's",
                      UntrainedHeadWarning, stacklevel=2)
    dataset = build_clip_dataset(cfg, split, tokenizer, data_cfg=stage.data, every_frame_once=True)
    ablate_prompts(dataset, prompt)
    loss_fn = build_loss(cfg.loss, stage.loss_weights, _training_class_counts(path, cfg, ckpt, stage, tokenizer))

    def run(event_rule=None, frames=None):
        return validate(model, dataset, loss_fn, cfg, stage, tokenizer.pad_token_id, accelerator,
                        event_rule=event_rule, frames=frames)

    return accelerator.unwrap_model(model), cfg, ckpt, dataset, run


def _training_class_counts(path: Path, cfg, ckpt, stage, tokenizer) -> dict | None:
    """The class weights of the loss as in training (loss.class_balance): counted on the run's own training split,
    not on the dataset being scored, which may have no train split at all. Where the run's data is gone, the
    reported losses are unweighted (the metrics do not depend on it)."""
    if not cfg.loss.get("class_balance"):
        return None
    trained = OmegaConf.create(ckpt["config"])
    try:
        return class_counts(cfg, build_clip_dataset(trained, "train", tokenizer, data_cfg=stage.data))
    except FileNotFoundError as err:
        warnings.warn(f"{path}: the training split it was trained on is not here ({err}); eval losses are "
                      "reported without loss.class_balance weights (metrics are unaffected)", stacklevel=3)
        cfg.loss.class_balance = 0.0
        return None


class UntrainedHeadWarning(UserWarning):
    """An evaluated checkpoint comes from a curriculum stage in which a scored head had loss weight 0."""


def eval_dir(path: Path, split: str, prepared_dir: str | Path, prompt: str = "true") -> Path:
    """Where a checkpoint's evaluation files go: `<checkpoint dir>/eval/<checkpoint>_<split>_<dataset>/`
    (`<export folder>/eval/export_<split>_<dataset>/` for an export),
    <dataset> = the prepared dir's last two path parts joined by `-` (data/synthetic/prepared ->
    synthetic-prepared), so scoring another dataset never overwrites this one's files; a prompt ablation
    (eval.prompt other than `true`) adds `_prompt-<mode>`."""
    parts = Path(prepared_dir).resolve().parts[-2:]
    suffix = "" if prompt == "true" else f"_prompt-{prompt}"
    home, name = (path, "export") if path.is_dir() else (path.parent, path.stem)  # an export folder keeps its own
    out = home / "eval" / f"{name}_{split}_{'-'.join(parts)}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    return out


PROMPT_MODES = ("true", "empty", "shuffled")


def ablate_prompts(dataset, mode: str) -> None:
    """eval.prompt: score with each episode's own prompt (`true`), with none (`empty`), or with another
    episode's (`shuffled`: episodes in id order, each takes the prompt of the next one whose prompt differs
    from its own, cyclically; deterministic, and no episode keeps its own text where another exists)."""
    if mode not in PROMPT_MODES:
        raise SettingError(f"eval.prompt={mode!r}: use one of {', '.join(PROMPT_MODES)}")
    if mode == "true":
        return
    eps = dataset.episodes
    if mode == "empty":
        for e in eps:
            e.prompt_ids = e.prompt_ids[:0]
        return
    order = sorted(range(len(eps)), key=lambda i: eps[i].id)
    own = [eps[i].prompt_ids for i in order]
    for k, i in enumerate(order):
        other = next((own[(k + j) % len(own)] for j in range(1, len(own))
                      if not np.array_equal(own[(k + j) % len(own)], own[k])), own[k])
        eps[i].prompt_ids = other


def evaluate_checkpoint(path: str | Path, split: str, data_overrides: dict | None = None,
                        out_dir: str | Path | None = None, event_tolerance: int | None = None,
                        prompt: str = "true", tune_events: bool = False) -> tuple[dict, Path]:
    """Write `<out_dir>/eval.json` (default `eval_dir(...)`) and return it.

    Events are decided by the checkpoint's stored event rule (evaluation/decision.py; argmax without one);
    `event_argmax` holds the argmax event scores of the same frames beside it. tune_events: tune the rule on
    this split, store it in the checkpoint (key `event_rule`) and score with it. prompt: eval.prompt
    (`ablate_prompts`)."""
    path = Path(path)
    model, cfg, ckpt, dataset, run = _prepare(path, split, data_overrides, event_tolerance, prompt)
    rule = None if tune_events else rule_of(ckpt)
    frames = EpisodeFrames()
    losses, summary = run(event_rule=rule, frames=frames)
    names = cfg.labels
    tolerance = int(summary["event_tolerance"])
    argmax = frames.event_counts(names["actions"], names["keys"], names["modifiers"], tolerance).compute()
    tuned = None
    episodes = list(frames.episodes_with_probs(names["actions"], names["keys"], names["modifiers"]).values())
    if tune_events:
        if prompt != "true":
            raise SettingError("tune_events tunes the rule the checkpoint keeps: use eval.prompt=true")
        rule, base_f1, tuned_f1 = tune_event_rule(episodes, names["actions"], tolerance)
        store_rule(path, rule, {"split": split, "prepared_dir": str(cfg.data.prepared_dir),
                                "event_f1_argmax": base_f1, "event_f1": tuned_f1})
        summary.update(frames.event_counts(names["actions"], names["keys"], names["modifiers"], tolerance,
                                           rule=rule).compute())
        tuned = {"event_f1_argmax": base_f1, "event_f1": tuned_f1}
    result = {"checkpoint": str(path), "split": split, "prepared_dir": str(cfg.data.prepared_dir),
              "epoch": ckpt["epoch"], "stage": ckpt["stage"], "num_clips": len(dataset),
              "num_episodes": len(dataset.episodes), "skipped_clips": getattr(dataset, "skipped", 0),
              "prompt": prompt, "event_rule": None if rule is None else rule.as_dict(), "tuned": tuned,
              "loss": losses, "metrics": summary, "calibration": ckpt.get("calibration"),
              "event_argmax": {k: v for k, v in argmax.items() if k.startswith("event_")},
              "false_events": {"argmax": count_false_events(decided_events(episodes, names["actions"], None), tolerance),
                               **({"rule": count_false_events(decided_events(episodes, names["actions"], rule),
                                                              tolerance)} if rule is not None else {})}}
    out_dir = Path(out_dir) if out_dir else eval_dir(path, split, cfg.data.prepared_dir, prompt)
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
    if not model.has_transcript:
        raise SettingError(f"{path} is a model={cfg.model.name} checkpoint, without a transcript decoder; "
                         "eof_thresholds needs one (model=parallel)")
    rows = []
    for threshold in thresholds:
        model.transcript.generation = replace(model.transcript.generation,
                                              eof_threshold=None if threshold is None else float(threshold))
        summary = run()[1]
        rows.append({"eof_threshold": threshold, **{k: summary[k] for k in TRANSCRIPT_METRICS}})
    out_dir = eval_dir(path, split, cfg.data.prepared_dir)
    (out_dir / "eof_threshold.json").write_text(json.dumps(rows, indent=1))
    return rows, out_dir
