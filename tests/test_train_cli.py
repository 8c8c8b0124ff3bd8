"""End to end through the real command lines: `python train.py` writes a complete run dir, `python eval.py`
scores its checkpoints and plots its curves, curriculum stages switch and resume, faults stop with clear errors.
Tiny sizes (tests/conftest.py TINY); every run is a real subprocess on the real synthetic data pipeline."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import (REPO, only_run_dir, read_metrics, run_cli, run_eval, run_train, step_losses, subprocess_env,
                            train_args, trainer_state)
from tests.test_resume import stop_with_sigterm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trained_run(prepared_data, tmp_path_factory):
    """A 2-epoch run keeping only the last epoch snapshot."""
    out = tmp_path_factory.mktemp("trained")
    run_train(prepared_data, out, "train.epochs=2", "train.keep_last=1")
    return only_run_dir(out)


def test_train_writes_one_complete_run_dir(trained_run, tmp_path):
    run = trained_run
    assert run.parent.name == "smoke"  # <output_root>/<experiment>/<timestamp>
    assert (run / "config.yaml").is_file() and "image_size: 32" in (run / "config.yaml").read_text()

    records = read_metrics(run)
    by_split = {s: [r for r in records if r["split"] == s] for s in ("train", "train_epoch", "val")}
    assert [r["step"] for r in by_split["train"]] == [1, 2, 3, 4, 5, 6]  # log_every=1, 3 steps x 2 epochs
    assert [r["epoch"] for r in by_split["train_epoch"]] == [0, 1]
    assert [r["epoch"] for r in by_split["val"]] == [0, 1]
    for r in records:
        assert r["stage"] == "main"
    for r in by_split["train"]:
        assert math.isfinite(r["loss"]["total"]) and r["lr"] > 0
    assert 0.0 <= by_split["val"][-1]["metrics"]["action_acc"] <= 1.0

    # keep_last=1: only the newest epoch snapshot survives; best.pt is separate
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == ["epoch_001.pt"]
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert set(best) == {"format_version", "state", "config", "epoch", "stage", "metrics"}
    assert best["stage"] == "main" and best["epoch"] in (0, 1)
    assert best["config"]["model"]["d_model"] == 32
    assert best["state"] and all(torch.is_tensor(v) for v in best["state"].values())
    # best.pt: the highest val event_f1 (train.best_metric), the earliest epoch on ties
    assert (best["metrics"]["val"]["event_f1"] or -1.0) == max(r["metrics"]["event_f1"] or -1.0 for r in by_split["val"])

    state = trainer_state(run)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 0, 6)
    # the best checkpoint's weights rebuild the model strictly
    from action_decoder.evaluation.evaluate import load_model_from_checkpoint
    model, *_ = load_model_from_checkpoint(run / "best.pt")
    assert set(model.trainable_state_dict()) == set(best["state"])


def test_eval_scores_checkpoint_and_plots_run(trained_run, prepared_data):
    proc = run_eval(f"checkpoint={trained_run / 'best.pt'}", "split=test")
    run_cli([sys.executable, str(REPO / "scripts" / "plot_runs.py"), f"run={trained_run}"])
    out = trained_run / "eval" / f"best_test_{prepared_data.parent.name}-prepared"
    result = json.loads((out / "eval.json").read_text())
    m = result["metrics"]
    assert result["split"] == "test" and result["num_clips"] > 0
    n_actions = len(m["action_names"])
    assert 0.0 <= m["action_acc"] <= 1.0 and 0.0 <= m["action_macro_f1"] <= 1.0
    assert len(m["action_per_class_acc"]) == n_actions or set(m["action_per_class_acc"]) <= set(m["action_names"])
    confusion = m["action_confusion"]
    assert len(confusion) == n_actions and all(len(row) == n_actions for row in confusion)
    assert sum(map(sum, confusion)) == m["n_frames"] > 0
    for head in ("key", "modifier"):
        assert f"{head}_acc" in m  # None where the split has no frame of that head
    assert "click_hit_rate" in m and "click_mean_dist" in m
    if m["n_click_frames"]:
        assert 0.0 <= m["click_hit_rate"] <= 1.0 and m["click_mean_dist"] >= 0.0
    assert (out / "confusion.png").stat().st_size > 0
    assert (trained_run / "accuracy.png").stat().st_size > 0 and (trained_run / "loss.png").stat().st_size > 0
    assert "action_acc=" in proc.stdout


def test_eval_of_checkpoint_with_edited_architecture_names_the_mismatch(trained_run, tmp_path):
    ckpt = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    ckpt["config"]["model"]["d_model"] = 48  # the weights were trained at 32
    edited = tmp_path / "edited.pt"
    torch.save(ckpt, edited)
    proc = run_eval(f"checkpoint={edited}", "split=val", check=False)
    assert proc.returncode != 0
    assert "shape mismatch" in proc.stderr and "checkpoint (32" in proc.stderr


def test_resume_with_different_architecture_names_the_keys(trained_run, prepared_data, tmp_path):
    proc = run_train(prepared_data, tmp_path, f"resume={trained_run}", "model.d_model=64", "train.epochs=3",
                     check=False)
    assert proc.returncode != 0
    assert "model.d_model: checkpoint=32 config=64" in proc.stderr
    assert trainer_state(trained_run)["epoch"] == 2  # the run was left as it was


def test_diverging_run_skips_nonfinite_steps_then_aborts(prepared_data, tmp_path):
    proc = run_train(prepared_data, tmp_path, "train.lr=1e30", "train.lora_lr=1e30", "train.max_grad_norm=0",
                     "train.epochs=2", "train.max_nonfinite_in_a_row=2", check=False)
    assert proc.returncode != 0
    assert "steps in a row had a non-finite loss" in proc.stderr and "Lower train.lr" in proc.stderr
    assert "step skipped (1 so far, 1 in a row)" in proc.stderr
    assert "step skipped (2 so far, 2 in a row)" in proc.stderr
    logged = step_losses(read_metrics(only_run_dir(tmp_path)))
    assert logged and all(math.isfinite(v) for v in logged.values())  # skipped steps are not logged as losses


def test_missing_dataset_names_the_prepare_command(tmp_path):
    proc = run_train(tmp_path / "nothing_here", tmp_path / "out", "train.epochs=1", check=False)
    assert proc.returncode != 0
    assert "python scripts/prepare_data.py" in proc.stderr and "train.jsonl" in proc.stderr


def test_curriculum_switches_stage_and_resumes_inside_stage_two(prepared_data, tmp_path):
    args = ["curriculum=two_stage", "curriculum.stages.1.start_epoch=1", "train.epochs=3"]
    cmd = [sys.executable, str(REPO / "train.py"), *train_args(prepared_data, tmp_path, *args)]
    # stop as soon as stage 2 has trained a step
    run, _ = stop_with_sigterm(cmd, tmp_path, lambda r: r["split"] == "train" and r["stage"] == "full")  # exits 0
    stopped = trainer_state(run)
    assert stopped["stage"] == "full" and stopped["epoch"] == 1 and stopped["step_in_epoch"] > 0

    run_train(prepared_data, tmp_path, f"resume={run}")
    records = read_metrics(run)
    stage_of_epoch = {r["epoch"]: r["stage"] for r in records if r["split"] == "val"}
    assert stage_of_epoch == {0: "pointer", 1: "full", 2: "full"}
    assert all(r["stage"] == stage_of_epoch[r["epoch"]] for r in records if r["split"] == "train")
    assert sorted(step_losses(records)) == list(range(1, 10))  # no step repeated or lost across the stop
    assert torch.load(run / "epoch_002.pt", weights_only=True)["stage"] == "full"
    assert torch.load(run / "epoch_001.pt", weights_only=True)["stage"] == "full"
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["stage"] == stage_of_epoch[best["epoch"]]


def test_wandb_offline_run_extended_by_resume_latest_keeps_its_run_id(prepared_data, tmp_path):
    env = subprocess_env(WANDB_MODE="offline")
    run_train(prepared_data, tmp_path, "logger=wandb", "logger.wandb.mode=offline", "train.epochs=1", env=env)
    run = only_run_dir(tmp_path)
    run_id = trainer_state(run)["wandb_run_id"]
    # resume=latest alone continues with the run's own overrides (tiny model, wandb logger); epochs raised to 2
    run_cli([sys.executable, str(REPO / "train.py"), "resume=latest", f"output_root={tmp_path}", "train.epochs=2"],
            env=env)
    assert only_run_dir(tmp_path) == run
    assert trainer_state(run)["wandb_run_id"] == run_id
    wandb_runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and all(name.endswith(run_id) for name in wandb_runs)
    assert sorted(step_losses(read_metrics(run))) == [1, 2, 3, 4, 5, 6]
    assert (run / "epoch_001.pt").is_file()


def test_lora_sweep_runs_each_job_in_its_own_dir_and_tabulates(prepared_data, tmp_path):
    """`train.py -m backbone.lora.r=0,8` runs two jobs (Hydra multirun; r=0 = towers frozen, heads only), and
    `scripts/plot_runs.py sweep=` lists both and plots them."""
    sweep = tmp_path / "sweep"
    run_cli([sys.executable, str(REPO / "train.py"), "-m",
             *train_args(prepared_data, tmp_path / "out", "train.epochs=1", "backbone.lora.r=0,8",
                         f"hydra.sweep.dir={sweep}")])
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert len(jobs) == 2, f"expected one run dir per swept value, got {jobs}"
    for job in jobs:
        assert (job / "best.pt").is_file() and (job / ".hydra" / "overrides.yaml").is_file()
    ranks = {torch.load(j / "best.pt", weights_only=True)["config"]["backbone"]["lora"]["r"] for j in jobs}
    assert ranks == {0, 8}
    frozen = next(j for j in jobs if torch.load(j / "best.pt", weights_only=True)["config"]["backbone"]["lora"]["r"] == 0)
    assert not any("lora_" in k for k in torch.load(frozen / "best.pt", weights_only=True)["state"])
    run_cli([sys.executable, str(REPO / "scripts" / "plot_runs.py"), f"sweep={sweep}"])
    assert (sweep / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep / "curves.png").read_bytes()[:4] == b"\x89PNG"
    table = (sweep / "sweep.md").read_text()
    assert table.count(str(jobs[0].name)) >= 1 and table.count(str(jobs[1].name)) >= 1
    assert "backbone.lora.r" in table


def test_new_arch_trains_and_eval_reports_transcripts_and_the_eof_sweep(prepared_data, tmp_path):
    """experiment=new_arch_tiny through the CLIs: transcript loss and CER in metrics.jsonl, eval.json with the
    transcript metrics, and the eof_threshold sweep (json + png) a user picks the speak/silent threshold with."""
    run_train(prepared_data, tmp_path, "experiment=new_arch_tiny", "train.epochs=1")
    run = only_run_dir(tmp_path, "new_arch_tiny")
    val = [r for r in read_metrics(run) if r["split"] == "val"][-1]
    assert math.isfinite(val["loss"]["transcript"]) and val["metrics"]["n_narrated_frames"] > 0
    assert 0.0 <= val["metrics"]["transcript_missed_rate"] <= 1.0

    own = OmegaConf.load(run / "config.yaml").model.eof_threshold  # the preset's speak/silent rule
    swept = "null" if own is None else str(own)
    proc = run_eval(f"checkpoint={run / 'best.pt'}", "split=val", f"eof_thresholds=[{swept},0.001,0.999]")
    out = run / "eval" / f"best_val_{prepared_data.parent.name}-prepared"
    m = json.loads((out / "eval.json").read_text())["metrics"]
    assert m["transcript_cer"] >= 0.0 and m["n_narrated_frames"] > 0
    assert 0.0 <= m["transcript_token_acc"] <= 1.0 and 0.0 <= m["transcript_speak_auc"] <= 1.0
    assert "transcripts: cer=" in proc.stdout and "speak_auc=" in proc.stdout
    rows = json.loads((out / "eof_threshold.json").read_text())
    assert [r["eof_threshold"] for r in rows] == [own, 0.001, 0.999]
    assert rows[0]["transcript_cer"] == pytest.approx(m["transcript_cer"])  # the checkpoint's own rule, again
    # Near 0 every frame stays silent (CER 1: all deletions); near 1 every frame speaks.
    assert rows[1]["transcript_missed_rate"] == 1.0 and rows[1]["transcript_cer"] == 1.0
    assert rows[2]["transcript_missed_rate"] == 0.0 and rows[2]["transcript_false_text_rate"] == 1.0
    assert (out / "eof_threshold.png").stat().st_size > 0


def test_corrupt_clips_are_skipped_and_counted_per_epoch(prepared_data, tmp_path):
    """A truncated video: its clips are skipped with a warning, the epoch goes on, and the count reaches
    metrics.jsonl and the epoch line."""
    prepared = tmp_path / "prepared"
    shutil.copytree(prepared_data, prepared)
    lines = (prepared / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(Path(first["video"]).read_bytes()[:2000])  # header only: no frame decodes
    lines[0] = json.dumps({**first, "video": str(broken)})
    (prepared / "train.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_train(prepared, tmp_path / "out", "train.epochs=1", "train.max_steps_per_epoch=null",
                     "train.batch_size=2")
    [epoch] = [r for r in read_metrics(only_run_dir(tmp_path / "out")) if r["split"] == "train_epoch"]
    assert epoch["skipped_clips"] >= 1
    assert f"skipped corrupt clips={epoch['skipped_clips']}" in proc.stdout
    assert "broken.mp4" in proc.stderr
