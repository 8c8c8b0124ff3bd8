"""Curves, confusion plot and sweep table from a run's metrics.jsonl (format: evaluation/metrics_log.py)."""

import json
import math

import pytest
import yaml

from action_decoder.evaluation.metrics_log import read_metrics
from action_decoder.evaluation.curves import plot_accuracy, plot_loss
from action_decoder.evaluation.plots import plot_confusion
from action_decoder.evaluation.sweeps import find_run_dirs, sweep_table, write_sweep_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_records(epochs=4, steps_per_epoch=5, stages=(("short_clips", 0), ("full_clips", 2)), acc=None):
    """Records as the training loop writes them: per step, per epoch (train averages), per epoch (val)."""
    recs, step = [], 0
    for e in range(epochs):
        stage = [name for name, start in stages if start <= e][-1]
        for _ in range(steps_per_epoch):
            step += 1
            loss = {"action": 2.0 / step, "key": 3.0 / step, "modifier": 0.5 / step, "click": 1.0 / math.sqrt(step)}
            loss["total"] = sum(loss.values())
            recs.append({"split": "train", "epoch": e, "step": step, "stage": stage, "lr": 1e-4, "loss": loss,
                         "clips_per_s": 3.2})
        a = acc[e] if acc else 0.3 + 0.1 * e
        metrics = {"action_acc": a, "action_macro_f1": a - 0.1, "event_f1": a - 0.2, "click_hit_rate": 0.1 * e,
                   "key_acc": None, "action_majority_acc": 0.4}
        recs.append({"split": "train_epoch", "epoch": e, "step": step, "stage": stage, "loss": loss,
                     "metrics": {**metrics, "action_acc": a + 0.05}})
        recs.append({"split": "val", "epoch": e, "step": step, "stage": stage, "loss": loss, "metrics": metrics})
    return recs


def write_run(run_dir, records, overrides=None):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if overrides is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run_dir


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000  # a real rendered figure, not an empty file


def test_curves_from_a_metrics_log_with_a_stage_switch(tmp_path):
    run = write_run(tmp_path / "run", fake_records())
    records = read_metrics(run)  # the run dir or the file both work
    assert records == read_metrics(run / "metrics.jsonl") and len(records) == 4 * 5 + 8
    assert_png(plot_accuracy(records, tmp_path / "accuracy.png"))
    assert_png(plot_loss(records, tmp_path / "loss.png"))


def test_curves_from_a_one_epoch_run(tmp_path):
    records = read_metrics(write_run(tmp_path / "run", fake_records(epochs=1, stages=(("main", 0),))))
    assert_png(plot_accuracy(records, tmp_path / "accuracy.png"))
    assert_png(plot_loss(records, tmp_path / "loss.png"))


def test_loss_plot_without_epoch_records_and_accuracy_plot_needs_them(tmp_path):
    steps_only = [r for r in fake_records(epochs=1) if r["split"] == "train"]
    assert_png(plot_loss(steps_only, tmp_path / "loss.png"))
    with pytest.raises(ValueError, match="no validation or train_epoch metrics"):
        plot_accuracy(steps_only, tmp_path / "accuracy.png")


def test_read_metrics_names_the_bad_line_and_tolerates_a_cut_off_last_line(tmp_path):
    lines = [json.dumps(r) for r in fake_records(epochs=1)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:4:"):
        read_metrics(path)
    path.write_text("\n".join(lines) + '\n{"split": "train", "ep')  # killed mid-write
    with pytest.warns(UserWarning, match="cut-off last line"):
        assert len(read_metrics(path)) == len(lines)
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "nowhere")


def test_confusion_plot(tmp_path):
    names = ["none", "move", "click", "right_click"]
    cm = [[50, 3, 1, 0], [4, 30, 2, 0], [1, 2, 12, 0], [0, 0, 0, 0]]  # right_click never occurs
    assert_png(plot_confusion(cm, names, tmp_path / "confusion.png"))
    assert_png(plot_confusion(cm, names, tmp_path / "small.png", hide_empty=True))
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        plot_confusion([[1, 2], [3, 4]], names, tmp_path / "bad.png")


