"""scripts/preflight.py through its real command line: timed steps and projections on tiny, one-line failures."""
from __future__ import annotations

import pytest

import re
import sys

from tests.conftest import REPO, TINY, run_cli

PREFLIGHT = [sys.executable, str(REPO / "scripts" / "preflight.py"), *TINY]


@pytest.mark.e2e
def test_preflight_times_real_steps_and_projects_the_run(prepared_data):
    proc = run_cli([*PREFLIGHT, f"data.prepared_dir={prepared_data}", "preflight.steps=2", "preflight.sample_clips=4",
                    "train.epochs=5"])
    out = proc.stdout
    assert "data: 4 training clips decoded" in out
    steps = [float(s) for s in re.findall(r"^step \d+: ([\d.]+) s, loss [\d.]+$", out, flags=re.M)]
    assert len(steps) == 2 and all(s > 0 for s in steps)
    ok = re.search(r"preflight OK: ([\d.]+) s/optimizer step .* ([\d.]+) clips/s, peak device memory n/a .*"
                   r"peak host memory ([\d.]+) GiB, ([\d,.]+) GFLOP/step/process, MFU n/a", out)
    assert ok, out
    step_s, clips_s, host_gib = float(ok[1]), float(ok[2]), float(ok[3])
    assert step_s in steps and abs(clips_s - 4 / step_s) < 0.02 * clips_s and 0.1 < host_gib < 8
    assert float(ok[4].replace(",", "")) > 0
    # train.max_steps_per_epoch=3 (TINY): 3 optimizer steps an epoch, 15 over the 5 epochs.
    assert re.search(r"projected: epoch 0 = 3 optimizer steps = .*; 5 epochs = ", out), out


@pytest.mark.e2e
def test_preflight_without_data_exits_1_with_one_line(tmp_path):
    proc = run_cli([*PREFLIGHT, f"data.prepared_dir={tmp_path / 'missing'}"], check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("preflight FAILED:")]
    assert len(lines) == 1 and f"{tmp_path / 'missing' / 'train.jsonl'} not found" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_preflight_batch_larger_than_the_data_names_the_knob(prepared_data):
    proc = run_cli([*PREFLIGHT, f"data.prepared_dir={prepared_data}", "train.batch_size=1000"], check=False)
    assert proc.returncode == 1
    assert "fewer than train.batch_size=1000" in proc.stderr.splitlines()[-1], proc.stderr
