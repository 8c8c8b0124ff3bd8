"""Score a checkpoint.  python eval.py checkpoint=<best.pt | export folder | latest> split=test  (see conf/eval.yaml)

Curves of runs and sweep tables are their own entry: scripts/plot_runs.py run= / runs=[...] / sweep=."""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from action_decoder import cli

SPLITS = ("train", "val", "test", "test_unseen")  # test_unseen: task types never trained on (data=miniwob)
MOVED = ("run", "runs", "sweep", "sweep_plot")  # eval.py's plotting modes, now scripts/plot_runs.py


def _checkpoint(cfg: DictConfig) -> Path:
    """checkpoint=<path>, or best.pt of the latest run of `experiment` for `latest`."""
    from action_decoder.training.run_dir import find_latest_run

    if cfg.checkpoint == "latest":
        return find_latest_run(cfg.output_root, cfg.experiment, needs="best.pt") / "best.pt"
    return Path(cfg.checkpoint)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def summary_lines(ckpt: Path, split: str, result: dict) -> list[str]:
    """What eval.py prints: the headline metrics, events, transcripts; figures rounded to 3 decimals."""
    from action_decoder.evaluation.events import EVENT_TYPES

    m = result["metrics"]
    lines = [f"{ckpt} on {split} ({result['num_clips']} clips, {m['n_frames']} frames): "
             f"action_acc={_f(m['action_acc'])} macro_f1={_f(m['action_macro_f1'])} (majority baseline "
             f"acc={_f(m['action_majority_acc'])} f1={_f(m['action_majority_macro_f1'])}) "
             f"click_hit@{m['click_radius']}={_f(m['click_hit_rate'])} key_acc={_f(m['key_acc'])} "
             f"modifier_acc={_f(m['modifier_acc'])}",
             f"events (±{m['event_tolerance']} frames): f1={_f(m['event_f1'])} precision={_f(m['event_precision'])} "
             f"recall={_f(m['event_recall'])} on {m['event_n_true']} true events; " + " ".join(
                 f"{t}={_f(m[f'event_{t}_f1'])}" for t in EVENT_TYPES if m[f"event_{t}_f1"] is not None)]
    a = result["event_argmax"]
    rule = "tuned on this split and stored in the checkpoint" if result["tuned"] else (
        "the checkpoint's" if result["event_rule"] else "none: per-frame argmax")
    lines.append(f"event rule: {rule}; per-frame argmax gives f1={_f(a['event_f1'])} "
                 f"precision={_f(a['event_precision'])} recall={_f(a['event_recall'])} (prompt: {result['prompt']})")
    if "transcript_cer" in m:
        lines.append(f"transcripts: cer={_f(m['transcript_cer'])} wer={_f(m['transcript_wer'])} "
                     f"exact={_f(m['transcript_exact_match'])} missed={_f(m['transcript_missed_rate'])} "
                     f"false_text={_f(m['transcript_false_text_rate'])} on {m['n_narrated_frames']} narrated frames "
                     "(empty-prediction baseline: cer=wer=1.0); teacher-forced "
                     f"token_acc={_f(m['transcript_token_acc'])} speak_auc={_f(m['transcript_speak_auc'])}")
    return lines


def score_checkpoint(cfg: DictConfig) -> None:
    """eval.json, eval.md and confusion.png of the checkpoint on `split`."""
    from action_decoder.evaluation.evaluate import evaluate_checkpoint
    from action_decoder.evaluation.plots import plot_confusion
    from action_decoder.evaluation.report import write_eval_markdown

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
    print("\n".join(summary_lines(ckpt, cfg.split, result)))
    print(f"-> {out_dir}/eval.json, eval.md, confusion.png")


def sweep_eof(cfg: DictConfig) -> None:
    """eof_thresholds=: the checkpoint's transcript metrics at each speak/silent threshold."""
    from action_decoder.evaluation.evaluate import sweep_eof_threshold
    from action_decoder.evaluation.plots import plot_eof_threshold

    rows, out_dir = sweep_eof_threshold(_checkpoint(cfg), cfg.split, list(cfg.eof_thresholds),
                                        OmegaConf.to_container(cfg.data))
    plot_eof_threshold(rows, out_dir / "eof_threshold.png")
    for r in rows:
        print("  ".join(f"{k}={_f(v)}" for k, v in r.items()))
    print(f"-> {out_dir}/eof_threshold.json, eof_threshold.png")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    if not cfg.checkpoint:
        raise cli.SettingError("eval.py: give checkpoint=<best.pt | export folder | latest> [split=val|test] "
                               "(curves and sweeps: python scripts/plot_runs.py run=... | runs=[...] | sweep=...)")
    if cfg.split not in SPLITS:
        raise cli.SettingError(f"split={cfg.split}: choose one of {', '.join(SPLITS)}")
    score_checkpoint(cfg)
    if cfg.eof_thresholds:  # and the transcript metrics at each speak/silent threshold
        sweep_eof(cfg)


def check_moved(argv: list[str]) -> None:
    for arg in argv[1:]:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in MOVED:
            raise cli.SettingError(f"{arg}: curves and sweep tables moved to their own entry: "
                                   f"python scripts/plot_runs.py {arg}")


def run() -> None:
    check_moved(sys.argv)
    main()


if __name__ == "__main__":
    cli.entry(run)
