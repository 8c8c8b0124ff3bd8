"""ActionLoss: masked heads, click targets (hard and Gaussian), weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from action_decoder.config import load_config
from action_decoder.models.losses import ActionLoss, build_loss, masked_cross_entropy, transcript_loss
from action_decoder.models.outputs import Outputs

GRID = 4  # 4 x 4 tokens a frame


def grid_xy() -> torch.Tensor:
    hw = torch.stack(torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij"), -1).reshape(-1, 2)
    return torch.stack(((hw[:, 1] + 0.5) / GRID, (hw[:, 0] + 0.5) / GRID), -1).float()  # (x, y)


def make_outputs(B=2, T=3, A=11, K=7, M=16, seed=0, requires_grad=True) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    N = GRID * GRID

    def rand(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    return Outputs(
        action_logits=rand(B, T, A),
        key_logits=rand(B, T, K),
        modifier_logits=rand(B, T, M),
        click_logits=rand(B, T, N),
        token_xy=grid_xy().expand(B, T, N, 2),
        token_cell=(1 / GRID, 1 / GRID),
        frame_features=torch.zeros(B, T, 8),
    )


def make_batch(B=2, T=3) -> dict[str, torch.Tensor]:
    return {
        "action": torch.tensor([[0, 2, 8], [1, 9, 2]]),
        "key": torch.tensor([[-100, -100, 5], [-100, 3, -100]]),
        "modifier": torch.tensor([[-100, 0, 0], [-100, 1, 0]]),
        "click_xy": torch.tensor([[[0.0, 0.0], [0.3, 0.7], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.9, 0.1]]]),
        "click_mask": torch.tensor([[False, True, False], [False, False, True]]),
    }


def test_heads_are_cross_entropy_over_labelled_frames_only():
    out, batch = make_outputs(), make_batch()
    losses = ActionLoss({"action": 1, "key": 1, "modifier": 1, "click": 1})(out, batch)
    valid = batch["key"] != -100
    torch.testing.assert_close(losses["key"], F.cross_entropy(out.key_logits[valid], batch["key"][valid]))
    valid = batch["modifier"] != -100
    torch.testing.assert_close(
        losses["modifier"], F.cross_entropy(out.modifier_logits[valid], batch["modifier"][valid])
    )
    torch.testing.assert_close(
        losses["action"], F.cross_entropy(out.action_logits.flatten(0, 1), batch["action"].flatten())
    )


def test_head_without_any_label_contributes_zero_not_nan():
    out, batch = make_outputs(), make_batch()
    batch["key"][:] = -100
    batch["click_mask"][:] = False
    losses = ActionLoss({"action": 1, "key": 1, "modifier": 1, "click": 1})(out, batch)
    assert losses["key"].item() == 0.0 and losses["click"].item() == 0.0
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    # Still part of the graph (DDP needs a gradient for every parameter), with zero gradient.
    assert out.key_logits.grad is not None and (out.key_logits.grad == 0).all()
    assert out.click_logits.grad is not None and (out.click_logits.grad == 0).all()
    assert masked_cross_entropy(torch.randn(0, 5), torch.zeros(0, dtype=torch.long)).item() == 0.0


def test_click_target_is_the_nearest_token_and_unmasked_frames_do_not_count():
    out, batch = make_outputs(), make_batch()
    loss = ActionLoss({"click": 1.0}, click_sigma=0.0)
    # (0.3, 0.7) on a 4x4 grid: column 1 (x 0.25..0.5), row 2 (y 0.5..0.75) -> token 2*4+1 = 9;
    # (0.9, 0.1): column 3, row 0 -> token 3.
    logits = out.click_logits
    want = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 2]]), torch.tensor([9, 3]))
    torch.testing.assert_close(loss(out, batch)["click"], want)

    # Logits of frames without a click target are ignored entirely.
    other = make_outputs()
    with torch.no_grad():
        other.click_logits[0, 0] += 100.0
        other.click_logits[1, 1] -= 50.0
    torch.testing.assert_close(loss(other, batch)["click"], want)

    # A confident prediction of the right token gives ~0 loss.
    sharp = make_outputs(requires_grad=False)
    sharp.click_logits = torch.full_like(sharp.click_logits, -30.0)
    sharp.click_logits[0, 1, 9] = 30.0
    sharp.click_logits[1, 2, 3] = 30.0
    assert loss(sharp, batch)["click"].item() < 1e-6


def test_gaussian_click_target_penalises_near_misses_less():
    batch = make_batch()
    soft = ActionLoss({"click": 1.0}, click_sigma=0.1)

    def predicting(token_a: int, token_b: int) -> torch.Tensor:
        out = make_outputs(requires_grad=False)
        out.click_logits = torch.full_like(out.click_logits, -20.0)
        out.click_logits[0, 1, token_a] = 20.0
        out.click_logits[1, 2, token_b] = 20.0
        return soft(out, batch)["click"]

    exact, neighbour, far = predicting(9, 3), predicting(10, 7), predicting(6, 12)  # 10 is beside 9, 7 below 3
    assert exact < neighbour < far
    # A vanishing sigma is the hard nearest-token target.
    out = make_outputs()
    tiny = ActionLoss({"click": 1.0}, click_sigma=1e-4)(out, batch)["click"]
    hard = ActionLoss({"click": 1.0}, click_sigma=0.0)(out, batch)["click"]
    torch.testing.assert_close(tiny, hard)


def test_total_is_the_weighted_sum_from_config():
    cfg = load_config(["loss.weights.click=2.5", "loss.weights.key=0", "loss.class_balance=0"])
    loss_fn = build_loss(cfg.loss)
    losses = loss_fn(make_outputs(), make_batch())
    assert set(losses) == {"action", "key", "modifier", "click", "total"}
    want = losses["action"] + losses["modifier"] + 2.5 * losses["click"]
    torch.testing.assert_close(losses["total"], want)


def test_bad_loss_settings_are_rejected():
    with pytest.raises(ValueError, match="clik"):
        ActionLoss({"clik": 1.0})
    with pytest.raises(ValueError, match="click_sigma"):
        ActionLoss({"click": 1.0}, click_sigma=-0.1)


def transcript_outputs(vocab=50, width=8, seed=0):
    """Outputs with a transcript: hidden states [2, 3, 4, width], a bias-free LM head, targets with -100 tails."""
    g = torch.Generator().manual_seed(seed)
    out = make_outputs()
    head = torch.nn.Linear(width, vocab, bias=False)
    calls = []
    head.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    targets = torch.randint(0, vocab, (2, 3, 4), generator=g)
    lengths = torch.tensor([[1, 4, 2], [3, 1, 4]])
    targets[torch.arange(4) >= lengths.unsqueeze(-1)] = -100
    out.transcript_hidden = torch.randn(2, 3, 4, width, generator=g, requires_grad=True)
    out.transcript_targets, out.transcript_head = targets, head
    return out, head, calls


def test_transcript_loss_in_chunks_equals_full_cross_entropy_with_its_gradients():
    out, head, calls = transcript_outputs()
    rows = out.transcript_targets != -100
    full = F.cross_entropy(head(out.transcript_hidden)[rows], out.transcript_targets[rows])
    want = torch.autograd.grad(full, [out.transcript_hidden, head.weight])
    calls.clear()
    # 3 rows of 50 words per chunk: 14 target rows in 5 chunks, each one made again in the backward pass.
    chunked = transcript_loss(out.transcript_hidden, out.transcript_targets, head, logits_per_chunk=150)
    got = torch.autograd.grad(chunked, [out.transcript_hidden, head.weight])
    torch.testing.assert_close(chunked, full)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert max(calls) <= 3 and sum(calls) == 1 + 2 * int(rows.sum())  # (+1: one row to read the vocab size)


def test_transcript_weight_zero_computes_no_logits_but_keeps_the_graph():
    out, head, calls = transcript_outputs()
    batch = make_batch()
    losses = ActionLoss({"transcript": 0.0})(out, batch)
    assert "transcript" not in losses and calls == []
    losses["total"].backward()
    assert out.transcript_hidden.grad is not None and out.transcript_hidden.grad.abs().max() == 0
    with_text = ActionLoss({"transcript": 0.5})(transcript_outputs()[0], batch)
    torch.testing.assert_close(with_text["total"] - 0.5 * with_text["transcript"], losses["total"])
