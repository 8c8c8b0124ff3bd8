"""Prepared episodes -> clips -> batches (data/README.md §2-§3).

`ClipDataset` windows every prepared episode into clips of `clip_len` consecutive sampled frames,
a new clip every `clip_stride` frames; an item decodes only that clip's `frame_index` entries
(one reader per item, released after) and returns pixels + labels. With `every_frame_once=True`
(validation, eval.py) the windows cover each sampled frame of each episode exactly once: see
`scoring_windows`. `collate_clips` pads a list of
items into the batch of data/README.md §3. `build_clip_dataset(cfg, split, tokenizer)` wires it
to the config; `data.prepared_dir` may list several prepared datasets, whose split files are read
as one (`data=synthetic_desktop`).

Everything that does not depend on the pixels (label ids, prompt and transcript tokens, the clip
index) is computed once at construction and held in numpy arrays, so items do no text work and
DataLoader workers do not copy Python objects page by page (refcount writes) as they read them.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from action_decoder.cli import MissingFileError
from action_decoder.config import plain
from action_decoder.data.frames import preprocess_frames
from action_decoder.data.video import (DEFAULT_READER, DEFAULT_THREADS, READERS, VideoDecodeError,
                                      decode_threads_per_worker, read_frames)
from action_decoder.data.vocab import IGNORE_INDEX, LabelVocab

PER_FRAME_KEYS = ("frame_index", "action", "key", "modifier", "click", "transcript")
REQUIRED_KEYS = ("id", "video", "num_frames", "prompt") + PER_FRAME_KEYS
PREPARE_COMMAND = "python scripts/make_synthetic_data.py && python scripts/prepare_data.py"
MAX_WORKER_SLOTS = 64  # skip counters: slot 0 = main process, slot 1 + worker id otherwise


class EpisodeFormatError(ValueError):
    """A prepared episode line that does not follow data/README.md §2 (message starts with file:line)."""


class CorruptVideoWarning(UserWarning):
    """A clip was skipped because its video could not be decoded."""


@dataclass
class _Episode:
    id: str
    video: str
    frame_index: np.ndarray        # int64 [F]   video frame decoded for each sampled frame
    prompt_ids: np.ndarray         # int64 [L]
    action: np.ndarray             # int64 [F]
    key: np.ndarray                # int64 [F]   IGNORE_INDEX where the key head does not apply
    modifier: np.ndarray           # int64 [F]   IGNORE_INDEX where the modifier head does not apply
    click_xy: np.ndarray           # float32 [F, 2]  0 where no click
    click_mask: np.ndarray         # bool [F]
    transcript_ids: np.ndarray     # int64 [sum of per-frame lengths]  all frames' tokens, concatenated
    transcript_offsets: np.ndarray  # int64 [F + 1]  frame f's tokens are ids[offsets[f]:offsets[f+1]]


class ClipDataset(Dataset):
    """Clips of prepared episodes; `dataset[i]` is one clip's item dict, or None if its video is corrupt.

    `episodes`: a prepared `<split>.jsonl`, several of them (read in order, as one split), or episode dicts.
    Episode ids must be unique across them: evaluation groups a clip's frames into events by episode id.

    Counters for the run summary: `num_episodes`, `short_episodes` (fewer sampled frames than
    `clip_len`: no clip), `filtered_episodes` (tags filter), `filtered_clips` (actions filter),
    `truncated_prompts`, `truncated_transcript_frames`, and `skipped` (items whose video failed to
    decode, summed over DataLoader workers).
    """

    def __init__(
        self,
        episodes: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Mapping[str, Any]],
        clip_len: int,
        clip_stride: int,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer: Any,
        vocab: LabelVocab,
        reader: str = DEFAULT_READER,
        max_transcript_tokens: int = 16,
        max_prompt_tokens: int = 32,
        filters: Mapping[str, Any] | None = None,
        decode_threads: int = DEFAULT_THREADS,
        every_frame_once: bool = False,
    ):
        if clip_len < 1 or clip_stride < 1:
            raise ValueError(f"clip_len ({clip_len}) and clip_stride ({clip_stride}) must be >= 1")
        if reader not in READERS:
            raise ValueError(f"data.reader={reader!r}: choose one of {sorted(READERS)}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token (build it with action_decoder.data.tokenizer.build_tokenizer)")
        self.clip_len, self.clip_stride = int(clip_len), int(clip_stride)
        self.every_frame_once = bool(every_frame_once)
        # An int is a square; (height, width) keeps the screen's aspect ratio (conf/backbone/tiny.yaml).
        self.image_size = (int(image_size),) * 2 if isinstance(image_size, (int, np.integer)) \
            else tuple(int(v) for v in image_size)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.reader = reader
        self.decode_threads = int(decode_threads)
        self.pad_id = int(tokenizer.pad_token_id)
        filters = dict(filters or {})
        tag_filter = set(filters.get("tags") or [])
        action_filter = list(filters.get("actions") or [])
        unknown = [a for a in action_filter if a not in vocab.actions]
        if unknown:
            raise ValueError(f"data.filters.actions: {unknown} not in labels.actions {list(vocab.actions.names)}")
        self.action_filter_ids = np.array([vocab.actions.id(a) for a in action_filter], np.int64)

        raw = list(_iter_episodes(episodes))
        self.num_episodes = len(raw)
        self.filtered_episodes = 0
        kept: list[tuple[str, dict]] = []
        first_seen: dict[str, str] = {}
        for src, ep in raw:
            _check_fields(src, ep)
            seen = first_seen.setdefault(str(ep["id"]), src)
            if seen != src:
                raise EpisodeFormatError(f"{src}: episode id {ep['id']!r} already used at {seen}; ids must be "
                                         "unique within a split, across all prepared dirs read together")
            if tag_filter and not tag_filter.intersection(ep.get("tags") or []):
                self.filtered_episodes += 1
                continue
            kept.append((src, ep))

        self.episodes: list[_Episode] = []
        self.truncated_prompts = 0
        self.truncated_transcript_frames = 0
        # One tokenizer call for every distinct prompt and transcript string of the split.
        token_ids = _tokenize_unique(
            [str(ep.get("prompt") or "") for _, ep in kept]
            + [str(t or "") for _, ep in kept for t in ep["transcript"]], tokenizer)
        for src, ep in kept:
            prompt_ids = token_ids[str(ep.get("prompt") or "")]
            if len(prompt_ids) > max_prompt_tokens:
                self.truncated_prompts += 1
                prompt_ids = prompt_ids[:max_prompt_tokens]
            self.episodes.append(self._episode(src, ep, prompt_ids, token_ids, vocab, max_transcript_tokens))

        # The clip index: (episode, first sampled frame, first and end offset of the scored frames), one row
        # per window. Training windows score all their frames; every_frame_once windows score each frame once.
        rows: list[tuple[int, int, int, int]] = []
        self.short_episodes = 0
        self.filtered_clips = 0
        for e, ep in enumerate(self.episodes):
            n = len(ep.frame_index)
            if self.every_frame_once:  # no filters: a score covers the whole split
                rows += [(e, *w) for w in scoring_windows(n, self.clip_len, self.clip_stride)]
                self.short_episodes += n < self.clip_len
                continue
            if n < self.clip_len:
                self.short_episodes += 1
                continue
            for start in range(0, n - self.clip_len + 1, self.clip_stride):
                if len(self.action_filter_ids) and not np.isin(ep.action[start:start + self.clip_len], self.action_filter_ids).any():
                    self.filtered_clips += 1
                    continue
                rows.append((e, start, 0, self.clip_len))
        self.index = np.array(rows, np.int64).reshape(-1, 4)
        # Shared memory so counts made inside DataLoader workers are visible to the main process.
        self._skip_counts = torch.zeros(MAX_WORKER_SLOTS, dtype=torch.int64).share_memory_()
        if self.truncated_prompts or self.truncated_transcript_frames:
            warnings.warn(
                f"{self.truncated_prompts} prompts cut to {max_prompt_tokens} tokens and "
                f"{self.truncated_transcript_frames} frame transcripts cut to {max_transcript_tokens} tokens "
                "(data.max_prompt_tokens / data.max_transcript_tokens)", stacklevel=2)

    # ---- construction helpers ----

    def _episode(self, src: str, ep: dict, prompt_ids: list[int], token_ids: dict[str, list[int]], vocab: LabelVocab,
                 max_transcript_tokens: int) -> _Episode:
        actions, keys, mods, clicks = ep["action"], ep["key"], ep["modifier"], ep["click"]
        n = len(actions)
        action = np.empty(n, np.int64)
        key = np.full(n, IGNORE_INDEX, np.int64)
        modifier = np.full(n, IGNORE_INDEX, np.int64)
        click_xy = np.zeros((n, 2), np.float32)
        click_mask = np.zeros(n, bool)
        for f in range(n):
            frame = f  # index in the file's lists, for error messages
            action[f] = _label_id(src, frame, "action", actions[f], vocab.actions)
            if keys[f] is not None:
                key[f] = _label_id(src, frame, "key", keys[f], vocab.keys)
            if mods[f] is not None:
                modifier[f] = _label_id(src, frame, "modifier", mods[f], vocab.modifiers)
            if clicks[f] is not None:
                c = clicks[f]
                if not (isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(v, (int, float)) for v in c)):
                    raise EpisodeFormatError(f"{src}: frame {frame}: click must be null or [x, y], got {c!r}")
                click_xy[f] = c
                click_mask[f] = True
        tokens = [token_ids[str(t or "")] for t in ep["transcript"]]
        lengths = np.array([min(len(t), max_transcript_tokens) for t in tokens], np.int64)
        self.truncated_transcript_frames += sum(len(t) > max_transcript_tokens for t in tokens)
        flat = [i for t in tokens for i in t[:max_transcript_tokens]]
        video = Path(ep["video"])
        if not video.is_absolute() and ":" in src:  # a relative path is relative to the jsonl's folder
            video = Path(src.rsplit(":", 1)[0]).parent / video
        return _Episode(
            id=str(ep["id"]), video=str(video),
            frame_index=np.asarray(ep["frame_index"], np.int64),
            prompt_ids=np.asarray(prompt_ids, np.int64),
            action=action, key=key, modifier=modifier, click_xy=click_xy, click_mask=click_mask,
            transcript_ids=np.asarray(flat, np.int64),
            transcript_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        )

    def label_counts(self, num_classes: Mapping[str, int]) -> dict[str, np.ndarray]:
        """Frames per class of each classification head ({"action": [num_actions], "key": ..., "modifier": ...})
        over the clips of this dataset (a frame in two overlapping clips counts twice, as it is trained twice)."""
        counts = {head: np.zeros(n, np.int64) for head, n in num_classes.items()}
        for e, start, *_ in self.index:
            ep = self.episodes[e]
            for head, c in counts.items():
                labels = getattr(ep, head)[start:start + self.clip_len]
                c += np.bincount(labels[labels != IGNORE_INDEX], minlength=len(c))[: len(c)]
        return counts

    # ---- Dataset API ----

    def __len__(self) -> int:
        return len(self.index)

    def clip_id(self, i: int) -> str:
        e, start = self.index[i][:2]
        return f"{self.episodes[e].id}@{start}"

    @property
    def num_scored_frames(self) -> int:
        """Frames the windows score (every_frame_once: all sampled frames of the kept episodes)."""
        return int((self.index[:, 3] - self.index[:, 2]).sum())

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        e, start, lo, hi = (int(v) for v in self.index[i])
        ep = self.episodes[e]
        n = len(ep.frame_index)
        # Frames of the window; an episode shorter than a clip repeats its last frame (unscored padding).
        frames_at = np.minimum(np.arange(start, start + self.clip_len), n - 1)
        clip_id = f"{ep.id}@{start}"
        try:
            frames = read_frames(ep.video, ep.frame_index[frames_at], self.reader, self.decode_threads)
        except VideoDecodeError as err:
            self._count_skip()
            warnings.warn(f"skipping clip {clip_id}: {err}", CorruptVideoWarning, stacklevel=2)
            return None
        scored = np.zeros(self.clip_len, bool)
        scored[lo:hi] = True
        unscored = torch.from_numpy(~scored)
        # Labels of frames scored in another window are -100 (ignored by losses and metrics) when windows
        # overlap for evaluation; training windows score every frame.
        def label(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values[frames_at].copy()).masked_fill(unscored, IGNORE_INDEX)
        real = np.arange(start, start + self.clip_len) < n  # padding repeats the last frame: no transcript either
        offsets = ep.transcript_offsets
        return {
            "pixels": preprocess_frames(frames, self.image_size, self.mean, self.std),
            "prompt_ids": torch.from_numpy(ep.prompt_ids),
            "action": label(ep.action),
            "key": label(ep.key),
            "modifier": label(ep.modifier),
            "click_xy": torch.from_numpy(ep.click_xy[frames_at].copy()),
            "click_mask": torch.from_numpy(ep.click_mask[frames_at] & scored),
            "transcript_ids": [torch.from_numpy(ep.transcript_ids[offsets[f]:offsets[f + 1]] if r else
                                                ep.transcript_ids[:0]) for f, r in zip(frames_at, real)],
            "scored": torch.from_numpy(scored),
            "clip_id": clip_id,
        }

    # ---- corrupt-video accounting ----

    def _count_skip(self) -> None:
        info = torch.utils.data.get_worker_info()
        slot = 0 if info is None else 1 + info.id % (MAX_WORKER_SLOTS - 1)
        self._skip_counts[slot] += 1  # one slot per process: no two writers race on a slot

    @property
    def skipped(self) -> int:
        """Items returned as None because their video failed to decode (all processes, all epochs)."""
        return int(self._skip_counts.sum())

    def summary(self) -> dict[str, int]:
        return {
            "episodes": self.num_episodes, "clips": len(self), "short_episodes": self.short_episodes,
            "filtered_episodes": self.filtered_episodes, "filtered_clips": self.filtered_clips,
            "truncated_prompts": self.truncated_prompts,
            "truncated_transcript_frames": self.truncated_transcript_frames, "skipped": self.skipped,
        }


def collate_clips(items: Iterable[dict[str, Any] | None], pad_id: int) -> dict[str, Any] | None:
    """Pad items into a batch (data/README.md §3). Nones (skipped clips) are dropped; all-None -> None."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    b = len(items)
    t = items[0]["action"].shape[0]
    if any(it["action"].shape[0] != t for it in items):
        raise ValueError(f"collate_clips: clips of different lengths {sorted({it['action'].shape[0] for it in items})}")
    prompt_len = max(1, max(len(it["prompt_ids"]) for it in items))
    prompt_ids = torch.full((b, prompt_len), pad_id, dtype=torch.int64)
    prompt_mask = torch.zeros((b, prompt_len), dtype=torch.bool)
    text_len = max(1, max(len(ids) for it in items for ids in it["transcript_ids"]))
    transcript_ids = torch.full((b, t, text_len), pad_id, dtype=torch.int64)
    transcript_mask = torch.zeros((b, t, text_len), dtype=torch.bool)
    for i, it in enumerate(items):
        n = len(it["prompt_ids"])
        prompt_ids[i, :n] = it["prompt_ids"]
        prompt_mask[i, :n] = True
        for f, ids in enumerate(it["transcript_ids"]):
            transcript_ids[i, f, :len(ids)] = ids
            transcript_mask[i, f, :len(ids)] = True
    return {
        "pixels": torch.stack([it["pixels"] for it in items]),
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "action": torch.stack([it["action"] for it in items]),
        "key": torch.stack([it["key"] for it in items]),
        "modifier": torch.stack([it["modifier"] for it in items]),
        "click_xy": torch.stack([it["click_xy"] for it in items]),
        "click_mask": torch.stack([it["click_mask"] for it in items]),
        "transcript_ids": transcript_ids,
        "transcript_mask": transcript_mask,
        "scored": torch.stack([it["scored"] for it in items]),
        "clip_id": [it["clip_id"] for it in items],
    }


