"""ActionMetrics on hand-computed cases: what validation and eval.py report."""

import json
from types import SimpleNamespace

import pytest
import torch

from action_decoder.config import load_config
from action_decoder.evaluation.metrics import ActionMetrics, confusion_summary, majority_baseline, scalars

ACTIONS = ["none", "move", "click"]
KEYS = ["a", "b", "enter"]
MODS = ["none", "shift"]
IGN = -100


def one_hot_logits(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Logits whose argmax is `ids` (ignored positions predict class 0)."""
    return torch.nn.functional.one_hot(ids.clamp(min=0), n).float() * 5.0


def make_batch(action, key, modifier, click_xy=None, click_mask=None):
    action = torch.tensor(action)
    b, t = action.shape
    return {
        "action": action,
        "key": torch.tensor(key),
        "modifier": torch.tensor(modifier),
        "click_xy": torch.zeros(b, t, 2) if click_xy is None else torch.tensor(click_xy, dtype=torch.float32),
        "click_mask": torch.zeros(b, t, dtype=torch.bool) if click_mask is None else torch.tensor(click_mask),
    }


def as_outputs(fields: dict) -> SimpleNamespace:
    """What ActionMetrics reads of the model's Outputs (no transcript decoder)."""
    return SimpleNamespace(transcript_targets=None, **fields)


def outputs_for(pred_action, pred_key, pred_mod, pred_xy):
    return as_outputs({
        "action_logits": one_hot_logits(torch.tensor(pred_action), len(ACTIONS)),
        "key_logits": one_hot_logits(torch.tensor(pred_key), len(KEYS)),
        "modifier_logits": one_hot_logits(torch.tensor(pred_mod), len(MODS)),
        "click_xy": torch.tensor(pred_xy, dtype=torch.float32),
    })


def random_batch(gen: torch.Generator, b=3, t=5):
    action = torch.randint(0, len(ACTIONS), (b, t), generator=gen)
    key = torch.where(torch.rand(b, t, generator=gen) < 0.4, torch.randint(0, len(KEYS), (b, t), generator=gen), IGN)
    mod = torch.where(torch.rand(b, t, generator=gen) < 0.6, torch.randint(0, len(MODS), (b, t), generator=gen), IGN)
    mask = torch.rand(b, t, generator=gen) < 0.5
    batch = {"action": action, "key": key, "modifier": mod, "click_xy": torch.rand(b, t, 2, generator=gen) * mask[..., None],
             "click_mask": mask}
    outputs = {
        "action_logits": torch.randn(b, t, len(ACTIONS), generator=gen),
        "key_logits": torch.randn(b, t, len(KEYS), generator=gen),
        "modifier_logits": torch.randn(b, t, len(MODS), generator=gen),
        "click_xy": (batch["click_xy"] + torch.randn(b, t, 2, generator=gen) * 0.05).clamp(0, 1),
    }
    return as_outputs(outputs), batch


def test_perfect_predictions_score_one():
    batch = make_batch(
        action=[[0, 1, 2, 2]],
        key=[[IGN, 0, IGN, 2]],
        modifier=[[IGN, IGN, 1, 0]],
        click_xy=[[[0, 0], [0, 0], [0.3, 0.7], [0.9, 0.1]]],
        click_mask=[[False, False, True, True]],
    )
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    m.update(outputs_for([[0, 1, 2, 2]], [[0, 0, 0, 2]], [[0, 0, 1, 0]], batch["click_xy"].tolist()), batch)
    r = m.compute()
    assert r["action_acc"] == 1.0 and r["action_macro_f1"] == 1.0
    assert r["action_per_class_acc"] == {"none": 1.0, "move": 1.0, "click": 1.0}
    assert r["key_acc"] == 1.0 and r["modifier_acc"] == 1.0
    assert r["click_hit_rate"] == 1.0 and r["click_mean_dist"] == 0.0
    assert r["action_confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert (r["n_frames"], r["n_key_frames"], r["n_modifier_frames"], r["n_click_frames"]) == (4, 2, 2, 2)
    json.dumps(r)  # the result goes into metrics.jsonl as is


def test_known_confusion_gives_hand_computed_per_class_acc_and_macro_f1():
    # targets: none x4, move x2, click x2; predictions below (click never predicted right)
    target = [[0, 0, 0, 0, 1, 1, 2, 2]]
    pred = [[0, 0, 0, 1, 1, 0, 1, 0]]
    n = len(target[0])
    batch = make_batch(target, [[IGN] * n], [[IGN] * n])
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    m.update(outputs_for(pred, [[0] * n], [[0] * n], [[[0, 0]] * n]), batch)
    r = m.compute()
    # confusion rows = target: none -> [3,1,0], move -> [1,1,0], click -> [1,1,0]
    assert r["action_confusion"] == [[3, 1, 0], [1, 1, 0], [1, 1, 0]]
    assert r["action_acc"] == pytest.approx(4 / 8)
    assert r["action_per_class_acc"] == pytest.approx({"none": 3 / 4, "move": 1 / 2, "click": 0.0})
    # F1 = 2TP / (targets + predictions): none 6/(4+5), move 2/(2+3), click 0/(2+0)
    f1 = {"none": 6 / 9, "move": 2 / 5, "click": 0.0}
    assert r["action_per_class_f1"] == pytest.approx(f1)
    assert r["action_macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    # key / modifier heads never applied: undefined, not 0 or 1
    assert r["key_acc"] is None and r["modifier_acc"] is None and r["click_hit_rate"] is None


def test_macro_f1_covers_classes_in_targets_or_predictions_only():
    # 'click' never occurs and is never predicted: left out. 'move' is predicted but never a target: F1 0.
    s = confusion_summary([[2, 1, 0], [0, 0, 0], [0, 0, 0]], ACTIONS)
    assert s["per_class_f1"] == pytest.approx({"none": 4 / 5, "move": 0.0, "click": None})
    assert s["macro_f1"] == pytest.approx((4 / 5 + 0.0) / 2)
    assert s["per_class_acc"]["move"] is None


def test_ignored_frames_are_excluded_from_key_and_modifier_accuracy():
    batch = make_batch(action=[[0, 0, 0, 0]], key=[[IGN, 1, IGN, 2]], modifier=[[1, IGN, IGN, IGN]])
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    # wrong predictions only on the ignored frames
    m.update(outputs_for([[0, 0, 0, 0]], [[0, 1, 0, 2]], [[1, 0, 0, 0]], [[[0, 0]] * 4]), batch)
    r = m.compute()
    assert r["key_acc"] == 1.0 and r["n_key_frames"] == 2
    assert r["modifier_acc"] == 1.0 and r["n_modifier_frames"] == 1
    # and a wrong prediction on an applicable frame counts
    m.update(outputs_for([[0, 0, 0, 0]], [[0, 0, 0, 0]], [[0, 0, 0, 0]], [[[0, 0]] * 4]), batch)
    r = m.compute()
    assert r["key_acc"] == pytest.approx(2 / 4) and r["modifier_acc"] == pytest.approx(1 / 2)


def test_click_hit_within_radius_and_miss_outside():
    target = [[[0.5, 0.5], [0.5, 0.5], [0.2, 0.2], [0.9, 0.9]]]
    pred = [[[0.524, 0.532], [0.5, 0.56], [0.9, 0.9], [0.0, 0.0]]]  # distances 0.04, 0.06, -, 1.27
    batch = make_batch([[2, 2, 0, 2]], [[IGN] * 4], [[0, 0, IGN, 0]], target, [[True, True, False, True]])
    m = ActionMetrics(ACTIONS, KEYS, MODS, click_radius=0.05)
    m.update(outputs_for([[2, 2, 0, 2]], [[0] * 4], [[0] * 4], pred), batch)
    r = m.compute()
    far = (0.9**2 * 2) ** 0.5
    assert r["n_click_frames"] == 3  # the unmasked frame's far-off prediction does not count
    assert r["click_hit_rate"] == pytest.approx(1 / 3)
    assert r["click_mean_dist"] == pytest.approx((0.04 + 0.06 + far) / 3, abs=1e-6)
    wider = ActionMetrics(ACTIONS, KEYS, MODS, click_radius=0.07)
    wider.update(outputs_for([[2, 2, 0, 2]], [[0] * 4], [[0] * 4], pred), batch)
    assert wider.compute()["click_hit_rate"] == pytest.approx(2 / 3)


def test_majority_baseline_of_targets():
    target = [[0, 0, 0, 1, 2, 2]]
    batch = make_batch(target, [[IGN] * 6], [[IGN] * 6])
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    m.update(outputs_for([[1] * 6], [[0] * 6], [[0] * 6], [[[0, 0]] * 6]), batch)
    r = m.compute()
    assert r["action_majority_class"] == "none"
    assert r["action_majority_acc"] == pytest.approx(3 / 6)
    # always 'none': F1(none) = 2*3 / (3 + 6); move, click present in targets with F1 0
    assert r["action_majority_macro_f1"] == pytest.approx((6 / 9) / 3)
    assert majority_baseline([[0, 0], [0, 0]], ["a", "b"]) == {"acc": None, "macro_f1": None, "class": None}


def test_summed_counts_of_two_accumulators_equal_one_over_all_data():
    gen = torch.Generator().manual_seed(0)
    data = [random_batch(gen) for _ in range(6)]
    whole, first, second = (ActionMetrics(ACTIONS, KEYS, MODS) for _ in range(3))
    for i, (out, batch) in enumerate(data):
        whole.update(out, batch)
        (first if i < 2 else second).update(out, batch)
    whole.update_transcripts(["a b", "", "c"], ["a c", "x", ""])
    first.update_transcripts(["a b"], ["a c"])
    second.update_transcripts(["", "c"], ["x", ""])
    # what a multi-process validation reduces: the sum of the per-process count tensors
    rebuilt = ActionMetrics(ACTIONS, KEYS, MODS)
    rebuilt.load_state({k: v + second.state()[k] for k, v in first.state().items()})
    assert rebuilt.compute() == whole.compute()
    assert whole.compute()["n_frames"] == 6 * 3 * 5


def test_out_of_range_class_id_is_an_error_not_a_silent_count():
    batch = make_batch([[0, 5]], [[IGN, IGN]], [[IGN, IGN]])
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    with pytest.raises(ValueError, match="action class id out of range"):
        m.update(outputs_for([[0, 0]], [[0, 0]], [[0, 0]], [[[0, 0]] * 2]), batch)


def test_update_takes_the_config_vocabulary():
    labels = load_config([]).labels
    keys = labels["keys"]  # not labels.keys: that is DictConfig's dict method
    m = ActionMetrics(labels.actions, keys, labels.modifiers)
    b, t = 2, 4
    batch = {
        "action": torch.full((b, t), labels.actions.index("hotkey")),
        "key": torch.full((b, t), list(keys).index("c")),
        "modifier": torch.full((b, t), labels.modifiers.index("ctrl")),
        "click_xy": torch.zeros(b, t, 2),
        "click_mask": torch.zeros(b, t, dtype=torch.bool),
    }
    outputs = {
        "action_logits": one_hot_logits(batch["action"], len(labels.actions)),
        "key_logits": one_hot_logits(batch["key"], len(keys)),
        "modifier_logits": one_hot_logits(batch["modifier"], len(labels.modifiers)),
        "click_xy": torch.zeros(b, t, 2),
    }
    with pytest.raises(TypeError, match=r"cfg.labels\['keys'\]"):
        ActionMetrics(labels.actions, labels.keys, labels.modifiers)  # the DictConfig method, not the vocabulary
    m.update(as_outputs(outputs), batch)
    r = m.compute()
    assert r["action_per_class_acc"]["hotkey"] == 1.0 and r["key_acc"] == 1.0 and r["n_frames"] == 8


def test_transcript_cer_wer_exact_match():
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    assert "transcript_wer" not in m.compute()
    # frame 1: 1 substituted word of 2; frame 2: exact; frame 3 silent and quiet; frame 4 silent but text
    m.update_transcripts(["hello wrld", "now  click", "", "um"], ["hello world", "now click", " ", ""])
    r = m.compute()
    assert r["transcript_wer"] == pytest.approx((1 + 0 + 1) / 4)  # 'um' is an insertion
    assert r["transcript_cer"] == pytest.approx((1 + 0 + 2) / (11 + 9))
    assert r["transcript_exact_match"] == pytest.approx(1 / 2)
    assert r["transcript_false_text_rate"] == pytest.approx(1 / 2)
    assert r["n_narrated_frames"] == 2
    assert r["transcript_missed_rate"] == 0.0
    m.update_transcripts(["", "go"], ["open it", ""])  # a narrated frame left empty, a silent one with text
    r = m.compute()
    assert r["transcript_missed_rate"] == pytest.approx(1 / 3) and r["transcript_false_text_rate"] == pytest.approx(2 / 3)


def test_teacher_forced_token_accuracy_and_speak_auc():
    # One clip, 3 frames, vocabulary of 4 ids, eof = 3. Frame 0 silent (target: eof), frames 1-2 narrated.
    eof, V = 3, 4
    targets = torch.tensor([[[eof, -100, -100], [1, 2, eof], [2, eof, -100]]])
    p_first = [0.9, 0.2, 0.95]  # p(eof) at each frame's first slot
    probs = torch.full((1, 3, 3, V), 0.1)
    for t, p in enumerate(p_first):
        probs[0, t, 0] = torch.tensor([(1 - p) / 3] * 3 + [p])
    probs[0, 1, 0] = torch.tensor([0.1, 0.6, 0.1, 0.2])  # right (1)
    probs[0, 1, 1] = torch.tensor([0.7, 0.1, 0.1, 0.1])  # wrong (want 2)
    probs[0, 1, 2] = torch.tensor([0.1, 0.1, 0.1, 0.7])  # right (eof)
    probs[0, 2, 1] = torch.tensor([0.1, 0.1, 0.1, 0.7])  # right (eof); frame 2's slot 0 (p_eof .95) says eof: wrong
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    m.update_teacher_forced(probs.log(), targets)
    r = m.compute()
    # hits: frame 0 slot 0 (eof), frame 1 slots 0 and 2, frame 2 slot 1 -> 4 of 6 targets
    assert r["transcript_token_acc"] == pytest.approx(4 / 6)
    # silent p_eof 0.9 vs narrated 0.2 (ranked right) and 0.95 (ranked wrong) -> AUC 1/2
    assert r["transcript_speak_auc"] == pytest.approx(0.5)
    assert r["transcript_cer"] is None  # nothing generated yet: CER is undefined, not 0
    m.update_teacher_forced(probs.log()[:, :2], targets[:, :2])  # the well-ranked pair again
    assert m.compute()["transcript_speak_auc"] == pytest.approx(4 / 6)  # each 0.9 beats both 0.2s, not 0.95


def test_scalars_flattens_numbers_for_the_metrics_log():
    gen = torch.Generator().manual_seed(1)
    m = ActionMetrics(ACTIONS, KEYS, MODS)
    m.update(*random_batch(gen))
    flat = scalars(m.compute())
    assert flat["action_acc"] == m.compute()["action_acc"]
    assert "action_per_class_acc/click" in flat and "action_confusion" not in flat
    assert all(v is None or isinstance(v, (int, float)) for v in flat.values())
