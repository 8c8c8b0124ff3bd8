"""A checkpoint written by an older format still loads and scores the same.

`fixtures/checkpoint_v1/parallel_best.pt` is a format-1 `best.pt` of a tiny `model=parallel` run, written by
the code before format 2; `parallel_expected.pt` holds a batch and what that code's model computed on it."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from action_decoder.config import load_config, upgrade_override
from action_decoder.models.losses import transcript_loss
from action_decoder.training.checkpoint import FORMAT_VERSION, config_mismatches
from action_decoder.evaluation.evaluate import load_model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoint_v1"


def test_format_1_checkpoint_loads_strictly_and_scores_the_same():
    assert torch.load(FIXTURES / "parallel_best.pt", weights_only=True)["format_version"] == 1
    model, _, _, ckpt = load_model_from_checkpoint(FIXTURES / "parallel_best.pt")  # strict: raises on any key
    assert ckpt["format_version"] == FORMAT_VERSION
    # Its config had the loss settings under model/; they are read from their own group now.
    saved = torch.load(FIXTURES / "parallel_best.pt", weights_only=True)["config"]
    assert ckpt["config"]["loss"]["weights"] == saved["model"]["loss_weights"]
    assert ckpt["config"]["loss"]["click_sigma"] == saved["model"]["click_sigma"]
    assert "loss_weights" not in ckpt["config"]["model"] and "click_sigma" not in ckpt["config"]["model"]
    expected = torch.load(FIXTURES / "parallel_expected.pt", weights_only=True)
    model.eval()
    with torch.no_grad():
        out = model(expected["batch"])
    torch.testing.assert_close(out.action_logits, expected["action_logits"])
    torch.testing.assert_close(out.click_logits, expected["click_logits"])
    torch.testing.assert_close(transcript_loss(out.transcript_hidden, out.transcript_targets, out.transcript_head),
                               expected["transcript_loss"])


def test_overrides_of_older_runs_name_todays_keys():
    """`resume=` re-applies the overrides a run was launched with; keys that moved groups are translated."""
    assert upgrade_override("model.class_balance=0.5") == "loss.class_balance=0.5"
    assert upgrade_override("model.loss_weights.key=0") == "loss.weights.key=0"
    assert upgrade_override("+model.click_sigma=0.1") == "+loss.click_sigma=0.1"
    assert upgrade_override("model.d_model=64") == "model.d_model=64"
    assert upgrade_override("model.class_balancer=1") == "model.class_balancer=1"


def test_a_config_saved_with_loss_settings_under_model_is_compatible_with_todays():
    """A run dir's config.yaml from before the loss/ group: resuming compares architecture only."""
    cfg = load_config()
    with open_dict(cfg):
        del cfg["hydra"]  # what train.py's config holds
    saved = OmegaConf.to_container(cfg, resolve=True)
    loss = saved.pop("loss")
    saved["model"].update(loss_weights={**loss["weights"], "key": 0.0}, click_sigma=0.2, class_balance=0.5)
    assert config_mismatches(saved, cfg) == []
    saved["model"]["d_model"] += 1
    assert [m.split(":")[0] for m in config_mismatches(saved, cfg)] == ["model.d_model"]


def test_a_resume_state_of_an_older_format_is_refused_not_half_loaded(tmp_path):
    """accelerate loads resume weights non-strictly: under format 2 names they would be skipped silently."""
    import json

    import pytest

    from action_decoder.training.checkpoint import MANIFEST, verify_resume_state
    from action_decoder.training.train_state import file_sha256

    src = tmp_path / "resume"
    src.mkdir()
    for state, ok in (({"epoch": 1}, False), ({"epoch": 1, "format_version": FORMAT_VERSION}, True)):
        (src / "trainer_state.json").write_text(json.dumps(state))
        (src / MANIFEST).write_text(json.dumps({"trainer_state.json": file_sha256(src / "trainer_state.json")}))
        if ok:
            verify_resume_state(src)
        else:
            with pytest.raises(ValueError, match="format 2"):
                verify_resume_state(src)
