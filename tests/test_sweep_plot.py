"""eval.py sweep=...: sweep.png, the held-out metric against LoRA rank, one line per alpha, from the runs."""
from __future__ import annotations

import pytest

from action_decoder.evaluation.plots import plot_sweep
from action_decoder.evaluation.sweeps import sweep_series, sweep_table
from tests.test_plots import assert_png, fake_records, write_run


def test_sweep_plot_is_drawn_from_the_sweeps_runs(tmp_path):
    sweep = tmp_path / "sweep"
    runs = {  # r, alpha -> best val macro-F1 (fake_records sets macro-F1 = acc - 0.1)
        (0, None): 0.60, (4, 16): 0.70, (8, 16): 0.75, (4, 32): 0.72, (8, 32): 0.80,
    }
    for i, ((r, alpha), acc) in enumerate(runs.items()):
        overrides = [f"backbone.lora.r={r}", "seed=0"] + ([f"backbone.lora.alpha={alpha}"] if alpha else [])
        write_run(sweep / str(i), fake_records(epochs=2, acc=[acc - 0.2, acc + 0.1]), overrides)
    rows = sweep_table(sorted(p for p in sweep.iterdir()))
    series = sweep_series(rows)
    # r = 0 (no adapters, no alpha) starts both alpha lines; each point is that run's best val macro-F1.
    assert list(series) == ["16", "32"]
    assert [x for x, _ in series["16"]] == [x for x, _ in series["32"]] == [0, 4, 8]
    assert [v for _, v in series["16"]] == pytest.approx([0.60, 0.70, 0.75])
    assert [v for _, v in series["32"]] == pytest.approx([0.60, 0.72, 0.80])
    assert_png(plot_sweep(rows, sweep / "sweep.png"))
    with pytest.raises(ValueError, match="train.lr"):
        sweep_series(rows, x="train.lr")
