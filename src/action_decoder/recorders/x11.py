"""X11 recording pieces every real-screen recorder shares (the desktop recorder, the MiniWoB++ one): an Xvfb display,
DuckTrack's pynput listeners on the perf_counter clock, ffmpeg x11grab capture with wall-clock packet stamps, the
constant-rate re-encode, and human-like input through xdotool (XTEST), which remembers what each action labels.

Needs Xvfb, xdotool and ffmpeg (data/README.md §5) and `pynput`, `python-xlib`."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# xdotool keysym of every printable ASCII character that is not its own keysym (letters and digits are), so a
# script can type any string one key at a time.
KEYSYM = {" ": "space", "!": "exclam", '"': "quotedbl", "#": "numbersign", "$": "dollar", "%": "percent",
          "&": "ampersand", "'": "apostrophe", "(": "parenleft", ")": "parenright", "*": "asterisk", "+": "plus",
          ",": "comma", "-": "minus", ".": "period", "/": "slash", ":": "colon", ";": "semicolon", "<": "less",
          "=": "equal", ">": "greater", "?": "question", "@": "at", "[": "bracketleft", "\\": "backslash",
          "]": "bracketright", "^": "asciicircum", "_": "underscore", "`": "grave", "{": "braceleft", "|": "bar",
          "}": "braceright", "~": "asciitilde"}


# --- the X session -----------------------------------------------------------------------------------
class XSession:
    """An Xvfb display (number chosen by Xvfb: -displayfd) and the applications started on it."""

    def __init__(self, width: int, height: int):
        read_fd, write_fd = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp",
             "-br", "-noreset"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start (no display number reported)")
        self.display = f":{number}"
        self.env = {**os.environ, "DISPLAY": self.display}
        self.apps: list[subprocess.Popen] = []

    def start(self, *cmd: str) -> None:
        self.apps.append(subprocess.Popen(list(cmd), env=self.env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))

    def run(self, *cmd: str) -> str:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=True).stdout

    def windows(self) -> dict[str, tuple[int, int, int, int]]:
        """Top-level window instance name (xterm, xcalc) -> (x, y, width, height) on the root."""
        out = {}
        for line in self.run("xwininfo", "-root", "-children").splitlines():
            line = line.strip()
            if line.startswith("0x") and '("' in line:
                cls = line.split('("', 1)[1].split('"', 1)[0]
                geom = line.rsplit(None, 2)[-2]            # WxH+x+y
                wh, x, y = geom.split("+")[:3]
                w, h = wh.split("x")
                out[cls] = (int(x), int(y), int(w), int(h))
        return out

    def children(self, cls: str) -> list[tuple[int, int, int, int]]:
        """Absolute (x, y, w, h) of every leaf window under the top-level window of `cls` (xcalc's buttons)."""
        tree = self.run("xwininfo", "-root", "-tree").splitlines()
        out, inside, depth = [], False, 0
        for line in tree:
            stripped = line.strip()
            if not stripped.startswith("0x"):
                continue
            indent = len(line) - len(line.lstrip())
            if f'("{cls}"' in stripped:
                inside, depth = True, indent
                continue
            if inside and indent <= depth:
                break
            if inside:
                parts = stripped.split()
                w, h = parts[-2].split("+")[0].split("x")
                ax, ay = parts[-1].lstrip("+").split("+")
                out.append((int(ax), int(ay), int(w), int(h)))
        return out

    def close(self) -> None:
        for p in self.apps + [self.xvfb]:
            if p.poll() is None:
                p.terminate()
        for p in self.apps + [self.xvfb]:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


# --- DuckTrack-style listeners ----------------------------------------------------------------------
class EventLog:
    """pynput mouse + keyboard listeners writing DuckTrack events (perf_counter clock) to a list."""

    def __init__(self):
        from pynput import keyboard, mouse   # imported here: DISPLAY is set by then

        self.events: list[dict] = []
        self.recording = True

        def add(action: str, **fields) -> None:
            self.events.append({"time_stamp": time.perf_counter(), "action": action, **fields})

        def key_name(key) -> str | None:
            if isinstance(key, keyboard.Key):
                return key.name
            return key.char

        self.mouse = mouse.Listener(
            on_move=lambda x, y: add("move", x=x, y=y),
            on_click=lambda x, y, button, pressed: add("click", x=x, y=y, button=button.name, pressed=pressed),
            on_scroll=lambda x, y, dx, dy: add("scroll", x=x, y=y, dx=dx, dy=dy))
        self.keyboard = keyboard.Listener(on_press=lambda k: add("press", name=key_name(k)),
                                          on_release=lambda k: add("release", name=key_name(k)))

    def __enter__(self) -> "EventLog":
        self.mouse.start()
        self.keyboard.start()
        self.mouse.wait()
        self.keyboard.wait()
        return self

    def __exit__(self, *exc) -> None:
        # pynput's X listeners disable their record context twice when stopped (once from stop(), once in
        # their own cleanup); the X server answers the second by closing that connection, which the
        # listener thread reports as ConnectionClosedError after all events were delivered. Not an error here.
        from Xlib.error import ConnectionClosedError
        default_hook = threading.excepthook
        threading.excepthook = lambda a: None if issubclass(a.exc_type, ConnectionClosedError) else default_hook(a)
        self.mouse.stop()
        self.keyboard.stop()
        # A stopped listener thread only notices once the X server sends it one more event (it waits seconds
        # otherwise): one pointer nudge there and back and a shift tap, after logging has stopped.
        subprocess.run(["xdotool", "mousemove_relative", "--", "1", "0", "mousemove_relative", "--", "-1", "0",
                        "key", "shift"], capture_output=True)
        self.mouse.join(5)
        self.keyboard.join(5)


# --- capture -----------------------------------------------------------------------------------------
def clock_offset() -> float:
    """time.time() - time.perf_counter() in this process (median of a few reads)."""
    samples = []
    for _ in range(9):
        a = time.perf_counter()
        w = time.time()
        b = time.perf_counter()
        samples.append(w - (a + b) / 2)
    return float(np.median(samples))


class Capture:
    """One ffmpeg x11grab segment: constant frame rate, packets stamped with the wall clock (-copyts)."""

    def __init__(self, session: XSession, path: Path, width: int, height: int, fps: int, crf: int):
        self.path = path
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "x11grab", "-draw_mouse", "1", "-framerate", str(fps),
             "-video_size", f"{width}x{height}", "-i", session.display, "-copyts",
             "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", str(fps),
             "-threads", "1", "-y", str(path)], env=session.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # ffmpeg grabs its first frame 0.3-0.4 s after it starts (the mkv muxer buffers, so the file size
        # tells nothing); input before frame 0 would only be dropped by the importer (rule 1).
        time.sleep(1.0)
        if self.proc.poll() is not None:
            raise RuntimeError(f"ffmpeg x11grab did not start: {self.proc.stderr.read().decode()[-500:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)                 # ffmpeg finishes the file on SIGINT
        _, err = self.proc.communicate(timeout=20)
        if self.proc.returncode not in (0, 255):
            raise RuntimeError(f"ffmpeg x11grab failed ({self.proc.returncode}): {err.decode()[-500:]}")

    def frame_times(self) -> list[float]:
        """Wall-clock time of every frame, in presentation order."""
        with av.open(str(self.path)) as c:
            s = c.streams.video[0]
            return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size > 0 and p.pts is not None)


