"""The annotation engine: many recordings through a checkpoint's model, each frame decoded and encoded once.

Frames are decoded and resized in DataLoader workers (`FrameChunks`: one item = up to `chunk_frames`
consecutive sampled frames of one recording, its own reader), ahead of the model. The main process keeps,
per recording, what each of its sampled frames gives the decoder, and forms the evaluation windows
(`scoring_windows`, as validation) from it:

- reuse (`clip_encoding: frames`, every patch visible, model=original): a frame's encoder output does not depend
  on the clip it is in, so each frame goes through the encoder once, in its chunk, and the decoder runs over
  windows assembled from the cached per-frame tokens. This is what makes overlapping windows cheap.
- otherwise (`clip_encoding: video`, a visible-token budget, or model=parallel, which reads the frames inside its
  LM pass): the cached unit is the preprocessed frame, and each window runs the whole model (`stream()` for
  model=parallel, the path live inference uses).

Ready windows of all recordings in flight are decoded together, `batch_size` at a time, so short recordings still
fill a batch. Results are per recording, in input order, as soon as its last window is decoded; a recording that
fails to decode is reported once and its windows are dropped. Results do not depend on which recordings share a
batch (each window's rows are computed independently), so a resumed run writes what an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from action_decoder.data.clips import scoring_windows
from action_decoder.data.frames import preprocess_frames
from action_decoder.data.video import VideoDecodeError, read_frames
from action_decoder.models.outputs import Features


@dataclass
class Job:
    """One recording to annotate: its video, the video frame of each sampled frame, and its prompt's token ids."""

    key: int                  # caller's index, returned with the result
    video: str
    frame_index: np.ndarray   # int64 [n]
    prompt_ids: list[int]
    reader: str | None = None   # None: the engine's; "pyav" decodes the file in one pass (one chunk)


@dataclass
class Result:
    key: int
    size: tuple[int, int] | None = None        # decoded (width, height)
    heads: dict | None = None                  # per sampled frame: action probs [n, A], key [n], modifier [n], xy [n, 2]
    error: str | None = None                   # the decoder's message when the video could not be read


class FrameChunks(Dataset):
    """(job, first frame, end frame) chunks -> decoded, preprocessed frames, in a DataLoader worker."""

    def __init__(self, jobs: Sequence[Job], chunk_frames: int, image_hw, mean, std, reader: str, threads: int):
        self.jobs, self.image_hw, self.mean, self.std = list(jobs), image_hw, list(mean), list(std)
        self.reader, self.threads = reader, threads
        self.chunks = []
        for j, job in enumerate(self.jobs):
            n = len(job.frame_index)
            step = max(n, 1) if job.reader == "pyav" else chunk_frames  # pyav reads from the start: one pass
            self.chunks += [(j, lo, min(lo + step, n)) for lo in range(0, n, step)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict:
        j, lo, hi = self.chunks[i]
        job = self.jobs[j]
        out = {"job": j, "lo": lo, "hi": hi}
        try:
            raw = read_frames(job.video, job.frame_index[lo:hi], job.reader or self.reader, self.threads)
        except VideoDecodeError as err:
            return {**out, "error": str(err)}
        return {**out, "size": (raw.shape[2], raw.shape[1]),
                "pixels": preprocess_frames(raw, self.image_hw, self.mean, self.std)}


@dataclass
class _InFlight:
    job: Job
    windows: list[tuple[int, int, int]]
    prompt: tuple[torch.Tensor, torch.Tensor]          # features [L, Dd] (reuse) or ids [L]; mask [L]
    cache: dict[int, torch.Tensor] = field(default_factory=dict)   # frame -> tokens [N, Dd] or pixels [3, H, W]
    encoded_to: int = 0                                # frames [0, encoded_to) are in the cache (or were)
    queued: int = 0                                    # windows handed to the batch queue
    decoded: int = 0                                   # windows whose rows are filled
    rows: dict | None = None
    size: tuple[int, int] | None = None
    failed: bool = False


def _no_grad(fn):
    """inference_mode (+ bf16 autocast on CUDA) around one model call; generators yield outside of it."""
    @functools.wraps(fn)
    def wrapped(self, *args, **kwargs):
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else contextlib.nullcontext())  # CPU stays float32: bf16 autocast is slower there
        with torch.inference_mode(), autocast:
            return fn(self, *args, **kwargs)
    return wrapped


