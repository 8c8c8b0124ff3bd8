"""A checkpoint written by an older format still loads and scores the same.

`fixtures/checkpoint_v1/parallel_best.pt` is a format-1 `best.pt` of a tiny `model=parallel` run, written by
the code before format 2; `parallel_expected.pt` holds a batch and what that code's model computed on it."""
from __future__ import annotations

from pathlib import Path

import torch

from action_decoder.models.losses import transcript_loss
from action_decoder.training.checkpoint import FORMAT_VERSION
from action_decoder.training.evaluate import load_model_from_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoint_v1"


def test_format_1_checkpoint_loads_strictly_and_scores_the_same():
    assert torch.load(FIXTURES / "parallel_best.pt", weights_only=True)["format_version"] == 1
    model, _, _, ckpt = load_model_from_checkpoint(FIXTURES / "parallel_best.pt")  # strict: raises on any key
    assert ckpt["format_version"] == FORMAT_VERSION
    expected = torch.load(FIXTURES / "parallel_expected.pt", weights_only=True)
    model.eval()
    with torch.no_grad():
        out = model(expected["batch"])
    torch.testing.assert_close(out.action_logits, expected["action_logits"])
    torch.testing.assert_close(out.click_logits, expected["click_logits"])
    torch.testing.assert_close(transcript_loss(out.transcript_hidden, out.transcript_targets, out.transcript_head),
                               expected["transcript_loss"])
