"""Compose the Hydra config tree outside a Hydra app (scripts, tests, benchmarks)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Keys that moved to another group, old -> new: configs and overrides saved by older runs (checkpoints,
# run dirs' config.yaml and .hydra/overrides.yaml) are read through these.
MOVED_KEYS = {"model.loss_weights": "loss.weights", "model.click_sigma": "loss.click_sigma",
              "model.class_balance": "loss.class_balance"}


def load_config(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Return the composed config (same tree as `train.py`), `${hydra:...}` resolvable."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
    # `${hydra:...}` interpolations (experiment name, run dir) resolve only once HydraConfig is set.
    HydraConfig.instance().set_config(cfg)
    return cfg


def plain(node: Any) -> Any:
    """A config node as plain dicts/lists with interpolations resolved; anything else as it is."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def upgrade_config(cfg: dict) -> dict:
    """A saved config (plain dict) with every `MOVED_KEYS` entry at its new place (a copy; the input is kept)."""
    cfg = {section: dict(values) if isinstance(values, dict) else values for section, values in cfg.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        if old_key in (cfg.get(old_section) or {}):
            cfg.setdefault(new_section, {})
            cfg[new_section].setdefault(new_key, cfg[old_section].pop(old_key))
    return cfg


def upgrade_override(override: str) -> str:
    """A command-line override of an older run (`model.click_sigma=0.1`) in today's key (`loss.click_sigma=0.1`)."""
    prefix = override[:len(override) - len(override.lstrip("+~"))]
    key = override[len(prefix):]
    for old, new in MOVED_KEYS.items():
        if key == old or key.startswith((old + "=", old + ".")):
            return prefix + new + key[len(old):]
    return override
