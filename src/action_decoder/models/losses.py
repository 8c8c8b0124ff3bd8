"""Outputs + batch -> named losses and their weighted total (docs/design.md §4).

- action / key / modifier: cross-entropy per frame, frames labelled -100 ignored. A head with no
  valid frame in the batch (e.g. no key presses) contributes an exact 0 that is still attached
  to the graph (so DDP sees a gradient for every parameter), never NaN.
  Class balance of the action and key heads (`loss.class_balance` = beta, 0 = off): a frame of class c weighs
  w_c = (n_c / n_max) ** -beta, n_c its frames in the training split (at least 1), and the head's loss is
  the weighted mean sum(w_y * CE) / sum(w_y) over the batch's frames. beta = 1 is inverse frequency
  (every class counts as much as any other), 0.5 its square root (a milder push towards rare classes).
- click: cross-entropy over the frame's visible tokens, only on frames with a click target.
  Target = the visible token whose centre is nearest to the click (click_sigma = 0), or a
  Gaussian over all visible tokens, exp(-d^2 / 2 sigma^2) normalised, with d the distance from
  the click to each token centre in normalized screen units (click_sigma > 0): neighbours of
  the true token are penalised less than far-away tokens.
- transcript (model=parallel): next-token CE of the Qwen LM head on each frame's transcript tokens
  and its end-of-frame marker, mean over those tokens; prompt and visual positions are never
  targets. Logits are made only at target rows, a chunk of rows at a time, and remade in the backward
  pass instead of kept (at Qwen's 151,936 words, B=4 clips of 16 frames x 17 slots would otherwise hold
  ~0.3 GB of bf16 logits plus their fp32 softmax and its gradient). Absent from the result when the outputs
  carry no transcript (model=original) or its weight is 0 (then not computed at all).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from action_decoder.data.vocab import IGNORE_INDEX

from .outputs import Outputs
LOSS_NAMES = ("action", "key", "modifier", "click", "transcript")
LOGITS_PER_CHUNK = 2**22  # transcript logits made at once (rows x vocab): a few dozen rows at Qwen's vocabulary


# Heads `loss.class_balance` reweights. Not the modifier head: its rare classes (shift, alt, ...) are read
# off the keys held, and balancing it costs modifier accuracy for no gain (README "Results").
CLASS_HEADS = ("action", "key")


def class_balance_weights(counts: Any, beta: float) -> torch.Tensor:
    """(n_c / n_max) ** -beta per class; a class absent from the counts weighs as one frame."""
    n = torch.as_tensor(counts, dtype=torch.float32).clamp(min=1.0)
    return (n / n.max()).pow(-float(beta))


class ActionLoss(nn.Module):
    def __init__(self, weights: Mapping[str, float], click_sigma: float = 0.0, class_balance: float = 0.0,
                 class_counts: Mapping[str, Any] | None = None, recompute_logits: bool = True) -> None:
        """recompute_logits: transcript logits a chunk at a time, remade in backward (False under ZeRO-3, whose
        partitioned LM head cannot be re-gathered inside torch's checkpoint recompute; logits stay target rows only)."""
        super().__init__()
        self.logits_per_chunk = LOGITS_PER_CHUNK if recompute_logits else None
        if class_balance < 0:
            raise ValueError(f"loss.class_balance={class_balance} must be >= 0 (0 = plain cross-entropy)")
        if class_balance > 0 and class_counts is None:
            raise ValueError("loss.class_balance > 0 needs the training split's class counts (ClipDataset.label_counts)")
        # Per-class weights of each head (moved to the logits' device when used); empty when the knob is off.
        self.class_weights = {head: class_balance_weights(class_counts[head], class_balance)
                              for head in (CLASS_HEADS if class_balance > 0 else ())}
        unknown = sorted(set(weights) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"loss.weights has unknown entries {unknown}; known: {list(LOSS_NAMES)}")
        self.weights = {name: float(weights.get(name, 1.0)) for name in LOSS_NAMES}
        if click_sigma < 0:
            raise ValueError(f"loss.click_sigma={click_sigma} must be >= 0 (0 = hard nearest-token target)")
        self.click_sigma = float(click_sigma)

    def forward(self, outputs: Outputs, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = {head: self._weight(head, outputs.action_logits.device) for head in ("action", "key", "modifier")}
        losses = {
            "action": masked_cross_entropy(outputs.action_logits, batch["action"], w["action"]),
            "key": masked_cross_entropy(outputs.key_logits, batch["key"], w["key"]),
            "modifier": masked_cross_entropy(outputs.modifier_logits, batch["modifier"], w["modifier"]),
            "click": self.click_loss(outputs.click_logits, outputs.token_xy, batch["click_xy"], batch["click_mask"]),
        }
        total = sum(self.weights[name] * losses[name] for name in LOSS_NAMES if name in losses)
        if outputs.transcript_hidden is not None:
            if self.weights["transcript"] != 0:
                losses["transcript"] = transcript_loss(outputs.transcript_hidden, outputs.transcript_targets,
                                                       outputs.transcript_head, self.logits_per_chunk)
                total = total + self.weights["transcript"] * losses["transcript"]
            else:  # an exact 0 still attached to the transcript-only parameters (DDP wants a gradient for each)
                total = total + outputs.transcript_hidden.sum() * 0.0
        losses["total"] = total
        return losses

    def _weight(self, head: str, device: torch.device) -> torch.Tensor | None:
        weight = self.class_weights.get(head)
        return None if weight is None else weight.to(device)

    def click_loss(
        self, click_logits: torch.Tensor, token_xy: torch.Tensor, click_xy: torch.Tensor, click_mask: torch.Tensor
    ) -> torch.Tensor:
        """click_logits [B, T, N], token_xy [B, T, N, 2], click_xy [B, T, 2], click_mask [B, T]."""
        mask = click_mask.bool()
        if not mask.any():
            return click_logits.sum() * 0.0
        logits = click_logits[mask].float()  # [M, N]
        dist2 = (token_xy[mask].float() - click_xy[mask].float().unsqueeze(1)).square().sum(-1)  # [M, N]
        if self.click_sigma > 0:
            target = torch.softmax(-dist2 / (2 * self.click_sigma**2), dim=-1)
            return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        return F.cross_entropy(logits, dist2.argmin(dim=-1))


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE over frames whose target is not -100 (weighted mean with per-class `weight`); 0 (attached to
    the graph) when there are none."""
    valid = target != IGNORE_INDEX
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid].float(), target[valid], weight=weight)


def transcript_loss(hidden: torch.Tensor, targets: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                    logits_per_chunk: int | None = LOGITS_PER_CHUNK) -> torch.Tensor:
    """Mean next-token CE of head(hidden) over target rows (transcript tokens + eof).

    hidden [..., Dt], targets [...] (-100 = no target), head: [n, Dt] -> logits [n, V] (the LM head).
    Equal to cross_entropy(head(hidden)[rows], targets[rows]) but never holds more than one chunk of logits:
    each chunk's CE is checkpointed, so its logits are remade in the backward pass rather than stored.
    logits_per_chunk None: one pass over the target rows, logits kept for backward.
    """
    rows = targets != IGNORE_INDEX
    if not rows.any():
        return hidden.sum() * 0.0
    h, y = hidden[rows], targets[rows]  # [M, Dt], [M]
    if logits_per_chunk is None:
        return _cross_entropy_sum(head, h, y) / len(y)
    vocab = head(h[:1]).shape[-1]
    step = max(1, logits_per_chunk // vocab)
    total = sum(checkpoint(_cross_entropy_sum, head, h[i:i + step], y[i:i + step], use_reentrant=False)
                for i in range(0, len(y), step))
    return total / len(y)


def _cross_entropy_sum(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def build_loss(loss_cfg: Mapping[str, Any], weights: Mapping[str, float] | None = None,
               class_counts: Mapping[str, Any] | None = None, recompute_logits: bool = True) -> ActionLoss:
    """`ActionLoss` from `cfg.loss` (its weights, or a curriculum stage's; click_sigma; class_balance with
    the training split's `class_counts`)."""
    weights = dict(loss_cfg["weights"] if weights is None else weights)
    return ActionLoss(weights, float(loss_cfg.get("click_sigma", 0.0)), float(loss_cfg.get("class_balance", 0.0) or 0.0),
                      class_counts, recompute_logits)
