"""Evaluation through the real CLI: each frame scored once, eval.py reproducing the logged validation,
event F1 in metrics.jsonl / eval.json / eval.md, best.pt under a curriculum, eval dirs per dataset."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import only_run_dir, read_metrics, run_eval, run_train

pytestmark = pytest.mark.e2e


def split_frames(prepared, split: str) -> int:
    return sum(json.loads(line)["num_frames"] for line in (prepared / f"{split}.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def full_val_run(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full_val")
    run_train(prepared_data, out, "train.epochs=2", "train.max_val_steps=null")
    return only_run_dir(out)


def test_eval_reproduces_logged_validation_and_scores_every_frame_once(full_val_run, prepared_data):
    run = full_val_run
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    val = {r["epoch"]: r for r in read_metrics(run) if r["split"] == "val"}
    # best.pt is the epoch with the highest val event_f1 (train.best_metric default)
    assert best["epoch"] == max(val, key=lambda e: (val[e]["metrics"]["event_f1"] or -1.0, -e))
    logged = val[best["epoch"]]
    assert logged["metrics"]["n_frames"] == split_frames(prepared_data, "val")
    assert "event_f1" in logged["metrics"] and "event_click_f1" in logged["metrics"]

    proc = run_eval(f"checkpoint={run / 'best.pt'}", "split=val")
    out = run / "eval" / f"best_val_{prepared_data.parent.name}-{prepared_data.name}"
    result = json.loads((out / "eval.json").read_text())
    for k, v in logged["metrics"].items():
        assert result["metrics"][k] == pytest.approx(v, abs=1e-6), k
    for k, v in logged["loss"].items():
        assert result["loss"][k] == pytest.approx(v, rel=1e-5), k
    assert "events (±2 frames): f1=" in proc.stdout

    run_eval(f"checkpoint={run / 'best.pt'}", "split=test")
    test = json.loads((run / "eval" / out.name.replace("_val_", "_test_") / "eval.json").read_text())
    m = test["metrics"]
    assert m["n_frames"] == split_frames(prepared_data, "test") == sum(map(sum, m["action_confusion"]))
    per_class = m["per_class"]["action"]
    assert sum(r["support"] for r in per_class.values()) == m["n_frames"]
    for r in per_class.values():
        assert r["precision"] is None or 0.0 <= r["precision"] <= 1.0
    md = (out.parent / out.name.replace("_val_", "_test_") / "eval.md").read_text()
    assert "| **all events** |" in md and "majority class" in md and "confusion.png" in md


def test_eval_on_another_dataset_gets_its_own_folder(full_val_run, prepared_data, tmp_path):
    other = tmp_path / "copy" / "prepared"
    other.mkdir(parents=True)
    for split in ("val",):
        (other / f"{split}.jsonl").write_text((prepared_data / f"{split}.jsonl").read_text())
    run_eval(f"checkpoint={full_val_run / 'best.pt'}", "split=val", f"data.prepared_dir={other}")
    assert (full_val_run / "eval" / "best_val_copy-prepared" / "eval.json").is_file()
    assert (full_val_run / "eval" / f"best_val_{prepared_data.parent.name}-prepared" / "eval.json").is_file()


def test_max_val_steps_stops_decoding(prepared_data, tmp_path):
    run_train(prepared_data, tmp_path, "train.epochs=1", "train.max_val_steps=1")
    val = [r for r in read_metrics(only_run_dir(tmp_path)) if r["split"] == "val"][0]
    assert 0 < val["metrics"]["n_frames"] <= 4 * 4  # one batch: 4 clips of 4 frames


def test_best_checkpoint_comes_from_the_last_stage_and_eval_warns_on_untrained_heads(prepared_data, tmp_path):
    run_train(prepared_data, tmp_path, "curriculum=two_stage", "curriculum.stages.1.start_epoch=1", "train.epochs=2",
              "train.keep_last=2")
    run = only_run_dir(tmp_path)
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert (best["stage"], best["epoch"]) == ("full", 1)  # epoch 0 (stage `pointer`) is never a candidate
    proc = run_eval(f"checkpoint={run / 'epoch_000.pt'}", "split=val")
    assert "UntrainedHeadWarning" in proc.stderr and "['key', 'modifier']" in proc.stderr
    proc = run_eval(f"checkpoint={run / 'best.pt'}", "split=val")
    assert "UntrainedHeadWarning" not in proc.stderr
