"""Resumable, idempotent output folders for annotate.py.

A recording's outputs are written into `<output>/.tmp-<id>/` and renamed to `<output>/<id>/` once complete, so a
folder named after a recording is always whole; hidden `.tmp-*` folders (what a killed run leaves) are removed when
the recording is redone, and the importer never reads hidden folders. `<id>/annotate.json` carries a fingerprint of
what made it (the checkpoint's bytes, the video file, the settings that change the outputs): a rerun skips a
recording whose fingerprint matches and redoes any other.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from action_decoder.training.train_state import file_sha256

SUMMARY = "annotate.json"
OUTPUT_VERSION = 2   # bump when the files written per recording change meaning


def checkpoint_sha256(path: str | Path) -> str:
    """The sha256 of a .pt checkpoint, or of an export folder's files (names and contents)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "eval" not in p.relative_to(path).parts):
        h.update(f"{f.relative_to(path)}:{file_sha256(f)}\n".encode())
    return h.hexdigest()


def fingerprint(checkpoint_sha256: str, video: Path, settings: dict) -> str:
    """Same checkpoint, same video file (path, size, mtime), same settings -> same string."""
    st = os.stat(video)
    blob = json.dumps({"version": OUTPUT_VERSION, "checkpoint": checkpoint_sha256,
                       "video": [str(Path(video).resolve()), st.st_size, st.st_mtime_ns],
                       "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def finished(out_dir: Path, fp: str) -> dict | None:
    """The folder's annotate.json if it was completed with fingerprint `fp`, else None."""
    try:
        summary = json.loads((out_dir / SUMMARY).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return summary if summary.get("fingerprint") == fp else None


def temp_dir(output: Path, rec_id: str) -> Path:
    """A fresh, empty `.tmp-<id>` folder (a killed run's leftovers removed first)."""
    tmp = output / f".tmp-{rec_id}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, final: Path) -> None:
    """Put the completed `tmp` folder in place of `final` (an older `final` is moved aside first, then deleted:
    a directory rename cannot replace a non-empty one)."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".old-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
