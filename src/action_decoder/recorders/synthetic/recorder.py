"""Synthetic screen recorder: plays scripted tasks on a synthetic desktop and writes REAL recordings.

Each recording is a folder `<out>/syn_<NNNNN>/` in the DuckTrack layout of data/README.md §1
(video.mp4, events.jsonl, metadata.json, task.txt, narration.srt), so it goes through the same importer
as a real recording. Recording `i` depends only on (seed, i): a numpy Generator seeded with both draws
the task, the layout, the words and every timing, so the same seed gives byte-identical events.jsonl
whatever the number of workers.

    plan_recording   -> what happens (events in video time, narration, pause, layout); no files
    write_recording  -> renders the plan: frames through the desktop app, H.264 via PyAV, the text files
    generate_recordings -> many recordings over a process pool with a progress bar
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from action_decoder.recorders import common
from action_decoder.recorders.common import config_from_node
from action_decoder.recorders.synthetic.scene import Desktop, Layout
from action_decoder.recorders.synthetic.tasks import TASK_FUNCS, TASKS, VARIANTS, Script, fill

PLATFORMS = ("Darwin", "Linux", "Windows")


@dataclass(frozen=True)
class SyntheticConfig:
    """The `data.synthetic` config block (conf/data/synthetic.yaml documents each knob; defaults mirror it)."""
    num_recordings: int = 600
    width: int = 320
    height: int = 200
    fps: int = 10
    duration: float = 6.0
    pause_fraction: float = 0.2
    seed: int = 0
    tasks: tuple = TASKS
    move_hz: float = 30.0
    crf: int = 20
    workers: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.width % 2 or self.height % 2:
            raise ValueError(f"synthetic width/height must be even for yuv420p video, got {self.width}x{self.height}")
        if self.fps <= 0 or self.move_hz < self.fps:
            raise ValueError(f"need fps > 0 and move_hz >= fps (smooth cursor), got fps={self.fps} move_hz={self.move_hz}")
        if self.duration < 3.0:
            raise ValueError(f"synthetic duration must be >= 3 s to fit a task, got {self.duration}")
        if not 0.0 <= self.pause_fraction <= 1.0:
            raise ValueError(f"pause_fraction must be in [0, 1], got {self.pause_fraction}")
        unknown = [t for t in self.tasks if t not in TASK_FUNCS]
        if unknown or not self.tasks:
            raise ValueError(f"unknown synthetic tasks {unknown}; known: {list(TASKS)}")

    @classmethod
    def from_cfg(cls, node) -> "SyntheticConfig":
        """Build from an OmegaConf node or dict (e.g. `cfg.data.synthetic`)."""
        return config_from_node(cls, node, "data.synthetic")

    def resolved_workers(self) -> int:
        if self.workers:
            return int(self.workers)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:
            return os.cpu_count() or 1


@dataclass
class Plan:
    """One recording before rendering. Event times are VIDEO time (pauses excluded)."""
    index: int
    task: str
    variant: str
    prompt: str
    layout: Layout
    events: list            # [(video time, event dict)], sorted
    cues: list              # [(start, end, text)] on the video clock, non-overlapping
    fps: int
    num_frames: int         # video frames written (pause removed)
    t0: float               # event-clock time of video frame 0 (OBS_WEBSOCKET_OUTPUT_STARTED)
    pause: tuple | None     # (video time where the pause starts, seconds paused)
    pause_events: list      # [(seconds into the pause, event dict)]: input during the pause (importer drops it)
    seconds: float          # wall-clock length of the session, pause included

    def wall(self, v: float) -> float:
        """Event-clock offset from t0 of video time v."""
        return v + self.pause[1] if self.pause is not None and v >= self.pause[0] else v

    def timed_events(self) -> list[dict]:
        """All events.jsonl lines in clock order, with the event clock's time_stamp."""
        out = [(self.wall(v), ev) for v, ev in self.events]
        if self.pause is not None:
            p, d = self.pause
            out += [(p, {"action": "pause"}), (p + d, {"action": "resume"})]
            out += [(p + dt, ev) for dt, ev in self.pause_events]
        out.sort(key=lambda x: x[0])
        return [{"time_stamp": round(self.t0 + w, 6), **ev} for w, ev in out]


