"""What every recorder shares: recording folder names, the narration.srt writer, the finish-by-rename rule, the
process pool with its progress bar, and config blocks read into dataclasses."""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from tqdm import tqdm


def recording_id(prefix: str, index: int) -> str:
    """`<prefix>_<NNNNN>`: the folder name of recording `index` (the importer's split hash reads it)."""
    return f"{prefix}_{index:05d}"


def srt_time(t: float) -> str:
    ms = max(0, int(round(t * 1000)))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path: str | Path, cues: Iterable[tuple[float, float, str]]) -> None:
    """narration.srt from (start s, end s, text) cues in video time."""
    blocks = [f"{k + 1}\n{srt_time(a)} --> {srt_time(b)}\n{text}\n" for k, (a, b, text) in enumerate(cues)]
    Path(path).write_text("\n".join(blocks))


def staging_dir(final: Path) -> Path:
    """An empty `.<name>.tmp` beside `final`: a recording is written there and renamed by `finish`, so an
    interrupted run never leaves a half recording for the importer."""
    tmp = final.parent / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def finish(tmp: Path, final: Path) -> Path:
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def run_jobs(fn: Callable[[Any], Any], jobs: list, workers: int, desc: str, progress: bool = True,
             spawn: bool = False, reuse: bool = False, chunksize: int = 1) -> Iterator[Any]:
    """Yield fn(job) for every job as it finishes, over `workers` processes (in this process when 1), with a
    progress bar. `spawn`: spawned processes (recorders whose listeners bind to the process's DISPLAY), a
    fresh one per job unless `reuse`: then each process lives for the whole run (a recorder keeping its display
    and browser across jobs) and exits normally at the end, so its `multiprocessing.util.Finalize` cleanups run.
    `chunksize`: consecutive jobs handed to one process at a time."""
    workers = max(1, min(workers, len(jobs)))
    with tqdm(total=len(jobs), desc=desc, unit="rec", disable=not progress) as bar:
        if workers == 1 and not spawn:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        ctx = mp.get_context("spawn" if spawn else None)
        with ctx.Pool(workers, maxtasksperchild=1 if spawn and not reuse else None) as pool:
            for result in pool.imap_unordered(fn, jobs, chunksize=chunksize):
                yield result
                bar.update()
            pool.close()          # let the workers exit on their own (not terminated) and run their cleanups
            pool.join()


def config_from_node(cls, node, where: str):
    """A config dataclass from an OmegaConf node or dict; a key it does not know is an error naming `where`."""
    from omegaconf import OmegaConf
    d = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    known = {f.name for f in fields(cls)}
    extra = sorted(set(d) - known)
    if extra:
        raise ValueError(f"unknown keys in {where}: {extra}; known: {sorted(known)}")
    return cls(**d)
