"""Calibrated action scores: temperature scaling of the action head, fitted on the val split.

The action head's softmax is not calibrated (class-balanced training reweights the classes, which moves the
confidences either way), so `action_prob` (and the event scores annotate.py thresholds with `annotate.min_score`)
would not mean "how often this is right". One temperature
T (softmax(logits / T)) is fitted to minimise the negative log-likelihood of the val split's scored frames; it
changes no prediction (argmax is the same), only the confidence. The result is stored in the checkpoint under the
additive key `calibration` (the rest of the file is untouched):

    {"action_temperature": T, "split": "val", "frames": N, "ece_before": ..., "ece_after": ..., "bins": 15,
     "reliability_before": [...], "reliability_after": [...]}    # per bin: [confidence, accuracy, frames]

ECE = sum over equal-width confidence bins of |accuracy - mean confidence| x share of frames (top-1 confidence).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

KEY = "calibration"
BINS = 15


def action_temperature(ckpt: dict) -> float:
    """The checkpoint's fitted temperature, 1.0 (the raw softmax) if it was never calibrated."""
    return float((ckpt.get(KEY) or {}).get("action_temperature", 1.0))


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> tuple[float, list[list[float]]]:
    """(ECE, per bin [mean confidence, accuracy, frames]) of top-1 predictions. probs [N, C], labels [N]."""
    conf, pred = probs.max(-1)
    right = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf.double(), edges[1:-1], right=True)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        if n == 0:
            rows.append([float((edges[b] + edges[b + 1]) / 2), None, 0])
            continue
        c, a = float(conf[m].double().mean()), float(right[m].mean())
        ece += abs(a - c) * n / len(labels)
        rows.append([c, a, n])
    return ece, rows


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """argmin_T NLL(softmax(logits / T), labels), T > 0 (optimised in log T)."""
    logits, labels = logits.double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp())


@torch.no_grad()
def collect_action_logits(path: str | Path, split: str = "val", batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Action logits and labels of every scored frame of `split` (each frame once, the evaluation windows)."""
    from torch.utils.data import DataLoader

    from action_decoder.data.clips import build_clip_dataset, collate_clips
    from action_decoder.data.vocab import IGNORE_INDEX
    from action_decoder.evaluation.evaluate import load_model_from_checkpoint

    model, tokenizer, cfg, _ = load_model_from_checkpoint(path)
    model.eval()
    dataset = build_clip_dataset(cfg, split, tokenizer, every_frame_once=True)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=int(cfg.data.get("num_workers", 0)),
                        collate_fn=lambda items: collate_clips(items, int(tokenizer.pad_token_id)))
    logits, labels = [], []
    for batch in loader:
        if batch is None:
            continue
        out = model({k: batch[k] for k in ("pixels", "prompt_ids", "prompt_mask", "transcript_ids",
                                           "transcript_mask")})
        keep = batch["scored"] & (batch["action"] != IGNORE_INDEX)
        logits.append(out.action_logits.float()[keep])
        labels.append(batch["action"][keep])
    if not logits:
        raise ValueError(f"{path}: no scored frames in the {split} split to calibrate on")
    return torch.cat(logits), torch.cat(labels)


def calibrate_checkpoint(path: str | Path, split: str = "val", batch_size: int = 8) -> dict:
    """Fit the temperature on `split`, store it in the checkpoint (key `calibration`, written to a temp file and
    renamed), and return what was stored."""
    path = Path(path)
    logits, labels = collect_action_logits(path, split, batch_size)
    t = fit_temperature(logits, labels)
    ece_before, rel_before = reliability(torch.softmax(logits, -1), labels)
    ece_after, rel_after = reliability(torch.softmax(logits / t, -1), labels)
    result = {"action_temperature": t, "split": split, "frames": int(len(labels)), "bins": BINS,
              "ece_before": ece_before, "ece_after": ece_after,
              "nll_before": float(torch.nn.functional.cross_entropy(logits.double(), labels)),
              "nll_after": float(torch.nn.functional.cross_entropy(logits.double() / t, labels)),
              "reliability_before": rel_before, "reliability_after": rel_after}
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # as saved: the file's own format, no upgrade
    ckpt[KEY] = result
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return result


def calibration_markdown(cal: dict, png: str = "reliability.png") -> list[str]:
    """eval.md's calibration section."""
    return [f"## Calibration (action head, temperature scaling on {cal['split']})", "",
            f"T = {cal['action_temperature']:.3f} fitted on {cal['frames']} {cal['split']} frames: "
            f"ECE {cal['ece_before']:.4f} → {cal['ece_after']:.4f}, NLL {cal['nll_before']:.4f} → "
            f"{cal['nll_after']:.4f} ({cal['bins']} equal-width bins of top-1 confidence). `action_prob` in "
            "annotate.py's frames.jsonl and the event scores `annotate.min_score` keeps are the calibrated ones.",
            "", f"![reliability]({png})", ""]


def plot_reliability(cal: dict, out_png: str | Path) -> Path:
    """Accuracy against confidence per bin, before and after scaling (the diagonal is perfect calibration),
    with the share of frames per bin underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    width = 1.0 / cal["bins"]
    for name, color, shift in (("before", "tab:red", -width / 4), ("after", "tab:blue", width / 4)):
        rows = [r for r in cal[f"reliability_{name}"] if r[2]]
        label = (f"raw softmax (ECE {cal['ece_before']:.3f})" if name == "before" else
                 f"T = {cal['action_temperature']:.2f} (ECE {cal['ece_after']:.3f})")
        ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", color=color, label=label)
        total = sum(r[2] for r in rows)
        hist.bar([r[0] + shift for r in rows], [r[2] / total for r in rows], width=width / 2, color=color)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"action head on {cal['split']} ({cal['frames']} frames)")
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("top-1 confidence")
    hist.set_ylabel("share of frames")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