def write_constant_rate(segments: list[tuple[Path, list[float]]], dst: Path, fps: int, crf: int) -> list[int]:
    """Concatenate captured segments into a constant-rate H.264 mp4; returns each segment's frame count.

    x11grab grabs on a timer and skips a frame now and then under load (its packets are ~99 ms apart with
    an occasional 198 ms gap at 10 fps), so frames are laid on the grid: output frame k of a segment is the
    captured frame nearest to (first frame time + k / fps), k = 0 .. round((last - first) * fps)."""
    counts = []
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.codec_context.time_base = Fraction(1, fps)
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "veryfast", "crf": str(crf)}
        written = 0
        for path, times in segments:
            n = int(round((times[-1] - times[0]) * fps)) + 1
            with av.open(str(path)) as src:
                frames = src.decode(video=0)
                current, j = next(frames), 0
                if not written:
                    stream.width, stream.height = current.width, current.height
                for k in range(n):
                    slot = times[0] + k / fps
                    while j + 1 < len(times) and times[j + 1] <= slot + 0.5 / fps:
                        current, j = next(frames), j + 1
                    image = current.reformat(format="yuv420p")
                    image.pts, image.time_base, written = written, Fraction(1, fps), written + 1
                    for packet in stream.encode(image):
                        out.mux(packet)
            counts.append(n)
        for packet in stream.encode():
            out.mux(packet)
    return counts


