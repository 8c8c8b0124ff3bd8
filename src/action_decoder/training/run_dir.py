"""One run directory per run, whatever the number of processes.

Hydra resolves `hydra.run.dir` (with `${now:...}`) in every process it starts, and the processes of an
`accelerate launch` start at slightly different times. So only rank 0 lets Hydra create the run dir;
the other ranks get `hydra.run.dir=.` with Hydra's own outputs switched off, and learn rank 0's dir by
broadcast once the process group exists (`share_run_dir`). A resumed run writes into the run it resumes,
starting from the overrides that run was launched with.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from action_decoder.cli import MissingFileError

RESUME_DIRNAME = "resume"          # accelerate save_state folder inside a run dir
TRAINER_STATE = "trainer_state.json"


def is_secondary_rank() -> bool:
    return os.environ.get("RANK", "0") != "0"


def has_resume_state(run_dir: Path) -> bool:
    return (Path(run_dir) / RESUME_DIRNAME / TRAINER_STATE).is_file()


def find_latest_run(output_root: str | Path, experiment: str, needs: str = f"{RESUME_DIRNAME}/{TRAINER_STATE}") -> Path:
    """`latest`, for every entry: the run of `experiment` whose file `needs` (the one the entry reads, relative
    to the run dir: the resume state, best.pt, metrics.jsonl) was written last."""
    root = Path(output_root) / experiment
    files = list(root.glob(f"*/{needs}"))
    if not files:
        raise MissingFileError(f"latest: no run with {needs} under {root}/ (looked for {root}/*/{needs}); "
                                f"train one first (python train.py experiment={experiment}) or name the run dir")
    latest = max(files, key=lambda f: f.stat().st_mtime)
    return latest.parents[len(Path(needs).parts) - 1]


def resolve_resume_dir(resume: str | None, output_root: str | Path, experiment: str) -> Path | None:
    if not resume:
        return None
    run_dir = find_latest_run(output_root, experiment) if str(resume) == "latest" else Path(resume)
    if not has_resume_state(run_dir):
        raise MissingFileError(
            f"resume={resume}: {run_dir} has no resume state ({RESUME_DIRNAME}/{TRAINER_STATE} missing); "
            "give a run dir that train.py wrote (outputs/<experiment>/<timestamp>) or resume=latest")
    return run_dir


def pin_run_dir_argv(argv: list[str]) -> list[str]:
    """Hydra overrides that make every process agree on one run dir (see module docstring)."""
    overrides = [a for a in argv[1:] if not a.startswith("-")]
    if any(a in ("-m", "--multirun") for a in argv[1:]):
        return argv  # sweeps: Hydra gives each job its own dir; jobs are single-process here
    extra: list[str] = []
    resume = next((a.split("=", 1)[1] for a in overrides if a.startswith("resume=")), None)
    if resume and resume != "null":
        from action_decoder.config import load_config  # compose once to learn output_root / experiment

        cfg = load_config(overrides)
        run_dir = resolve_resume_dir(resume, cfg.output_root, cfg.experiment_name)
        extra.append(f"hydra.run.dir={run_dir}")
        # Continue with the overrides the run was launched with (`python train.py resume=latest` alone must
        # rebuild the same model and data); overrides given now come later and win.
        saved = run_dir / ".hydra" / "overrides.yaml"
        if saved.is_file():
            argv = [argv[0], *[str(o) for o in OmegaConf.load(saved)], *argv[1:]]
        # Hydra would rewrite the run's .hydra/ before the resume is checked; the loop records the overrides
        # itself once the resume is accepted, so a refused attempt leaves the run untouched.
        extra.append("hydra.output_subdir=null")
    if is_secondary_rank():
        extra += ["hydra.run.dir=."] + ([] if "hydra.output_subdir=null" in extra else ["hydra.output_subdir=null"]) + [
                  "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    return argv + extra


def share_run_dir(accelerator, run_dir: str | Path) -> Path:
    """Every rank returns rank 0's run dir."""
    from accelerate.utils import broadcast_object_list

    box = [str(Path(run_dir).resolve())]
    if accelerator.num_processes > 1:
        broadcast_object_list(box, from_process=0)
    return Path(box[0])
