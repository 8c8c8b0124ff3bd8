"""Annotate recordings nobody labelled: a checkpoint over any video -> per-frame predictions, events, a timeline.

`run(cfg)` (what annotate.py calls) takes a video file, a recording folder (DuckTrack layout: video.mp4,
optional events.jsonl + metadata.json, task.txt) or a folder of either, and writes per recording into
`<output>/<recording id>/`:

    frames.jsonl    one line per sampled frame: frame, t, action, action_prob (calibrated where the checkpoint
                    holds a temperature), key / modifier where they apply, x, y (normalized) where a click applies,
                    transcript (model=parallel)
    actions.jsonl   the events of data/README.md §8 scoring at least annotate.min_score, with times, pixel and
                    normalized points
    timeline.png    a strip of frames with predicted (and true) events and click markers (timeline_frames > 0)
    events.jsonl, metadata.json, task.txt, video.mp4 (a link)   with export=ducktrack: the events as a recording
                    (export.py), for prepare_data.py data=recordings
    annotate.json   the recording's counts, its fingerprint; event P/R/F1 where it has events.jsonl + metadata.json

and `<output>/annotate.json` with the totals. Frames are sampled at the checkpoint's data.sample_fps and scored
once each, in the evaluation windows validation uses (data/README.md §8), through the AnnotationEngine (engine.py:
decoding in DataLoader workers, each frame encoded once with clip_encoding=frames, windows of several recordings
in a batch); a recording shorter than a clip is one window padded by repeating its last frame, as in eval.py.
A recording is written to a temp folder and renamed when complete; a rerun into the same output skips the
recordings finished with the same checkpoint and settings (resume.py). Under `accelerate launch` each process
takes every k-th recording of those left. Bad input (not a video, unreadable, no sampled frame) is reported per
file and counted; the rest go on.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from action_decoder.cli import MissingFileError
from action_decoder.data.clips import prompt_token_ids
from action_decoder.data.events import DataFormatError, read_events, read_metadata
from action_decoder.data.importer import probe_video, read_prompt
from action_decoder.data.labels import label_events, sampled_frames
from action_decoder.data.video import DEFAULT_READER
from action_decoder.data.vocab import LabelVocab
from action_decoder.evaluation.calibration import action_temperature
from action_decoder.evaluation.decision import decide_actions, rule_of
from action_decoder.evaluation.events import POINT_TYPES, EventCounts, frames_to_events
from action_decoder.evaluation.evaluate import load_model_from_checkpoint
from action_decoder.inference.engine import AnnotationEngine, Job
from action_decoder.inference.export import differing_frames, frame_labels, roundtrip, write_ducktrack
from action_decoder.inference.resume import SUMMARY, checkpoint_sha256, commit, fingerprint, finished, temp_dir

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
    """A checkpoint's model with its data settings: `predict_many([(video, prompt), ...])` -> per-frame predictions,
    through the AnnotationEngine (engine.py). Action probabilities are calibrated where the checkpoint holds a
    temperature (evaluation/calibration.py)."""

    def __init__(self, checkpoint: str | Path, device: torch.device, batch_size: int = 8,
                 reader: str = DEFAULT_READER, num_workers: int = 2, chunk_frames: int = 32) -> None:
        model, tokenizer, cfg, ckpt = load_model_from_checkpoint(checkpoint)
        self.model = model.to(device).eval()
        self.tokenizer, self.cfg, self.device = tokenizer, cfg, device
        self.batch_size, self.reader = int(batch_size), reader
        self.names = cfg.labels
        self.vocab = LabelVocab.from_config(cfg.labels)
        self.sample_fps = float(cfg.data.sample_fps)
        self.clip_len, self.stride = int(cfg.data.clip_len), int(cfg.data.clip_stride)
        self.streaming = self.model.has_transcript  # model=parallel: stream() is the inference path, with transcripts
        self.temperature = action_temperature(ckpt)
        self.event_rule = rule_of(ckpt)  # the event decision rule tuned on val (eval.py tune_events), if stored
        self.engine = AnnotationEngine(self.model, cfg, device, batch_size=batch_size, chunk_frames=chunk_frames,
                                       num_workers=num_workers, reader=reader, action_temperature=self.temperature,
                                       pad_id=int(tokenizer.pad_token_id))

    def job(self, key: int, video: Path, prompt: str) -> tuple[Job, object]:
        """(engine job, VideoInfo) for one video; BadRecording if it is no video or has no sampled frame.
        Not-mp4 containers (ocap's mkv: variable frame rate, HEVC) are sampled by their frames' pts and decoded
        in order with PyAV, as the ocap importer does (data/README.md §4)."""
        variable = Path(video).suffix.lower() != ".mp4"
        try:
            info = probe_video(video, frame_times=variable)
        except DataFormatError as err:
            raise BadRecording(str(err)) from None
        n, frame_index = sampled_frames(info, self.sample_fps)
        if n == 0:
            raise BadRecording(f"{video}: shorter than one sampled frame at {self.sample_fps:g} frames/s "
                               f"({info.frame_count} video frames at {info.fps:g} fps)")
        ids = prompt_token_ids([prompt], self.tokenizer, int(self.cfg.data.max_prompt_tokens))[0]
        return Job(key, str(video), np.asarray(frame_index, np.int64), ids, "pyav" if variable else None), info

    def predict_many(self, items) -> Iterator[tuple[int, dict | BadRecording]]:
        """items: (video, prompt) pairs -> (index, prediction dict | BadRecording), in order. Recordings go through
        the model together (windows of several in one batch)."""
        jobs, infos, bad = [], {}, {}
        for i, (video, prompt) in enumerate(items):
            try:
                job, infos[i] = self.job(i, video, prompt)
                jobs.append(job)
            except BadRecording as err:
                bad[i] = err
        results = self.engine.run(jobs)
        for i in range(len(items)):
            if i in bad:
                yield i, bad[i]
                continue
            r = next(results)
            if r.error is not None:
                yield i, BadRecording(r.error)
                continue
            info = infos[i]
            n = len(r.heads["action"])
            actions, _ = decide_actions(r.heads["action"], self.names["actions"], self.event_rule, self.temperature)
            frames = [self._frame(f, {k: v[f] for k, v in r.heads.items()}, actions[f]) for f in range(n)]
            yield i, {"fps": info.fps, "width": r.size[0], "height": r.size[1],
                      "frame_index": next(j for j in jobs if j.key == i).frame_index.tolist(),
                      "video_info": info, "frames": frames}

    def predict(self, video: Path, prompt: str) -> dict:
        """{fps, width, height, frame_index, video_info, frames: [per-frame dict]} for one video's sampled frames."""
        _, pred = next(self.predict_many([(video, prompt)]))
        if isinstance(pred, BadRecording):
            raise pred
        return pred

    def _frame(self, f: int, h: dict, action: str) -> dict:
        """One frames.jsonl row; `action` as the event rule decided it (argmax without one)."""
        a = list(self.names["actions"]).index(action)
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


@dataclass
class Options:
    """What annotate.py's settings change in a recording's outputs (all of it goes into the fingerprint)."""

    prompt: str = ""                # for recordings without task.txt
    tolerance: int = 2              # eval.event_tolerance
    timeline_frames: int = 18       # 0: no timeline.png
    min_score: float = 0.0          # events (and move frames) with a lower calibrated score are dropped
    export: str | None = None       # None | "ducktrack"


def recording_prompt(rec: Recording, default: str) -> str:
    text = read_prompt(rec.folder, "") if rec.folder is not None else ""
    return text or default


def annotate_recording(annotator: Annotator, rec: Recording, out_dir: Path, tolerance: int, prompt: str,
                       timeline_frames: int) -> dict:
    """One recording predicted and written to `out_dir` (no resume bookkeeping): its annotate.json."""
    opts = Options(prompt=prompt, tolerance=tolerance, timeline_frames=timeline_frames)
    pred = annotator.predict(rec.video, recording_prompt(rec, prompt))
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_recording(annotator, rec, pred, out_dir, opts)


def write_recording(annotator: Annotator, rec: Recording, pred: dict, out_dir: Path, opts: Options,
                    extra: dict | None = None) -> dict:
    """frames.jsonl, actions.jsonl, timeline.png, [the DuckTrack export], annotate.json of one predicted recording;
    returns the annotate.json dict (with `event_counts` for the totals)."""
    frames = pred["frames"]
    fps = annotator.sample_fps
    (out_dir / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frames))
    lists = per_frame_lists(frames)
    all_events = frames_to_events(**lists)
    confident = [e.score is None or e.score >= opts.min_score for e in all_events]
    events = [e for e, c in zip(all_events, confident) if c]
    keep = [True] * len(frames)
    for e, c in zip(all_events, confident):
        if not c:
            keep[e.frame_start:e.frame_end + 1] = [False] * (e.frame_end + 1 - e.frame_start)
    for f, r in enumerate(frames):
        if r["action"] == "move" and r["action_prob"] < opts.min_score:
            keep[f] = False
    kept_actions = [a if k else "none" for a, k in zip(lists["action"], keep)]
    (out_dir / "actions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in event_rows(events, fps, pred["width"], pred["height"])))
    summary = {"recording": rec.id, "video": str(rec.video), "num_frames": len(frames), "sample_fps": fps,
               "video_fps": pred["fps"], "width": pred["width"], "height": pred["height"],
               "action_temperature": annotator.temperature, "min_score": opts.min_score,
               "num_events": len(events), "dropped_low_score": len(all_events) - len(events),
               "events_by_type": _by_type(events), **(extra or {})}
    try:
        true = true_labels(rec, pred["video_info"], fps, annotator.vocab)
    except DataFormatError as err:  # a broken log does not stop the annotation: say so, score nothing
        warnings.warn(f"{rec.id}: events not scored: {err}", stacklevel=2)
        true = None
    true_events = None
    if true is not None:
        true_events = frames_to_events(**true)
        counts = EventCounts(opts.tolerance)
        counts.add(events, true_events)
        counts.add_move_frames(kept_actions, true["action"])
        summary["metrics"] = counts.compute()
        summary["event_counts"] = counts.counts.tolist()
    if opts.export == "ducktrack":
        summary["export"] = export_ducktrack(annotator, rec, pred, frames, keep, out_dir, recording_prompt(rec, opts.prompt), opts)
    if opts.timeline_frames > 0:
        from action_decoder.evaluation.plots import plot_timeline  # matplotlib only when drawing

        plot_timeline(rec.video, pred["frame_index"], frames, events, true_events, true, fps,
                      out_dir / "timeline.png", max_frames=opts.timeline_frames,
                      reader="pyav" if Path(rec.video).suffix.lower() != ".mp4" else annotator.reader,
                      title=f"{rec.id}: predicted" + (" vs true" if true is not None else ""))
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def export_ducktrack(annotator: Annotator, rec: Recording, pred: dict, frames: list[dict], keep: list[bool],
                     out_dir: Path, prompt: str, opts: Options) -> dict:
    """The recording as DuckTrack files (export.py), checked by labelling them back with the importer's rules."""
    labels = frame_labels(frames, keep)
    write_ducktrack(out_dir, labels, rec.video, annotator.sample_fps, pred["width"], pred["height"], prompt,
                    annotator.vocab, tags=["pseudo_label"],
                    source={"min_score": opts.min_score, "action_temperature": annotator.temperature})
    differ = differing_frames(labels, roundtrip(out_dir, pred["video_info"], annotator.sample_fps, annotator.vocab))
    if differ:
        warnings.warn(f"{rec.id}: {len(differ)} of {len(frames)} exported frames label back differently "
                      f"(first: frame {differ[0]}: {labels['action'][differ[0]]}); see export.py", stacklevel=2)
    return {"format": "ducktrack", "frames_differing": len(differ), "differing": differ[:20]}


def _by_type(events) -> dict:
    out: dict[str, int] = {}
    for e in events:
        out[e.type] = out.get(e.type, 0) + 1
    return out


def totals(summaries: list[dict], bad: list[dict], tolerance: int) -> dict:
    """The run's annotate.json: counts, bad inputs, events over all recordings that have true events."""
    scored = [s for s in summaries if "event_counts" in s]
    counts = EventCounts(tolerance)
    for s in scored:
        counts.counts += torch.tensor(s["event_counts"], dtype=torch.float64)
    return {"recordings": len(summaries) + len(bad), "annotated": len(summaries), "bad": len(bad),
            "bad_inputs": bad, "frames": sum(s["num_frames"] for s in summaries),
            "events": sum(s["num_events"] for s in summaries), "scored_recordings": len(scored),
            "metrics": counts.compute() if scored else None}


def fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def run(cfg) -> dict:
    """annotate.py's body: find what is left to do, shard it over the launched processes, annotate each recording
    into a temp folder renamed when complete (resume.py), then write and print the totals."""
    import os

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, gather_object
    from tqdm.auto import tqdm

    if not cfg.checkpoint or not cfg.input:
        raise SystemExit("annotate.py: give checkpoint=<best.pt> and input=<video | recording folder | folder of them>")
    export = cfg.get("export") or None
    if export not in (None, "ducktrack"):
        raise SystemExit(f"annotate.py: export={export!r}: choose ducktrack (or leave it null)")
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if multi_cpu else [])
    recordings = find_inputs(cfg.input)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    opts = Options(prompt=str(cfg.prompt), tolerance=int(cfg.eval.event_tolerance),
                   timeline_frames=int(cfg.timeline_frames), min_score=float((cfg.get("annotate") or {}).get("min_score") or 0.0),
                   export=export)
    ckpt_sha = checkpoint_sha256(cfg.checkpoint)
    # Every process decides the same: what is finished (same fingerprint) is skipped, the rest is shared out.
    todo, finished_summaries, prints = [], [], {}
    for rec in recordings:
        fp = fingerprint(ckpt_sha, rec.video, {**asdict(opts), "prompt": recording_prompt(rec, opts.prompt),
                                               "reader": str(cfg.reader)})
        prev = None if cfg.get("overwrite") else finished(output / rec.id, fp)
        prints[rec.id] = fp
        (finished_summaries.append(prev) if prev is not None else todo.append(rec))
    accelerator.wait_for_everyone()  # nobody writes before every process has looked
    mine = todo[accelerator.process_index::accelerator.num_processes]
    if accelerator.is_main_process and finished_summaries:
        print(f"{len(finished_summaries)} of {len(recordings)} recordings already annotated with this checkpoint "
              f"and settings in {output}: skipped (overwrite=true redoes them)", flush=True)
    annotator = Annotator(cfg.checkpoint, accelerator.device, cfg.batch_size, cfg.reader,
                          num_workers=int(cfg.get("num_workers", 2)), chunk_frames=int(cfg.get("chunk_frames", 32)))
    summaries, bad = [], []
    items = [(rec.video, recording_prompt(rec, opts.prompt)) for rec in mine]
    progress = tqdm(total=len(mine), desc="annotate", unit="rec", disable=not accelerator.is_main_process)
    for i, pred in annotator.predict_many(items):
        rec = mine[i]
        progress.update(1)
        if isinstance(pred, BadRecording):
            bad.append({"input": str(rec.video), "error": str(pred)})
            print(f"[rank {accelerator.process_index}] skipped {rec.id}: {pred}", flush=True)
            continue
        tmp = temp_dir(output, rec.id)
        s = write_recording(annotator, rec, pred, tmp, opts, extra={"fingerprint": prints[rec.id],
                                                                    "checkpoint": str(cfg.checkpoint)})
        commit(tmp, output / rec.id)
        summaries.append(s)
        m = s.get("metrics")
        scored = f" event_f1={fmt(m['event_f1'])} (P={fmt(m['event_precision'])} R={fmt(m['event_recall'])}, " \
                 f"{m['event_n_true']} true events)" if m else ""
        tqdm.write(f"{rec.id}: {s['num_frames']} frames, {s['num_events']} events{scored} -> {output / rec.id}")
    progress.close()
    if accelerator.num_processes > 1:
        summaries, bad = gather_object(summaries), gather_object(bad)
    result = None
    if accelerator.is_main_process:
        summaries = finished_summaries + summaries
        result = totals(summaries, bad, opts.tolerance)
        (output / SUMMARY).write_text(json.dumps(
            {**result, "recordings_annotated": sorted(s["recording"] for s in summaries),
             "skipped_finished": len(finished_summaries), "checkpoint": str(cfg.checkpoint),
             "action_temperature": annotator.temperature, "min_score": opts.min_score, "export": export}, indent=1))
        m = result["metrics"]
        print(f"annotated {result['annotated']} of {result['recordings']} recordings ({result['bad']} bad, "
              f"{len(finished_summaries)} already done), {result['frames']} frames, {result['events']} events"
              + (f"; on {result['scored_recordings']} with events.jsonl: event_f1={fmt(m['event_f1'])} "
                 f"P={fmt(m['event_precision'])} R={fmt(m['event_recall'])} (±{opts.tolerance} frames)" if m else "")
              + f" -> {output}/{SUMMARY}")
    accelerator.wait_for_everyone()  # before teardown: gloo aborts if a rank leaves mid-collective
    accelerator.end_training()
    return result
