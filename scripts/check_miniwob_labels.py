"""Check a prepared MiniWoB++ dataset's labels against what the solvers logged (data/README.md §9).

    python scripts/check_miniwob_labels.py data=miniwob        # after record_miniwob.py and prepare_data.py

Every X action a solver made (script.json) must be labelled with its class (and key) within one frame, or have
lost its frame to a higher-priority event (rule 3: counted as a collision); the `type` frames of each episode
must spell what the solver typed minus the characters the summary counts as lost. Prints the totals and every
episode that fails; exit status 1 if any does.
"""
from __future__ import annotations

import json
import sys

from action_decoder.config import load_config
from action_decoder.recorders.miniwob import check_dataset


def main(argv: list[str]) -> int:
    cfg = load_config(argv)
    r = check_dataset(cfg.data.recordings_dir, cfg.data.prepared_dir)
    if not r.get("episodes"):
        print(f"error: no prepared episode under {cfg.data.prepared_dir} has a script.json in "
              f"{cfg.data.recordings_dir}", file=sys.stderr)
        return 1
    print(f"{r['episodes']} episodes at {r['sample_fps']:g} fps: {r['actions']} solver actions, {r['labelled']} "
          f"labelled with their class within one frame ({r['labelled'] / r['actions']:.2%}), {r['collided']} lost "
          f"to a higher-priority event of the same frame (rule 3), {r['missed']} missing; typed strings: "
          f"{r['typed_ok']} of {r['episodes']} episodes spell what was typed ({r['typed_labelled']} of {r['typed']} "
          f"characters labelled, {r['typed_lost']} counted as lost)")
    for f in r["failures"][:20]:
        print(json.dumps(f))
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
