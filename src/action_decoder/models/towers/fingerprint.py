"""Which frozen towers a run was trained on: a short content hash of a local checkpoint folder.

A trained checkpoint holds only LoRA + new layers, so it is only meaningful on the exact towers it
was trained over. `backbone.*.fingerprint: ${tower_fingerprint:${.name_or_path}}` records that
hash in the resolved run config (hence in best.pt); `build_model` compares it with the folder it
loads and refuses towers that changed since (e.g. re-made by scripts/pretrain_tiny_towers.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import OmegaConf

# Files that define a tower's weights and architecture (safetensors shards, configs).
FINGERPRINT_SUFFIXES = (".safetensors", ".json")


def tower_fingerprint(name_or_path: str | None) -> str | None:
    """sha256 (16 hex) over a local folder's weight and config files; None for random init (null),
    a hub id, or a folder that does not exist yet (the loader then names what is missing)."""
    if not name_or_path:
        return None
    path = Path(str(name_or_path)).expanduser()
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES
                   and p.name != "pretrain_report.json")
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("tower_fingerprint"):
        OmegaConf.register_new_resolver("tower_fingerprint", tower_fingerprint)
