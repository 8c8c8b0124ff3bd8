"""Training curves per logged step (moving average over the raw trace), validations by step, epochs marked, and
several runs' validation curves in one figure labelled by what differs between them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from action_decoder.evaluation.curves import ema, plot_accuracy, plot_loss, plot_runs
from action_decoder.evaluation.metrics_log import epoch_ends, step_records
from action_decoder.evaluation.sweeps import run_labels, sweep_table
from tests.test_plots import assert_png, write_run


def records_with_step_validations(epochs=2, steps=40, val_every=10, lift=0.0, seed=0):
    """As the loop writes them with train.val_every_steps: per logged step, a validation every `val_every` optimizer
    steps (and at each epoch's end), the epoch summary."""
    rng = np.random.default_rng(seed)
    recs, step = [], 0
    for e in range(epochs):
        for _ in range(steps):
            step += 1
            noisy = {h: float(abs(base / np.sqrt(step) + rng.normal(0, 0.5)))
                     for h, base in (("action", 3.0), ("key", 5.0), ("modifier", 1.0), ("click", 2.0))}
            recs.append({"split": "train", "epoch": e, "step": step, "stage": "main", "lr": 1e-3,
                         "loss": {**noisy, "total": sum(noisy.values())}})
            if step % val_every == 0:
                f1 = min(1.0, 0.2 + lift + step / (epochs * steps) * 0.5)
                recs.append({"split": "val", "epoch": e, "step": step, "stage": "main",
                             "loss": {"total": 4.0 / np.sqrt(step), "action": 1.0 / np.sqrt(step)},
                             "metrics": {"event_f1": f1, "action_macro_f1": f1 + 0.1, "action_acc": 0.8,
                                         "click_hit_rate": 0.5, "key_acc": 0.3, "action_majority_acc": 0.6}})
        recs.append({"split": "train_epoch", "epoch": e, "step": step, "stage": "main", "loss": {"total": 3.0},
                     "metrics": {"action_acc": 0.85, "event_f1": None}})
    return recs


def test_moving_average_follows_the_trend_and_starts_at_the_first_value():
    v = np.r_[np.full(50, 10.0), np.full(50, 2.0)] + np.tile([1.0, -1.0], 50)
    s = ema(v)
    assert s[0] == v[0]  # debiased: no pull towards 0 at the start
    assert abs(s[45] - 10.0) < 1.0 and abs(s[-1] - 2.0) < 1.0
    assert np.std(np.diff(s[60:])) < 0.2 * np.std(np.diff(v[60:]))  # the batch-to-batch swing is gone


def test_run_curves_read_every_validation_by_step(tmp_path):
    recs = records_with_step_validations()
    val = step_records(recs, "val")
    assert [r["step"] for r in val] == list(range(10, 81, 10))  # 8 validations, not one per epoch
    assert epoch_ends(recs) == {0: 40, 1: 80}
    resumed = recs + [dict(val[-1], metrics={**val[-1]["metrics"], "event_f1": 0.99})]  # step 80 logged again
    assert step_records(resumed, "val")[-1]["metrics"]["event_f1"] == 0.99 and len(step_records(resumed, "val")) == 8
    assert_png(plot_loss(recs, tmp_path / "loss.png"))
    assert_png(plot_accuracy(recs, tmp_path / "accuracy.png"))


def test_runs_overlaid_and_labelled_by_their_differing_overrides(tmp_path):
    dirs = []
    for i, (r, lr) in enumerate(((4, "0.000312345"), (8, "0.000312345"), (8, "0.00123"))):
        dirs.append(write_run(tmp_path / "sweep" / str(i), records_with_step_validations(lift=0.05 * i, seed=i),
                              [f"backbone.lora.r={r}", f"train.lr={lr}", "seed=0", "data.prepared_dir=/x"]))
    assert run_labels(dirs) == ["r=4 lr=0.000312", "r=8 lr=0.000312", "r=8 lr=0.00123"]
    runs = [(label, [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()])
            for label, d in zip(run_labels(dirs), dirs)]
    assert_png(plot_runs(runs, tmp_path / "runs.png"))
    rows = sweep_table(dirs)
    assert [r["run"] for r in rows] == [str(d) for d in reversed(dirs)]  # ranked by best val event_f1
    assert rows[0]["best_step"] == 80 and rows[0]["validations"] == 8


def test_runs_without_differing_overrides_are_labelled_by_their_configs(tmp_path):
    dirs = []
    for i, epochs in enumerate((2, 3)):
        d = write_run(tmp_path / f"run{i}", records_with_step_validations(epochs=epochs))
        (d / "config.yaml").write_text(yaml.safe_dump({"train": {"epochs": epochs, "lr": 1e-3}, "output_root": str(d)}))
        dirs.append(d)
    assert run_labels(dirs) == ["epochs=2", "epochs=3"]
    with pytest.raises(ValueError, match="none of the runs"):
        plot_runs([("a", [])], tmp_path / "none.png")
