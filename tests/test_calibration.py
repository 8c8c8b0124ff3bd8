"""Temperature scaling of the action head (evaluation/calibration.py) on logits whose true temperature is known."""
from __future__ import annotations

import torch

from action_decoder.evaluation.calibration import action_temperature, fit_temperature, reliability


def overconfident(n=20000, classes=6, scale=3.0, seed=0):
    """Labels drawn from softmax(z); the model reports scale * z: over-confident by exactly `scale`."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return z * scale, labels


def test_fitted_temperature_recovers_the_overconfidence_and_lowers_ece():
    logits, labels = overconfident()
    t = fit_temperature(logits, labels)
    assert abs(t - 3.0) < 0.15
    ece_before, rows = reliability(torch.softmax(logits, -1), labels)
    ece_after, _ = reliability(torch.softmax(logits / t, -1), labels)
    assert ece_after < 0.02 < 0.1 < ece_before
    assert sum(r[2] for r in rows) == len(labels)
    for conf, acc, n in rows:
        assert n == 0 or (0 <= acc <= 1 and 0 <= conf <= 1)


def test_a_calibrated_model_keeps_temperature_one_and_argmax():
    logits, labels = overconfident(scale=1.0, seed=1)
    t = fit_temperature(logits, labels)
    assert abs(t - 1.0) < 0.08
    assert torch.equal((logits / t).argmax(-1), logits.argmax(-1))


def test_uncalibrated_checkpoints_read_as_temperature_one():
    assert action_temperature({"state": {}}) == 1.0
    assert action_temperature({"calibration": {"action_temperature": 1.7}}) == 1.7
