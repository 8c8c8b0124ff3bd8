"""model=parallel: teacher-forced transcript decoder, loss targets, parallel heads, checkpoints, training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from action_decoder.config import load_config
from tests.conftest import RANDOM_TOWERS
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.losses import build_loss
from action_decoder.models.decoder import TaskAwareDecoder

# 32 px frames of 8 px patches = 16 tokens a frame, a 32-wide decoder: each build + step well under a second.
SMALL = [
    *RANDOM_TOWERS,
    "model=parallel",
    "backbone.vision.image_size=32",
    "backbone.vision.patch_size=8",
    "model.d_model=32",
    "model.num_heads=4",
    "model.ffn_dim=64",
    "model.lm_visual_tokens=2",
    "model.max_text_tokens=6",
    "loss.class_balance=0",  # these tests build the loss without the training split's class counts
]
B, T, L, S = 2, 3, 12, 6
PROMPTS = ["Click OK", "Type hi"]
# Per-frame narration of the two clips: silent frames, short words, different lengths.
TEXTS = [["", "ok", "go now"], ["type", "", "hi"]]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("small")


def transcript_logits(out) -> torch.Tensor | None:
    """[B, T, S+1, vocab] logits at every predicting slot (the model makes them at target rows only)."""
    return None if out.transcript_hidden is None else out.transcript_head(out.transcript_hidden)


def make_cfg(*overrides: str):
    return load_config([*SMALL, *overrides])


def make_model(tokenizer, *overrides: str, seed: int = 0) -> TaskAwareDecoder:
    torch.manual_seed(seed)
    model = build_model(make_cfg(*overrides), tokenizer)
    assert model.has_transcript
    return model


def make_batch(tokenizer, texts=TEXTS, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the documented shapes (data/README.md §3), transcripts right-padded to S."""
    g = torch.Generator().manual_seed(seed)
    prompt = tokenizer(PROMPTS, padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    ids = torch.full((B, T, S), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(B, T, S, dtype=torch.bool)
    for b in range(B):
        for t in range(T):
            tok = tokenizer(texts[b][t])["input_ids"][:S]
            ids[b, t, :len(tok)] = torch.tensor(tok, dtype=torch.long)
            mask[b, t, :len(tok)] = True
    return {
        "pixels": torch.randn(B, T, 3, 32, 32, generator=g),
        "prompt_ids": prompt["input_ids"],
        "prompt_mask": prompt["attention_mask"].bool(),
        "action": torch.tensor([[0, 2, 8], [1, 9, 2]]),
        "key": torch.tensor([[-100, -100, 5], [-100, 40, -100]]),
        "modifier": torch.tensor([[-100, 0, 0], [-100, 1, 0]]),
        "click_xy": torch.tensor([[[0, 0], [0.3, 0.7], [0, 0]], [[0, 0], [0, 0], [0.9, 0.1]]]),
        "click_mask": torch.tensor([[False, True, False], [False, False, True]]),
        "transcript_ids": ids,
        "transcript_mask": mask,
    }


def train_steps(model, batch, cfg, steps: int, lr: float = 1e-2) -> list[float]:
    """Adam on every trainable parameter; returns the transcript loss before each step."""
    opt = torch.optim.Adam([p for g in model.parameter_groups().values() for p in g], lr=lr)
    loss_fn = build_loss(cfg.loss)
    model.train()
    history = []
    for _ in range(steps):
        losses = loss_fn(model(batch), batch)
        history.append(float(losses["transcript"].detach()))
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    model.eval()
    return history


def test_forward_backward_trains_text_lora_visual_projection_and_heads(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    out = model(batch)
    assert out.action_logits.shape[:2] == (B, T) and out.click_logits.shape == (B, T, 16)
    assert transcript_logits(out).shape == (B, T, S + 1, len(tokenizer))
    losses = build_loss(make_cfg().loss)(out, batch)
    assert set(losses) == {"action", "key", "modifier", "click", "transcript", "total"}
    losses["total"].backward()
    trainable = model.trainable_state_dict()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert not p.requires_grad, name
    # The transcript decoder = the text LoRA (the same Qwen copy that reads the prompt) + visual->LM tokens.
    assert any(n.startswith("text.model.layers.") and ".lora_B." in n for n in trainable)
    assert {"transcript.query.weight", "transcript.visual_proj.1.weight"} <= set(trainable)
    assert not any(n.startswith("text.lm_head") or "embed_tokens" in n for n in trainable)
    assert "trunk.layers.0.self_attn.in_proj_weight" in trainable  # the heads read the frame trunk


def test_transcript_loss_is_next_token_ce_on_text_and_eof_only(tokenizer):
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer)
    loss_fn = build_loss(make_cfg().loss)
    with torch.no_grad():
        out = model(batch)
    eof = tokenizer.eof_token_id
    # Targets = each frame's tokens then its eof; nothing for the prompt, the visual tokens or the padding.
    for b in range(B):
        for t in range(T):
            n = int(batch["transcript_mask"][b, t].sum())
            want = batch["transcript_ids"][b, t, :n].tolist() + [eof] + [-100] * (S - n)
            assert out.transcript_targets[b, t].tolist() == want
    logits, targets = transcript_logits(out), out.transcript_targets
    rows = targets != -100
    manual = F.cross_entropy(logits[rows], targets[rows])
    torch.testing.assert_close(loss_fn(out, batch)["transcript"], manual)
    torch.testing.assert_close(out.transcript_logits_at(rows), logits[rows])

    # Rows past the eof (non-target slots) can hold anything: the loss does not move.
    hidden = out.transcript_hidden
    noisy = hidden.clone()
    noisy[~rows] = torch.randn_like(noisy[~rows]) * 100
    out.transcript_hidden = noisy
    torch.testing.assert_close(loss_fn(out, batch)["transcript"], manual)
    # A target row does move it (the check above is not vacuous).
    noisy[rows.nonzero()[0].unbind()] += torch.randn(hidden.shape[-1]) * 100
    assert not torch.isclose(loss_fn(out, batch)["transcript"], manual)

    # The tokens stored in padding slots of transcript_ids are never read (masked out of attention).
    padded = dict(batch)
    padded["transcript_ids"] = torch.where(batch["transcript_mask"], batch["transcript_ids"],
                                           torch.randint(5, 90, batch["transcript_ids"].shape))
    with torch.no_grad():
        again = model(padded)
    torch.testing.assert_close(transcript_logits(again)[rows], logits[rows])
    torch.testing.assert_close(again.action_logits, out.action_logits)


def test_frame_transcript_reads_frames_up_to_the_next_one(tokenizer):
    """Frame t's text scores see frames <= t+1 (narration on t is what happens in [t, t+1), like its label):
    changing the last frame moves the scores of it and the frame before, never of earlier frames."""
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer)
    changed = dict(batch, pixels=batch["pixels"].clone())
    changed["pixels"][:, -1] += 1.0
    with torch.no_grad():
        before, after = transcript_logits(model(batch)), transcript_logits(model(changed))
    assert T >= 3
    torch.testing.assert_close(after[:, :-2], before[:, :-2], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, -2], before[:, -2]) and not torch.allclose(after[:, -1], before[:, -1])


