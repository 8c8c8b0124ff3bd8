"""Evaluate checkpoints and plot runs.  See conf/eval.yaml for the commands.

Four jobs, one small function each; one command may ask for several (the README's main command scores the
latest checkpoint and plots its run), so they stay modes of one entry rather than four entries."""
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


def _checkpoint(cfg: DictConfig) -> Path:
    """checkpoint=<path>, or best.pt of the latest run of `experiment` for `latest` (and for a bare eof sweep)."""
    from action_decoder.training.run_dir import find_latest_run

    if cfg.checkpoint in (None, "latest"):
        return find_latest_run(cfg.output_root, cfg.experiment, needs="best.pt") / "best.pt"
    return Path(cfg.checkpoint)


def score_checkpoint(cfg: DictConfig) -> None:
    """checkpoint=: eval.json, eval.md and confusion.png of the checkpoint on `split`."""
    from action_decoder.evaluation.events import EVENT_TYPES
    from action_decoder.evaluation.plots import plot_confusion
    from action_decoder.evaluation.report import write_eval_markdown
    from action_decoder.evaluation.evaluate import evaluate_checkpoint

    ckpt = _checkpoint(cfg)
    prompt = str(cfg.eval.prompt).lower()  # eval.prompt=true arrives as a YAML boolean
    result, out_dir = evaluate_checkpoint(ckpt, cfg.split, OmegaConf.to_container(cfg.data),
                                          event_tolerance=cfg.eval.event_tolerance, prompt=prompt,
                                          tune_events=bool(cfg.tune_events))
    m = result["metrics"]
    plot_confusion(m["action_confusion"], m["action_names"], out_dir / "confusion.png")
    if result.get("calibration"):
        from action_decoder.evaluation.calibration import plot_reliability

        plot_reliability(result["calibration"], out_dir / "reliability.png")
    write_eval_markdown(result, out_dir / "eval.md")
    print(f"{ckpt} on {cfg.split} ({result['num_clips']} clips): action_acc={m['action_acc']:.3f} "
          f"macro_f1={m['action_macro_f1']:.3f} (majority baseline acc={m['action_majority_acc']:.3f} "
          f"f1={m['action_majority_macro_f1']:.3f}) click_hit@{m['click_radius']}={m['click_hit_rate']} "
          f"key_acc={m['key_acc']} modifier_acc={m['modifier_acc']} n_frames={m['n_frames']}")
    print(f"events (±{m['event_tolerance']} frames): f1={m['event_f1']} precision={m['event_precision']} "
          f"recall={m['event_recall']} on {m['event_n_true']} true events; " + " ".join(
              f"{t}={m[f'event_{t}_f1']:.3f}" for t in EVENT_TYPES if m[f"event_{t}_f1"] is not None))
    a = result["event_argmax"]
    rule = "tuned on this split and stored in the checkpoint" if result["tuned"] else (
        "the checkpoint's" if result["event_rule"] else "none: per-frame argmax")
    print(f"event rule: {rule}; per-frame argmax gives f1={a['event_f1']} precision={a['event_precision']} "
          f"recall={a['event_recall']} (prompt: {result['prompt']})")
    if "transcript_cer" in m:
        print(f"transcripts: cer={m['transcript_cer']:.3f} wer={m['transcript_wer']:.3f} "
              f"exact={m['transcript_exact_match']:.3f} missed={m['transcript_missed_rate']:.3f} "
              f"false_text={m['transcript_false_text_rate']:.3f} on {m['n_narrated_frames']} narrated frames "
              "(empty-prediction baseline: cer=wer=1.0); teacher-forced "
              f"token_acc={m['transcript_token_acc']:.3f} speak_auc={m['transcript_speak_auc']:.3f}")
    print(f"-> {out_dir}/eval.json, eval.md, confusion.png")


def sweep_eof(cfg: DictConfig) -> None:
    """eof_thresholds=: the checkpoint's transcript metrics at each speak/silent threshold."""
    from action_decoder.evaluation.plots import plot_eof_threshold
    from action_decoder.evaluation.evaluate import sweep_eof_threshold

    rows, out_dir = sweep_eof_threshold(_checkpoint(cfg), cfg.split, list(cfg.eof_thresholds),
                                        OmegaConf.to_container(cfg.data))
    plot_eof_threshold(rows, out_dir / "eof_threshold.png")
    for r in rows:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    print(f"-> {out_dir}/eof_threshold.json, eof_threshold.png")


def plot_run(cfg: DictConfig) -> None:
    """run=: accuracy.png and loss.png of a run's metrics log."""
    from action_decoder.evaluation.metrics_log import METRICS_FILE, read_metrics
    from action_decoder.evaluation.plots import plot_accuracy, plot_loss
    from action_decoder.training.run_dir import find_latest_run

    run = find_latest_run(cfg.output_root, cfg.experiment, needs=METRICS_FILE) if cfg.run == "latest" else Path(cfg.run)
    records = read_metrics(run)
    plot_accuracy(records, run / "accuracy.png")
    plot_loss(records, run / "loss.png")
    print(f"-> {run}/accuracy.png, {run}/loss.png")


def tabulate_sweep(cfg: DictConfig) -> None:
    """sweep=: sweep.md (+ sweep.png) over the runs of a sweep folder."""
    from action_decoder.evaluation.plots import plot_sweep
    from action_decoder.evaluation.sweeps import find_run_dirs, sweep_table, write_sweep_table

    rows = sweep_table(find_run_dirs(cfg.sweep))
    write_sweep_table(rows, Path(cfg.sweep) / "sweep.md")
    print((Path(cfg.sweep) / "sweep.md").read_text())
    if any(cfg.sweep_plot.x in r["overrides"] for r in rows):
        png = plot_sweep(rows, Path(cfg.sweep) / "sweep.png", cfg.sweep_plot.x, cfg.sweep_plot.lines,
                         cfg.sweep_plot.metric)
        print(f"-> {png}")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    if not (cfg.checkpoint or cfg.run or cfg.sweep or cfg.eof_thresholds):
        raise SystemExit("eval.py: give checkpoint=<path>|latest, run=<run_dir>|latest, sweep=<dir> or "
                         "eof_thresholds=[...] (see conf/eval.yaml)")
    if cfg.checkpoint:
        score_checkpoint(cfg)
    if cfg.eof_thresholds:
        sweep_eof(cfg)
    if cfg.run:
        plot_run(cfg)
    if cfg.sweep:
        tabulate_sweep(cfg)


if __name__ == "__main__":
    main()
