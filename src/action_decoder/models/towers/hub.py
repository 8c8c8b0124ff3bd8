"""Where tower weights come from, shared by both towers: a local folder or the Hugging Face hub (what counts as
a hub id, fetching a safetensors checkpoint, and one error for a failed download)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def is_hub_id(name: str) -> bool:
    """A hub id is exactly "owner/name"; anything else (./x, /x, ~/x, a/b/c) is a local path."""
    return not name.startswith((".", "/", "~")) and name.count("/") == 1 and not (os.sep != "/" and os.sep in name)


def hub_error(what: str, name: str, err: BaseException, setting: str) -> OSError:
    """The error for `what` (e.g. "the OneVision encoder") not obtainable from the hub as `name`: whether
    HF_HUB_OFFLINE is the reason, the first line of the cause, and how to use a local folder instead (`setting`)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    first = str(err).splitlines()[0] if str(err) else ""
    return OSError(
        f"Could not get {what} '{name}' from the Hugging Face hub"
        f"{' (HF_HUB_OFFLINE is set and it is not in the local cache)' if offline else ''}: "
        f"{type(err).__name__}: {first}\n"
        f"Either make the hub reachable, or download it to a local folder (`hf download {name} --local-dir <folder>`) "
        f"and set {setting}=<folder> (holding config.json and model.safetensors); with HF_HUB_OFFLINE=1 a hub id "
        "only resolves from the local cache."
    )


def checkpoint_files(
    name_or_path: str | os.PathLike, what: str, setting: str, *, revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """{'config': path, 'weights': [paths]} of a safetensors checkpoint (single file or sharded) from a local
    folder, else from the hub (cache or download); `what` and `setting` name it in errors (see `hub_error`)."""
    path = Path(name_or_path)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise FileNotFoundError(f"{path}: no config.json in this folder.")
        single, index = path / "model.safetensors", path / "model.safetensors.index.json"
        if single.is_file():
            return {"config": cfg, "weights": [single]}
        if index.is_file():
            return {"config": cfg, "weights": [path / s for s in _shards(index)]}
        raise FileNotFoundError(f"{path}: neither model.safetensors nor model.safetensors.index.json found.")

    name = str(name_or_path)
    if not is_hub_id(name):
        raise FileNotFoundError(
            f"{name}: not a local folder, and not a hub id of the form 'owner/name' either."
        )

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def fetch(filename: str) -> str:
        return hf_hub_download(name, filename, revision=revision, cache_dir=cache_dir)

    try:
        cfg = fetch("config.json")
        try:
            return {"config": cfg, "weights": [fetch("model.safetensors")]}
        except RemoteEntryNotFoundError:  # the repo exists but is sharded
            index = Path(fetch("model.safetensors.index.json"))
            return {"config": cfg, "weights": [fetch(s) for s in _shards(index)]}
    except Exception as e:  # offline, no cache, no network, unknown repo, gated repo, ...
        raise hub_error(what, name, e, setting) from e


def _shards(index_file: Path) -> list[str]:
    weight_map = json.loads(Path(index_file).read_text(encoding="utf-8"))["weight_map"]
    return sorted(set(weight_map.values()))
