"""Per-frame decoder metrics: one accumulator shared by validation inside training and by `eval.py`.

`ActionMetrics` keeps only summable counts (confusion matrices, hit / distance sums, edit counts),
so per-batch updates and all-reducing across processes give the same numbers as one pass over all
the data. `compute()` turns the counts into a JSON-ready dict.

Typical use::

    m = ActionMetrics(cfg.labels.actions, cfg.labels.keys, cfg.labels.modifiers)
    for batch in loader:
        m.update(model(batch), batch)          # outputs: action/key/modifier logits, click_xy
    m.load_state(reduce_counts(accelerator, m))  # counts summed over processes (training/validate.py)
    result = m.compute()                       # full dict (confusion, per class, ...)
    log(scalars(result))                       # numbers only, flat, for metrics.jsonl / wandb

Multi-process: validation pads each rank's shard by repeating a clip and leaves the repeats out of
`update` (data/loader.py `counted_mask`), so summed counts count each clip once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from action_decoder.data.vocab import IGNORE_INDEX


# Count tensors that make up the state, in a fixed order (state() / load_state()).
_COUNT_KEYS = (
    "action_confusion",  # [A, A] int64, rows = target class, columns = predicted class
    "key_confusion",  # [K, K] int64, key frames only
    "modifier_confusion",  # [M, M] int64, modifier frames only
    "click_hits",  # [] int64, click frames with predicted point within click_radius
    "click_frames",  # [] int64, frames with a click target
    "click_dist_sum",  # [] float64, summed Euclidean distance (normalized units)
    "word_errors",  # [] int64, substitutions + deletions + insertions over words
    "word_ref",  # [] int64, reference words
    "char_errors",  # [] int64, same over characters
    "char_ref",  # [] int64, reference characters
    "narrated_frames",  # [] int64, frames whose reference transcript is not empty
    "narrated_exact",  # [] int64, narrated frames whose prediction equals the reference
    "narrated_missed",  # [] int64, narrated frames where the model wrote nothing
    "silent_frames",  # [] int64, frames with an empty reference transcript
    "silent_false_text",  # [] int64, silent frames where the model still wrote text
    "tf_token_hits",  # [] int64, teacher-forced transcript targets (text + eof) whose argmax is right
    "tf_tokens",  # [] int64, teacher-forced transcript targets
    "speak_hist_narrated",  # [SPEAK_BINS] int64, p(eof) at the first slot of narrated frames, binned
    "speak_hist_silent",  # [SPEAK_BINS] int64, the same on silent frames
)
SPEAK_BINS = 50  # resolution of the speak/silent AUC (ties within a bin count half)


def _names(names: Any, what: str) -> list[str]:
    """A vocabulary as a list of names, with a pointed error for the easy config slip."""
    if callable(names):  # `cfg.labels.keys` is DictConfig's dict method, not the key vocabulary
        raise TypeError(f"{what} is a method, not a list of names: use cfg.labels['keys'] rather than cfg.labels.keys")
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"{what} must be a list of class names, got {type(names).__name__}")
    out = [str(n) for n in names]
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def _div(num: float, den: float) -> float | None:
    """num / den, or None when undefined (JSON has no NaN)."""
    return float(num) / float(den) if den else None


def confusion_summary(confusion: torch.Tensor | Sequence[Sequence[int]], names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall), per-class F1 and macro-F1 from a confusion matrix.

    Rows are targets, columns predictions. Macro-F1 averages the F1 of every class that occurs in the
    targets OR in the predictions: a class the model predicts but that never occurs scores F1 = 0 (so
    spurious predictions cost), a class absent from both is undefined and left out. Per-class values
    are None for classes without targets (accuracy) or absent from both sides (F1).
    """
    cm = torch.as_tensor(confusion, dtype=torch.float64).cpu()
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
        raise ValueError(f"confusion must be [{len(names)}, {len(names)}], got {list(cm.shape)}")
    tp = cm.diagonal()
    n_target = cm.sum(1)
    n_pred = cm.sum(0)
    total = float(cm.sum())
    per_acc: dict[str, float | None] = {}
    per_f1: dict[str, float | None] = {}
    f1s = []
    for i, name in enumerate(names):
        per_acc[name] = _div(tp[i], n_target[i])
        denom = float(n_target[i] + n_pred[i])
        # F1 = 2TP / (2TP + FP + FN) = 2TP / (targets + predictions)
        f1 = 2.0 * float(tp[i]) / denom if denom else None
        per_f1[name] = f1
        if f1 is not None:
            f1s.append(f1)
    return {
        "acc": _div(tp.sum(), total),
        "macro_f1": sum(f1s) / len(f1s) if f1s else None,
        "per_class_acc": per_acc,
        "per_class_f1": per_f1,
        "n": int(total),
    }


