"""MiniWoB++ demonstrations played in a real Chromium and recorded the DuckTrack way (data/README.md §9).

Each worker process owns one Xvfb display with one Chromium window on it (app mode, fixed size, no automation
infobar), started once and reused across its episodes. An episode: the task page of the `miniwob` package is
opened (file://, offline), seeded (`Math.seedrandom`), the pynput listeners and the x11grab capture start,
`core.startEpisodeReal()` shows the task, and a scripted solver (`miniwob_solvers.py`) reads its targets from
the DOM through selenium and acts only through real X input: the desktop recorder's `x11.Driver`, with its
human-like motion, typing speed and pauses. The capture stops once the page reports the episode done.

Files per recording `<out>/mw_<NNNNN>/`: video.mp4, events.jsonl, metadata.json (task, seed, MiniWoB reward,
the task area's rectangle on screen), task.txt (the task's own instruction), narration.srt (one cue per solver
step, e.g. `click the "no" button`), script.json (every X action the solver made, its class, key and
event-clock time, and what it typed). `<out>/recorder_log.jsonl` holds one line per episode outcome, so a
re-run into the same folder records only the episodes that are missing.

Faults (a crashed browser, a hung page, a solver that cannot find its target) end that episode, never the
run; each is counted and named in the summary, and the browser is restarted or the page reloaded.

Needs `Xvfb`, `xdotool`, `ffmpeg`, `chromium`, `chromedriver` (Debian: `apt-get install -y xvfb xdotool ffmpeg
chromium chromium-driver`) and `pip install -r requirements-desktop.txt` (pynput, python-xlib, miniwob).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing.util
import os
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from action_decoder.recorders import common
from action_decoder.recorders.common import config_from_node
from action_decoder.recorders.x11 import Capture, Driver, EventLog, XSession, clock_offset, write_constant_rate

SYSTEM_TOOLS = ("Xvfb", "xdotool", "ffmpeg", "chromium", "chromedriver")
PREFIX = "mw"
LOG_NAME = "recorder_log.jsonl"
TASK_AREA_CSS = (0, 0, 160, 210)          # MiniWoB's #wrap: the instruction on top, the task below
FAULTS = ("browser_crash", "hung_page", "target_not_found", "other")


class TargetNotFound(Exception):
    """The solver could not find what the instruction names (a fault: the episode ends)."""


class HungPage(Exception):
    """The page stopped answering, or the episode ran past `episode_timeout`."""


@dataclass(frozen=True)
class MiniwobConfig:
    """The `data.miniwob` config block (conf/data/miniwob.yaml documents each knob)."""
    num_episodes: int = 1012
    tasks: tuple = ()                    # training task types (train/val/test split by episode)
    test_unseen: tuple = ()              # task types recorded only for the test_unseen split
    width: int = 350                     # recorded region = browser window, CSS px
    height: int = 210
    scale: float = 1.0                   # Chromium's device scale factor; screen = width*scale x height*scale
    fps: int = 10
    seed: int = 0
    crf: int = 23
    workers: int = 3
    keep_unsolved: bool = False
    episode_timeout: float = 30.0
    max_time_ms: int = 30000
    tail: float = 0.5

    def __post_init__(self):
        from action_decoder.recorders.miniwob_solvers import SOLVERS
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "test_unseen", tuple(self.test_unseen))
        unknown = [t for t in self.all_tasks if t not in SOLVERS]
        if unknown or not self.all_tasks:
            raise ValueError(f"no solver for MiniWoB tasks {unknown}; solvers: {sorted(SOLVERS)}")
        both = sorted(set(self.tasks) & set(self.test_unseen))
        if both:
            raise ValueError(f"data.miniwob.test_unseen must hold task types never trained on; also in tasks: {both}")
        if (self.screen[0] % 2) or (self.screen[1] % 2):
            raise ValueError(f"screen {self.screen} (width/height x scale) must be even for yuv420p")

    @property
    def all_tasks(self) -> tuple:
        return self.tasks + self.test_unseen

    @property
    def screen(self) -> tuple[int, int]:
        return int(round(self.width * self.scale)), int(round(self.height * self.scale))

    @classmethod
    def from_cfg(cls, node) -> "MiniwobConfig":
        return config_from_node(cls, node, "data.miniwob")


def missing_tools() -> list[str]:
    """System tools the recorder needs that are not on PATH, and Python packages not installed."""
    missing = [t for t in SYSTEM_TOOLS if shutil.which(t) is None]
    for module in ("pynput", "Xlib", "miniwob", "selenium"):   # find, not import: pynput's import needs a DISPLAY
        if importlib.util.find_spec(module) is None:
            missing.append(f"python package {module}")
    return missing


def html_dir() -> Path:
    spec = importlib.util.find_spec("miniwob")
    return Path(spec.origin).parent / "html" / "miniwob"


def recording_id(index: int) -> str:
    return common.recording_id(PREFIX, index)


def plan(cfg: MiniwobConfig, index: int) -> tuple[str, int]:
    """Episode `index` -> (task type, MiniWoB seed): task types in turn, the seed from (seed, index)."""
    task = cfg.all_tasks[index % len(cfg.all_tasks)]
    digest = hashlib.sha1(f"{cfg.seed}:{index}".encode()).digest()
    return task, int.from_bytes(digest[:4], "big") % 2 ** 31


# --- the browser on one display ------------------------------------------------------------------------
class Station:
    """One Xvfb display and one Chromium window on it, reused episode after episode."""

    def __init__(self, cfg: MiniwobConfig):
        self.cfg = cfg
        self.session = XSession(*cfg.screen)
        os.environ["DISPLAY"] = self.session.display     # pynput's listeners connect to this process's DISPLAY
        # One pair of listeners for the station's life: stopping pynput's X listeners waits seconds for their
        # threads, so each episode takes its span of the one log instead.
        self.log = EventLog().__enter__()
        self.driver = None
        self.page: str | None = None

    def start_browser(self, task: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        w, h = self.cfg.screen
        opts = webdriver.ChromeOptions()
        for arg in ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-extensions", "--disable-background-networking", "--disable-sync",
                    "--disable-features=Translate", "--password-store=basic", "--hide-scrollbars",
                    "--window-position=0,0", f"--window-size={w},{h}",
                    f"--force-device-scale-factor={self.cfg.scale}", f"--app={(html_dir() / f'{task}.html').as_uri()}"):
            opts.add_argument(arg)
        opts.add_experimental_option("excludeSwitches", ["enable-automation"])   # no "controlled by" bar
        opts.add_experimental_option("prefs", {"credentials_enable_service": False,
                                               "profile.password_manager_enabled": False})
        service = Service(shutil.which("chromedriver"), env={**os.environ, "DISPLAY": self.session.display})
        self.driver = webdriver.Chrome(service=service, options=opts)
        # A hung renderer must not block the worker for selenium's default 120 s.
        self.driver.command_executor.client_config.timeout = 15
        self.driver.set_page_load_timeout(15)
        self.driver.set_script_timeout(10)
        self.driver.set_window_rect(0, 0, w, h)
        self.page = None

    def quit_browser(self) -> None:
        if self.driver is None:
            return
        proc = getattr(self.driver.service, "process", None)
        try:
            self.driver.command_executor.client_config.timeout = 5
            self.driver.quit()
        except Exception:                                 # a dead or hung browser: kill chromedriver's tree
            if proc is not None and proc.poll() is None:
                proc.kill()
        self.driver, self.page = None, None

    def alive(self) -> bool:
        try:
            return self.driver is not None and self.driver.execute_script("return 1") == 1
        except Exception:
            return False

    def open(self, task: str) -> None:
        """The task's page with its sync cover up (loaded for every new task type and after a fault)."""
        if self.driver is None:
            self.start_browser(task)         # app mode (no tabs, no address bar) holds for the window's life
        elif self.page != task:
            self.driver.get((html_dir() / f"{task}.html").as_uri())
            self.page = None
        if self.page != task:
            deadline = time.monotonic() + 10
            while not self.driver.execute_script("return !!document.getElementById('sync-task-cover')"):
                if time.monotonic() > deadline:
                    raise HungPage(f"{task}.html did not show its start cover")
                time.sleep(0.05)
            self.page = task

    def events(self, t0: float, t1: float) -> list[dict]:
        """The logged events stamped in [t0, t1] (perf_counter clock)."""
        return [e for e in list(self.log.events) if t0 <= e["time_stamp"] <= t1]

    def close(self) -> None:
        self.quit_browser()
        self.log.__exit__(None, None, None)
        self.session.close()


