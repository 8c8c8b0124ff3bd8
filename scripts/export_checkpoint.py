"""A checkpoint as a folder to share: PEFT adapters, safetensors, the config and a model card.

    python scripts/export_checkpoint.py outputs/smoke/<timestamp>/best.pt exports/smoke

Writes <folder>/{vision_adapter,text_adapter}/{adapter_config.json,adapter_model.safetensors}, decoder.safetensors,
config.yaml, export.json and README.md (evaluation/export.py). The model card lists the checkpoint's validation
metrics and every eval.py result beside it (<run>/eval/<checkpoint>_*/eval.json). eval.py and annotate.py take the
folder as checkpoint=.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from action_decoder import cli


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="best.pt / epoch_NNN.pt of a run")
    parser.add_argument("folder", type=Path, help="where the export goes (created)")
    args = parser.parse_args(argv)

    from action_decoder.evaluation.evaluate import load_checkpoint_file
    from action_decoder.evaluation.export import export_checkpoint, is_export

    if args.checkpoint.is_dir():
        raise cli.SettingError(f"{args.checkpoint} is a folder; give the best.pt / epoch_NNN.pt to export")
    if args.folder.exists() and any(args.folder.iterdir()) and not is_export(args.folder):
        raise cli.SettingError(f"{args.folder} exists and holds other files; give a new or empty folder")
    ckpt = load_checkpoint_file(args.checkpoint)
    evals = [json.loads(p.read_text()) for p in
             sorted((args.checkpoint.parent / "eval").glob(f"{args.checkpoint.stem}_*/eval.json"))]
    out = export_checkpoint(ckpt, args.checkpoint, args.folder, evals)
    print(f"exported {args.checkpoint} -> {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))}); "
          f"model card with {len(evals)} eval result(s): {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.entry(lambda: main(sys.argv[1:])))
