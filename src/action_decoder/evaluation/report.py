"""eval.json -> eval.md: the tables a person reads (per-class, events, majority baseline, confusion picture)."""
from __future__ import annotations

from pathlib import Path

from action_decoder.evaluation.events import EVENT_TYPES


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def event_table(m: dict) -> list[str]:
    """Markdown rows: overall then per event type (P, R, F1, true, predicted), plus move frames."""
    rows = ["| event type | precision | recall | F1 | true | predicted |", "|---|---|---|---|---|---|",
            f"| **all events** | {_f(m['event_precision'])} | {_f(m['event_recall'])} | **{_f(m['event_f1'])}** "
            f"| {m['event_n_true']} | {m['event_n_pred']} |"]
    for t in EVENT_TYPES:
        rows.append(f"| {t} | {_f(m[f'event_{t}_precision'])} | {_f(m[f'event_{t}_recall'])} | "
                    f"{_f(m[f'event_{t}_f1'])} | {m[f'event_{t}_n_true']} | {m[f'event_{t}_n_pred']} |")
    rows.append(f"| move frames (per frame, not events) | {_f(m['move_frame_precision'])} | "
                f"{_f(m['move_frame_recall'])} | {_f(m['move_frame_f1'])} | | |")
    return rows


def false_event_lines(result: dict) -> list[str]:
    """The event rule in use and the false events by cause (evaluation/false_events.py), argmax and rule."""
    from action_decoder.evaluation.false_events import CAUSES

    if "false_events" not in result:
        return []
    a = result.get("event_argmax") or {}
    lines = [f"Event rule: {result.get('event_rule') or 'none (per-frame argmax)'}; argmax events: F1 "
             f"{_f(a.get('event_f1'))}, precision {_f(a.get('event_precision'))}, recall {_f(a.get('event_recall'))}.",
             "", "| false events | " + " | ".join(CAUSES) + " |", "|---|" + "---|" * len(CAUSES)]
    for decoder, table in result["false_events"].items():
        for kind, row in table.items():
            lines.append(f"| {decoder}: {kind} | " + " | ".join(str(row[c]) for c in CAUSES) + " |")
    return lines + [""]


def class_table(table: dict, title: str) -> list[str]:
    rows = [f"| {title} | precision | recall | F1 | support | predicted |", "|---|---|---|---|---|---|"]
    for name, r in sorted(table.items(), key=lambda kv: -kv[1]["support"]):
        shown = name if name and name.strip() == name and name != "|" else repr(name)  # a space key shows as ' '
        rows.append(f"| `{shown}` | {_f(r['precision'])} | {_f(r['recall'])} | {_f(r['f1'])} | "
                    f"{r['support']} | {r['predicted']} |")
    return rows


SUMMARY_COLUMNS = (("action acc", "action_acc"), ("action macro-F1", "action_macro_f1"), ("event F1", "event_f1"),
                   ("click hit", "click_hit_rate"), ("key acc", "key_acc"), ("modifier acc", "modifier_acc"))


def summary_rows(rows: list[tuple[str, dict]]) -> list[str]:
    """Markdown table: one row per (label, metrics), the headline metrics as columns."""
    return ["| | " + " | ".join(name for name, _ in SUMMARY_COLUMNS) + " |",
            "|---" * (len(SUMMARY_COLUMNS) + 1) + "|",
            *(f"| {label} | " + " | ".join(_f(m.get(key)) for _, key in SUMMARY_COLUMNS) + " |" for label, m in rows)]


def write_eval_markdown(result: dict, path: Path, confusion_png: str = "confusion.png") -> Path:
    m = result["metrics"]
    lines = [
        f"# {result['checkpoint']} on {result['split']} ({result['prepared_dir']})",
        "",
        f"Epoch {result['epoch']}, stage `{result['stage']}`; {m['n_frames']} frames of {result['num_episodes']} "
        f"episodes, each scored once.",
        "",
        *summary_rows([("model", m)]),
        f"| majority class (`{m['action_majority_class']}`) | {_f(m['action_majority_acc'])} | "
        f"{_f(m['action_majority_macro_f1'])} | 0.000 | | {_f(m['key_majority_acc'])} | "
        f"{_f(m['modifier_majority_acc'])} |",
        "",
        f"## Events (±{m['event_tolerance']} frames, data/README.md §8)",
        "",
        *event_table(m),
        "",
        f"Matched clicks: mean distance {_f(m['event_click_mean_dist'])} (normalized); matched typing runs: "
        f"text similarity {_f(m['event_typed_text_similarity'])} (1 - character edit distance / length).",
        "",
        *false_event_lines(result),
        "## Per class (frames)",
        "",
        *class_table(m["per_class"]["action"], "action"),
        "",
        *class_table(m["per_class"]["modifier"], "modifier"),
        "",
        *class_table(m["per_class"]["key"], "key"),
        "",
        "## Confusion (actions)",
        "",
        f"![confusion]({confusion_png})",
        "",
    ]
    if result.get("calibration"):  # scripts/calibrate.py stored a temperature in the checkpoint
        from action_decoder.evaluation.calibration import calibration_markdown

        lines += calibration_markdown(result["calibration"])
    path.write_text("\n".join(lines))
    return path