# --- one episode -----------------------------------------------------------------------------------------
@dataclass
class Episode:
    """What a solver sees: the page (selenium, for reading only), the X driver (for acting), the narration."""
    driver: object
    x: Driver
    rng: np.random.Generator
    scale: float
    instruction: str = ""
    cues: list = field(default_factory=list)          # (t0, t1, text) on the event clock
    typed: list = field(default_factory=list)         # strings the solver typed, in order

    def js(self, code: str, *args):
        return self.driver.execute_script(code, *args)

    def box(self, target) -> tuple[float, float, float, float]:
        """Screen rectangle (x, y, w, h) of an element or CSS selector; TargetNotFound if absent or invisible."""
        el = self.el(target) if isinstance(target, str) else target
        r = self.js("var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height];", el)
        if r[2] <= 0 or r[3] <= 0:
            raise TargetNotFound(f"{target if isinstance(target, str) else el.tag_name} has no area on screen")
        return tuple(v * self.scale for v in r)

    def el(self, css: str):
        found = self.els(css)
        if not found:
            raise TargetNotFound(f"no element {css!r}")
        return found[0]

    def els(self, css: str) -> list:
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def by_text(self, css: str, text: str, exact: bool = True):
        for e in self.els(css):
            t = e.text.strip()
            if (t == text) if exact else (text in t):
                return e
        raise TargetNotFound(f"no {css!r} with text {text!r}")

    def point(self, box, spread: float = 0.3) -> tuple[int, int]:
        """A point near the middle of a screen box (within `spread` of its half-size)."""
        x, y, w, h = box
        return (int(round(x + w / 2 + self.rng.uniform(-spread, spread) * w / 2)),
                int(round(y + h / 2 + self.rng.uniform(-spread, spread) * h / 2)))

    def point_on(self, target, spread: float = 0.3) -> tuple[int, int]:
        """A point near the middle of an element where the element itself is on top (another element may
        cover part of it: MiniWoB places some buttons at random, overlapping)."""
        el = self.el(target) if isinstance(target, str) else target
        box = self.box(el)
        for _ in range(30):
            p = self.point(box, spread)
            if self.js("var e = document.elementFromPoint(arguments[0], arguments[1]);"
                       "return !!e && (e === arguments[2] || arguments[2].contains(e));",
                       p[0] / self.scale, p[1] / self.scale, el):
                return p
            spread = min(0.95, spread + 0.05)
        raise TargetNotFound(f"{target if isinstance(target, str) else el.tag_name} is covered by another element")

    def step(self, text: str):
        """`with ep.step("click Submit"):` one narration cue spanning the actions inside."""
        ep = self

        class _Step:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if exc[0] is None:
                    ep.cues.append((self.t0, time.perf_counter(), text))
        return _Step()

    # Common moves, each one narrated step.
    def click(self, target, say: str, button: int = 1) -> None:
        with self.step(say):
            self.x.move(*self.point_on(target))
            self.x.click(button)

    def type(self, text: str) -> None:
        self.typed.append(text)
        self.x.type(text)

    def type_into(self, target, text: str, say: str) -> None:
        with self.step(say):
            self.x.move(*self.point_on(target))
            self.x.click()
            self.type(text)

    def submit(self, css: str = "#subbtn", say: str | None = None) -> None:
        self.click(css, say or f"click {self.el(css).text.strip() or 'Submit'}")