# --- human-like input --------------------------------------------------------------------------------
class Driver:
    """Plays input through xdotool with human-like timing and remembers what each action should label.

    Pointer travel is one xdotool chain (mousemove + sleep steps); every labelled action (click, key,
    scroll, drag press) is its own xdotool call, timed with perf_counter before and after, so the script
    knows when it happened independently of the pynput log (`actions[i]["t"]`: the call's midpoint,
    `"span"`: its duration, a few ms)."""

    def __init__(self, session: XSession, rng: np.random.Generator, start_xy: tuple[int, int]):
        self.session, self.rng = session, rng
        self.xy = start_xy
        self.actions: list[dict] = []     # {"action", "t", "span", "xy"/"key"}

    def _xdotool(self, *args: str) -> tuple[float, float]:
        before = time.perf_counter()
        subprocess.run(["xdotool", *args], env=self.session.env, check=True, capture_output=True)
        after = time.perf_counter()
        return before, after

    def _act(self, action: str, *args: str, **info) -> None:
        before, after = self._xdotool(*args)
        self.actions.append({"action": action, "t": (before + after) / 2, "span": after - before, **info})

    def pause(self, lo: float, hi: float) -> None:
        time.sleep(float(self.rng.uniform(lo, hi)))

    def move(self, x: int, y: int) -> None:
        """Eased travel in 25-40 ms steps (about 0.2-0.8 s), a little jitter on the way."""
        x0, y0 = self.xy
        dist = float(np.hypot(x - x0, y - y0))
        if dist < 1:
            return
        n = int(np.clip(dist / 25, 6, 24))
        step = f"{self.rng.uniform(0.025, 0.040):.3f}"
        chain = []
        for i in range(1, n + 1):
            u = i / n
            e = u * u * (3 - 2 * u)                       # smoothstep: accelerate, then slow down at the target
            jitter = self.rng.normal(0, 1.5, 2) if i < n else (0, 0)
            chain += ["mousemove", str(round(x0 + (x - x0) * e + jitter[0])), str(round(y0 + (y - y0) * e + jitter[1])),
                      "sleep", step]
        before, after = self._xdotool(*chain)
        self.actions.append({"action": "move", "t": before, "span": after - before, "xy": [x, y]})
        self.xy = (x, y)

    def dwell(self) -> None:
        self.pause(0.15, 0.4)

    def click(self, button: int = 1) -> None:
        self.dwell()
        self._act({1: "click", 3: "right_click"}[button], "click", str(button), xy=list(self.xy))
        self.pause(0.1, 0.3)

    def double_click(self) -> None:
        self.dwell()
        self._act("click", "click", "1", xy=list(self.xy))
        self.pause(0.06, 0.12)
        self._act("double_click", "click", "1", xy=list(self.xy))
        self.pause(0.1, 0.3)

    def drag(self, x: int, y: int) -> None:
        """Press, travel, release. A travel of 5 px or less is what the importer calls a click (rule 4), so
        that is what the press is logged as."""
        self.dwell()
        far = np.hypot(x - self.xy[0], y - self.xy[1]) > 5
        self._act("drag" if far else "click", "mousedown", "1", xy=list(self.xy))
        self.pause(0.08, 0.15)
        self.move(x, y)
        self.pause(0.08, 0.15)
        self._xdotool("mouseup", "1")
        self.pause(0.1, 0.3)

    def scroll(self, up: bool, n: int) -> None:
        self.dwell()
        for _ in range(n):
            self._act("scroll_up" if up else "scroll_down", "click", "4" if up else "5")
            self.pause(0.06, 0.16)

    def type(self, text: str) -> None:
        """One key at a time, 80-200 ms apart (5-8 characters/s, like a person typing); any printable ASCII."""
        for ch in text:
            if len(ch) != 1 or not (ch.isalnum() and ch.isascii() or ch in KEYSYM):
                raise ValueError(f"cannot type {ch!r}: not printable ASCII")
            self._act("type", "key", KEYSYM.get(ch, ch), key=ch)
            self.pause(0.07, 0.19)

    def hotkey(self, modifiers: str, key: str) -> None:
        """A combination such as ctrl+c: `modifiers` as xdotool names them ("ctrl", "ctrl+shift"), `key` the letter."""
        self.key(f"{modifiers}+{KEYSYM.get(key, key)}", "hotkey", key.lower())

    def release_all(self) -> None:
        """Release buttons and modifiers an interrupted script may have left pressed (not a labelled action)."""
        self._xdotool("mouseup", "1", "keyup", "ctrl", "shift", "alt")

    def key(self, keysym: str, action: str, key: str) -> None:
        """A named key (action "key") or a combination such as ctrl+l (action "hotkey")."""
        self._act(action, "key", keysym, key=key)
        self.pause(0.12, 0.25)
