"""Curriculum stages: ordered, each starting at an epoch and overriding data / loss settings.

A stage in `conf/curriculum/*.yaml`:

    - name: heads            # logged with every metrics line and stored in checkpoints
      start_epoch: 0         # first epoch of the stage (stages sorted by it; the first must start at 0)
      data: {clip_len: 4, clip_stride: 2, filters: {actions: [click]}}   # merged onto cfg.data
      loss_weights: {key: 0.0}          # merged onto cfg.loss.weights
      train_heads: [action, click]      # heads not listed get loss weight 0 (None = all heads)

A lower sampling rate is a re-prepared dataset (`prepare_data.py data.sample_fps=...`): labels are made from
the events at that rate, never by dropping frames.
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from action_decoder.models.losses import LOSS_NAMES


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    start_epoch: int
    data: DictConfig          # cfg.data with the stage's overrides applied
    loss_weights: dict        # final per-head weights for this stage


def build_stages(cfg: DictConfig) -> list[Stage]:
    raw = sorted(cfg.curriculum.stages, key=lambda s: int(s.start_epoch))
    if not raw or int(raw[0].start_epoch) != 0:
        raise ValueError("curriculum.stages: the first stage must have start_epoch: 0")
    names = [str(s.name) for s in raw]
    if len(set(names)) != len(names):
        raise ValueError(f"curriculum.stages: stage names must be unique, got {names}")
    stages = []
    for i, s in enumerate(raw):
        data = OmegaConf.merge(cfg.data, s.get("data") or {})
        weights = dict(OmegaConf.to_container(OmegaConf.merge(cfg.loss.weights, s.get("loss_weights") or {})))
        heads = s.get("train_heads")
        if heads is not None:
            unknown = set(heads) - set(LOSS_NAMES)
            if unknown:
                raise ValueError(f"curriculum stage {s.name!r}: unknown train_heads {sorted(unknown)}; choose from {LOSS_NAMES}")
            weights = {k: (v if k in heads else 0.0) for k, v in weights.items()}
        stages.append(Stage(i, str(s.name), int(s.start_epoch), data, weights))
    return stages


def stage_at(stages: list[Stage], epoch: int) -> Stage:
    return [s for s in stages if s.start_epoch <= epoch][-1]