def _reward(driver) -> dict:
    return driver.execute_script("return {done: WOB_DONE_GLOBAL, reward: WOB_REWARD_GLOBAL, "
                                 "raw_reward: WOB_RAW_REWARD_GLOBAL, reason: WOB_REWARD_REASON};")


def _classify(err: BaseException, station: Station) -> str:
    if isinstance(err, TargetNotFound):
        return "target_not_found"
    if isinstance(err, HungPage):
        return "hung_page"
    from selenium.common.exceptions import TimeoutException
    if isinstance(err, TimeoutException) or "timed out" in str(err).lower() or "timeout" in type(err).__name__.lower():
        return "hung_page"
    return "other" if station.alive() else "browser_crash"


def record_episode(station: Station, out_root: Path, index: int, cfg: MiniwobConfig) -> dict:
    """Play and record episode `index` on `station`; returns its outcome (the recorder log's line)."""
    from action_decoder.recorders.miniwob_solvers import SOLVERS

    task, seed = plan(cfg, index)
    rid = recording_id(index)
    outcome = {"index": index, "id": rid, "task": task, "seed": seed}
    rng = np.random.default_rng([cfg.seed, index, 7])
    tmp = Path(tempfile.mkdtemp(prefix="mw_"))
    capture = None
    t_begin = time.monotonic()
    try:
        station.open(task)
        x = Driver(station.session, rng, (0, 0))
        x.release_all()
        # The pointer starts somewhere on the reward panel, off the task area.
        w, h = cfg.screen
        start = (int(rng.integers(int(w * 0.55), w - 10)), int(rng.integers(10, h - 10)))
        station.session.run("xdotool", "mousemove", str(start[0]), str(start[1]))
        x.xy = start
        ep = Episode(station.driver, x, rng, cfg.scale)
        offset = clock_offset()
        time.sleep(0.05)                                    # the jump to the start point stays out of the log
        t_mark = time.perf_counter()
        capture = Capture(station.session, tmp / "capture.mkv", w, h, cfg.fps, cfg.crf)
        time.sleep(float(rng.uniform(0.1, 0.3)))
        ep.js(f"Math.seedrandom({seed}); core.EPISODE_MAX_TIME = {cfg.max_time_ms}; core.startEpisodeReal();")
        t_shown = time.perf_counter()
        ep.instruction = ep.js("return core.getUtterance();")
        x.pause(0.3, 0.7)                                   # reading the instruction
        SOLVERS[task](ep)
        while not ep.js("return WOB_DONE_GLOBAL;"):        # the last action's effect, then the page's verdict
            if time.monotonic() - t_begin > cfg.episode_timeout:
                break
            time.sleep(0.05)
        result = _reward(station.driver)
        time.sleep(cfg.tail)
        capture.stop()
        stop_time = time.perf_counter()
        stopped, capture = capture, None
        capture_path, wall_times = stopped.path, stopped.frame_times()
        if not result["done"]:
            ep.js("core.endEpisode(0);")                      # the sync cover back up for the next episode
            result["reason"] = result["reason"] or "not done when the solver finished"
        reward = float(result["reward"] or 0)
        outcome.update(reward=reward, raw_reward=float(result["raw_reward"] or 0), done=bool(result["done"]),
                       instruction=ep.instruction, seconds=round(time.monotonic() - t_begin, 2))
        if reward <= 0:
            outcome["outcome"] = "unsolved"
            if not cfg.keep_unsolved:
                return outcome
        else:
            outcome["outcome"] = "solved"
        times = [t - offset for t in wall_times]
        final = out_root / rid
        out = common.staging_dir(final)
        write_constant_rate([(capture_path, times)], out / "video.mp4", cfg.fps, cfg.crf)
        video_start = times[0]
        with open(out / "events.jsonl", "w") as f:
            for e in sorted(station.events(t_mark, stop_time), key=lambda e: e["time_stamp"]):
                f.write(json.dumps({**e, "time_stamp": round(e["time_stamp"], 6)}) + "\n")
        (out / "task.txt").write_text(ep.instruction + "\n")
        common.write_srt(out / "narration.srt", [(a - video_start, b - video_start, text) for a, b, text in ep.cues])
        area = [v * cfg.scale for v in TASK_AREA_CSS]
        metadata = {
            "system": "Linux", "screen_width": w, "screen_height": h, "scroll_direction": 1,
            "obs_record_state_timings": {"OBS_WEBSOCKET_OUTPUT_STARTED": [round(video_start, 6)],
                                         "OBS_WEBSOCKET_OUTPUT_STOPPING": [round(stop_time, 6)]},
            "description": ep.instruction, "tags": ["miniwob", task],
            "miniwob": {"task": task, "seed": seed, "reward": reward, "raw_reward": outcome["raw_reward"],
                        "done": outcome["done"], "reason": result["reason"], "device_scale_factor": cfg.scale,
                        "task_area": {"x": area[0], "y": area[1], "width": area[2], "height": area[3]},
                        "shown_at": round(t_shown - video_start, 4)},
        }
        (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        script = {"display": station.session.display, "task": task, "seed": seed, "clock_offset": offset,
                  "captured_frames": len(times), "typed": ep.typed,
                  "actions": [{**a, "video_time": round(a["t"] - video_start, 4)} for a in x.actions],
                  "cues": [[round(a - video_start, 4), round(b - video_start, 4), text] for a, b, text in ep.cues]}
        (out / "script.json").write_text(json.dumps(script, indent=1) + "\n")
        common.finish(out, final)
        return outcome
    except Exception as err:  # a fault ends this episode, never the run
        kind = _classify(err, station)
        outcome.update(outcome="fault", fault=kind, error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                       if str(err) else type(err).__name__, seconds=round(time.monotonic() - t_begin, 2))
        if capture is not None:
            try:
                capture.stop()
            except Exception:
                capture.proc.kill()
        if kind in ("browser_crash", "hung_page"):
            station.quit_browser()
        else:
            station.page = None                            # reload the page before the next episode
        return outcome
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the worker pool ----------------------------------------------------------------------------------
_STATION: Station | None = None


def _job(args) -> dict:
    """One episode in a worker process; the worker's display and browser are made once and reused."""
    global _STATION
    out_root, index, cfg = args
    if _STATION is None:
        try:
            _STATION = Station(cfg)
        except Exception as err:
            return {"index": index, "id": recording_id(index), "task": plan(cfg, index)[0], "outcome": "fault",
                    "fault": "other", "error": f"display did not start: {type(err).__name__}: {err}"}
        multiprocessing.util.Finalize(None, _STATION.close, exitpriority=10)
    return record_episode(_STATION, Path(out_root), index, cfg)


def read_log(out_root: Path) -> dict[int, dict]:
    """The latest logged outcome of each episode index (a line cut off by a killed run is ignored)."""
    outcomes = {}
    path = out_root / LOG_NAME
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                o = json.loads(line)
                outcomes[int(o["index"])] = o
            except (ValueError, KeyError, TypeError):
                continue
    return outcomes


def pending(out_root: Path, cfg: MiniwobConfig) -> list[int]:
    """Episode indices still to record: no finished folder and no logged decision (an unsolved episode
    stays decided unless unsolved ones are now kept)."""
    logged = read_log(out_root)
    todo = []
    for i in range(cfg.num_episodes):
        if (out_root / recording_id(i) / "metadata.json").exists():
            continue
        o = logged.get(i)
        if o and o.get("outcome") == "unsolved" and not cfg.keep_unsolved and o.get("task") == plan(cfg, i)[0]:
            continue
        todo.append(i)
    return todo


def record_episodes(out_root: str | Path, cfg: MiniwobConfig, progress: bool = True) -> dict:
    """Record the missing episodes of 0 .. num_episodes-1 under `out_root`, `cfg.workers` displays at once;
    returns the run's summary (counts, faults by kind with the episodes they hit, rate)."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    todo = pending(out_root, cfg)
    kept = cfg.num_episodes - len(todo)
    counts: Counter = Counter()
    faults: dict[str, list[str]] = {k: [] for k in FAULTS}
    per_task: dict[str, Counter] = {}
    start = time.perf_counter()
    jobs = [(str(out_root), i, cfg) for i in todo]
    # Episodes of one task type come in runs of a few, so a worker mostly reuses the page it has open.
    jobs.sort(key=lambda j: (cfg.all_tasks.index(plan(cfg, j[1])[0]), j[1]))
    with open(out_root / LOG_NAME, "a") as log:
        for o in common.run_jobs(_job, jobs, cfg.workers, "miniwob episodes", progress, spawn=True, reuse=True,
                                 chunksize=2):
            log.write(json.dumps(o) + "\n")
            log.flush()
            counts[o["outcome"]] += 1
            per_task.setdefault(o["task"], Counter())[o["outcome"]] += 1
            if o["outcome"] == "fault":
                faults[o["fault"]].append(f"{o['id']} ({o['task']}): {o.get('error', '')}")
                warnings.warn(f"{o['id']} ({o['task']}): {o['fault']}: {o.get('error', '')}", stacklevel=2)
    secs = time.perf_counter() - start
    written = counts["solved"] + (counts["unsolved"] if cfg.keep_unsolved else 0)
    return {"out": str(out_root), "requested": cfg.num_episodes, "already_done": kept, "attempted": len(todo),
            "recorded": written, "solved": counts["solved"], "unsolved": counts["unsolved"],
            "unsolved_kept": cfg.keep_unsolved, "faults": {k: len(v) for k, v in faults.items()},
            "fault_episodes": {k: v for k, v in faults.items() if v}, "seconds": round(secs, 1),
            "recordings_per_min": round(written / secs * 60, 2) if secs > 0 and todo else None,
            "workers": cfg.workers, "per_task": {t: dict(c) for t, c in sorted(per_task.items())}}


def format_run_summary(s: dict) -> str:
    lines = [f"miniwob: {s['recorded']} recordings written to {s['out']} in {s['seconds']:.0f} s"
             + (f" ({s['recordings_per_min']:.1f} recordings/min, {s['workers']} displays at once)"
                if s["recordings_per_min"] else ""),
             f"  episodes: {s['requested']} requested, {s['already_done']} already done (recorded, or unsolved and "
             f"not kept), {s['attempted']} played: {s['solved']} solved, {s['unsolved']} unsolved (reward <= 0; "
             f"{'kept' if s['unsolved_kept'] else 'not kept: data.miniwob.keep_unsolved=true keeps them'}), "
             f"{sum(s['faults'].values())} faults"]
    for kind, n in s["faults"].items():
        lines.append(f"  fault {kind}: {n}")
        for name in s["fault_episodes"].get(kind, [])[:20]:
            lines.append(f"    {name}")
    for task, c in s["per_task"].items():
        lines.append(f"  {task:<24} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    return "\n".join(lines)


# --- labels checked against the solver ------------------------------------------------------------------
def check_labels(episode: dict, script: dict, typed_lost: int) -> dict:
    """The solver's own log against a prepared episode (data/README.md §9).

    Each labelled X action (click, double click, drag press, scroll click, key, hotkey, typed character) must
    have its class, and for keys its key, on a sampled frame within one frame of the xdotool call that made
    it; one that is not there but whose frame went to a higher-priority event (rule 3) is a counted collision,
    anything else a miss. The `type` frames, read in order, must spell what the solver typed with `typed_lost`
    characters (the summary's collisions for this recording) left out."""
    from action_decoder.data.labels import PRIORITY

    fps = episode["sample_fps"]
    action, keys = episode["action"], episode["key"]
    n = len(action)
    found = collided = 0
    missed = []
    for a in script["actions"]:
        if a["action"] == "move":
            continue
        lo = max(0, int(np.floor((a["video_time"] - a["span"] / 2) * fps)) - 1)
        hi = min(n - 1, int(np.floor((a["video_time"] + a["span"] / 2) * fps)) + 1)
        near = range(lo, hi + 1)
        want_key = a.get("key") if a["action"] in ("key", "hotkey") else None
        if any(action[f] == a["action"] and (want_key is None or keys[f] == want_key) for f in near):
            found += 1
        elif any(PRIORITY.get(action[f], 0) >= PRIORITY[a["action"]] for f in near):
            collided += 1
        else:
            missed.append({"action": a["action"], "video_time": a["video_time"], "key": a.get("key"),
                           "frames": [lo, hi], "labels": action[lo:hi + 1]})
    typed = "".join(script["typed"])
    labelled = "".join(k for a, k in zip(action, keys) if a == "type")
    it = iter(typed)
    in_order = all(ch in it for ch in labelled)             # a subsequence of what was typed
    return {"actions": found + collided + len(missed), "labelled": found, "collided": collided, "missed": missed,
            "typed": len(typed), "typed_labelled": len(labelled), "typed_lost": typed_lost,
            "typed_ok": in_order and len(labelled) == len(typed) - typed_lost}


def check_dataset(recordings_dir: str | Path, prepared_dir: str | Path) -> dict:
    """check_labels over every prepared episode that has a recorder script.json; totals and the failures."""
    recordings_dir, prepared_dir = Path(recordings_dir), Path(prepared_dir)
    summary = json.loads((prepared_dir / "summary.json").read_text())
    lost = summary.get("lost_by_recording", {})
    totals = Counter()
    failures = []
    for split_file in sorted(prepared_dir.glob("*.jsonl")):
        for line in split_file.read_text().splitlines():
            episode = json.loads(line)
            script_path = recordings_dir / episode["id"] / "script.json"
            if not script_path.exists():
                continue
            r = check_labels(episode, json.loads(script_path.read_text()),
                             lost.get(episode["id"], {}).get("type", [0, 0])[0])
            totals["episodes"] += 1
            for k in ("actions", "labelled", "collided", "typed", "typed_labelled", "typed_lost"):
                totals[k] += r[k]
            totals["missed"] += len(r["missed"])
            totals["typed_ok"] += r["typed_ok"]
            if r["missed"] or not r["typed_ok"]:
                failures.append({"id": episode["id"], **r})
    return {**totals, "sample_fps": summary["sample_fps"], "failures": failures}
