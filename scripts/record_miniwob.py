"""Record MiniWoB++ demonstrations in a real Chromium (Xvfb, xdotool input, pynput events, x11grab video) into
`data.recordings_dir`, in the DuckTrack layout (data/README.md §9).

    apt-get install -y xvfb xdotool ffmpeg chromium chromium-driver
    pip install -r requirements-desktop.txt                          # pynput, python-xlib, miniwob
    python scripts/record_miniwob.py data=miniwob                    # 1,012 episodes, 3 displays at once
    python scripts/record_miniwob.py data=miniwob data.miniwob.num_episodes=30 data.recordings_dir=/tmp/mw

Re-running into the same folder keeps the finished episodes and records only the missing ones. The summary
(printed, and written to `<recordings_dir>/recorder_summary.json`) counts solved, unsolved and faulted episodes,
names each fault, and gives the rate. Knobs: conf/data/miniwob.yaml (`data.miniwob.*`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from action_decoder.config import load_config
from action_decoder.recorders.miniwob import MiniwobConfig, format_run_summary, missing_tools, record_episodes


def main(argv: list[str]) -> int:
    cfg = load_config(argv)
    if "miniwob" not in cfg.data:
        print("error: the recorder's knobs are in conf/data/miniwob.yaml: run with data=miniwob", file=sys.stderr)
        return 1
    missing = missing_tools()
    if missing:
        print("error: the MiniWoB++ recorder needs " + ", ".join(missing) + "\n  apt-get install -y xvfb xdotool "
              "ffmpeg chromium chromium-driver && pip install -r requirements-desktop.txt", file=sys.stderr)
        return 1
    mw = MiniwobConfig.from_cfg(cfg.data.miniwob)
    summary = record_episodes(cfg.data.recordings_dir, mw)
    (Path(cfg.data.recordings_dir) / "recorder_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(format_run_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
