"""Every launch config in conf/accelerate/ through the real `accelerate launch`, in the precision it declares (bf16),
on CPU processes (gloo): one GPU, DDP, DeepSpeed ZeRO-2 and ZeRO-3 for both models (save, stop, resume, eval), and
two "nodes" on 127.0.0.1. DeepSpeed's CPU path runs bf16 for real: parameters cast to bf16, buffers left fp32,
no autocast."""
from __future__ import annotations

import json
import math
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import (REPO, only_run_dir, read_metrics, run_cli, run_dirs, run_eval, step_losses, subprocess_env,
                            train_args, trainer_state)
from tests.test_resume import sigterm_when

pytestmark = pytest.mark.e2e

# conf/model/parallel.yaml: causal trunk + per-frame encoding, so validation streams. Multi-process validation
# generates max_text_tokens + 1 tokens every frame (ZeRO-3 needs equal forwards on every rank): keep it short.
PARALLEL = ["model=parallel", "model.max_text_tokens=4", "train.max_val_steps=1"]
ARGS = ["train.epochs=2", "train.batch_size=2", "train.max_steps_per_epoch=2"]


def launch_cmd(config: str, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    flags = ["--config_file", f"conf/accelerate/{config}.yaml"]
    if config != "single_gpu":
        flags += ["--num_processes", "2"]
    return ["accelerate", "launch", *flags, *extra, "train.py", *overrides]


def launch_env(config: str) -> dict[str, str]:
    # No GPU here. DDP needs accelerate's CPU mode to start 2 processes; DeepSpeed must not get it (accelerate would
    # quietly drop DeepSpeed); its CPU path uses gloo (training/loop.py).
    return subprocess_env(DS_BUILD_OPS="0", **({"ACCELERATE_USE_CPU": "1"} if config == "multi_gpu" else {}))


def launch(config: str, *overrides: str, check: bool = True, timeout: float = 600):
    return run_cli(launch_cmd(config, *overrides), env=launch_env(config), check=check, timeout=timeout)


def stop_launcher(config: str, overrides: list[str], output_root: Path, when) -> tuple[Path, str, int]:
    """SIGTERM to `accelerate launch` itself (as SLURM does) once metrics.jsonl has a record matching `when`."""
    return sigterm_when(launch_cmd(config, *overrides), output_root, when, env=launch_env(config))


def assert_stopped_cleanly(out: str, code: int) -> None:
    # Every rank finishes its step, saves the resume state and exits 0; torch elastic's launcher then re-raises
    # the signal it received (SignalException, exit 1). The README's "Preemption" documents exactly this.
    assert out.count("stop requested: saved resume state") >= 1, out[-4000:]
    assert code == 1 and "SignalException" in out, (code, out[-4000:])
    assert "ChildFailedError" not in out, out[-4000:]  # no rank failed


@pytest.mark.parametrize("config", ["single_gpu", "multi_gpu"])
def test_gpu_configs_train_in_their_declared_bf16(config, prepared_data, tmp_path):
    launch(config, *train_args(prepared_data, tmp_path, "train.epochs=1"))
    run = only_run_dir(tmp_path)
    assert OmegaConf.load(run / "config.yaml").train.mixed_precision == "bf16"  # the launcher's, recorded
    assert (run / "best.pt").is_file()
    syncs = [r for r in read_metrics(run) if r["split"] == "sync"]
    assert all(len(set(r["rank_weight_hashes"])) == 1 for r in syncs)


def test_precision_disagreement_stops_naming_both(prepared_data, tmp_path):
    proc = launch("single_gpu", *train_args(prepared_data, tmp_path, "train.mixed_precision=no"), check=False)
    assert proc.returncode != 0
    assert "train.mixed_precision=no but the accelerate launcher says mixed_precision=bf16" in proc.stderr


@pytest.fixture(scope="module")
def zero3_parallel_uninterrupted(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3_parallel")
    launch("deepspeed_zero3", *train_args(prepared_data, out, *ARGS, *PARALLEL))
    return only_run_dir(out)


# ZeRO-2 `original` in fp32 is tests/test_distributed.py (same losses as DDP); here bf16 with the other model.
@pytest.mark.parametrize("config,model", [("deepspeed_zero2", "parallel"), ("deepspeed_zero3", "original")])
def test_deepspeed_bf16_stops_resumes_and_evaluates(config, model, prepared_data, tmp_path):
    args = train_args(prepared_data, tmp_path, *ARGS, *(PARALLEL if model == "parallel" else []))
    run, out, code = stop_launcher(config, args, tmp_path, lambda r: r["split"] == "train")
    assert_stopped_cleanly(out, code)
    stopped = trainer_state(run)
    assert stopped["epoch"] == 0 and stopped["step_in_epoch"] >= 1

    launch(config, "resume=latest", f"output_root={tmp_path}")
    assert run_dirs(tmp_path) == [run]
    records = read_metrics(run)
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]  # no step repeated or lost
    assert all(math.isfinite(v) for v in step_losses(records).values())
    assert OmegaConf.load(run / "config.yaml").train.mixed_precision == "bf16"
    check_best_and_eval(run, prepared_data)


def check_best_and_eval(run: Path, prepared: Path) -> dict:
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    # DeepSpeed bf16 trains bf16 parameters; under ZeRO-3 they are gathered whole, never the empty local shards
    assert best["state"] and all(v.dtype == torch.bfloat16 and v.numel() > 0 for v in best["state"].values())
    run_eval(f"checkpoint={run / 'best.pt'}", "split=test", f"data.prepared_dir={prepared}")
    [result] = list((run / "eval").glob("*/eval.json"))
    return json.loads(result.read_text())


def test_zero3_parallel_stop_during_validation_resumes_to_the_same_run(zero3_parallel_uninterrupted, prepared_data,
                                                                       tmp_path):
    """SIGTERM while validating (the stop flag is checked between validation batches): the resume state is saved
    within a batch, and the resumed run re-validates that epoch and trains exactly the uninterrupted run."""
    args = train_args(prepared_data, tmp_path, *ARGS, *PARALLEL)
    last_step_of_epoch_0 = lambda r: r["split"] == "train" and r["step"] == 2  # noqa: E731
    run, out, code = stop_launcher("deepspeed_zero3", args, tmp_path, last_step_of_epoch_0)
    assert_stopped_cleanly(out, code)
    assert "before its validation" in out
    stopped = trainer_state(run)
    assert (stopped["epoch"], stopped["step_in_epoch"]) == (0, 2)
    assert not [r for r in read_metrics(run) if r["split"] == "val"]

    launch("deepspeed_zero3", "resume=latest", f"output_root={tmp_path}")
    resumed, reference = read_metrics(run), read_metrics(zero3_parallel_uninterrupted)
    assert step_losses(resumed) == step_losses(reference)
    for split in ("train_epoch", "val"):
        assert [(r["epoch"], r["loss"]) for r in resumed if r["split"] == split] == \
               [(r["epoch"], r["loss"]) for r in reference if r["split"] == split]
    a = torch.load(run / "epoch_001.pt", weights_only=True)["state"]
    b = torch.load(zero3_parallel_uninterrupted / "epoch_001.pt", weights_only=True)["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    result = check_best_and_eval(run, prepared_data)
    assert result["metrics"]["transcript_cer"] is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_node_config_joins_two_nodes_into_one_run(prepared_data, tmp_path):
    """multi_node.yaml's launch on each "node" (here 1 CPU process each on 127.0.0.1) makes one world of 2."""
    port = free_port()
    procs = []
    for rank in (0, 1):
        cmd = launch_cmd("multi_node", *train_args(prepared_data, tmp_path, "train.epochs=1", "train.batch_size=2"),
                         extra=("--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                                "--main_process_port", str(port)))
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=launch_env("multi_node"), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    run = only_run_dir(tmp_path)  # one run dir for both nodes
    [sync] = [r for r in read_metrics(run) if r["split"] == "sync"]
    assert len(sync["rank_weight_hashes"]) == 2 and len(set(sync["rank_weight_hashes"])) == 1
    assert OmegaConf.load(run / "config.yaml").train.mixed_precision == "bf16"
