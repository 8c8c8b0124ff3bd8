"""Sweeps on real launchers: hydra-submitit-launcher's local executor end to end (run dirs, sweep.md, the plot,
one wandb group named by the overrides), the SLURM preset's sbatch script, and Optuna's search."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli, subprocess_env, train_args

SLURM_KNOBS = ["hydra/launcher=slurm_accelerate", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2",
               "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=90",
               "hydra.launcher.additional_parameters.signal=TERM@300"]


def sbatch_script(launcher: dict, folder: Path) -> str:
    """The sbatch file submitit writes for hydra-submitit-launcher's SlurmLauncher with `launcher` (its config),
    built the way SlurmLauncher.launch builds its executor."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = {k: v for k, v in launcher.items() if k != "_target_"}
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(folder), slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit job", "uid")


def test_slurm_preset_writes_a_multi_gpu_sbatch_script_with_the_stop_signal(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from action_decoder.config import load_config

    bin_dir = tmp_path / "bin"  # submitit looks for srun on PATH before it writes anything (this is no cluster)
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cfg = load_config(SLURM_KNOBS)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    script = sbatch_script(launcher, tmp_path / "submitit")
    lines = script.splitlines()
    for flag in ("--partition=gpu", "--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=1", "--time=90",
                 "--signal=TERM@300"):
        assert f"#SBATCH {flag}" in lines, (flag, script)
    assert sum(line.startswith("#SBATCH --signal") for line in lines) == 1  # TERM (training/loop.py), not USR2
    assert "export ACTION_DECODER_LAUNCH_ACCELERATE=true" in lines  # train.py runs `accelerate launch` in the job
    assert any(line.startswith("srun ") for line in lines)


def test_a_slurm_job_runs_accelerate_launch_over_its_nodes_and_gpus(tmp_path, monkeypatch):
    from action_decoder.config import load_config
    from action_decoder.training.launch import accelerate_command

    monkeypatch.setenv("ACTION_DECODER_LAUNCH_ACCELERATE", "true")
    cfg = load_config(["experiment=march10_baseline"])
    assert cfg.launch.accelerate is True
    run_dir = tmp_path / "multirun" / "3"
    cmd = accelerate_command(cfg, ["experiment=march10_baseline", "backbone.lora.r=16"], run_dir, nodes=2, gpus=4,
                             node=1, host="gpu-017")
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert (flags["--num_machines"], flags["--num_processes"], flags["--machine_rank"], flags["--main_process_ip"]) \
        == ("2", "8", "1", "gpu-017")
    assert flags["--config_file"].endswith("conf/accelerate/multi_gpu.yaml")
    assert cmd[-4:] == ["experiment=march10_baseline", "backbone.lora.r=16", "launch.accelerate=false",
                        f"hydra.run.dir={run_dir}"]
    (run_dir / "resume").mkdir(parents=True)  # a requeued job (preempted, resume state saved) continues its run
    (run_dir / "resume" / "trainer_state.json").write_text("{}")
    assert f"resume={run_dir}" in accelerate_command(cfg, [], run_dir, 1, 8, 0, "h")


def wandb_run_records(run_dir: Path) -> dict:
    """group and display name of the offline wandb run in a run dir, from its .wandb log: wandb's LevelDB-style log
    (a 7-byte file header, 32 KiB blocks of records `crc32 u32, length u16, type u8, data`; type 1 = a whole record,
    2/3/4 = first/middle/last piece) of protobuf `Record`s; `wandb sync` reads the same file."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
    block, pos, pieces = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pieces, pos = pieces + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pieces)
            pieces = b""
            if rec.WhichOneof("record_type") == "run":
                return {"group": rec.run.run_group, "name": rec.run.display_name}
    raise AssertionError(f"no run record in {run_dir}/wandb")


@pytest.mark.e2e
def test_submitit_local_sweep_of_two_jobs_end_to_end_in_one_wandb_group(prepared_data, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli([sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_local",
             "hydra.launcher.timeout_min=20", *train_args(prepared_data, tmp_path / "out", "train.epochs=1",
                                                         "backbone.lora.r=4,8", "logger=wandb", "logger.wandb.mode=offline",
                                                         f"hydra.sweep.dir={sweep}")],
            env=subprocess_env(WANDB_MODE="offline"), timeout=900)
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert [j.name for j in jobs] == ["0", "1"] and all((j / "best.pt").is_file() for j in jobs)
    assert (sweep / ".submitit").is_dir()  # the jobs ran through submitit, each in its own process
    runs = [wandb_run_records(j) for j in jobs]
    assert runs[0]["group"] == runs[1]["group"] == f"smoke:{sweep}"
    for r, run in zip((4, 8), runs):  # named by the job's overrides, without the paths
        assert f"backbone.lora.r={r}" in run["name"].split(",") and "train.epochs=1" in run["name"].split(",")
        assert "prepared_dir" not in run["name"] and "output_root" not in run["name"]
    run_cli([sys.executable, str(REPO / "scripts" / "plot_runs.py"), f"sweep={sweep}"])
    table = (sweep / "sweep.md").read_text()
    assert "| `0` | 4 |" in table and "| `1` | 8 |" in table
    assert (sweep / "sweep.png").read_bytes()[:4] == (sweep / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.e2e
def test_optuna_search_runs_three_trials_and_tabulates_them(prepared_data, tmp_path):
    sweep = tmp_path / "search"
    run_cli([sys.executable, str(REPO / "train.py"), "-m", "hparams_search=lora_optuna", "hydra.sweeper.n_trials=3",
             *train_args(prepared_data, tmp_path / "out", "train.epochs=1", f"hydra.sweep.dir={sweep}")], timeout=900)
    trials = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert len(trials) == 3
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"backbone.lora.r", "backbone.lora.alpha", "backbone.lora.dropout",
                                          "train.lr", "train.lora_lr"}
    run_cli([sys.executable, str(REPO / "scripts" / "plot_runs.py"), f"sweep={sweep}"])
    from action_decoder.evaluation.sweeps import sweep_table

    rows = sweep_table(trials)
    assert result["best_value"] == pytest.approx(rows[0]["event_f1"])  # what train.py returned: the best val event_f1
    table = (sweep / "sweep.md").read_text()
    assert table.count("| `") == 3 and "backbone.lora.dropout" in table and "Search (optuna): best value" in table
    assert (sweep / "curves.png").read_bytes()[:4] == b"\x89PNG"