def test_transcript_mask_must_be_right_padded(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    batch["transcript_mask"] = batch["transcript_mask"].flip(-1)
    with pytest.raises(ValueError, match="right-padded"):
        model(batch)


def test_heads_are_independent(tokenizer):
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer)
    with torch.no_grad():
        before = model(batch)
        model.heads.key.weight.zero_()
        model.heads.key.bias.zero_()
        model.heads.modifier.weight.zero_()
        after = model(batch)
    for field in ("action_logits", "click_logits", "transcript_hidden"):
        torch.testing.assert_close(getattr(after, field), getattr(before, field), rtol=0, atol=0)
    assert not torch.equal(after.key_logits, before.key_logits)
    assert after.key_logits.abs().max() == 0


def test_heads_never_read_the_reference_transcript(tokenizer):
    """The teacher-forced pass feeds the LM the reference narration; streaming has none. The heads' scores
    must not depend on it, or validation would score heads that read the answer."""
    model = make_model(tokenizer).eval()
    batch = make_batch(tokenizer)
    other = dict(batch, **{k: v for k, v in make_batch(tokenizer, texts=[["zz", "", "q"], ["", "abc", ""]]).items()
                           if k.startswith("transcript")})
    with torch.no_grad():
        a, b = model(batch), model(other)
    assert not torch.equal(transcript_logits(a)[:, 1:], transcript_logits(b)[:, 1:]) or transcript_logits(a).shape != \
        transcript_logits(b).shape  # the LM did read the texts
    for field in ("action_logits", "key_logits", "modifier_logits", "click_logits"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)


def test_checkpoint_round_trip_strict(tokenizer, tmp_path):
    batch = make_batch(tokenizer)
    trained = make_model(tokenizer, seed=0)
    train_steps(trained, batch, make_cfg(), steps=2)  # LoRA B leaves 0, so the adapters matter
    state = trained.trainable_state_dict()
    assert any(k.startswith("transcript.visual_proj.") for k in state) and any(".lora_A." in k for k in state)
    torch.save(state, tmp_path / "best.pt")

    fresh = make_model(tokenizer, seed=123).eval()
    with torch.no_grad():
        expected = trained(batch)
        assert not torch.allclose(transcript_logits(fresh(batch)), transcript_logits(expected))
    fresh.load_trainable_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    with torch.no_grad():
        got = fresh(batch)
    for field in ("action_logits", "key_logits", "modifier_logits", "click_logits", "transcript_hidden"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), rtol=0, atol=0)
    torch.testing.assert_close(transcript_logits(got), transcript_logits(expected), rtol=0, atol=0)

    # Strict: a checkpoint with a key dropped does not load.
    with pytest.raises(KeyError, match="missing keys"):
        fresh.load_trainable_state_dict({k: v for k, v in state.items() if not k.startswith("transcript.visual_proj")})


def test_original_model_keeps_its_outputs_and_loss_names(tokenizer):
    torch.manual_seed(0)
    original = [o for o in SMALL if o != "model=parallel" and not o.startswith(("model.lm_", "model.max_text"))]
    model = build_model(load_config(original), tokenizer)
    out = model(make_batch(tokenizer))
    assert transcript_logits(out) is None
    assert set(build_loss(load_config(["loss.class_balance=0"]).loss)(out, make_batch(tokenizer))) == {"action", "key", "modifier", "click", "total"}


@pytest.mark.e2e  # an in-process training run (minutes of CPU)
def test_short_training_learns_the_narration(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    history = train_steps(model, batch, make_cfg(), steps=60)
    assert history[-1] < 0.75 * history[0], history
    # Greedy streaming then writes each frame's text (silent frames stay silent).
    assert model.transcribe(batch) == TEXTS
