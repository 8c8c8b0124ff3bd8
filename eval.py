"""Evaluate checkpoints and plot runs.  See conf/eval.yaml for the commands."""
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


def _latest_run(output_root: str, experiment: str) -> Path:
    runs = sorted((Path(output_root) / experiment).glob("*/metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no run with metrics.jsonl under {output_root}/{experiment}/; train one first "
                                f"(python train.py experiment={experiment})")
    return runs[-1].parent


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from action_decoder.evaluation.plots import (plot_accuracy, plot_confusion, plot_loss, read_metrics,
                                                 sweep_table, write_sweep_table)

    if not (cfg.checkpoint or cfg.run or cfg.sweep):
        raise SystemExit("eval.py: give checkpoint=<path>|latest, run=<run_dir>|latest or sweep=<dir> (see conf/eval.yaml)")
    if cfg.checkpoint:
        from action_decoder.training.evaluate import evaluate_checkpoint

        ckpt = (_latest_run(cfg.output_root, cfg.experiment) / "best.pt" if cfg.checkpoint == "latest"
                else Path(cfg.checkpoint))
        result, out_dir = evaluate_checkpoint(ckpt, cfg.split, OmegaConf.to_container(cfg.data))
        m = result["metrics"]
        plot_confusion(m["action_confusion"], m["action_names"], out_dir / "confusion.png")
        print(f"{ckpt} on {cfg.split} ({result['num_clips']} clips): action_acc={m['action_acc']:.3f} "
              f"macro_f1={m['action_macro_f1']:.3f} (majority baseline acc={m['action_majority_acc']:.3f} "
              f"f1={m['action_majority_macro_f1']:.3f}) click_hit@{m['click_radius']}={m['click_hit_rate']} "
              f"key_acc={m['key_acc']} modifier_acc={m['modifier_acc']}\n-> {out_dir}/eval.json, confusion.png")
    if cfg.run:
        run = _latest_run(cfg.output_root, cfg.experiment) if cfg.run == "latest" else Path(cfg.run)
        records = read_metrics(run / "metrics.jsonl")
        plot_accuracy(records, run / "accuracy.png")
        plot_loss(records, run / "loss.png")
        print(f"-> {run}/accuracy.png, {run}/loss.png")
    if cfg.sweep:
        rows = sweep_table(sorted(p.parent for p in Path(cfg.sweep).glob("**/metrics.jsonl")))
        write_sweep_table(rows, Path(cfg.sweep) / "sweep.md")
        print((Path(cfg.sweep) / "sweep.md").read_text())


if __name__ == "__main__":
    main()
