"""eval.py's prompt ablation (eval.prompt) and the event rule tuned on val (tune_events), through the real CLI."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from action_decoder.evaluation.evaluate import ablate_prompts
from tests.conftest import only_run_dir, run_eval, run_train


@pytest.fixture(scope="module")
def tiny_run(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablations")
    run_train(prepared_data, out, "train.epochs=1", "train.max_val_steps=null")
    return only_run_dir(out)


def eval_json(run, prepared, split: str, suffix: str = "") -> dict:
    folder = run / "eval" / f"best_{split}_{prepared.parent.name}-{prepared.name}{suffix}"
    return json.loads((folder / "eval.json").read_text())


@pytest.mark.e2e
def test_prompt_ablation_scores_the_same_frames_three_ways(tiny_run, prepared_data):
    for mode in ("true", "empty", "shuffled"):
        proc = run_eval(f"checkpoint={tiny_run / 'best.pt'}", "split=val", f"eval.prompt={mode}")
        assert f"(prompt: {mode})" in proc.stdout
    own = eval_json(tiny_run, prepared_data, "val")
    empty = eval_json(tiny_run, prepared_data, "val", "_prompt-empty")
    shuffled = eval_json(tiny_run, prepared_data, "val", "_prompt-shuffled")
    assert (own["prompt"], empty["prompt"], shuffled["prompt"]) == ("true", "empty", "shuffled")
    assert own["metrics"]["n_frames"] == empty["metrics"]["n_frames"] == shuffled["metrics"]["n_frames"]
    # the prompt reaches the model: another prompt, or none, changes what it predicts
    assert own["loss"]["total"] != pytest.approx(empty["loss"]["total"], rel=1e-7)
    assert own["loss"]["total"] != pytest.approx(shuffled["loss"]["total"], rel=1e-7)


@pytest.mark.e2e
def test_event_rule_tuned_on_val_is_stored_and_applied_by_eval(tiny_run, prepared_data):
    ckpt = tiny_run / "best.pt"
    proc = run_eval(f"checkpoint={ckpt}", "split=val", "tune_events=true")
    assert "tuned on this split and stored in the checkpoint" in proc.stdout
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["event_rule"]
    assert stored["tuned_on"]["split"] == "val"
    assert stored["tuned_on"]["event_f1"] >= stored["tuned_on"]["event_f1_argmax"]
    run_eval(f"checkpoint={ckpt}", "split=val")
    result = eval_json(tiny_run, prepared_data, "val")
    assert result["event_rule"] == {k: stored[k] for k in ("bias", "merge", "fill")}
    assert result["metrics"]["event_f1"] == pytest.approx(stored["tuned_on"]["event_f1"] or 0.0, abs=1e-9)
    assert result["event_argmax"]["event_f1"] == pytest.approx(stored["tuned_on"]["event_f1_argmax"] or 0.0, abs=1e-9)


def test_shuffled_prompts_are_another_episodes_and_deterministic():
    def dataset():
        prompts = {"b": [1, 2], "a": [3], "c": [1, 2], "d": [4]}
        return SimpleNamespace(episodes=[SimpleNamespace(id=k, prompt_ids=np.array(v)) for k, v in prompts.items()])

    first, second = dataset(), dataset()
    ablate_prompts(first, "shuffled")
    ablate_prompts(second, "shuffled")
    own = {e.id: e.prompt_ids.tolist() for e in dataset().episodes}
    got = {e.id: e.prompt_ids.tolist() for e in first.episodes}
    assert got == {e.id: e.prompt_ids.tolist() for e in second.episodes}
    assert all(got[k] != own[k] for k in own)
    assert sorted(map(tuple, got.values())) != [] and set(map(tuple, got.values())) <= set(map(tuple, own.values()))
    empty = dataset()
    ablate_prompts(empty, "empty")
    assert all(len(e.prompt_ids) == 0 for e in empty.episodes)
    with pytest.raises(ValueError, match="eval.prompt"):
        ablate_prompts(dataset(), "random")
