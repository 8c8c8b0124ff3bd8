"""Check a prepared dataset: videos exist and decode at every sampled frame, per-frame lists have
num_frames entries, labels are in the vocabulary and follow rule 12, clicks lie in [0, 1]; warns (exit
status unchanged) about recordings losing more than data.max_lost_share of an action class's events to
frame collisions (rule 3), read from summary.json.

    python scripts/validate_data.py                                  # cfg.data.prepared_dir
    python scripts/validate_data.py data.prepared_dir=/path/prepared
    python scripts/validate_data.py data=synthetic_desktop              # each dataset of the mix

Prints every problem as `<split>.jsonl:<line>: <problem>`; exit status 1 if there is any.
"""
from __future__ import annotations

import sys

from action_decoder.config import load_config
from action_decoder.data.clips import prepared_dirs
from action_decoder.data.validate import validate_prepared
from action_decoder.data.vocab import LabelVocab


def main(argv: list[str]) -> int:
    cfg = load_config(argv)
    status = 0
    for prepared_dir in prepared_dirs(cfg.data):  # each dataset of a training mix (data=synthetic_desktop)
        report = validate_prepared(prepared_dir, LabelVocab.from_config(cfg.labels),
                                   max_lost_share=cfg.data.max_lost_share)
        for warning in report.warnings:
            print(warning)
        for problem in report.problems:
            print(problem)
        if report.problems:
            print(f"{len(report.problems)} problem(s) in {prepared_dir} "
                  f"({report.episodes} episodes read)", file=sys.stderr)
            status = 1
        else:
            print(f"OK: {report.episodes} episodes, {report.frames} frames in {prepared_dir}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
