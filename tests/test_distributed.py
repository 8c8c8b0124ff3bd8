"""Two CPU processes through `accelerate launch` (gloo): plain DDP and DeepSpeed ZeRO-2. Both ranks train in
step, share one run dir, write one set of checkpoints, and end cleanly (exit 0). Gradient accumulation and
clipping come from train.* under both, so the two launch modes train the same run."""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import only_run_dir, read_metrics, run_cli, step_losses, subprocess_env, train_args

pytestmark = pytest.mark.e2e

# 4 micro-steps an epoch, 2 per optimizer step, 2 clips per rank per micro-step.
ARGS = ["train.epochs=2", "train.batch_size=2", "train.grad_accum=2", "train.max_steps_per_epoch=4"]
LAUNCH = {
    "ddp": (["--config_file", "conf/accelerate/cpu_2proc.yaml"], {"ACCELERATE_USE_CPU": "1"}),
    "zero2": (["--config_file", "conf/accelerate/deepspeed_zero2.yaml", "--num_processes", "2",
               "--mixed_precision", "no"], {"DS_BUILD_OPS": "0"}),
}


def launch(prepared, output_root, mode: str):
    flags, env = LAUNCH[mode]
    proc = run_cli(["accelerate", "launch", *flags, "train.py", *train_args(prepared, output_root, *ARGS)],
                   env=subprocess_env(**env), timeout=400)
    return proc, only_run_dir(output_root)  # both ranks wrote into one timestamp dir


@pytest.fixture(scope="module")
def ddp_run(prepared_data, tmp_path_factory):
    return launch(prepared_data, tmp_path_factory.mktemp("ddp"), "ddp")


@pytest.fixture(scope="module")
def zero2_run(prepared_data, tmp_path_factory):
    return launch(prepared_data, tmp_path_factory.mktemp("zero2"), "zero2")


@pytest.mark.parametrize("mode", ["ddp", "zero2"])
def test_two_processes_train_in_step_into_one_run_dir(mode, request):
    proc, run = request.getfixturevalue(f"{mode}_run")
    records = read_metrics(run)
    # every epoch, both ranks hashed their trained weights: identical
    syncs = [r for r in records if r["split"] == "sync"]
    assert [r["epoch"] for r in syncs] == [0, 1]
    for r in syncs:
        assert len(r["rank_weight_hashes"]) == 2 and len(set(r["rank_weight_hashes"])) == 1, r
    assert "out of sync" not in proc.stderr

    losses = step_losses(records)
    assert sorted(losses) == list(range(1, 9)) and all(math.isfinite(v) for v in losses.values())
    # one optimizer step per 2 micro-steps: the logged rate changes only on odd micro-steps
    lrs = [r["lr"] for r in records if r["split"] == "train"]
    assert lrs[0] == lrs[1] and lrs[2] == lrs[3] and lrs[1] != lrs[2]
    assert [r["epoch"] for r in records if r["split"] == "val"] == [0, 1]

    assert [p.name for p in run.glob("best.pt")] == ["best.pt"]
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == ["epoch_000.pt", "epoch_001.pt"]
    # every rank's RNG state made it into the resume state, and no half-swapped folder is left behind
    assert {p.name for p in (run / "resume").glob("random_states_*.pkl")} == {"random_states_0.pkl",
                                                                              "random_states_1.pkl"}
    assert not (run / "resume.tmp").exists() and not (run / "resume.old").exists()

    from action_decoder.evaluation.evaluate import load_model_from_checkpoint
    model, *_ = load_model_from_checkpoint(run / "best.pt")
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert set(model.trainable_state_dict()) == set(best["state"])


def test_deepspeed_zero2_trains_the_same_run_as_ddp(ddp_run, zero2_run):
    """Same seeds, data shards, accumulation (loss scaled by 1/grad_accum) and clipping -> same losses.
    DeepSpeed ignoring train.grad_accum (stepping every micro-step) would change them from step 2 on."""
    ddp, zero2 = step_losses(read_metrics(ddp_run[1])), step_losses(read_metrics(zero2_run[1]))
    assert sorted(ddp) == sorted(zero2)
    for step in ddp:
        assert zero2[step] == pytest.approx(ddp[step], rel=1e-4, abs=1e-5), step
