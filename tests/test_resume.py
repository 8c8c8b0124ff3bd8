"""Stopping and resuming `python train.py`: SIGTERM (preemption) finishes the step, saves the resume state and
exits 0; the resumed run trains exactly the steps an uninterrupted run would have, with the same losses."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.conftest import (REPO, read_metrics, run_cli, run_dirs, run_train, step_losses, subprocess_env,
                            train_args, trainer_state)

pytestmark = pytest.mark.e2e


def sigterm_when(cmd: list[str], output_root: Path, when: Callable[[dict], bool], env: dict | None = None,
                 timeout: float = 400) -> tuple[Path, str, int]:
    """Start `cmd`, send it SIGTERM once metrics.jsonl has a record matching `when`; (run dir, output, exit code)."""
    log = output_root / "stopped_run.log"  # a file, not a pipe: nothing blocks while we poll
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env or subprocess_env(), stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            dirs = [d for d in run_dirs(output_root) if (d / "metrics.jsonl").is_file()]
            if dirs:
                lines = (dirs[0] / "metrics.jsonl").read_text().splitlines()
                if any(when(json.loads(line)) for line in lines if line.endswith("}")):
                    proc.send_signal(signal.SIGTERM)
                    break
            assert proc.poll() is None, f"run ended before the stop point:\n{log.read_text()[-4000:]}"
            time.sleep(0.01)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return dirs[0], log.read_text(), proc.returncode


def stop_with_sigterm(cmd: list[str], output_root: Path, when: Callable[[dict], bool]) -> tuple[Path, str]:
    """`python train.py` stopped by SIGTERM: it saves and exits 0; (run dir, output)."""
    run, out, code = sigterm_when(cmd, output_root, when)
    assert code == 0, out[-4000:]
    assert "stop requested: saved resume state" in out
    return run, out


@pytest.fixture(scope="module")
def uninterrupted(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_train(prepared_data, out, "train.epochs=2")
    [run] = run_dirs(out)
    return read_metrics(run)


@pytest.mark.parametrize("stop_at", ["first_step", "validation"])
def test_sigterm_then_resume_latest_equals_uninterrupted_run(prepared_data, uninterrupted, tmp_path, stop_at):
    when = {"first_step": lambda r: r["split"] == "train",                          # mid epoch 0
            "validation": lambda r: r["split"] == "train" and r["step"] == 3}[stop_at]  # epoch 0's last step
    cmd = [sys.executable, str(REPO / "train.py"), *train_args(prepared_data, tmp_path, "train.epochs=2")]
    run, out = stop_with_sigterm(cmd, tmp_path, when)
    stopped = trainer_state(run)
    assert stopped["epoch"] == 0 and stopped["step_in_epoch"] > 0
    if stop_at == "validation":  # the stop is honoured between validation batches, before any checkpoint
        assert stopped["step_in_epoch"] == 3 and "before its validation" in out
        assert not [r for r in read_metrics(run) if r["split"] in ("val", "train_epoch")]
    assert stopped["global_step"] == stopped["step_in_epoch"]
    assert max(step_losses(read_metrics(run))) == stopped["global_step"]  # the finished step was logged

    # resume=latest with no other override: the run's own overrides (tiny model, data dir) come back
    run_cli([sys.executable, str(REPO / "train.py"), "resume=latest", f"output_root={tmp_path}"])
    assert run_dirs(tmp_path) == [run]
    resumed = read_metrics(run)
    got_steps = [r["step"] for r in resumed if r["split"] == "train"]
    assert got_steps == [1, 2, 3, 4, 5, 6]  # no step repeated or lost
    # CPU, fixed seeds: same data order, dropout masks, optimizer and schedule -> bit-equal losses
    assert step_losses(resumed) == step_losses(uninterrupted)
    assert [r["epoch"] for r in resumed if r["split"] == "val"] == [0, 1]
    # the interrupted epoch's summary covers all of its steps, before and after the stop (running sums in the state)
    def summaries(records):
        return [(r["loss"], r["metrics"]) for r in records if r["split"] == "train_epoch"]
    assert summaries(resumed) == summaries(uninterrupted)
    final = trainer_state(run)
    assert (final["epoch"], final["step_in_epoch"], final["global_step"]) == (2, 0, 6)


def test_resume_of_a_run_without_resume_state_is_a_clear_error(prepared_data, tmp_path):
    proc = run_train(prepared_data, tmp_path, "resume=latest", check=False)
    assert proc.returncode != 0 and "no run with resume/trainer_state.json" in proc.stderr


@pytest.fixture(scope="module")
def one_epoch_run(prepared_data, tmp_path_factory):
    """A finished 1-epoch run over its own copy of the prepared data (the guards below edit it)."""
    root = tmp_path_factory.mktemp("guarded")
    shutil.copytree(prepared_data, root / "prepared")
    run_train(root / "prepared", root / "out", "train.epochs=1")
    [run] = run_dirs(root / "out")
    return root, run


def resume(root: Path, run: Path, *overrides: str, **kw) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, str(REPO / "train.py"), f"resume={run}", f"output_root={root / 'out'}",
                    "train.epochs=2", *overrides], check=False, **kw)


def test_resume_under_another_layout_stops_naming_what_changed(one_epoch_run):
    root, run = one_epoch_run
    proc = resume(root, run, "train.batch_size=2")
    assert proc.returncode != 0 and "train.batch_size 4 -> 2: set train.batch_size=4" in proc.stderr

    proc = run_cli(["accelerate", "launch", "--config_file", "conf/accelerate/cpu_2proc.yaml", "train.py",
                    f"resume={run}", f"output_root={root / 'out'}"], env=subprocess_env(ACCELERATE_USE_CPU="1"),
                   check=False)
    assert proc.returncode != 0 and "world size 1 -> 2" in proc.stdout + proc.stderr

    train = root / "prepared" / "train.jsonl"
    original = train.read_bytes()
    try:  # re-prepared data (one recording fewer): the saved position would mean other clips
        train.write_bytes(b"".join(original.splitlines(keepends=True)[:-1]))
        proc = resume(root, run)
        assert proc.returncode != 0 and f"{train} is not the file the run started on" in proc.stderr
    finally:
        train.write_bytes(original)


def test_tampered_resume_state_is_refused_before_anything_is_unpickled(one_epoch_run, tmp_path):
    root, run = one_epoch_run
    rng = run / "resume" / "random_states_0.pkl"
    original = rng.read_bytes()
    marker = tmp_path / "code_ran"

    class Payload:  # unpickling this runs a command
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    try:
        rng.write_bytes(pickle.dumps(Payload()))
        proc = resume(root, run)
        assert proc.returncode != 0 and f"{rng}: contents changed since it was written" in proc.stderr
        assert not marker.exists()

        rng.write_bytes(original)
        extra = run / "resume" / "pytorch_model" / "extra.pt"
        extra.parent.mkdir()
        extra.write_bytes(pickle.dumps(Payload()))
        proc = resume(root, run)
        assert proc.returncode != 0 and f"{extra}: not part of the resume state" in proc.stderr
        assert not marker.exists()
        shutil.rmtree(extra.parent)
    finally:
        rng.write_bytes(original)
    run_cli([sys.executable, str(REPO / "train.py"), f"resume={run}", f"output_root={root / 'out'}", "train.epochs=2"])
    assert trainer_state(run)["epoch"] == 2  # the untouched state resumes


def test_validations_inside_epochs_are_logged_kept_as_best_and_never_repeated_on_resume(prepared_data, tmp_path):
    """train.val_every_steps: a validation every 2 optimizer steps and at each epoch's end, each at its step; best.pt
    is chosen among all of them; a run stopped after a mid-epoch validation resumes without repeating it."""
    every = ("train.epochs=2", "train.val_every_steps=2")
    whole = tmp_path / "whole"
    run_train(prepared_data, whole, *every)
    [run] = run_dirs(whole)
    records = read_metrics(run)
    assert [r["step"] for r in records if r["split"] == "val"] == [2, 3, 4, 6]  # 2, 4 inside epochs; 3, 6 their ends
    best = torch.load(run / "best.pt", weights_only=True)
    state = trainer_state(run)
    vals = {r["step"]: r["metrics"]["event_f1"] or -1.0 for r in records if r["split"] == "val"}
    assert best["metrics"]["step"] == state["best_step"] == max(vals, key=lambda s: (vals[s], -s))

    stopped_root = tmp_path / "stopped"
    stopped_root.mkdir()
    cmd = [sys.executable, str(REPO / "train.py"), *train_args(prepared_data, stopped_root, *every)]
    stopped, _ = stop_with_sigterm(cmd, stopped_root, lambda r: r["split"] == "val" and r["step"] == 2)
    run_cli([sys.executable, str(REPO / "train.py"), "resume=latest", f"output_root={stopped_root}"])
    resumed = read_metrics(stopped)
    assert [r["step"] for r in resumed if r["split"] == "val"] == [2, 3, 4, 6]
    assert step_losses(resumed) == step_losses(records)
    assert [r["metrics"] for r in resumed if r["split"] == "val"] == [
        r["metrics"] for r in records if r["split"] == "val"]
