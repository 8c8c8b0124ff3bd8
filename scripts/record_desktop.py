"""Record scripted tasks on a real X11 desktop (Xvfb + xterm + xcalc, xdotool input) into `data.recordings_dir`,
in the DuckTrack layout (data/README.md §5).

    apt-get install -y xvfb xdotool ffmpeg xterm x11-apps x11-utils xfonts-base
    pip install pynput==1.8.2 python-xlib==0.33
    python scripts/record_desktop.py data=desktop                      # 100 recordings, 2 displays at once
    python scripts/record_desktop.py data=desktop data.desktop.num_recordings=4 data.recordings_dir=/tmp/d

Knobs: conf/data/desktop.yaml (`data.desktop.*`). Recordings take real time (the script plays them).
"""
from __future__ import annotations

import sys
import time

from action_decoder.config import load_config
from action_decoder.recorders.desktop import DesktopConfig, missing_tools, record_recordings


def main(argv: list[str]) -> int:
    cfg = load_config(argv)
    if "desktop" not in cfg.data:
        print("error: the recorder's knobs are in conf/data/desktop.yaml: run with data=desktop", file=sys.stderr)
        return 1
    missing = missing_tools()
    if missing:
        print("error: the desktop recorder needs " + ", ".join(missing) + "\n  apt-get install -y xvfb xdotool "
              "ffmpeg xterm x11-apps x11-utils xfonts-base && pip install pynput==1.8.2 python-xlib==0.33",
              file=sys.stderr)
        return 1
    desk = DesktopConfig.from_cfg(cfg.data.desktop)
    start = time.perf_counter()
    paths = record_recordings(cfg.data.recordings_dir, desk)
    secs = time.perf_counter() - start
    print(f"recorded {len(paths)} desktop recordings to {cfg.data.recordings_dir} in {secs:.0f} s "
          f"({len(paths) / secs * 60:.1f} recordings/min, {desk.workers} displays at once)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
