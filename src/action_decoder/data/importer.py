"""Recordings (DuckTrack layout) -> prepared episodes `<prepared_dir>/{train,val,test}.jsonl`.

data/README.md §1-§2. `prepare_dataset` is what scripts/prepare_data.py runs; `prepare_recording`
turns one recording folder into one episode; the labelling rules live in `labels.py`.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path

import av
from tqdm import tqdm

from action_decoder.cli import MissingFileError
from action_decoder.data.events import DataFormatError, RecordingSkipped, read_events, read_metadata
from action_decoder.data.labels import LabelStats, VideoInfo, label_events
from action_decoder.data.ocap import read_ocap, write_sampled_video
from action_decoder.data.srt import read_srt
from action_decoder.data.vocab import LabelVocab

SPLITS = ("train", "val", "test")
UNSEEN_SPLIT = "test_unseen"     # task types held out of training altogether (data.test_unseen_tags)
FORMATS = ("ducktrack", "ocap")
REQUIRED_FILES = ("events.jsonl", "metadata.json", "video.mp4")


def probe_video(path: str | Path, frame_times: bool = False) -> VideoInfo:
    """Frame rate and frame count from the container; demuxes packets only if the header has no count
    or `frame_times` (a variable-rate video) asks for every frame's pts."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataFormatError(path, None, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frame_count, times = stream.frames, None
            if frame_times:
                pts = sorted(p.pts for p in container.demux(stream) if p.size > 0 and p.pts is not None)
                times, frame_count = tuple(float(p * stream.time_base) for p in pts), len(pts)
            elif frame_count <= 0:  # e.g. mkv/webm headers carry no frame count
                frame_count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.error.FFmpegError as err:
        raise DataFormatError(path, None, f"cannot read video ({err})") from None
    if not rate or float(rate) <= 0:
        raise DataFormatError(path, None, "video stream has no frame rate")
    return VideoInfo(fps=float(rate), frame_count=int(frame_count), frame_times=times)


