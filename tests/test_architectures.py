"""The `model.name` registry: every entry builds, says what it can do, and a seed gives one model."""
from __future__ import annotations

import pytest
import torch

from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import ARCHITECTURES
from action_decoder.models.losses import ActionLoss
from tests import test_models, test_parallel

SPECS = {"original": test_models, "parallel": test_parallel}  # each one's tiny config and batch


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("small")


def test_registry_holds_the_model_card_names():
    assert set(ARCHITECTURES) == {"original", "parallel"} == set(SPECS)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_builds_and_reports_what_it_can_do(tokenizer, name):
    spec = SPECS[name]
    assert spec.make_cfg().model.name == name
    model = spec.make_model(tokenizer).eval()
    batch = spec.make_batch(tokenizer)
    assert model.has_transcript == ARCHITECTURES[name].transcript
    with torch.no_grad():
        out = model(batch)
    assert (out.transcript_hidden is not None) == model.has_transcript
    if model.has_transcript:
        steps = list(model.stream(batch["pixels"], batch["prompt_ids"], batch["prompt_mask"], max_text_tokens=2))
        assert len(steps) == batch["pixels"].shape[1]
    else:
        with pytest.raises(ValueError, match="transcript decoder"):
            next(iter(model.stream(batch["pixels"], batch["prompt_ids"], batch["prompt_mask"])))
        with pytest.raises(ValueError, match="transcript decoder"):
            model.transcribe(batch)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_a_seed_gives_the_same_model_and_losses_every_time(tokenizer, name):
    """What a run's `seed` promises: the same initial weights, outputs and (dropout included) losses."""
    spec = SPECS[name]
    batch = spec.make_batch(tokenizer)
    runs = []
    for _ in range(2):
        model = spec.make_model(tokenizer, seed=0).train()
        torch.manual_seed(1)  # dropout draws, in the order the forward makes them
        out = model(batch)
        losses = ActionLoss(dict.fromkeys(("action", "key", "modifier", "click", "transcript"), 1.0))(out, batch)
        runs.append((model.state_dict(), out, losses))
    (sd_a, out_a, loss_a), (sd_b, out_b, loss_b) = runs
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    for field in ("action_logits", "key_logits", "click_logits"):
        assert torch.equal(getattr(out_a, field), getattr(out_b, field))
    assert {k: float(v) for k, v in loss_a.items()} == {k: float(v) for k, v in loss_b.items()}
    other = spec.make_model(tokenizer, seed=1)
    assert any(not torch.equal(sd_a[k], v) for k, v in other.state_dict().items())