def per_class_table(confusion: torch.Tensor | Sequence[Sequence[int]], names: Sequence[str]) -> dict[str, dict]:
    """{class: {precision, recall, f1, support (target frames), predicted (frames predicted as it)}} for every
    class that occurs in the targets or the predictions; undefined values are None."""
    cm = torch.as_tensor(confusion, dtype=torch.float64).cpu()
    tp, n_target, n_pred = cm.diagonal(), cm.sum(1), cm.sum(0)
    table = {}
    for i, name in enumerate(names):
        if n_target[i] + n_pred[i] == 0:
            continue
        table[name] = {"precision": _div(tp[i], n_pred[i]), "recall": _div(tp[i], n_target[i]),
                       "f1": 2.0 * float(tp[i]) / float(n_target[i] + n_pred[i]),
                       "support": int(n_target[i]), "predicted": int(n_pred[i])}
    return table


def majority_baseline(confusion: torch.Tensor | Sequence[Sequence[int]], names: Sequence[str]) -> dict[str, Any]:
    """What always predicting the most frequent target class would score (acc, macro-F1, class name)."""
    cm = torch.as_tensor(confusion, dtype=torch.float64).cpu()
    n_target = cm.sum(1)
    if float(n_target.sum()) == 0:
        return {"acc": None, "macro_f1": None, "class": None}
    major = int(torch.argmax(n_target))  # ties: the lowest class index
    baseline = torch.zeros_like(cm)
    baseline[:, major] = n_target
    s = confusion_summary(baseline, names)
    return {"acc": s["acc"], "macro_f1": s["macro_f1"], "class": names[major]}


def _normalize_text(text: str) -> str:
    """Whitespace-insensitive comparison: runs of spaces collapse, ends are stripped."""
    return " ".join(str(text).split())