def build_clip_dataset(cfg: Any, split: str, tokenizer: Any, data_cfg: Any | None = None,
                       every_frame_once: bool = False) -> ClipDataset:
    """ClipDataset over `<data.prepared_dir>/<split>.jsonl` (each listed prepared dir's, concatenated),
    shaped by cfg.data (or a curriculum stage's merged `data_cfg`), cfg.backbone.vision (image size,
    mean/std) and cfg.labels. every_frame_once: evaluation windows (each sampled frame scored once, no clip filters)."""
    data = data_cfg if data_cfg is not None else cfg.data
    paths = split_files(data, split)
    for path in paths:
        if not path.is_file():
            raise MissingFileError(
                f"{path} not found: prepare the dataset first with `{PREPARE_COMMAND}` "
                f"(or point data.prepared_dir at a folder holding {split}.jsonl)")
    vision = cfg.backbone.vision
    return ClipDataset(
        paths,
        clip_len=int(data.clip_len),
        clip_stride=int(data.clip_stride),
        image_size=vision.image_size if isinstance(vision.image_size, int) else list(vision.image_size),
        mean=list(vision.image_mean),
        std=list(vision.image_std),
        tokenizer=tokenizer,
        vocab=LabelVocab.from_config(cfg.labels),
        reader=str(data.get("reader", DEFAULT_READER)),
        max_transcript_tokens=int(data.max_transcript_tokens),
        max_prompt_tokens=int(data.max_prompt_tokens),
        filters=plain(data.get("filters")),
        decode_threads=_decode_threads(data),
        every_frame_once=every_frame_once,
    )


