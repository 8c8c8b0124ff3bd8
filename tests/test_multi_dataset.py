"""Training on two prepared datasets at once (`data.prepared_dir: [a, b]`, the `data=synthetic_desktop` preset),
through the real CLI: both datasets' splits are trained and validated on, the run records both, and eval.py
scores one dataset at a time."""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from tests.conftest import REPO, only_run_dir, read_metrics, run_cli, run_eval, run_train, trainer_state

pytestmark = pytest.mark.e2e


def split_frames(prepared, split: str) -> int:
    return sum(json.loads(line)["num_frames"] for line in (prepared / f"{split}.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory):
    """A second real dataset with another screen size (256x160 vs 320x200) and its own ids (wide_*)."""
    root = tmp_path_factory.mktemp("wide")
    common = [f"data.recordings_dir={root / 'recordings'}", f"data.prepared_dir={root / 'prepared'}"]
    run_cli([sys.executable, str(REPO / "scripts" / "make_synthetic_data.py"), *common, "data.synthetic.num_recordings=8",
             "data.synthetic.duration=4.0", "data.synthetic.width=256", "data.synthetic.height=160",
             "data.synthetic.seed=1", "data.synthetic.workers=1"])
    for rec in sorted((root / "recordings").glob("syn_*")):
        rec.rename(rec.with_name(rec.name.replace("syn_", "wide_")))
    run_cli([sys.executable, str(REPO / "scripts" / "prepare_data.py"), *common, "data.sample_fps=5",
             "data.val_fraction=0.25", "data.test_fraction=0.25"])
    for split in ("train", "val", "test"):
        assert split_frames(root / "prepared", split) > 0, split
    return root / "prepared"


def test_a_run_trains_and_validates_on_both_and_eval_scores_each(prepared_data, wide_data, tmp_path):
    both = f"data.prepared_dir=[{prepared_data},{wide_data}]"
    run_train(prepared_data, tmp_path, both, "train.epochs=1", "train.max_val_steps=null")
    run = only_run_dir(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["prepared_dir"] == [str(prepared_data), str(wide_data)]
    # Resuming checks the data of both: the run's layout holds every train/val file of the two datasets.
    layout = trainer_state(run)["layout"]["data_sha256"]
    assert sorted(layout) == sorted(str(d / f"{s}.jsonl") for d in (prepared_data, wide_data) for s in ("train", "val"))
    val = [r for r in read_metrics(run) if r["split"] == "val"][-1]
    assert val["metrics"]["n_frames"] == split_frames(prepared_data, "val") + split_frames(wide_data, "val")

    refused = run_eval(f"checkpoint={run / 'best.pt'}", "split=test", check=False)
    assert refused.returncode != 0 and "trained on 2 prepared datasets" in refused.stderr
    assert "data.prepared_dir=<one of them>" in refused.stderr
    for prepared in (prepared_data, wide_data):
        run_eval(f"checkpoint={run / 'best.pt'}", "split=test", f"data.prepared_dir={prepared}")
        out = run / "eval" / f"best_test_{prepared.parent.name}-{prepared.name}"
        result = json.loads((out / "eval.json").read_text())
        assert result["prepared_dir"] == str(prepared)
        assert result["metrics"]["n_frames"] == split_frames(prepared, "test")
