"""Render synthetic desktop recordings (DuckTrack layout) into `data.recordings_dir`.

    python scripts/make_synthetic_data.py
    python scripts/make_synthetic_data.py data.synthetic.num_recordings=20 data.recordings_dir=/tmp/x

Overrides use Hydra syntax on the root config (conf/config.yaml); knobs are in conf/data/synthetic.yaml.
"""
from __future__ import annotations

import sys
import time

from action_decoder.config import load_config
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, generate_recordings, stale_recordings


def main(argv: list[str]) -> None:
    cfg = load_config(argv)
    syn = SyntheticConfig.from_cfg(cfg.data.synthetic)
    out = cfg.data.recordings_dir
    start = time.perf_counter()
    paths = generate_recordings(out, syn)
    secs = time.perf_counter() - start
    stale = stale_recordings(out, syn.num_recordings)
    note = f"; {len(stale)} older syn_* folders beyond this range are still there" if stale else ""
    print(f"wrote {len(paths)} synthetic recordings to {out} in {secs:.1f} s "
          f"({len(paths) / secs * 60:.0f} recordings/min, {min(syn.resolved_workers(), max(1, len(paths)))} workers){note}")


if __name__ == "__main__":
    main(sys.argv[1:])