def test_sweep_table_lists_each_run_with_overrides_and_best_epoch(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", fake_records(acc=[0.5, 0.7, 0.6, 0.65]), ["backbone.lora.r=8", "train.lr=1e-4", "seed=0"])
    write_run(sweep / "1", fake_records(acc=[0.6, 0.8, 0.8, 0.7]), ["backbone.lora.r=16", "train.lr=1e-4", "seed=0"])
    # resumed run: epoch 1 was logged twice, the second (after resume) counts
    resumed = fake_records(acc=[0.4, 0.95, 0.5, 0.55])
    resumed += [r for r in fake_records(acc=[0.4, 0.45, 0.5, 0.55]) if r["epoch"] >= 1]
    write_run(sweep / "2", resumed, ["backbone.lora.r=32", "train.lr=1e-4", "seed=0"])
    (sweep / "3").mkdir()  # crashed before logging anything
    (sweep / "3" / ".hydra").mkdir()
    (sweep / "3" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["backbone.lora.r=64", "train.lr=1e-4", "seed=0"]))

    assert find_run_dirs(sweep) == [sweep / "0", sweep / "1", sweep / "2"]
    rows = sweep_table([sweep / "0", sweep / "1", sweep / "2", sweep / "3"], metric="action_acc")
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {str(sweep / i) for i in "0123"}
    assert [r["run"] for r in rows] == [str(sweep / i) for i in "1023"]  # best first, failed last
    assert by_run[str(sweep / "1")]["best_epoch"] == 1  # tie at 0.8 with epoch 2: the earliest
    assert by_run[str(sweep / "1")]["action_acc"] == pytest.approx(0.8)
    assert by_run[str(sweep / "1")]["action_macro_f1"] == pytest.approx(0.7)
    assert by_run[str(sweep / "2")]["action_acc"] == pytest.approx(0.55)  # not the overwritten 0.95
    assert by_run[str(sweep / "0")]["overrides"] == {"backbone.lora.r": "8", "train.lr": "1e-4", "seed": "0"}
    assert by_run[str(sweep / "3")]["status"] == "no metrics.jsonl"

    md = write_sweep_table(rows, tmp_path / "sweep.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(table) == 4
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert header.startswith("| run | backbone.lora.r | best val action_acc | event_f1 |")  # differing override: a column
    assert table[0].startswith("| `1` | 16 | 0.800 |")
    assert "`train.lr=1e-4`, `seed=0`" in md  # shared by all runs: listed once above, not as columns
    # by default the runs rank by train.best_metric's default, event_f1
    assert sweep_table([sweep / "0"])[0]["metric"] == "event_f1"


def test_latest_run_is_the_one_whose_needed_file_was_written_last(tmp_path):
    """One `latest` rule for resume=, checkpoint= and run=: by the file each reads."""
    import os

    from action_decoder.training.run_dir import find_latest_run

    old, new = tmp_path / "smoke" / "2026-01-01_00-00-00", tmp_path / "smoke" / "2026-01-02_00-00-00"
    for run, (best_t, log_t) in ((old, (300, 100)), (new, (200, 400))):  # old run: newest best.pt; new: newest log
        (run / "resume").mkdir(parents=True)
        for name, t in (("best.pt", best_t), ("metrics.jsonl", log_t)):
            (run / name).write_text("x")
            os.utime(run / name, (t, t))
    (new / "resume" / "trainer_state.json").write_text("{}")
    assert find_latest_run(tmp_path, "smoke", needs="best.pt") == old
    assert find_latest_run(tmp_path, "smoke", needs="metrics.jsonl") == new
    assert find_latest_run(tmp_path, "smoke") == new  # the resume state
    with pytest.raises(FileNotFoundError, match="no run with epoch_001.pt"):
        find_latest_run(tmp_path, "smoke", needs="epoch_001.pt")