class ActionMetrics:
    """Accumulates per-frame metrics of the action decoder over batches (see module docstring).

    Args:
        action_names, key_names, modifier_names: the label vocabularies (conf/labels), class index order.
        click_radius: a predicted click is a hit when its Euclidean distance to the target is
            <= click_radius, in normalized screen units ([0, 1] on both axes).
    """

    def __init__(
        self,
        action_names: Sequence[str],
        key_names: Sequence[str],
        modifier_names: Sequence[str],
        click_radius: float = 0.05,
    ) -> None:
        self.action_names = _names(action_names, "action_names")
        self.key_names = _names(key_names, "key_names")
        self.modifier_names = _names(modifier_names, "modifier_names")
        self.click_radius = float(click_radius)
        self._has_transcripts = False
        self.reset()

    # ----------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget everything seen so far (start of a new validation pass)."""
        a, k, m = len(self.action_names), len(self.key_names), len(self.modifier_names)
        sizes = {"action_confusion": (a, a), "key_confusion": (k, k), "modifier_confusion": (m, m),
                 "speak_hist_narrated": (SPEAK_BINS,), "speak_hist_silent": (SPEAK_BINS,)}
        self._state = {
            name: torch.zeros(sizes.get(name, ()), dtype=torch.float64 if name == "click_dist_sum" else torch.int64)
            for name in _COUNT_KEYS
        }
        self._has_transcripts = False

    def state(self) -> dict[str, torch.Tensor]:
        """The counts as a dict of tensors (on the device of the last update); sum them to combine."""
        return dict(self._state)

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the counts (e.g. with the all-reduced ones); shapes must match this vocabulary."""
        missing = set(_COUNT_KEYS) - set(state)
        if missing:
            raise KeyError(f"state lacks {sorted(missing)}")
        for name in _COUNT_KEYS:
            new = torch.as_tensor(state[name])
            if new.shape != self._state[name].shape:
                raise ValueError(f"state['{name}'] has shape {list(new.shape)}, expected {list(self._state[name].shape)}")
            self._state[name] = new.to(self._state[name].dtype)
        self._has_transcripts = bool(self._state["narrated_frames"] + self._state["silent_frames"]
                                     + self._state["tf_tokens"])

    # --------------------------------------------------------------------------------- updates
    def update(self, outputs: Any, batch: Any) -> None:
        """Add one batch: `outputs` has action/key/modifier_logits [B,T,C] and click_xy [B,T,2];
        `batch` has action/key/modifier [B,T] (-100 where not applicable), click_xy [B,T,2], click_mask [B,T]."""
        with torch.no_grad():
            self.update_predictions(
                pred_action=outputs.action_logits.argmax(-1),
                pred_key=outputs.key_logits.argmax(-1),
                pred_modifier=outputs.modifier_logits.argmax(-1),
                pred_click_xy=outputs.click_xy,
                batch=batch,
            )
            targets = outputs.transcript_targets
            if targets is not None:  # the logits made at the target rows only
                self.update_teacher_forced_rows(outputs.transcript_logits_at(targets != IGNORE_INDEX), targets)

    def update_teacher_forced(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add teacher-forced transcript scores: logits [B, T, S+1, V] and targets [B, T, S+1] (each frame's
        tokens, then its eof, then -100). Two numbers greedy CER hides while it sits at the empty baseline:
        next-token accuracy over text + eof targets, and how well p(eof) at a frame's first slot separates
        silent from narrated frames (`transcript_speak_auc`: 0.5 = no idea, 1 = always right)."""
        self.update_teacher_forced_rows(logits[targets != IGNORE_INDEX], targets)

    def update_teacher_forced_rows(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """`update_teacher_forced` from the logits at target rows only: logits [M, V], M = (targets != -100).sum(),
        in row-major order (what `Outputs.transcript_logits_at` makes, without the vocab-wide padding rows)."""
        with torch.no_grad():
            self._to(targets.device)
            self._has_transcripts = True
            real = targets != IGNORE_INDEX
            self._state["tf_token_hits"] += (logits.argmax(-1) == targets[real]).sum()
            self._state["tf_tokens"] += real.sum()
            rows = real[..., 0]  # frames with a target row (every real frame has at least its eof)
            first = torch.zeros_like(real)
            first[..., 0] = real[..., 0]
            last = (real.sum(-1) - 1).clamp(min=0)
            eof = targets.gather(-1, last.unsqueeze(-1))[..., 0]  # a frame's last target is its eof
            p_eof = torch.softmax(logits[first[real]].float(), dim=-1).gather(-1, eof[rows].unsqueeze(-1))[:, 0]
            bins = (p_eof * SPEAK_BINS).long().clamp(0, SPEAK_BINS - 1)
            silent = (targets[..., 0] == eof)[rows]
            for key, sel in (("speak_hist_silent", silent), ("speak_hist_narrated", ~silent)):
                self._state[key] += torch.bincount(bins[sel], minlength=SPEAK_BINS)

    def update_predictions(
        self,
        pred_action: torch.Tensor,
        pred_key: torch.Tensor,
        pred_modifier: torch.Tensor,
        pred_click_xy: torch.Tensor,
        batch: Any,
    ) -> None:
        """Like `update` but from predicted class ids [B,T] (and click points [B,T,2]): what a loop that
        gathers small id tensors across processes (instead of logits) passes in."""
        with torch.no_grad():
            target_action = batch["action"]
            device = target_action.device
            self._to(device)
            shape = tuple(target_action.shape)
            for name, t in (("pred_action", pred_action), ("pred_key", pred_key), ("pred_modifier", pred_modifier)):
                if tuple(t.shape) != shape:
                    raise ValueError(f"{name} has shape {list(t.shape)}, batch['action'] has {list(shape)}")
            self._add_confusion("action_confusion", pred_action, target_action, len(self.action_names), "action")
            self._add_confusion("key_confusion", pred_key, batch["key"], len(self.key_names), "key")
            self._add_confusion(
                "modifier_confusion", pred_modifier, batch["modifier"], len(self.modifier_names), "modifier"
            )
            target_xy = batch["click_xy"].to(device)
            mask = batch["click_mask"].to(device).bool()
            if tuple(pred_click_xy.shape) != tuple(target_xy.shape) or tuple(mask.shape) != shape:
                raise ValueError(
                    f"click shapes disagree: predicted {list(pred_click_xy.shape)}, target {list(target_xy.shape)}, "
                    f"mask {list(mask.shape)} (expected [B, T, 2] and [B, T] with B, T = {list(shape)})"
                )
            dist = torch.linalg.vector_norm(pred_click_xy.to(device).double() - target_xy.double(), dim=-1)[mask]
            self._state["click_hits"] += (dist <= self.click_radius).sum()
            self._state["click_frames"] += mask.sum()
            self._state["click_dist_sum"] += dist.sum().to(self._state["click_dist_sum"].dtype)

    def update_transcripts(self, pred_texts: Sequence[str], ref_texts: Sequence[str]) -> None:
        """Add per-frame transcripts (flattened over clips and frames; same order in both lists).

        CER / WER are corpus-level: summed edit operations (jiwer) over summed reference length, after
        collapsing whitespace. Text written on a silent frame (empty reference) counts as insertions
        there too, so a model that narrates everywhere is not rewarded. Exact match is measured on
        narrated frames only; `transcript_false_text_rate` is the share of silent frames with text and
        `transcript_missed_rate` the share of narrated frames left empty (the speak/silent decision).
        """
        import jiwer  # imported here so action-only evaluation does not need it

        if len(pred_texts) != len(ref_texts):
            raise ValueError(f"{len(pred_texts)} predicted transcripts for {len(ref_texts)} references")
        preds = [_normalize_text(p) for p in pred_texts]
        refs = [_normalize_text(r) for r in ref_texts]
        self._has_transcripts = self._has_transcripts or bool(refs)
        if not refs:
            return
        words = jiwer.process_words(refs, preds)
        chars = jiwer.process_characters(refs, preds)
        narrated = [r != "" for r in refs]
        add = {
            "word_errors": words.substitutions + words.deletions + words.insertions,
            "word_ref": words.substitutions + words.deletions + words.hits,
            "char_errors": chars.substitutions + chars.deletions + chars.insertions,
            "char_ref": chars.substitutions + chars.deletions + chars.hits,
            "narrated_frames": sum(narrated),
            "narrated_exact": sum(1 for p, r, n in zip(preds, refs, narrated) if n and p == r),
            "narrated_missed": sum(1 for p, n in zip(preds, narrated) if n and not p),
            "silent_frames": len(refs) - sum(narrated),
            "silent_false_text": sum(1 for p, n in zip(preds, narrated) if not n and p),
        }
        for name, value in add.items():
            self._state[name] += value

    # --------------------------------------------------------------------------------- results
    def compute(self) -> dict[str, Any]:
        """All metrics as a JSON-ready dict (floats, ints, None where undefined, lists, dicts).

        action_acc, action_macro_f1 (over classes present in targets or predictions),
        action_per_class_acc / action_per_class_f1 {name: value}, action_confusion (rows = target),
        action_majority_acc / _macro_f1 / _class (the always-majority-class baseline of these targets),
        key_acc / key_macro_f1 / key_majority_acc and the same for modifier (frames where the head
        applies), click_hit_rate (within click_radius), click_mean_dist, counts n_frames, n_key_frames,
        n_modifier_frames, n_click_frames; transcript_cer / _wer / _exact_match / _false_text_rate /
        _missed_rate and n_narrated_frames once `update_transcripts` was called, transcript_token_acc /
        _speak_auc once teacher-forced transcript logits were seen; per_class {action|key|modifier: {class:
        {precision, recall, f1, support, predicted}}} (eval.json; the training log keeps top-level numbers).
        """
        st = {k: v.detach().cpu() for k, v in self._state.items()}
        out: dict[str, Any] = {}
        action = confusion_summary(st["action_confusion"], self.action_names)
        base = majority_baseline(st["action_confusion"], self.action_names)
        out.update(
            action_acc=action["acc"],
            action_macro_f1=action["macro_f1"],
            action_majority_acc=base["acc"],
            action_majority_macro_f1=base["macro_f1"],
            action_majority_class=base["class"],
        )
        for head, names in (("key", self.key_names), ("modifier", self.modifier_names)):
            s = confusion_summary(st[f"{head}_confusion"], names)
            b = majority_baseline(st[f"{head}_confusion"], names)
            out.update(
                {
                    f"{head}_acc": s["acc"],
                    f"{head}_macro_f1": s["macro_f1"],
                    f"{head}_majority_acc": b["acc"],
                }
            )
        n_click = int(st["click_frames"])
        out.update(
            click_hit_rate=_div(st["click_hits"], n_click),
            click_mean_dist=_div(st["click_dist_sum"], n_click),
            click_radius=self.click_radius,
            n_frames=action["n"],
            n_key_frames=int(st["key_confusion"].sum()),
            n_modifier_frames=int(st["modifier_confusion"].sum()),
            n_click_frames=n_click,
        )
        if self._has_transcripts:
            out.update(
                transcript_cer=_div(st["char_errors"], st["char_ref"]),
                transcript_wer=_div(st["word_errors"], st["word_ref"]),
                transcript_exact_match=_div(st["narrated_exact"], st["narrated_frames"]),
                transcript_false_text_rate=_div(st["silent_false_text"], st["silent_frames"]),
                transcript_missed_rate=_div(st["narrated_missed"], st["narrated_frames"]),
                n_narrated_frames=int(st["narrated_frames"]),
                transcript_token_acc=_div(st["tf_token_hits"], st["tf_tokens"]),
                transcript_speak_auc=_speak_auc(st["speak_hist_silent"], st["speak_hist_narrated"]),
            )
        out["per_class"] = {head: per_class_table(st[f"{head}_confusion"], names) for head, names in
                            (("action", self.action_names), ("key", self.key_names), ("modifier", self.modifier_names))}
        out.update(
            action_per_class_acc=action["per_class_acc"],
            action_per_class_f1=action["per_class_f1"],
            action_names=list(self.action_names),
            action_confusion=st["action_confusion"].tolist(),
        )
        return out

    # -------------------------------------------------------------------------------- helpers
    def _to(self, device: torch.device) -> None:
        """Keep the counts on the device of the data, so a GPU pass never copies predictions to the host."""
        if self._state["action_confusion"].device != device:
            dist_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
            self._state = {
                k: v.to(device, dtype=dist_dtype if k == "click_dist_sum" else v.dtype) for k, v in self._state.items()
            }

    def _add_confusion(self, key: str, pred: torch.Tensor, target: torch.Tensor, n: int, head: str) -> None:
        target = target.to(self._state[key].device).long().reshape(-1)
        pred = pred.to(target.device).long().reshape(-1)
        keep = target != IGNORE_INDEX
        target, pred = target[keep], pred[keep]
        if target.numel() == 0:
            return
        # Range check costs one host sync per batch; a silent wrong bincount slot would cost more.
        lo, hi = int(torch.minimum(target.min(), pred.min())), int(torch.maximum(target.max(), pred.max()))
        if lo < 0 or hi >= n:
            raise ValueError(f"{head} class id out of range [0, {n}): saw {lo if lo < 0 else hi}")
        self._state[key] += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)


def _speak_auc(silent: torch.Tensor, narrated: torch.Tensor) -> float | None:
    """P(p_eof of a random silent frame > that of a random narrated one), ties (same bin) counting half."""
    silent, narrated = silent.double(), narrated.double()
    pairs = float(silent.sum() * narrated.sum())
    if not pairs:
        return None
    narrated_below = torch.cumsum(narrated, 0) - narrated  # narrated frames in lower bins
    return float((silent * (narrated_below + 0.5 * narrated)).sum()) / pairs


def scalars(result: Mapping[str, Any], prefix: str = "") -> dict[str, float | int | None]:
    """The numbers of a `compute()` result as one flat dict (for metrics.jsonl and wandb):
    nested per-class dicts become "action_per_class_acc/click"; lists and names are dropped."""
    flat: dict[str, float | int | None] = {}
    for k, v in result.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(scalars(v, prefix=f"{name}/"))
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            flat[name] = v
    return flat
