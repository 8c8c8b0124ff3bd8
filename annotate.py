"""Annotate recordings with a checkpoint.  python annotate.py checkpoint=<best.pt | export folder> input=<...> output=<dir>
(see conf/annotate.yaml and action_decoder/inference/annotate.py)"""
import hydra
from omegaconf import DictConfig

from action_decoder import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="annotate")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    from action_decoder.inference.annotate import run

    run(cfg)


if __name__ == "__main__":
    cli.entry(main)
