"""Annotate recordings nobody labelled: a checkpoint over any video -> per-frame predictions, events, a timeline.

`annotate(...)` (what annotate.py calls) takes a video file, a recording folder (DuckTrack layout: video.mp4,
optional events.jsonl + metadata.json, task.txt) or a folder of either, and writes per recording into
`<output>/<recording id>/`:

    frames.jsonl    one line per sampled frame: frame, t, action, action_prob, key / modifier where they apply,
                    x, y (normalized) where a click applies, transcript (model=parallel)
    actions.jsonl   the events of data/README.md §8, one a line, with times, pixel and normalized points
    timeline.png    a strip of frames with predicted (and true) events and click markers
    annotate.json   the recording's counts; event P/R/F1 where it has events.jsonl + metadata.json

and `<output>/annotate.json` with the totals. Frames are sampled at the checkpoint's data.sample_fps and scored
once each, in the evaluation windows validation uses (data/README.md §8); model=parallel runs through
`stream()`, the path live inference uses. Under `accelerate launch` each process takes every k-th recording.
Bad input (not a video, unreadable, shorter than a clip) is reported per file and counted; the rest go on.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from action_decoder.cli import MissingFileError
from action_decoder.data.clips import scoring_windows
from action_decoder.data.events import DataFormatError, read_events, read_metadata
from action_decoder.data.frames import preprocess_frames
from action_decoder.data.importer import probe_video, read_prompt
from action_decoder.data.labels import label_events, sampled_frames
from action_decoder.data.video import DEFAULT_READER, VideoDecodeError, read_frames
from action_decoder.data.vocab import LabelVocab
from action_decoder.evaluation.events import POINT_TYPES, EventCounts, frames_to_events
from action_decoder.models.build import image_hw
from action_decoder.evaluation.evaluate import load_model_from_checkpoint

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
KEY_ACTIONS = ("type", "key", "hotkey")          # where the key head applies (data/README.md rule 12)
CLICK_ACTIONS = POINT_TYPES + ("drag",)          # where a click point applies


class BadRecording(Exception):
    """This input cannot be annotated (reported per file, counted, the run goes on)."""


@dataclass
class Recording:
    id: str
    video: Path
    folder: Path | None  # a recording folder (may hold events.jsonl, metadata.json, task.txt), None for a bare file


def find_inputs(path: str | Path) -> list[Recording]:
    """A video file, a recording folder (holding video.mp4), or a folder of recording folders and video files."""
    path = Path(path)
    if path.is_file():
        return [Recording(path.stem, path, None)]
    if not path.is_dir():
        raise MissingFileError(f"input={path}: no such file or folder")
    if (path / "video.mp4").is_file():
        return [Recording(path.name, path / "video.mp4", path)]
    found = []
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and (child / "video.mp4").is_file():
            found.append(Recording(child.name, child / "video.mp4", child))
        elif child.is_file() and child.suffix.lower() in VIDEO_SUFFIXES:
            found.append(Recording(child.stem, child, None))
    if not found:
        raise MissingFileError(f"input={path}: no video.mp4 folder or video file ({', '.join(VIDEO_SUFFIXES)}) in it")
    return found


class Annotator:
    """A checkpoint's model with its data settings: `predict(video, prompt)` -> per-frame predictions."""

    def __init__(self, checkpoint: str | Path, device: torch.device, batch_size: int = 8,
                 reader: str = DEFAULT_READER) -> None:
        model, tokenizer, cfg, _ = load_model_from_checkpoint(checkpoint)
        self.model = model.to(device).eval()
        self.tokenizer, self.cfg, self.device = tokenizer, cfg, device
        self.batch_size, self.reader = int(batch_size), reader
        self.names = cfg.labels
        self.vocab = LabelVocab.from_config(cfg.labels)
        self.sample_fps = float(cfg.data.sample_fps)
        self.clip_len, self.stride = int(cfg.data.clip_len), int(cfg.data.clip_stride)
        self.streaming = self.model.has_transcript  # model=parallel: stream() is the inference path, with transcripts

    def prompt(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer([text], add_special_tokens=False)["input_ids"][0][:int(self.cfg.data.max_prompt_tokens)]
        prompt_ids = torch.full((1, max(1, len(ids))), int(self.tokenizer.pad_token_id), dtype=torch.int64)
        prompt_ids[0, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
        mask = torch.zeros_like(prompt_ids, dtype=torch.bool)
        mask[0, :len(ids)] = True
        return prompt_ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def predict(self, video: Path, prompt: str) -> dict:
        """{fps, width, height, frame_index, frames: [per-frame dict]} for the video's sampled frames."""
        try:
            info = probe_video(video)
        except DataFormatError as err:
            raise BadRecording(str(err)) from None
        n, frame_index = sampled_frames(info, self.sample_fps)
        if n < self.clip_len:
            raise BadRecording(f"{video}: {n} frames at {self.sample_fps:g} frames/s ({info.frame_count} video frames "
                               f"at {info.fps:g} fps), shorter than a clip ({self.clip_len} frames)")
        frame_index = np.asarray(frame_index)
        vision = self.cfg.backbone.vision
        prompt_ids, prompt_mask = self.prompt(prompt)
        cache: dict[int, torch.Tensor] = {}  # preprocessed frames still needed: each is decoded once
        size = None
        frames: list[dict | None] = [None] * n
        windows = scoring_windows(n, self.clip_len, self.stride)
        for first in range(0, len(windows), self.batch_size):
            batch_windows = windows[first:first + self.batch_size]
            clips = []
            for start, _, _ in batch_windows:
                missing = [f for f in range(start, start + self.clip_len) if f not in cache]
                if missing:
                    try:
                        raw = read_frames(video, frame_index[missing], self.reader)
                    except VideoDecodeError as err:
                        raise BadRecording(str(err)) from None
                    size = raw.shape[2], raw.shape[1]
                    pixels = preprocess_frames(raw, image_hw(vision.image_size), list(vision.image_mean),
                                               list(vision.image_std))
                    cache.update(zip(missing, pixels))
                clips.append(torch.stack([cache[f] for f in range(start, start + self.clip_len)]))
            next_start = windows[first + self.batch_size][0] if first + self.batch_size < len(windows) else n
            for f in [f for f in cache if f < next_start]:
                del cache[f]
            pixels = torch.stack(clips).to(self.device)
            B = pixels.shape[0]
            heads = self._heads(pixels, prompt_ids.expand(B, -1), prompt_mask.expand(B, -1))
            for b, (start, lo, hi) in enumerate(batch_windows):
                for t in range(lo, hi):
                    frames[start + t] = self._frame(start + t, {k: v[b][t] for k, v in heads.items()})
        return {"fps": info.fps, "width": size[0], "height": size[1], "frame_index": frame_index.tolist(),
                "video_info": info, "frames": frames}

    def _heads(self, pixels, prompt_ids, prompt_mask) -> dict:
        """Per clip and frame: action probabilities, key / modifier ids, click xy, transcript."""
        if self.streaming:
            steps = list(self.model.stream(pixels, prompt_ids, prompt_mask))
            stack = lambda name: torch.stack([getattr(s, name) for s in steps], dim=1)  # noqa: E731
            action, key, mod, xy = (stack(n) for n in ("action_logits", "key_logits", "modifier_logits", "click_xy"))
            texts = [[s.texts[b] if s.texts else "" for s in steps] for b in range(pixels.shape[0])]
        else:
            out = self.model({"pixels": pixels, "prompt_ids": prompt_ids, "prompt_mask": prompt_mask})
            action, key, mod, xy = out.action_logits, out.key_logits, out.modifier_logits, out.click_xy
            texts = None
        return {"action": torch.softmax(action.float(), -1).cpu(), "key": key.argmax(-1).cpu(),
                "modifier": mod.argmax(-1).cpu(), "xy": xy.float().cpu(),
                **({"text": texts} if texts is not None else {})}

    def _frame(self, f: int, h: dict) -> dict:
        a = int(h["action"].argmax())
        action = self.names["actions"][a]
        row = {"frame": f, "t": round(f / self.sample_fps, 4), "action": action,
               "action_prob": round(float(h["action"][a]), 4)}
        if action in KEY_ACTIONS:
            row["key"] = self.names["keys"][int(h["key"])]
        if action not in ("none", "move"):
            row["modifier"] = self.names["modifiers"][int(h["modifier"])]
        if action in CLICK_ACTIONS:
            row["x"], row["y"] = round(float(h["xy"][0]), 4), round(float(h["xy"][1]), 4)
        if "text" in h:
            row["transcript"] = h["text"]
        return row


def per_frame_lists(frames: list[dict]) -> dict:
    """frames.jsonl rows -> the per-frame lists of `frames_to_events`."""
    return {"action": [r["action"] for r in frames], "key": [r.get("key") for r in frames],
            "modifier": [r.get("modifier") for r in frames],
            "click": [(r["x"], r["y"]) if "x" in r else None for r in frames],
            "score": [r["action_prob"] for r in frames]}


def true_labels(rec: Recording, info, sample_fps: float, vocab: LabelVocab) -> dict | None:
    """Per-frame labels from the recording's events.jsonl + metadata.json (the importer's rules), if it has them."""
    if rec.folder is None or not (rec.folder / "events.jsonl").is_file() or not (rec.folder / "metadata.json").is_file():
        return None
    labels, _ = label_events(read_events(rec.folder / "events.jsonl"), read_metadata(rec.folder / "metadata.json"),
                             info, sample_fps, vocab)
    return {"action": labels.action, "key": labels.key, "modifier": labels.modifier,
            "click": [tuple(c) if c is not None else None for c in labels.click]}


def event_rows(events, sample_fps: float, width: int, height: int) -> list[dict]:
    rows = []
    for e in events:
        row = {"type": e.type, "frame_start": e.frame_start, "frame_end": e.frame_end,
               "t_start": round(e.frame_start / sample_fps, 4), "t_end": round((e.frame_end + 1) / sample_fps, 4)}
        if e.x is not None:
            row.update(x=round(e.x * width, 1), y=round(e.y * height, 1), x_norm=e.x, y_norm=e.y)
        if e.x_end is not None:
            row.update(x_end=round(e.x_end * width, 1), y_end=round(e.y_end * height, 1), x_end_norm=e.x_end,
                       y_end_norm=e.y_end)
        for name in ("text", "key", "modifiers", "direction"):
            if getattr(e, name) is not None:
                row[name] = getattr(e, name)
        row["score"] = None if e.score is None else round(e.score, 4)
        rows.append(row)
    return rows


def annotate_recording(annotator: Annotator, rec: Recording, out_dir: Path, tolerance: int, prompt: str,
                       timeline_frames: int) -> dict:
    """Everything for one recording; returns its annotate.json (with `counts` for the totals)."""
    text = read_prompt(rec.folder, "") if rec.folder is not None else ""
    pred = annotator.predict(rec.video, text or prompt)
    frames = pred["frames"]
    fps = annotator.sample_fps
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frames))
    lists = per_frame_lists(frames)
    events = frames_to_events(**lists)
    (out_dir / "actions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in event_rows(events, fps, pred["width"], pred["height"])))
    summary = {"recording": rec.id, "video": str(rec.video), "num_frames": len(frames), "sample_fps": fps,
               "video_fps": pred["fps"], "width": pred["width"], "height": pred["height"],
               "num_events": len(events), "events_by_type": _by_type(events)}
    try:
        true = true_labels(rec, pred["video_info"], fps, annotator.vocab)
    except DataFormatError as err:  # a broken log does not stop the annotation: say so, score nothing
        warnings.warn(f"{rec.id}: events not scored: {err}", stacklevel=2)
        true = None
    true_events = None
    if true is not None:
        true_events = frames_to_events(**true)
        counts = EventCounts(tolerance)
        counts.add(events, true_events)
        counts.add_move_frames(lists["action"], true["action"])
        summary["metrics"] = counts.compute()
        summary["counts"] = counts.counts.tolist()
    from action_decoder.evaluation.plots import plot_timeline  # matplotlib only when drawing

    plot_timeline(rec.video, pred["frame_index"], frames, events, true_events, true, fps,
                  out_dir / "timeline.png", max_frames=timeline_frames, reader=annotator.reader,
                  title=f"{rec.id}: predicted" + (" vs true" if true is not None else ""))
    (out_dir / "annotate.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "counts"}, indent=1))
    return summary


def _by_type(events) -> dict:
    out: dict[str, int] = {}
    for e in events:
        out[e.type] = out.get(e.type, 0) + 1
    return out


def totals(summaries: list[dict], bad: list[dict], tolerance: int) -> dict:
    """The run's annotate.json: counts, bad inputs, events over all recordings that have true events."""
    scored = [s for s in summaries if "counts" in s]
    counts = EventCounts(tolerance)
    for s in scored:
        counts.counts += torch.tensor(s["counts"], dtype=torch.float64)
    return {"recordings": len(summaries) + len(bad), "annotated": len(summaries), "bad": len(bad),
            "bad_inputs": bad, "frames": sum(s["num_frames"] for s in summaries),
            "events": sum(s["num_events"] for s in summaries), "scored_recordings": len(scored),
            "metrics": counts.compute() if scored else None}


def fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def run(cfg) -> dict:
    """annotate.py's body: shard the inputs over the launched processes, annotate, write and print the totals."""
    import os

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, gather_object
    from tqdm.auto import tqdm

    if not cfg.checkpoint or not cfg.input:
        raise SystemExit("annotate.py: give checkpoint=<best.pt> and input=<video | recording folder | folder of them>")
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if multi_cpu else [])
    recordings = find_inputs(cfg.input)
    mine = recordings[accelerator.process_index::accelerator.num_processes]
    annotator = Annotator(cfg.checkpoint, accelerator.device, cfg.batch_size, cfg.reader)
    tolerance = int(cfg.eval.event_tolerance)
    output = Path(cfg.output)
    summaries, bad = [], []
    for rec in tqdm(mine, desc="annotate", unit="rec", disable=not accelerator.is_main_process):
        try:
            s = annotate_recording(annotator, rec, output / rec.id, tolerance, str(cfg.prompt), int(cfg.timeline_frames))
        except BadRecording as err:
            bad.append({"input": str(rec.video), "error": str(err)})
            print(f"[rank {accelerator.process_index}] skipped {rec.id}: {err}", flush=True)
            continue
        summaries.append(s)
        m = s.get("metrics")
        scored = f" event_f1={fmt(m['event_f1'])} (P={fmt(m['event_precision'])} R={fmt(m['event_recall'])}, " \
                 f"{m['event_n_true']} true events)" if m else ""
        tqdm.write(f"{rec.id}: {s['num_frames']} frames, {s['num_events']} events{scored} -> {output / rec.id}")
    if accelerator.num_processes > 1:
        summaries, bad = gather_object(summaries), gather_object(bad)
    result = None
    if accelerator.is_main_process:
        result = totals(summaries, bad, tolerance)
        output.mkdir(parents=True, exist_ok=True)
        (output / "annotate.json").write_text(json.dumps(
            {**result, "recordings_annotated": sorted(s["recording"] for s in summaries),
             "checkpoint": str(cfg.checkpoint)}, indent=1))
        m = result["metrics"]
        print(f"annotated {result['annotated']} of {result['recordings']} recordings ({result['bad']} bad), "
              f"{result['frames']} frames, {result['events']} events"
              + (f"; on {result['scored_recordings']} with events.jsonl: event_f1={fmt(m['event_f1'])} "
                 f"P={fmt(m['event_precision'])} R={fmt(m['event_recall'])} (±{tolerance} frames)" if m else "")
              + f" -> {output}/annotate.json")
    accelerator.wait_for_everyone()  # before teardown: gloo aborts if a rank leaves mid-collective
    accelerator.end_training()
    return result
