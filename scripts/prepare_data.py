"""Recordings -> prepared episodes (data/README.md §1-§2).

    python scripts/prepare_data.py                                   # conf/data/synthetic.yaml paths
    python scripts/prepare_data.py data.recordings_dir=/path/to/recordings data.prepared_dir=/path/out
    python scripts/prepare_data.py data=ocap data.recordings_dir=/path/to/ocap   # <name>.mkv + <name>.mcap pairs

Writes <prepared_dir>/{train,val,test}.jsonl and summary.json, prints the summary.
A malformed recording stops the run with `<file>:<line>: <reason>` and exit status 1.
"""
from __future__ import annotations

import sys

from omegaconf import OmegaConf

from action_decoder import cli
from action_decoder.config import load_config
from action_decoder.data.events import DataFormatError
from action_decoder.data.importer import format_summary, prepare_dataset
from action_decoder.data.vocab import LabelVocab


def main(argv: list[str]) -> int:
    cfg = load_config(argv)
    if OmegaConf.is_list(cfg.data.prepared_dir):  # a training mix (data=synthetic_desktop) reads prepared sets
        print("error: data.prepared_dir lists several prepared datasets (a training mix); prepare each with its "
              "own preset: python scripts/prepare_data.py data=synthetic (or data=desktop, ...)", file=sys.stderr)
        return 1
    try:
        summary = prepare_dataset(cfg.data.recordings_dir, cfg.data.prepared_dir, cfg.data.sample_fps,
                                  cfg.data.val_fraction, cfg.data.test_fraction, LabelVocab.from_config(cfg.labels),
                                  fmt=cfg.data.format, unseen_tags=cfg.data.get("test_unseen_tags") or ())
    except DataFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(cli.entry(lambda: main(sys.argv[1:])))
