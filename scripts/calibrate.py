"""Fit the action head's temperature on the val split and store it in the checkpoint (key `calibration`).

    python scripts/calibrate.py checkpoint=outputs/smoke/<timestamp>/best.pt [split=val] [batch_size=8]

Prints ECE before / after; writes `<checkpoint dir>/eval/<checkpoint>_calibration_<split>/reliability.png` and
calibration.json. annotate.py then writes calibrated `action_prob` and event scores (annotate.min_score), and
eval.py's eval.md shows the reliability picture. See action_decoder/evaluation/calibration.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    unknown = set(args) - {"checkpoint", "split", "batch_size"}
    if "checkpoint" not in args or unknown:
        raise SystemExit("usage: python scripts/calibrate.py checkpoint=<best.pt> [split=val] [batch_size=8]"
                         + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
    from action_decoder.evaluation.calibration import calibrate_checkpoint, plot_reliability

    path = Path(args["checkpoint"])
    split = args.get("split", "val")
    cal = calibrate_checkpoint(path, split, int(args.get("batch_size", 8)))
    out = path.parent / "eval" / f"{path.stem}_calibration_{split}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(cal, indent=1))
    plot_reliability(cal, out / "reliability.png")
    print(f"{path}: action temperature {cal['action_temperature']:.3f} on {cal['frames']} {split} frames; "
          f"ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}, NLL {cal['nll_before']:.4f} -> "
          f"{cal['nll_after']:.4f}; stored in the checkpoint -> {out}/reliability.png")


if __name__ == "__main__":
    main(sys.argv[1:])
