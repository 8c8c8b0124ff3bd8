"""The `model.name` registry: every entry builds, says what it can do, and a seed gives the weights it always gave.

`fixtures/seeded_init/expected.pt` holds what the models built at seed 0 computed (eval logits, train-mode losses
at seed 1) in the code before models/ was composed from parts: parameters must keep their creation order, so a
seed reproduces the runs (and README numbers) made before."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import ARCHITECTURES
from action_decoder.models.losses import ActionLoss
from tests import test_models, test_parallel

EXPECTED = Path(__file__).parent / "fixtures" / "seeded_init" / "expected.pt"
SPECS = {"original": test_models, "parallel": test_parallel}  # each one's tiny config and batch
# What the fixture's models were built with, where a preset (experiment=smoke) may choose otherwise.
PINNED = {"original": ["model.clip_encoding=video"], "parallel": ["model.clip_encoding=frames"]}


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
def test_a_seed_gives_the_same_model_as_before(tokenizer, name):
    spec = SPECS[name]
    expected = torch.load(EXPECTED, weights_only=True)[name]
    model = spec.make_model(tokenizer, *PINNED[name], seed=0).eval()
    batch = spec.make_batch(tokenizer)
    with torch.no_grad():
        out = model(batch)
    # Same weights give the same values up to float rounding: the thread count and the CPU's kernels change the
    # order of sums (~1e-7 here); weights drawn in another order would be off by O(1).
    for field in ("action_logits", "key_logits", "click_logits"):
        torch.testing.assert_close(getattr(out, field), expected[field], rtol=1e-4, atol=1e-5)
    model.train()
    torch.manual_seed(1)  # dropout draws, in the order the forward makes them
    losses = ActionLoss(dict.fromkeys(("action", "key", "modifier", "click", "transcript"), 1.0))(model(batch), batch)
    assert set(losses) == set(expected["train_losses"])
    for k, v in expected["train_losses"].items():
        torch.testing.assert_close(losses[k].detach(), v, rtol=1e-4, atol=1e-5)
