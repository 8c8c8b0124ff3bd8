"""Shared end-to-end fixtures: one tiny synthetic dataset per test session, and helpers that drive the
real command lines (`python train.py`, `accelerate launch train.py`, `python eval.py`) as subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Random-init towers (no pretraining needed): backbone=tiny loads data/pretrained/tiny/* otherwise.
RANDOM_TOWERS = ["backbone.vision.name_or_path=null", "backbone.text.name_or_path=null"]
# The smallest model the configs allow that still runs every part (LoRA on both towers, the decoder,
# all heads): 32 px frames of 8 px patches = 16 tokens a frame, a 32-wide decoder, 4-frame clips.
TINY = [
    *RANDOM_TOWERS,
    "backbone.vision.image_size=32",
    "backbone.vision.patch_size=8",
    "model.d_model=32",
    "model.num_heads=4",
    "model.ffn_dim=64",
    "data.clip_len=4",
    "data.clip_stride=4",
    "data.num_workers=0",
    "train.batch_size=4",
    "train.max_steps_per_epoch=3",
    "train.max_val_steps=2",
    "train.log_every=1",
    "train.warmup_ratio=0.2",
]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test process's environment, minus anything that would make a child think it is a rank of a
    distributed job, with single-threaded math (2 cores are shared) and wandb kept offline."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU")
           and not k.startswith("ACCELERATE_") and not k.startswith("ACTION_DECODER_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """14 synthetic recordings of 4 s at 5 frames/s, rendered and prepared by the real scripts."""
    root = tmp_path_factory.mktemp("e2e_data")
    common = [f"data.recordings_dir={root / 'recordings'}", f"data.prepared_dir={root / 'prepared'}"]
    for script, extra in (
        ("make_synthetic_data.py", ["data.synthetic.num_recordings=14", "data.synthetic.duration=4.0",
                                    "data.synthetic.workers=1"]),
        ("prepare_data.py", ["data.sample_fps=5", "data.val_fraction=0.2", "data.test_fraction=0.2"]),
    ):
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *common, *extra], cwd=REPO,
                              env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    for split in ("train", "val", "test"):
        assert (root / "prepared" / f"{split}.jsonl").stat().st_size > 0, split
    return root / "prepared"


def train_args(prepared: Path, output_root: Path, *overrides: str) -> list[str]:
    return [*TINY, f"data.prepared_dir={prepared}", f"output_root={output_root}", *overrides]


def run_cli(cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def run_train(prepared: Path, output_root: Path, *overrides: str, **kw) -> subprocess.CompletedProcess:
    """`python train.py <TINY> data.prepared_dir=... output_root=... <overrides>`."""
    return run_cli([sys.executable, str(REPO / "train.py"), *train_args(prepared, output_root, *overrides)], **kw)


def run_eval(*overrides: str, **kw) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, str(REPO / "eval.py"), *overrides], **kw)


def run_dirs(output_root: Path, experiment: str = "smoke") -> list[Path]:
    return sorted(p for p in (Path(output_root) / experiment).glob("*") if p.is_dir())


def only_run_dir(output_root: Path, experiment: str = "smoke") -> Path:
    dirs = run_dirs(output_root, experiment)
    assert len(dirs) == 1, f"expected one run dir under {output_root}/{experiment}, got {dirs}"
    return dirs[0]


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def step_losses(records: list[dict]) -> dict[int, float]:
    """global step -> logged total train loss (train.log_every=1 logs every step)."""
    return {r["step"]: r["loss"]["total"] for r in records if r["split"] == "train"}


def trainer_state(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "resume" / "trainer_state.json").read_text())
