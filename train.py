"""Train the action decoder.  python train.py [experiment=smoke] [key=value ...]   (see README)"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from action_decoder import cli
from action_decoder.training.run_dir import pin_run_dir_argv


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@cli.user_errors
def main(cfg: DictConfig):
    """The run's best validation `train.best_metric` (what a sweeper such as hparams_search=lora_optuna maximizes)."""
    hydra_cfg = HydraConfig.get()
    if cfg.launch.accelerate:  # hydra/launcher=slurm_accelerate: this job starts `accelerate launch` over its GPUs
        from action_decoder.training.launch import relaunch_under_accelerate

        return relaunch_under_accelerate(cfg, hydra_cfg)
    from action_decoder.training.loop import train  # imported here so `--help`/`--cfg job` stay fast

    return train(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))


def run() -> None:
    sys.argv = pin_run_dir_argv(sys.argv)
    main()


if __name__ == "__main__":
    cli.entry(run)