class AnnotationEngine:
    """`run(jobs)` yields a `Result` per job, in order. `timers` sums seconds spent in encoder and decoder."""

    def __init__(self, model, cfg, device: torch.device, batch_size: int = 8, chunk_frames: int = 32,
                 num_workers: int = 2, reader: str = "decord", decode_threads: int = 1,
                 action_temperature: float = 1.0, pad_id: int = 0) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.batch_size, self.chunk_frames, self.num_workers = int(batch_size), int(chunk_frames), int(num_workers)
        self.reader, self.decode_threads = reader, int(decode_threads)
        self.temperature = float(action_temperature)
        self.pad_id = int(pad_id)
        self.clip_len, self.stride = int(cfg.data.clip_len), int(cfg.data.clip_stride)
        self.streaming = model.has_transcript
        k = model.config.visible_tokens
        self.reuse = (model.config.clip_encoding == "frames" and not self.streaming and k is None)
        self.timers = {"encoder_s": 0.0, "decoder_s": 0.0, "wait_decode_s": 0.0}

    @property
    def mode(self) -> str:
        return "stream" if self.streaming else "features" if self.reuse else "windows"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, jobs: Sequence[Job]) -> Iterator[Result]:
        from action_decoder.models.build import image_hw

        vision = self.cfg.backbone.vision
        dataset = FrameChunks(jobs, self.chunk_frames, image_hw(vision.image_size), vision.image_mean,
                              vision.image_std, self.reader, self.decode_threads)
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
                            prefetch_factor=4 if self.num_workers else None,
                            persistent_workers=False, pin_memory=self.device.type == "cuda")
        states: dict[int, _InFlight] = {}
        order = list(range(len(jobs)))
        done: dict[int, Result] = {}
        next_out = 0
        queue: list[tuple[int, int]] = []     # (job, window number) ready to decode
        for j, job in enumerate(jobs):
            if len(job.frame_index) == 0:
                done[j] = Result(job.key, error=f"{job.video}: no sampled frame")
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            self.timers["wait_decode_s"] += time.perf_counter() - t0
            if item is None:
                break
            j = item["job"]
            st = states.get(j)
            if st is None:
                st = states[j] = self._start(jobs[j])
            if st.failed:
                continue
            if "error" in item:
                st.failed = True
                queue = [q for q in queue if q[0] != j]
                st.cache.clear()
                done[j] = Result(jobs[j].key, error=item["error"])
            else:
                st.size = tuple(item["size"])
                self._encode(st, item["lo"], item["pixels"])
                while st.queued < len(st.windows) and _window_end(st.windows[st.queued], self.clip_len,
                                                                  len(st.job.frame_index)) <= st.encoded_to:
                    queue.append((j, st.queued))
                    st.queued += 1
            while len(queue) >= self.batch_size:
                self._decode(states, queue[:self.batch_size], done)
                queue = queue[self.batch_size:]
            next_out = yield from self._emit(order, done, states, next_out)
        while queue:
            self._decode(states, queue[:self.batch_size], done)
            queue = queue[self.batch_size:]
        yield from self._emit(order, done, states, next_out)

    def _emit(self, order, done, states, next_out):
        while next_out < len(order) and order[next_out] in done:
            yield done.pop(order[next_out])
            states.pop(order[next_out], None)
            next_out += 1
        return next_out

    # -- per recording -----------------------------------------------------------------------

    @_no_grad
    def _start(self, job: Job) -> _InFlight:
        n = len(job.frame_index)
        ids = torch.tensor(job.prompt_ids or [self.pad_id], dtype=torch.int64)
        mask = torch.zeros(len(ids), dtype=torch.bool)
        mask[:len(job.prompt_ids)] = True
        if self.reuse:
            from action_decoder.models.towers.text_encoder import prompt_features

            t0 = self._tic()
            hidden = prompt_features(self.model.text, ids[None].to(self.device), mask[None].to(self.device))
            prompt = (self.model.project_prompt(hidden)[0], mask.to(self.device))
            self.timers["encoder_s"] += self._toc(t0)
        else:
            prompt = (ids.to(self.device), mask.to(self.device))
        return _InFlight(job, scoring_windows(n, self.clip_len, self.stride), prompt)

    @_no_grad
    def _encode(self, st: _InFlight, lo: int, pixels: torch.Tensor) -> None:
        pixels = pixels.to(self.device, non_blocking=True)
        if self.reuse:
            t0 = self._tic()
            visual, token_xy, token_cell, visible = self.model.encode_visual(pixels[:, None])  # each frame a clip of 1
            self.timers["encoder_s"] += self._toc(t0)
            self._grid = (token_xy[0, 0], token_cell, visible[0, 0])
            units = visual[:, 0]
        else:
            units = pixels
        for i in range(units.shape[0]):
            st.cache[lo + i] = units[i]
        st.encoded_to = lo + units.shape[0]

    @_no_grad
    def _decode(self, states: dict[int, _InFlight], batch: list[tuple[int, int]], done: dict) -> None:
        frames, prompts, masks = [], [], []
        for j, w in batch:
            st = states[j]
            start = st.windows[w][0]
            n = len(st.job.frame_index)
            # An episode shorter than a clip repeats its last frame (unscored padding), as ClipDataset does.
            frames.append(torch.stack([st.cache[min(f, n - 1)] for f in range(start, start + self.clip_len)]))
            prompts.append(st.prompt[0])
            masks.append(st.prompt[1])
        L = max(p.shape[0] for p in prompts)
        B = len(batch)
        mask = torch.zeros(B, L, dtype=torch.bool, device=self.device)
        for b, m in enumerate(masks):
            mask[b, :len(m)] = m
        x = torch.stack(frames)
        t0 = self._tic()
        if self.reuse:
            prompt = torch.zeros(B, L, prompts[0].shape[-1], dtype=prompts[0].dtype, device=self.device)
            for b, p in enumerate(prompts):
                prompt[b, :len(p)] = p
            xy, cell, visible = self._grid
            T = self.clip_len
            out = self.model.decode(Features(
                visual_tokens=x, token_xy=xy.expand(B, T, *xy.shape), token_cell=cell, prompt_features=prompt,
                prompt_mask=mask, visible_indices=visible.expand(B, T, *visible.shape)))
            heads = _heads(out.action_logits, out.key_logits, out.modifier_logits, out.click_xy, self.temperature)
        else:
            ids = torch.full((B, L), self.pad_id, dtype=torch.int64, device=self.device)
            for b, p in enumerate(prompts):
                ids[b, :len(p)] = p
            heads = self._model_heads(x, ids, mask)
        self.timers["decoder_s"] += self._toc(t0)
        for b, (j, w) in enumerate(batch):
            st = states[j]
            start, lo, hi = st.windows[w]
            if st.rows is None:
                n = len(st.job.frame_index)
                st.rows = {k: (v.new_zeros((n, *v.shape[2:])) if torch.is_tensor(v) else [None] * n)
                           for k, v in heads.items()}
            for k, v in heads.items():
                if torch.is_tensor(v):
                    st.rows[k][start + lo:start + hi] = v[b, lo:hi]
                else:
                    st.rows[k][start + lo:start + hi] = v[b][lo:hi]
            st.decoded += 1
            # frames before the next window's start are needed by no window still to come
            keep_from = st.windows[w + 1][0] if w + 1 < len(st.windows) else math.inf
            for f in [f for f in st.cache if f < keep_from]:
                del st.cache[f]
            if st.decoded == len(st.windows):
                done[j] = Result(st.job.key, size=st.size, heads=st.rows)

    def _model_heads(self, pixels, ids, mask) -> dict:
        if self.streaming:
            steps = list(self.model.stream(pixels, ids, mask))
            stack = lambda name: torch.stack([getattr(s, name) for s in steps], dim=1)  # noqa: E731
            heads = _heads(stack("action_logits"), stack("key_logits"), stack("modifier_logits"), stack("click_xy"),
                           self.temperature)
            heads["text"] = [[s.texts[b] if s.texts else "" for s in steps] for b in range(pixels.shape[0])]
            return heads
        out = self.model({"pixels": pixels, "prompt_ids": ids, "prompt_mask": mask})
        return _heads(out.action_logits, out.key_logits, out.modifier_logits, out.click_xy, self.temperature)

    def _tic(self) -> float:
        self._sync()
        return time.perf_counter()

    def _toc(self, t0: float) -> float:
        self._sync()
        return time.perf_counter() - t0


def _window_end(window, clip_len: int, n: int) -> int:
    return min(window[0] + clip_len, n)


def _heads(action, key, modifier, xy, temperature: float) -> dict:
    """Per clip and frame, on CPU: calibrated action probabilities, key / modifier ids, click xy."""
    return {"action": torch.softmax(action.float() / temperature, -1).cpu(), "key": key.argmax(-1).cpu(),
            "modifier": modifier.argmax(-1).cpu(), "xy": xy.float().cpu()}
