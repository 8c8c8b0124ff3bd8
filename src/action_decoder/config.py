"""Compose the Hydra config tree outside a Hydra app (scripts, tests, benchmarks)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


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
