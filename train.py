"""Train the action decoder.  python train.py [experiment=smoke] [key=value ...]   (see README)"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from action_decoder.training.run_dir import pin_run_dir_argv


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from action_decoder.training.loop import train  # imported here so `--help`/`--cfg job` stay fast

    hydra_cfg = HydraConfig.get()
    train(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    sys.argv = pin_run_dir_argv(sys.argv)
    main()
