"""Hugging Face hub names, shared by both towers: what counts as a hub id, and one error for a failed download."""
from __future__ import annotations

import os


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
