"""A cluster sweep's job (hydra/launcher=slurm_accelerate): one SLURM job per sweep point, which runs
`accelerate launch` over the job's nodes and GPUs.

submitit starts train.py once per node of the job (tasks_per_node: 1). With `launch.accelerate: true` that process
does not train: it starts `accelerate launch --num_machines <nodes> --num_processes <nodes x GPUs> --machine_rank
<this node> --main_process_ip <first node> train.py <the job's overrides> hydra.run.dir=<the job's dir>` and waits.
Every rank writes into the sweep job's own dir, so sweep tables and plots find it. A job that finds a resume state in
its dir (SLURM requeued it after a preemption) continues it (`resume=<dir>`).

Preemption: the preset's `signal` (e.g. TERM@120, `#SBATCH --signal`) reaches every process of the job step; the
ranks save their resume state and exit 0 (training/loop.py), and so does this job.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from action_decoder.training.run_dir import has_resume_state

REPO = Path(__file__).resolve().parents[3]


def job_topology() -> tuple[int, int, int, str]:
    """(nodes, GPUs per node, this node's rank, first node's host) of the SLURM job this runs in."""
    import submitit

    env = submitit.JobEnvironment()
    gpus = int(os.environ.get("SLURM_GPUS_ON_NODE") or os.environ.get("SLURM_GPUS_PER_NODE", "1").split(":")[-1])
    return env.num_nodes, gpus, env.node, env.hostnames[0]


def accelerate_command(cfg: DictConfig, overrides: list[str], run_dir: Path, nodes: int, gpus: int, node: int,
                       host: str) -> list[str]:
    """The job's `accelerate launch ... train.py ...` command line."""
    job = [o for o in overrides if not o.startswith(("hydra/launcher=", "hydra.launcher."))]
    if has_resume_state(run_dir):
        job.append(f"resume={run_dir}")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / cfg.launch.config_file),
            "--num_machines", str(nodes), "--num_processes", str(nodes * gpus), "--machine_rank", str(node),
            "--main_process_ip", host, "--main_process_port", str(cfg.launch.main_process_port),
            str(REPO / "train.py"), *job, "launch.accelerate=false", f"hydra.run.dir={run_dir}"]


def relaunch_under_accelerate(cfg: DictConfig, hydra_cfg) -> float | None:
    """Run this sweep job under `accelerate launch`; its best validation `train.best_metric` (for a sweeper)."""
    from action_decoder.evaluation.sweeps import sweep_table

    run_dir = Path(hydra_cfg.runtime.output_dir)
    nodes, gpus, node, host = job_topology()
    cmd = accelerate_command(cfg, list(hydra_cfg.overrides.task), run_dir, nodes, gpus, node, host)
    env = {**os.environ, "WANDB_RUN_GROUP": f"{cfg.experiment_name}:{hydra_cfg.sweep.dir}",
           "WANDB_NAME": hydra_cfg.job.override_dirname or run_dir.name}
    signalled = []  # SLURM's stop signal reaches this process too: the ranks save, this one waits for them
    signal.signal(signal.SIGTERM, lambda signum, frame: signalled.append(signum))
    print(f"node {node} of {nodes}: {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, env=env)
    if code != 0 and signalled and has_resume_state(run_dir):  # accelerate launch exits 1 after forwarding it
        print(f"stopped by signal: resume state saved in {run_dir}", flush=True)
    elif code != 0:
        raise RuntimeError(f"accelerate launch exited {code} (its output above); run dir {run_dir}")
    row = sweep_table([run_dir], cfg.train.best_metric)[0]
    return row.get(cfg.train.best_metric)