def plan_recording(index: int, cfg: SyntheticConfig, task: str | None = None, variant: str | None = None,
                   paused: bool | None = None) -> Plan:
    """Decide everything about recording `index`. `task`/`variant`/`paused` force a choice (tests, demos);
    the seeded draws happen either way so the rest of the recording does not depend on forcing."""
    rng = np.random.default_rng([cfg.seed, index])
    drawn_task = cfg.tasks[int(rng.integers(len(cfg.tasks)))]
    task = task or drawn_task
    if task not in VARIANTS:
        raise ValueError(f"unknown synthetic task {task!r}; known: {list(TASKS)}")
    drawn_variant = VARIANTS[task][int(rng.integers(len(VARIANTS[task])))]
    variant = variant or drawn_variant
    if variant not in VARIANTS[task]:
        raise ValueError(f"task {task!r} has variants {VARIANTS[task]}, not {variant!r}")
    is_paused = bool(rng.random() < cfg.pause_fraction) if paused is None else paused
    platform = PLATFORMS[int(rng.integers(len(PLATFORMS)))]
    # DuckTrack on macOS with natural scrolling writes scroll_direction -1, elsewhere +1. It only flips
    # DuckTrack's replay; the logged dy already says which way the content went (data/README.md rule 8).
    scroll_direction = -1 if platform == "Darwin" and rng.random() < 0.75 else 1
    t0 = round(1000.0 + float(rng.uniform(0.0, 9000.0)), 6)
    total_frames = int(round(cfg.duration * cfg.fps))
    pause_frames = 0
    if is_paused:
        pause_frames = int(rng.integers(max(1, round(0.5 * cfg.fps)), max(2, round(2.5 * cfg.fps)) + 1))
    num_frames = total_frames - pause_frames
    video_len = num_frames / cfg.fps

    for speed in (1.0, 0.75, 0.55):
        layout = Layout(cfg.width, cfg.height, rng, platform, scroll_direction)
        s = Script(layout, rng, cfg.move_hz, min_dwell=1.2 / cfg.fps, speed=speed)
        s.x = int(rng.integers(layout.width // 4, layout.width * 3 // 4))
        s.y = int(rng.integers(layout.height // 4, layout.height * 3 // 4))
        layout.initial.cursor = (s.x, s.y)
        s.idle(0.2, 0.8)
        prompt = TASK_FUNCS[task](s, variant)
        if s.t <= video_len - 0.3:
            break
    else:
        raise ValueError(f"task {task}/{variant} does not fit into {video_len:.1f} s of video; raise data.synthetic.duration")
    fill(s, video_len)
    events = [(t, ev) for t, _, ev in sorted(s.events, key=lambda e: (e[0], e[1]))]
    assert events[-1][0] < video_len, "scripted events must end before the last frame"

    pause, pause_events = None, []
    if is_paused:
        cands = [p for p in s.safe if 2 / cfg.fps < p < video_len - 2 / cfg.fps]
        if not cands:
            raise RuntimeError(f"recording {index}: no idle moment to pause in (task {task})")
        p = float(cands[int(rng.integers(len(cands)))])
        d = pause_frames / cfg.fps
        pause = (p, d)
        if rng.random() < 0.5:
            # the user fidgets while paused and returns the mouse: the importer must drop these
            x, y = layout.initial.cursor
            for v, ev in events:
                if v >= p:
                    break
                if "x" in ev:
                    x, y = ev["x"], ev["y"]
            ox, oy = int(rng.integers(-30, 31)), int(rng.integers(-30, 31))
            for k, f in enumerate((0.25, 0.4, 0.55, 0.7)):
                px = x if k == 3 else int(np.clip(x + ox * (k + 1) / 3, 0, cfg.width - 1))
                py = y if k == 3 else int(np.clip(y + oy * (k + 1) / 3, 0, cfg.height - 1))
                pause_events.append((d * f, {"action": "move", "x": px, "y": py}))

    cues = _tidy_cues(s.cues, video_len)
    return Plan(index, task, variant, prompt, layout, events, cues, cfg.fps, num_frames, t0, pause,
                pause_events, total_frames / cfg.fps)


def _tidy_cues(cues: list, video_len: float) -> list:
    """Sort, keep inside the video, and cut each cue where the next one starts (SRT readers like that)."""
    cues = sorted(cues, key=lambda c: c[0])
    out = []
    for k, (a, b, text) in enumerate(cues):
        if k + 1 < len(cues):
            b = min(b, cues[k + 1][0] - 0.01)
        b = min(b, video_len)
        if b - a >= 0.1:
            out.append((round(a, 3), round(b, 3), text))
    return out


def render_frames(plan: Plan):
    """Yield the video frames: frame k is the screen at video time k / fps (events at or before it applied)."""
    desk = Desktop(plan.layout)
    evs = plan.events
    j = 0
    for k in range(plan.num_frames):
        t = k / plan.fps
        while j < len(evs) and evs[j][0] <= t + 1e-9:
            desk.handle(evs[j][1], evs[j][0])
            j += 1
        yield desk.render(t)


def _write_video(path: Path, plan: Plan, crf: int, threads: int) -> None:
    L = plan.layout
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=plan.fps,
                            options={"crf": str(crf), "preset": "veryfast", "threads": str(threads)})
        st.width, st.height, st.pix_fmt = L.width, L.height, "yuv420p"
        st.time_base = Fraction(1, plan.fps)
        # a keyframe every second keeps random clip access cheap for decord (ENVIRONMENT.md: long GOPs are slow)
        st.codec_context.gop_size = max(1, plan.fps)
        for k, arr in enumerate(render_frames(plan)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = k
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def recording_id(index: int) -> str:
    return common.recording_id("syn", index)


def write_recording(out_root: str | Path, plan: Plan, cfg: SyntheticConfig, threads: int = 0) -> Path:
    """Render `plan` into `<out_root>/syn_<index>/`. Written to a temp folder first and renamed, so an
    interrupted run never leaves a half recording for the importer."""
    out_root = Path(out_root)
    final = out_root / recording_id(plan.index)
    tmp = common.staging_dir(final)
    L = plan.layout

    lines = [json.dumps(ev) for ev in plan.timed_events()]
    (tmp / "events.jsonl").write_text("\n".join(lines) + "\n")
    meta = {
        "system": L.platform,
        "screen_width": L.width,
        "screen_height": L.height,
        "scroll_direction": L.scroll_direction,
        "obs_record_state_timings": {
            "OBS_WEBSOCKET_OUTPUT_STARTING": [round(plan.t0 - 0.0065, 6)],
            "OBS_WEBSOCKET_OUTPUT_STARTED": [plan.t0],
            "OBS_WEBSOCKET_OUTPUT_STOPPING": [round(plan.t0 + plan.seconds, 6)],
        },
        "description": plan.prompt,
        "tags": ["synthetic", plan.task],
        "synthetic": {  # generator provenance; importers ignore it
            "seed": cfg.seed, "index": plan.index, "task": plan.task, "variant": plan.variant,
            "fps": plan.fps, "num_frames": plan.num_frames,
            "pause": None if plan.pause is None else {"video_time": round(plan.pause[0], 6),
                                                      "seconds": round(plan.pause[1], 6)},
        },
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    (tmp / "task.txt").write_text(plan.prompt + "\n")
    common.write_srt(tmp / "narration.srt", plan.cues)
    _write_video(tmp / "video.mp4", plan, cfg.crf, threads)

    return common.finish(tmp, final)


def generate_recording(out_root: str | Path, index: int, cfg: SyntheticConfig, task: str | None = None,
                       variant: str | None = None, paused: bool | None = None, threads: int = 0) -> Path:
    """Plan and write one recording; returns its folder."""
    return write_recording(out_root, plan_recording(index, cfg, task, variant, paused), cfg, threads)


def _job(args) -> str:
    out_root, index, cfg, threads = args
    return str(generate_recording(out_root, index, cfg, threads=threads))


def generate_recordings(out_root: str | Path, cfg: SyntheticConfig, progress: bool = True) -> list[Path]:
    """Write recordings 0 .. num_recordings-1 under `out_root`, over `cfg.workers` processes."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    n = cfg.num_recordings
    workers = max(1, min(cfg.resolved_workers(), n))
    # one x264 thread per process when processes already fill the cores; else let x264 choose
    jobs = [(str(out_root), i, cfg, 1 if workers > 1 else 0) for i in range(n)]
    return sorted(Path(p) for p in common.run_jobs(_job, jobs, workers, "synthetic recordings", progress))


def stale_recordings(out_root: str | Path, num_recordings: int) -> list[Path]:
    """syn_* folders beyond `num_recordings` left by an earlier, larger run (the importer would read them)."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        return []
    out = []
    for p in out_root.glob("syn_*"):
        suffix = p.name[4:]
        if suffix.isdigit() and int(suffix) >= num_recordings:
            out.append(p)
    return sorted(out)


__all__ = ["SyntheticConfig", "Plan", "plan_recording", "write_recording", "generate_recording",
           "generate_recordings", "render_frames", "recording_id", "stale_recordings", "TASKS", "VARIANTS"]