def video_size(path: str | Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def split_of(recording_id: str, val_fraction: float, test_fraction: float, tags=(), unseen_tags=()) -> str:
    """Rule 15: a recording carrying any of `unseen_tags` (its task type) -> test_unseen; otherwise sha1(id)
    mapped to [0, 1); [0, val) -> val, [val, val + test) -> test, else train."""
    if unseen_tags and set(tags) & set(unseen_tags):
        return UNSEEN_SPLIT
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 "
                         "and sum to at most 1")
    u = int.from_bytes(hashlib.sha1(recording_id.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


def read_prompt(rec_dir: Path, description: str) -> str:
    """task.txt, else metadata description, else README.md (where DuckTrack saves the description)."""
    task = rec_dir / "task.txt"
    if task.exists():
        return task.read_text(encoding="utf-8").strip()
    if description.strip():
        return description.strip()
    readme = rec_dir / "README.md"
    return readme.read_text(encoding="utf-8").strip() if readme.exists() else ""


def prepare_recording(rec_dir: str | Path, recording_id: str, sample_fps: float,
                      vocab: LabelVocab, fmt: str = "ducktrack",
                      video_dir: str | Path | None = None) -> tuple[dict, LabelStats]:
    """One recording -> (episode dict as written to <split>.jsonl, counts).

    ducktrack: `rec_dir` is the recording's folder. ocap: `rec_dir` is the `<name>.mcap` path, beside
    `<name>.mkv` (optional `<name>.txt`: the task prompt; `<name>.srt`: narration); the sampled frames
    are written to `<video_dir>/<id>.mp4` (see ocap.py: decord mis-seeks ocap's HEVC mkv), the
    episode's video."""
    rec_dir = Path(rec_dir).resolve()
    if fmt == "ocap":
        mcap_path, video_path = rec_dir, rec_dir.with_suffix(".mkv")
        video = probe_video(video_path, frame_times=True)
        ocap = read_ocap(mcap_path, video_path, video_size(video_path))
        meta, events = ocap.meta, ocap.events
        srt_path, task_path = rec_dir.with_suffix(".srt"), rec_dir.with_suffix(".txt")
        prompt = task_path.read_text(encoding="utf-8").strip() if task_path.exists() else ""
    else:
        meta = read_metadata(rec_dir / "metadata.json")
        events = read_events(rec_dir / "events.jsonl")
        video_path = rec_dir / "video.mp4"
        video = probe_video(video_path)
        srt_path = rec_dir / "narration.srt"
        prompt = read_prompt(rec_dir, meta.description)
    cues = read_srt(srt_path) if srt_path.exists() else []
    labels, stats = label_events(events, meta, video, sample_fps, vocab, cues)
    if fmt == "ocap":
        if ocap.outside_video:
            stats.dropped_events["outside_video"] += ocap.outside_video
        if video_dir is None:
            raise ValueError("ocap recordings need a video_dir for their sampled mp4")
        video_path = Path(video_dir).resolve() / f"{recording_id}.mp4"
        if labels.num_frames:
            write_sampled_video(mcap_path.with_suffix(".mkv"), video_path, labels.frame_index, sample_fps)
        labels.frame_index = list(range(labels.num_frames))
        video = VideoInfo(fps=float(sample_fps), frame_count=labels.num_frames)
    episode = {
        "id": recording_id, "video": str(video_path), "video_fps": video.fps, "sample_fps": float(sample_fps),
        "num_frames": labels.num_frames, "frame_index": labels.frame_index,
        "screen": [meta.screen_width, meta.screen_height], "prompt": prompt,
        "tags": meta.tags, "action": labels.action, "key": labels.key, "modifier": labels.modifier,
        "click": labels.click, "transcript": labels.transcript,
    }
    return episode, stats


def find_recordings(recordings_dir: Path, fmt: str = "ducktrack") -> list[tuple[str, Path]]:
    """(id, path) of every recording under recordings_dir; id = relative path.

    ducktrack: every folder holding an events.jsonl. ocap: every `<name>.mcap` (id without the suffix).
    Hidden folders (editor/notebook caches such as .ipynb_checkpoints) are not recordings."""
    if fmt not in FORMATS:
        raise ValueError(f"data.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    found = []
    for path in recordings_dir.rglob("events.jsonl" if fmt == "ducktrack" else "*.mcap"):
        rec = path.parent if fmt == "ducktrack" else path
        rel = rec.relative_to(recordings_dir)
        if not any(part.startswith(".") for part in rel.parts):
            found.append(((rel if fmt == "ducktrack" else rel.with_suffix("")).as_posix(), rec))
    return sorted(found)


def missing_files(rec: Path, fmt: str) -> list[str]:
    if fmt == "ocap":
        return [] if rec.with_suffix(".mkv").exists() else [rec.with_suffix(".mkv").name]
    return [name for name in REQUIRED_FILES if not (rec / name).exists()]


def prepare_dataset(recordings_dir: str | Path, prepared_dir: str | Path, sample_fps: float,
                    val_fraction: float, test_fraction: float, vocab: LabelVocab,
                    progress: bool = True, fmt: str = "ducktrack", unseen_tags=()) -> dict:
    """Label every recording, write <prepared_dir>/{train,val,test}.jsonl and summary.json; return the summary.
    With `unseen_tags`, recordings carrying one of them go to a fourth split, test_unseen.jsonl (rule 15).

    Nothing is written if a recording is malformed (a broken event line, metadata or SRT raises
    DataFormatError); a recording that cannot be used at all (RecordingSkipped: no usable start time, an
    mcap without the needed topics, a video size disagreeing with the screen) is skipped and named.
    """
    recordings_dir, prepared_dir = Path(recordings_dir).resolve(), Path(prepared_dir).resolve()
    if not recordings_dir.is_dir():
        raise DataFormatError(recordings_dir, None, "recordings folder does not exist")
    unseen_tags = tuple(unseen_tags or ())
    splits = SPLITS + ((UNSEEN_SPLIT,) if unseen_tags else ())
    episodes: dict[str, list[dict]] = {s: [] for s in splits}
    totals = LabelStats()
    frames_per_action = {s: Counter({a: 0 for a in vocab.actions.names}) for s in splits}
    skipped: dict[str, str] = {}
    lost_by_recording: dict[str, dict[str, list[int]]] = {}
    found = find_recordings(recordings_dir, fmt)
    if not found:  # nothing to prepare: empty splits would only fail later, in training
        raise MissingFileError(f"data.recordings_dir={recordings_dir}: no {fmt} recording in it "
                               f"({'events.jsonl' if fmt == 'ducktrack' else '*.mcap'} files); make synthetic ones with "
                               "python scripts/make_synthetic_data.py, or point data.recordings_dir at your recordings")
    for rec_id, rec_dir in tqdm(found, desc="prepare", unit="rec", disable=not progress):
        missing = missing_files(rec_dir, fmt)
        if missing:
            skipped[rec_id] = f"missing {', '.join(missing)}"
            warnings.warn(f"{rec_dir}: skipped, missing {', '.join(missing)}", stacklevel=2)
            continue
        try:
            episode, stats = prepare_recording(rec_dir, rec_id, sample_fps, vocab, fmt, prepared_dir / "videos")
        except RecordingSkipped as err:
            skipped[rec_id] = str(err)
            warnings.warn(f"skipped: {err}", stacklevel=2)
            continue
        if episode["num_frames"] == 0:
            skipped[rec_id] = "video shorter than one sampled frame"
            warnings.warn(f"{rec_dir}: skipped, video shorter than one sampled frame", stacklevel=2)
            continue
        split = split_of(rec_id, val_fraction, test_fraction, episode["tags"], unseen_tags)
        episodes[split].append(episode)
        frames_per_action[split].update(episode["action"])
        totals.add(stats)
        if stats.lost_events:
            lost_by_recording[rec_id] = stats.lost_share()

    summary = {
        "recordings_dir": str(recordings_dir), "prepared_dir": str(prepared_dir), "sample_fps": float(sample_fps),
        "recordings": {s: len(episodes[s]) for s in splits},
        "frames": {s: sum(e["num_frames"] for e in episodes[s]) for s in splits},
        "frames_per_action": {s: dict(frames_per_action[s]) for s in splits},
        **({"test_unseen_tags": list(unseen_tags)} if unseen_tags else {}),
        **totals.as_dict(),
        "typed_chars_lost": [totals.lost_events["type"], totals.labelled_events["type"]],
        "lost_by_recording": lost_by_recording,
        "skipped_recordings": skipped,
    }
    prepared_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        with open(prepared_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for episode in episodes[split]:
                f.write(json.dumps(episode, ensure_ascii=False) + "\n")
    (prepared_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable summary for the prepare_data.py console."""
    lines = [f"prepared {sum(summary['recordings'].values())} recordings -> {summary['prepared_dir']}"]
    lines.append("recordings per split: " + ", ".join(f"{s} {n}" for s, n in summary["recordings"].items()))
    actions = list(next(iter(summary["frames_per_action"].values())))
    splits = list(summary["recordings"])
    lines.append(f"{'frames per action':<18}" + "".join(f"{s:>12}" for s in splits))
    for a in actions:
        lines.append(f"  {a:<16}" + "".join(f"{summary['frames_per_action'][s][a]:>12}" for s in splits))
    lines.append(f"  {'total':<16}" + "".join(f"{summary['frames'][s]:>12}" for s in splits))
    for name in ("events", "labelled_events", "dropped_events", "narration"):
        counts = summary[name]
        lines.append(f"{name.replace('_', ' ')}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    lost = ", ".join(f"{a} {n} of {summary['labelled_events'][a]} ({n / summary['labelled_events'][a]:.0%})"
                     for a, n in summary["lost_events"].items())
    lines.append(f"labelled events that lost their frame to another (rule 3, at {summary['sample_fps']:g} fps): "
                 + (lost or "none"))
    n_lost, n_typed = summary["typed_chars_lost"]
    if n_typed:
        lines.append(f"typed characters lost: {n_lost} of {n_typed} ({n_lost / n_typed:.1%}); "
                     f"{len(summary['lost_by_recording'])} recording(s) lost events (validate_data.py names them)")
    lines.append(f"middle clicks (ignored): {summary['events'].get('middle_press', 0)}")
    unknown = summary["unknown_keys"]
    lines.append("unknown keys -> other: " + (", ".join(f"{k!r} {v}" for k, v in unknown.items()) or "none"))
    if summary["skipped_recordings"]:
        lines.append(f"skipped recordings: {len(summary['skipped_recordings'])}")
        lines += [f"  {k}: {v}" for k, v in summary["skipped_recordings"].items()]
    return "\n".join(lines)
