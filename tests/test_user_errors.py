"""The mistakes users make, fed to every entry: one line naming the file or setting and the fix, exit status 1, no
traceback (action_decoder/cli.py); the traceback stays for bugs and under HYDRA_FULL_ERROR=1."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO, only_run_dir, run_cli, run_train, subprocess_env, train_args

pytestmark = pytest.mark.e2e


def user_env(**extra):
    env = subprocess_env()
    env.pop("HYDRA_FULL_ERROR", None)  # conftest sets it for the other tests' diagnostics
    return {**env, **extra}


def one_line_error(entry: str, *args: str, env=None) -> str:
    proc = run_cli([sys.executable, str(REPO / entry), *args], env=env or user_env(), check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, f"{entry} {args} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr
    errors = [line for line in lines if line.startswith(("error: ", "preflight FAILED: "))]
    assert len(errors) == 1 and errors[0] == lines[-1], proc.stderr
    return errors[0]


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    return tmp_path


def test_eval_mistakes(files):
    text, empty, missing = files / "notes.txt", files / "empty", files / "gone.pt"
    assert str(text) in (line := one_line_error("eval.py", f"checkpoint={text}"))
    assert "not a checkpoint" in line and "best.pt" in line
    assert "no such file or folder" in one_line_error("eval.py", f"checkpoint={missing}")
    assert "not an export" in one_line_error("eval.py", f"checkpoint={empty}")
    assert "split=tset: choose one of train, val, test, test_unseen" in one_line_error("eval.py", f"checkpoint={text}", "split=tset")
    line = one_line_error("eval.py", "checkpoint=latest", "experiment=smok")
    assert "experiment=smok: no such preset" in line and "smoke" in line
    assert f"latest: no run with best.pt under {empty}/smoke" in one_line_error(
        "eval.py", "checkpoint=latest", f"output_root={empty}")
    assert "scripts/plot_runs.py run=" in one_line_error("eval.py", f"run={empty}")


def test_plot_and_export_mistakes(files):
    assert "no metrics.jsonl" in one_line_error("scripts/plot_runs.py", f"run={files / 'empty'}")
    assert "no run with a metrics.jsonl" in one_line_error("scripts/plot_runs.py", f"sweep={files / 'empty'}")
    assert "not a checkpoint" in one_line_error("scripts/export_checkpoint.py", str(files / "notes.txt"),
                                                str(files / "out"))


def test_annotate_mistakes(files):
    assert "input=" in one_line_error("annotate.py", f"checkpoint={files / 'notes.txt'}", f"input={files / 'empty'}",
                                      f"output={files / 'ann'}")
    video_dir = files / "videos"
    video_dir.mkdir()
    (video_dir / "a.mp4").write_bytes(b"\0" * 64)  # found as an input; the checkpoint fails first
    assert "not a checkpoint" in one_line_error("annotate.py", f"checkpoint={files / 'notes.txt'}",
                                                f"input={video_dir}", f"output={files / 'ann'}")


def test_prepare_data_and_preflight_mistakes(files):
    line = one_line_error("scripts/prepare_data.py", f"data.recordings_dir={files / 'empty'}",
                          f"data.prepared_dir={files / 'prepared'}")
    assert f"data.recordings_dir={files / 'empty'}" in line and "make_synthetic_data.py" in line
    assert "data=synthetc: no such preset" in one_line_error("scripts/prepare_data.py", "data=synthetc")
    assert "experiment=smok: no such preset" in one_line_error("scripts/preflight.py", "experiment=smok")
    line = one_line_error("scripts/preflight.py", f"data.prepared_dir={files / 'empty'}")
    assert "train.jsonl not found" in line and "prepare_data.py" in line


def test_train_mistakes_and_a_refused_resume(files, prepared_data):
    assert "experiment=smok: no such preset" in one_line_error("train.py", "experiment=smok")
    line = one_line_error("train.py", *train_args(files / "empty", files / "out"))
    assert "train.jsonl not found" in line and "python scripts/prepare_data.py" in line
    assert "has no resume state" in one_line_error("train.py", f"resume={files / 'empty'}")
    run_train(prepared_data, files / "runs", "train.epochs=1")
    run = only_run_dir(files / "runs")
    line = one_line_error("train.py", f"resume={run}", "train.batch_size=2", "train.epochs=2")
    assert "layout changed" in line and "train.batch_size 4 -> 2: set train.batch_size=4" in line


def test_full_error_keeps_the_traceback(files):
    proc = run_cli([sys.executable, str(REPO / "eval.py"), f"checkpoint={files / 'notes.txt'}"],
                   env=user_env(HYDRA_FULL_ERROR="1"), check=False)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "SettingError" in proc.stderr