def prepared_dirs(data: Any) -> list[Path]:
    """data.prepared_dir as a list: one folder, or the several of a multi-dataset preset (data=synthetic_desktop)."""
    value = data.prepared_dir
    dirs = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    if not dirs:
        raise ValueError("data.prepared_dir is an empty list: give a prepared folder or a list of them")
    return [Path(d) for d in dirs]


def split_files(data: Any, split: str) -> list[Path]:
    """`<prepared dir>/<split>.jsonl` of every prepared dir of `data`, in order."""
    return [d / f"{split}.jsonl" for d in prepared_dirs(data)]


def scoring_windows(num_frames: int, clip_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Evaluation windows of an episode: (start, lo, hi), frames start+lo .. start+hi-1 scored in it.

    Windows start every `stride` frames, plus one flush with the episode's end so the tail is covered;
    each frame is scored in the window where it is most central (ties: the earlier window), so it sees
    context on both sides wherever the episode has it. An episode shorter than a clip is one window
    from 0, padded by repeating its last frame; only its real frames are scored.
    """
    if num_frames <= 0:
        return []
    if num_frames <= clip_len:
        return [(0, 0, num_frames)]
    starts = list(range(0, num_frames - clip_len + 1, stride))
    if starts[-1] != num_frames - clip_len:
        starts.append(num_frames - clip_len)
    centre = np.asarray(starts, np.float64) + (clip_len - 1) / 2
    best = np.abs(np.arange(num_frames)[:, None] - centre[None, :]).argmin(1)  # argmin: first of ties
    windows = []
    for w, start in enumerate(starts):
        mine = np.flatnonzero(best == w)
        if len(mine):  # frames assigned to a window are contiguous
            windows.append((start, int(mine[0]) - start, int(mine[-1]) + 1 - start))
    return windows


# ---- helpers ----

def _decode_threads(data: Any) -> int:
    """data.decode_threads, or (null) workers x threads sized to the rank's cores."""
    threads = data.get("decode_threads", DEFAULT_THREADS)
    return decode_threads_per_worker(int(data.get("num_workers", 0))) if threads is None else int(threads)


def _iter_episodes(episodes) -> Iterable[tuple[str, dict]]:
    """(source "file:line" or "episodes[i]", episode dict) pairs, from one jsonl, several in order, or dicts."""
    episodes = [episodes] if isinstance(episodes, (str, os.PathLike)) else list(episodes)
    if not all(isinstance(e, (str, os.PathLike)) for e in episodes):
        for i, ep in enumerate(episodes):
            yield f"episodes[{i}]", dict(ep)
        return
    for path in map(Path, episodes):
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                src = f"{path}:{lineno}"
                try:
                    ep = json.loads(line)
                except json.JSONDecodeError as err:
                    raise EpisodeFormatError(f"{src}: not valid JSON ({err.msg} at column {err.colno})") from None
                if not isinstance(ep, dict):
                    raise EpisodeFormatError(f"{src}: expected a JSON object, got {type(ep).__name__}")
                yield src, ep


def _check_fields(src: str, ep: dict) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in ep]
    if missing:
        raise EpisodeFormatError(f"{src}: missing {missing} (format: data/README.md §2)")
    n = ep["num_frames"]
    bad = {k: len(ep[k]) for k in PER_FRAME_KEYS if not isinstance(ep[k], list) or len(ep[k]) != n}
    if bad:
        raise EpisodeFormatError(f"{src}: per-frame lists must have num_frames={n} entries, got {bad}")


def _label_id(src: str, frame: int, kind: str, name: Any, vocab) -> int:
    if name not in vocab:
        raise EpisodeFormatError(
            f"{src}: frame {frame}: {kind} {name!r} is not in labels.{vocab.kind} (conf/labels); "
            "re-prepare the data or fix the vocabulary")
    return vocab.id(name)


def _tokenize_unique(texts: list[str], tokenizer) -> dict[str, list[int]]:
    """{text: token ids (no BOS/EOS added)} for each distinct text, in one batched tokenizer call."""
    unique = sorted({t for t in texts if t})
    ids = dict(zip(unique, tokenizer(unique, add_special_tokens=False)["input_ids"])) if unique else {}
    ids[""] = []
    return ids


def prompt_token_ids(prompts: Sequence[str], tokenizer, max_prompt_tokens: int) -> list[list[int]]:
    """Each prompt's token ids as ClipDataset gives them to the model (no BOS/EOS, cut to max_prompt_tokens)."""
    ids = _tokenize_unique([str(p or "") for p in prompts], tokenizer)
    return [ids[str(p or "")][:int(max_prompt_tokens)] for p in prompts]
