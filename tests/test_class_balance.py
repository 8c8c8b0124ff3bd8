"""loss.class_balance: class-balanced cross-entropy for the action and key heads, with the class
counts of the training clips."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from action_decoder.data.vocab import IGNORE_INDEX
from action_decoder.models.losses import build_loss, class_balance_weights
from action_decoder.models.outputs import Outputs


def _outputs(action_logits: torch.Tensor) -> Outputs:
    B, T, _ = action_logits.shape
    return Outputs(action_logits=action_logits, key_logits=torch.zeros(B, T, 3), modifier_logits=torch.zeros(B, T, 2),
                   click_logits=torch.zeros(B, T, 4), token_xy=torch.rand(B, T, 4, 2), token_cell=(0.5, 0.5),
                   frame_features=torch.zeros(B, T, 8))


def _batch(action: list[int]) -> dict[str, torch.Tensor]:
    T = len(action)
    return {"action": torch.tensor([action]), "key": torch.full((1, T), IGNORE_INDEX),
            "modifier": torch.full((1, T), IGNORE_INDEX), "click_xy": torch.zeros(1, T, 2),
            "click_mask": torch.zeros(1, T, dtype=torch.bool)}


LOSS = {"weights": {"action": 1.0, "key": 1.0, "modifier": 1.0, "click": 1.0}, "click_sigma": 0.0}
# 90 frames of class 0, 10 of class 1, none of class 2 (a class the split lacks weighs as one frame).
COUNTS = {"action": np.array([90, 10, 0]), "key": np.array([1, 1, 1]), "modifier": np.array([5, 5])}


def test_weights_follow_the_documented_formula():
    w = class_balance_weights(COUNTS["action"], 1.0)
    assert torch.allclose(w, torch.tensor([1.0, 9.0, 90.0]))
    assert torch.allclose(class_balance_weights(COUNTS["action"], 0.5), torch.tensor([1.0, 3.0, math.sqrt(90)]))
    assert torch.equal(class_balance_weights(COUNTS["action"], 0.0), torch.ones(3))


def test_the_knob_reweights_the_action_loss_towards_rare_classes():
    # Frames: four of the common class (predicted right), one of the rare class (predicted wrong).
    logits = torch.tensor([[[3.0, 0.0, 0.0]] * 4 + [[3.0, 0.0, 0.0]]])
    batch = _batch([0, 0, 0, 0, 1])
    ce = torch.nn.functional.cross_entropy(logits[0], batch["action"][0], reduction="none")

    plain = build_loss({**LOSS, "class_balance": 0.0})(_outputs(logits), batch)["action"]
    assert torch.allclose(plain, ce.mean())  # off: the plain mean, counts not even needed
    balanced = build_loss({**LOSS, "class_balance": 1.0}, class_counts=COUNTS)(_outputs(logits), batch)["action"]
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 9.0])
    assert torch.allclose(balanced, (w * ce).sum() / w.sum())  # weighted mean sum(w_y CE) / sum(w_y)
    assert balanced > 2 * plain  # the rare frame's mistake now dominates


def test_the_modifier_head_is_not_reweighted():
    logits = torch.tensor([[[0.0, 2.0]] * 3 + [[2.0, 0.0]]])
    batch = {**_batch([0, 0, 0, 0]), "modifier": torch.tensor([[0, 0, 0, 1]])}
    outputs = Outputs(**{**_outputs(torch.zeros(1, 4, 3)).__dict__, "modifier_logits": logits})
    counts = {**COUNTS, "modifier": np.array([100, 1])}
    plain = build_loss({**LOSS, "class_balance": 0.0})(outputs, batch)["modifier"]
    balanced = build_loss({**LOSS, "class_balance": 1.0}, class_counts=counts)(outputs, batch)["modifier"]
    assert torch.equal(plain, balanced)


def test_balance_without_counts_or_negative_is_refused():
    with pytest.raises(ValueError, match="class counts"):
        build_loss({**LOSS, "class_balance": 1.0})
    with pytest.raises(ValueError, match="class_balance"):
        build_loss({**LOSS, "class_balance": -1.0}, class_counts=COUNTS)


def test_label_counts_count_the_training_clips(tmp_path):
    """ClipDataset.label_counts: frames per class over its clips, ignoring frames a head does not apply to."""
    from action_decoder.config import load_config
    from action_decoder.data.clips import ClipDataset
    from action_decoder.data.tokenizer import build_tokenizer
    from action_decoder.data.vocab import LabelVocab
    from tests.episodes import make_episode, write_jsonl

    cfg = load_config()
    vocab = LabelVocab.from_config(cfg.labels)
    ep = make_episode(tmp_path / "ep.mp4", 8)
    ep["action"] = ["type"] * 3 + ["none"] * 5
    ep["key"] = ["a", "b", "a"] + [None] * 5
    ds = ClipDataset(write_jsonl(tmp_path / "train.jsonl", [ep]), clip_len=4, clip_stride=4, image_size=[16, 24],
                     mean=[0.5] * 3, std=[0.5] * 3, tokenizer=build_tokenizer("small"), vocab=vocab)
    counts = ds.label_counts({"action": len(vocab.actions), "key": len(vocab.keys)})
    assert counts["action"][vocab.actions.id("type")] == 3 and counts["action"][vocab.actions.id("none")] == 5
    assert counts["key"][vocab.keys.id("a")] == 2 and counts["key"].sum() == 3
