"""Pretrain the tiny towers on synthetic data the benchmark never sees (scripts/pretrain_tiny_towers.py).

The real system fine-tunes LoRA on *pretrained* frozen towers; the tiny towers get their pretraining
here, from generator seeds no dataset of the repo uses (`backbone.pretrain.seed`; recordings use
`data.synthetic.seed`, 0 by default), and are saved in the published layouts so `backbone=tiny`
loads them through the same `name_or_path` code as the real towers.

Vision objective: dense supervision the generator knows exactly. Screens are rendered straight from
the synthetic desktop (no video file), two consecutive 5 fps frames form a clip (the encoder sees
clips, as in training), and linear probes on every output token predict
  - cursor: which token holds the cursor tip (softmax over the frame's tokens),
  - glyphs: which characters are drawn inside the token's patch (multi-label over printable ASCII),
  - change: whether the patch changed since the previous frame (frame 1 of the clip).
Why this and not masked-patch prediction: the decoder's heads need exactly these three things (where
the pointer is, what text a key press produced, what moved), the labels cost nothing to render, and
a dense per-token loss gives every token a gradient every step, so a 2-layer, 64-wide encoder learns
them in about a minute on 2 CPU cores. Held-out accuracy of the probes goes to `pretrain_report.json`
next to the weights; the glyph F1 is also how we measure what resolution keeps typed text legible.

Text objective: causal LM on task prompts and narrations of other seeds, in the transcript format of
the new architecture (each narration line closed by the end-of-frame marker).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from action_decoder.training.setup import warmup_cosine
from action_decoder.data.frames import preprocess_frames
from action_decoder.recorders.synthetic.recorder import SyntheticConfig, plan_recording
from action_decoder.recorders.synthetic.scene import Desktop
from action_decoder.models.build import image_hw, vision_config_from_cfg
from action_decoder.models.towers.onevision_encoder import OneVisionEncoder
from action_decoder.models.towers.text_encoder import qwen3_config_from_cfg

GLYPHS = [chr(c) for c in range(33, 127)]  # printable ASCII without the space (nothing is drawn for it)
GLYPH_ID = {c: i for i, c in enumerate(GLYPHS)}
REPORT = "pretrain_report.json"


# ---- rendering with exact labels -------------------------------------------------------------------

class GlyphDesktop(Desktop):
    """The synthetic desktop, also recording the centre of every character it draws.

    `glyphs` holds (x, y, glyph id) in screen pixels of the last redrawn UI (the cursor is drawn over
    it without a redraw, so the list stays valid for every frame until the next redraw)."""

    def __init__(self, layout):
        super().__init__(layout)
        self.glyphs: list[tuple[float, float, int]] = []
        self._drawing: list[tuple[float, float, int]] = []

    def _draw_ui(self, t, key):
        self._drawing = []
        img = super()._draw_ui(t, key)
        self.glyphs = self._drawing
        return img

    def _text(self, d, xy, s: str, fill, anchor: str = "lm") -> None:
        super()._text(d, xy, s, fill, anchor)
        font = self.L.font
        total = font.getlength(s)
        left = xy[0] - {"l": 0.0, "m": total / 2, "r": total}[anchor[0]]  # every anchor here is vertical-middle
        for i, ch in enumerate(s):
            if ch in GLYPH_ID:
                a, b = font.getlength(s[:i]), font.getlength(s[: i + 1])
                self._drawing.append((left + (a + b) / 2, float(xy[1]), GLYPH_ID[ch]))


@dataclass
class Screens:
    """Rendered frames of many recordings, resized for the encoder, with their labels."""

    pixels: torch.Tensor  # [F, H, W, 3] uint8, already at the encoder's size
    cursor: torch.Tensor  # [F, 2] cursor tip (x, y) normalized to [0, 1)
    glyphs: list  # per frame: float array [G, 3] of (x, y) normalized + glyph id
    recording: torch.Tensor  # [F] recording index: clips never straddle two recordings


def render_screens(syn: SyntheticConfig, indices: range, sample_fps: float, size: tuple[int, int]) -> Screens:
    """Frames of recordings `indices` of generator `syn` at `sample_fps` (as prepare_data samples them)."""
    step = max(1, int(round(syn.fps / sample_fps)))
    pixels, cursor, glyphs, rec = [], [], [], []
    for i in indices:
        plan = plan_recording(i, syn)
        desk = GlyphDesktop(plan.layout)
        W, H = plan.layout.width, plan.layout.height
        frames, j = [], 0
        for k in range(plan.num_frames):
            t = k / plan.fps
            while j < len(plan.events) and plan.events[j][0] <= t + 1e-9:
                desk.handle(plan.events[j][1], plan.events[j][0])
                j += 1
            if k % step:
                continue
            frames.append(desk.render(t))
            cursor.append((desk.x / W, desk.y / H))
            g = np.array(desk.glyphs, dtype=np.float32).reshape(-1, 3)
            g[:, 0] /= W
            g[:, 1] /= H
            glyphs.append(g)
            rec.append(i)
        # The one resize path of the repo (data/frames.py), with mean 0 / std 1/255 = plain resized pixels.
        resized = preprocess_frames(np.stack(frames), size, (0.0, 0.0, 0.0), (1 / 255,) * 3)
        pixels.append(resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return Screens(torch.cat(pixels), torch.tensor(cursor, dtype=torch.float32), glyphs, torch.tensor(rec))


def _cell(xy: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> Any:
    """Normalized (x, y) -> index of the patch holding it on an (Hp, Wp) grid (row-major)."""
    hp, wp = grid
    col = (xy[..., 0] * wp).clip(0, wp - 1)
    row = (xy[..., 1] * hp).clip(0, hp - 1)
    if isinstance(col, torch.Tensor):
        return row.long() * wp + col.long()
    return row.astype(np.int64) * wp + col.astype(np.int64)


def clip_batch(screens: Screens, starts: torch.Tensor, grid: tuple[int, int], patch: int,
               mean, std) -> dict[str, torch.Tensor]:
    """Clips of 2 consecutive frames starting at `starts` -> encoder input and dense targets."""
    idx = torch.stack([starts, starts + 1], dim=1)  # [B, 2]
    B, n = idx.shape[0], grid[0] * grid[1]
    raw = screens.pixels[idx.flatten()]  # [B*2, H, W, 3] uint8
    pixels = preprocess_frames(raw, raw.shape[1:3], mean, std).view(B, 2, 3, *raw.shape[1:3])
    cursor = _cell(screens.cursor[idx], grid)  # [B, 2]
    glyphs = torch.zeros(B, 2, n, len(GLYPHS))
    for b in range(B):
        for t in range(2):
            g = screens.glyphs[int(idx[b, t])]
            if len(g):
                glyphs[b, t, torch.from_numpy(_cell(g[:, :2], grid)), torch.from_numpy(g[:, 2].astype(np.int64))] = 1.0
    # A patch changed when any of its pixels moved by more than codec-noise level.
    diff = (raw.view(B, 2, *raw.shape[1:]).int().diff(dim=1).abs().amax(dim=-1) > 8)[:, 0]  # [B, H, W]
    hp, wp = grid
    change = diff[:, : hp * patch, : wp * patch].reshape(B, hp, patch, wp, patch).any(dim=(2, 4)).flatten(1)
    return {"pixels": pixels, "cursor": cursor, "glyphs": glyphs, "change": change.float()}


class ScreenProbes(nn.Module):
    """Linear probes on the encoder's tokens: cursor logit, glyph logits, change logit per token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cursor = nn.Linear(dim, 1)
        self.glyphs = nn.Linear(dim, len(GLYPHS))
        self.change = nn.Linear(dim, 1)
        with torch.no_grad():  # start at the prior (few glyphs per patch), not at p = 0.5 for all 94
            self.glyphs.bias.fill_(-4.0)

    def forward(self, tokens: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """tokens [B, 2, n, D] -> losses and counts for the metrics."""
        cursor_logits = self.cursor(tokens).squeeze(-1)  # [B, 2, n]
        glyph_logits = self.glyphs(tokens)  # [B, 2, n, G]
        change_logits = self.change(tokens[:, 1]).squeeze(-1)  # [B, n]
        cursor = F.cross_entropy(cursor_logits.flatten(0, 1), batch["cursor"].flatten())
        # Sum over glyph classes, mean over tokens: each drawn character is one positive among 94.
        glyphs = F.binary_cross_entropy_with_logits(glyph_logits, batch["glyphs"], reduction="sum") / glyph_logits[..., 0].numel()
        change = F.binary_cross_entropy_with_logits(change_logits, batch["change"])
        with torch.no_grad():
            pred, true = glyph_logits > 0, batch["glyphs"] > 0
            cpred, ctrue = change_logits > 0, batch["change"] > 0
            counts = torch.stack([
                (cursor_logits.argmax(-1) == batch["cursor"]).sum().float(), torch.tensor(float(batch["cursor"].numel())),
                (pred & true).sum().float(), pred.sum().float(), true.sum().float(),
                (cpred & ctrue).sum().float(), cpred.sum().float(), ctrue.sum().float(),
            ])
        return {"loss": cursor + glyphs + change, "cursor": cursor, "glyphs": glyphs, "change": change, "counts": counts}


def _metrics(counts: torch.Tensor) -> dict[str, float]:
    c = counts.tolist()

    def f1(tp, p, t):
        return 2 * tp / max(p + t, 1.0)

    return {"cursor_token_acc": c[0] / max(c[1], 1.0), "glyph_f1": f1(c[2], c[3], c[4]),
            "glyph_recall": c[2] / max(c[4], 1.0), "change_f1": f1(c[5], c[6], c[7])}


def _clip_starts(screens: Screens) -> torch.Tensor:
    same = screens.recording[1:] == screens.recording[:-1]
    return torch.nonzero(same).flatten()


def pretrain_vision(cfg: Mapping[str, Any], out_dir: Path, log=print) -> dict[str, Any]:
    """Train a random-init tiny encoder on the screen probes; save config.json + model.safetensors."""
    vision_cfg, p = cfg["backbone"]["vision"], cfg["backbone"]["pretrain"]
    config = vision_config_from_cfg(vision_cfg)
    size = image_hw(config.image_size)
    patch = config.patch_size
    grid = (size[0] // patch, size[1] // patch)
    # No pauses: a pause only cuts wall-clock time out of a recording (the video never shows it).
    syn = replace(SyntheticConfig.from_cfg(cfg["data"]["synthetic"]), seed=int(p["seed"]), pause_fraction=0.0)
    n_rec, n_val = int(p["vision_recordings"]), int(p["vision_val_recordings"])
    start = time.perf_counter()
    train = render_screens(syn, range(n_rec), float(cfg["data"]["sample_fps"]), size)
    val = render_screens(syn, range(n_rec, n_rec + n_val), float(cfg["data"]["sample_fps"]), size)
    render_s = time.perf_counter() - start
    log(f"vision: rendered {len(train.pixels)} + {len(val.pixels)} frames of seed {syn.seed} at "
        f"{size[0]}x{size[1]} ({grid[0]}x{grid[1]} tokens) in {render_s:.1f} s")

    torch.manual_seed(int(p["seed"]))
    encoder = OneVisionEncoder(config)
    probes = ScreenProbes(config.hidden_size)
    params = list(encoder.parameters()) + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=float(p["lr"]), weight_decay=0.01, betas=(0.9, 0.98))
    steps, bs = int(p["vision_steps"]), int(p["batch_size"])
    mean, std = list(vision_cfg["image_mean"]), list(vision_cfg["image_std"])
    starts = _clip_starts(train)
    gen = torch.Generator().manual_seed(int(p["seed"]))

    def run(batch):
        video = batch["pixels"].transpose(1, 2)  # [B, C, 2, H, W], the encoder's video layout
        hidden, _ = encoder(video)
        return probes(hidden.view(video.shape[0], 2, grid[0] * grid[1], -1), batch)

    encoder.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = float(p["lr"]) * warmup_cosine(steps, max(1, steps // 20))(step)
        batch = clip_batch(train, starts[torch.randint(len(starts), (bs,), generator=gen)], grid, patch, mean, std)
        out = run(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"vision step {step}/{steps}: loss {out['loss'].item():.3f} (cursor {out['cursor'].item():.3f} "
                f"glyphs {out['glyphs'].item():.3f} change {out['change'].item():.3f})")
    train_s = time.perf_counter() - start - render_s

    encoder.eval()
    counts = torch.zeros(8)
    val_starts = _clip_starts(val)
    with torch.no_grad():
        for i in range(0, len(val_starts), 32):
            counts += run(clip_batch(val, val_starts[i:i + 32], grid, patch, mean, std))["counts"]
    metrics = _metrics(counts)
    log("vision held-out: " + " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    save_encoder(encoder, out_dir)
    return {"metrics": metrics, "frames": len(train.pixels), "render_s": round(render_s, 1),
            "train_s": round(train_s, 1), "image_size": list(size), "grid": list(grid)}


def save_encoder(encoder: OneVisionEncoder, out_dir: Path) -> None:
    """The published layout: config.json + model.safetensors under the reference state-dict names."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    config = encoder.config.to_dict()
    config.pop("attn_implementation")  # ours, not a config.json field
    (out_dir / "config.json").write_text(json.dumps({"model_type": "onevision_encoder", **config}, indent=1) + "\n")
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


# ---- text ------------------------------------------------------------------------------------------

def text_corpus(syn: SyntheticConfig, indices: range, eof: str) -> list[str]:
    """One document per recording: its task prompt, then each narration line closed by the eof marker."""
    docs = []
    for i in indices:
        plan = plan_recording(i, syn)
        docs.append(plan.prompt + "\n" + "".join(text + eof for _, _, text in plan.cues))
    return docs


def pretrain_text(cfg: Mapping[str, Any], tokenizer: Any, out_dir: Path, log=print) -> dict[str, Any]:
    """Causal-LM pretraining of a random-init tiny Qwen3; `save_pretrained` to out_dir."""
    from transformers import Qwen3ForCausalLM

    text_cfg, p = cfg["backbone"]["text"], cfg["backbone"]["pretrain"]
    # Its own generator seed (the vision screens use `seed`): texts and screens stay disjoint too.
    syn = replace(SyntheticConfig.from_cfg(cfg["data"]["synthetic"]), seed=int(p["seed"]) + 1, pause_fraction=0.0)
    n_rec, n_val = int(p["text_recordings"]), int(p["text_val_recordings"])
    start = time.perf_counter()
    block = int(p["text_block"])

    def blocks(docs: list[str]) -> torch.Tensor:
        ids: list[int] = []
        for doc in docs:
            ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        n = len(ids) // block
        return torch.tensor(ids[: n * block]).view(n, block)

    train = blocks(text_corpus(syn, range(n_rec), tokenizer.eof_token))
    val = blocks(text_corpus(syn, range(n_rec, n_rec + n_val), tokenizer.eof_token))
    log(f"text: {train.numel()} + {val.numel()} tokens of seed {syn.seed} in {time.perf_counter() - start:.1f} s")

    torch.manual_seed(int(p["seed"]))
    model = Qwen3ForCausalLM(qwen3_config_from_cfg(text_cfg, len(tokenizer)))
    model.tie_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=0.01, betas=(0.9, 0.98))
    steps, bs = int(p["text_steps"]), int(p["batch_size"])
    gen = torch.Generator().manual_seed(int(p["seed"]))
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = float(p["lr"]) * warmup_cosine(steps, max(1, steps // 20))(step)
        x = train[torch.randint(len(train), (bs,), generator=gen)]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"text step {step}/{steps}: loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        val_loss = float(np.mean([model(input_ids=val[i:i + 32], labels=val[i:i + 32]).loss.item()
                                  for i in range(0, len(val), 32)]))
    log(f"text held-out: loss {val_loss:.3f} (perplexity {math.exp(val_loss):.2f}; uniform over "
        f"{len(tokenizer)} ids: {len(tokenizer)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return {"metrics": {"val_loss": val_loss, "val_perplexity": math.exp(val_loss)}, "tokens": int(train.numel()),
            "train_s": round(time.perf_counter() - start, 1)}


# ---- both, with reuse ------------------------------------------------------------------------------

def pretrain_settings(cfg: Mapping[str, Any], tower: str) -> dict[str, Any]:
    """Everything that shapes one pretrained tower; equal settings -> the existing tower is reused."""
    p = cfg["backbone"]["pretrain"]
    shared = ("seed", "batch_size", "lr")
    knobs = {k: v for k, v in p.items() if k in shared or k.startswith(tower)}
    sizes = {k: v for k, v in cfg["backbone"][tower].items() if k not in ("name_or_path", "fingerprint")}
    # The dataset's size and render parallelism do not shape the pretraining screens or texts.
    synthetic = {k: v for k, v in cfg["data"]["synthetic"].items() if k not in ("num_recordings", "workers")}
    return {"pretrain": knobs, tower: sizes, "synthetic": synthetic, "sample_fps": cfg["data"]["sample_fps"]}


def pretrain_towers(cfg: Mapping[str, Any], tokenizer: Any, log=print) -> dict[str, Path]:
    """Make (or reuse) both towers at `backbone.{vision,text}.name_or_path`; return their folders."""
    backbone = cfg["backbone"]
    if "pretrain" not in backbone:
        raise ValueError("this backbone has no `pretrain` block: only the tiny towers are pretrained here "
                         "(python scripts/pretrain_tiny_towers.py backbone=tiny)")
    folders = {}
    for tower, fn in (("vision", lambda d: pretrain_vision(cfg, d, log)),
                      ("text", lambda d: pretrain_text(cfg, tokenizer, d, log))):
        name = backbone[tower].get("name_or_path")
        if not name:
            raise ValueError(f"backbone.{tower}.name_or_path is null: set the folder the pretrained tower goes to")
        out = Path(name)
        report = out / REPORT
        settings = pretrain_settings(cfg, tower)
        if report.is_file() and json.loads(report.read_text()).get("settings") == settings:
            log(f"{tower}: reusing {out} (same settings as {report})")
        else:
            result = fn(out)
            report.write_text(json.dumps({"settings": settings, **result}, indent=1) + "\n")
            log(f"{tower}: wrote {out}")
        folders[tower] = out
    return folders
