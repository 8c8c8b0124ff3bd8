"""Stopping and resuming `python train.py`: SIGTERM (preemption) finishes the step, saves the resume state and
exits 0; the resumed run trains exactly the steps an uninterrupted run would have, with the same losses."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import (REPO, read_metrics, run_cli, run_dirs, run_train, step_losses, subprocess_env,
                            train_args, trainer_state)

pytestmark = pytest.mark.slow


def stop_with_sigterm(cmd: list[str], output_root: Path, when: Callable[[dict], bool],
                      env: dict | None = None, timeout: float = 240) -> tuple[Path, int]:
    """Start `cmd`, send SIGTERM once metrics.jsonl has a record matching `when`; return (run dir, exit code)."""
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
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    assert "stop requested: saved resume state" in out
    return dirs[0], proc.returncode


@pytest.fixture(scope="module")
def uninterrupted(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_train(prepared_data, out, "train.epochs=2")
    [run] = run_dirs(out)
    return read_metrics(run)


@pytest.mark.parametrize("stop_at", ["first_step", "validation"])
def test_sigterm_then_resume_latest_equals_uninterrupted_run(prepared_data, uninterrupted, tmp_path, stop_at):
    when = {"first_step": lambda r: r["split"] == "train",              # mid epoch 0
            "validation": lambda r: r["split"] == "train_epoch"}[stop_at]  # stop lands on epoch 1's first step
    cmd = [sys.executable, str(REPO / "train.py"), *train_args(prepared_data, tmp_path, "train.epochs=2")]
    run, _ = stop_with_sigterm(cmd, tmp_path, when)
    stopped = trainer_state(run)
    assert stopped["step_in_epoch"] > 0 and stopped["epoch"] == (0 if stop_at == "first_step" else 1)
    assert stopped["global_step"] == 3 * stopped["epoch"] + stopped["step_in_epoch"]
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
    final = trainer_state(run)
    assert (final["epoch"], final["step_in_epoch"], final["global_step"]) == (2, 0, 6)


def test_resume_of_a_run_without_resume_state_is_a_clear_error(prepared_data, tmp_path):
    proc = run_train(prepared_data, tmp_path, "resume=latest", check=False)
    assert proc.returncode != 0 and "no run with resume state" in proc.stderr
