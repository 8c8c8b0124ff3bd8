"""The model side: Qwen3 prompt features, LoRA, the March-10 decoder, build-time checks, real sizes."""
from __future__ import annotations

import math

import pytest
import torch

from action_decoder.config import load_config
from tests.conftest import RANDOM_TOWERS
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.towers.lora import is_lora_parameter
from action_decoder.models.losses import build_loss
from action_decoder.models.outputs import Outputs, decode_click_xy
from action_decoder.models.towers.text_encoder import build_text_model, load_qwen3, prompt_features

# Smaller than backbone=tiny so each build + step takes well under a second: 32 px frames of
# 8 px patches = 4 x 4 tokens a frame.
SMALL = [
    *RANDOM_TOWERS,
    "backbone.vision.image_size=32",
    "backbone.vision.patch_size=8",
    "model.d_model=32",
    "model.num_heads=4",
    "model.ffn_dim=64",
    "loss.class_balance=0",  # these tests build the loss without the training split's class counts
]
B, T, L = 2, 3, 10


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("small")


def make_cfg(*overrides: str):
    return load_config([*SMALL, *overrides])


def make_model(tokenizer, *overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(make_cfg(*overrides), tokenizer)


def make_batch(tokenizer, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the documented shapes (data/README.md §3) with every head supervised somewhere."""
    g = torch.Generator().manual_seed(seed)
    ids = tokenizer(["Click OK", "Type hi"], padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    return {
        "pixels": torch.randn(B, T, 3, size, size, generator=g),
        "prompt_ids": ids["input_ids"],
        "prompt_mask": ids["attention_mask"].bool(),
        "action": torch.tensor([[0, 2, 8], [1, 9, 2]]),
        "key": torch.tensor([[-100, -100, 5], [-100, 40, -100]]),
        "modifier": torch.tensor([[-100, 0, 0], [-100, 1, 0]]),
        "click_xy": torch.tensor([[[0, 0], [0.3, 0.7], [0, 0]], [[0, 0], [0, 0], [0.9, 0.1]]]),
        "click_mask": torch.tensor([[False, True, False], [False, False, True]]),
    }


def test_forward_backward_trains_exactly_lora_and_new_layers(tokenizer):
    model = make_model(tokenizer)
    batch = make_batch(tokenizer)
    out = model(batch)
    labels = load_config().labels
    assert out.action_logits.shape == (B, T, len(labels.actions))
    assert out.key_logits.shape == (B, T, len(labels["keys"]))
    assert out.modifier_logits.shape == (B, T, len(labels.modifiers))
    assert out.click_logits.shape == (B, T, 16) and out.token_xy.shape == (B, T, 16, 2)
    losses = build_loss(make_cfg().loss)(out, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()

    trainable = set(model.trainable_state_dict())
    lora_b = 0
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.requires_grad and p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            if ".lora_B." in name:  # lora_A's gradient is exactly 0 while B is still 0 at init
                assert p.grad.abs().sum() > 0, name
                lora_b += 1
        else:
            assert not p.requires_grad and p.grad is None, name
    # q, k, v, out_proj, fc1, fc2 in 2 encoder layers + q, k, v, o, gate, up, down in 2 Qwen3 layers
    assert lora_b == 2 * 6 + 2 * 7
    # The towers' own weights are frozen; the pooling head and LM head get no adapter.
    assert not any(n.startswith("vision.head.") and is_lora_parameter(n) for n in trainable)
    assert not any(n.startswith("text.lm_head") for n in trainable)
    groups = model.parameter_groups()
    assert sum(p.numel() for p in groups["lora"]) + sum(p.numel() for p in groups["new"]) == sum(
        p.numel() for p in model.trainable_state_dict().values()
    )
    assert all(p.grad is not None for p in groups["lora"] + groups["new"])


def _train_one_step(model, batch, tokenizer):
    opt = torch.optim.SGD([p for g in model.parameter_groups().values() for p in g], lr=0.5)
    build_loss(make_cfg().loss)(model(batch), batch)["total"].backward()
    opt.step()


def test_trainable_state_dict_round_trips_through_a_file(tokenizer, tmp_path):
    batch = make_batch(tokenizer)
    trained = make_model(tokenizer, seed=0)
    _train_one_step(trained, batch, tokenizer)  # LoRA B leaves 0, so the adapters matter
    torch.save(trained.trainable_state_dict(), tmp_path / "ckpt.pt")

    fresh = make_model(tokenizer, seed=123)  # new layers and LoRA drawn differently
    trained.eval(), fresh.eval()
    with torch.no_grad():
        before = fresh(batch).action_logits
        expected = trained(batch)
    assert not torch.allclose(before, expected.action_logits)
    fresh.load_trainable_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    with torch.no_grad():
        got = fresh(batch)
    for field in ("action_logits", "key_logits", "modifier_logits", "click_logits"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), rtol=0, atol=0)
    # Only what trains is saved: no frozen tower weight.
    assert all(".lora_" in k for k in trained.trainable_state_dict() if k.startswith(("vision.", "text.")))


def test_strict_load_names_missing_and_unexpected_keys(tokenizer):
    model = make_model(tokenizer)
    sd = dict(model.trainable_state_dict())
    dropped = "text.model.layers.1.mlp.down_proj.lora_B.default.weight"
    assert dropped in sd
    del sd[dropped]
    sd["click_head.extra.weight"] = torch.zeros(3)
    sd["heads.action.weight"] = torch.zeros(5, 5)
    with pytest.raises(KeyError) as err:
        model.load_trainable_state_dict(sd)
    message = str(err.value)
    assert dropped in message and "click_head.extra.weight" in message and "heads.action.weight" in message


@pytest.mark.parametrize("clip_encoding", ["video", "frames"])
def test_sparse_visible_tokens_end_to_end(tokenizer, clip_encoding):
    k = 5
    model = make_model(tokenizer, f"model.visible_tokens={k}", f"model.clip_encoding={clip_encoding}")
    batch = make_batch(tokenizer)
    # Static clip except one patch that changes in each later frame: the codec-style selection
    # must keep it, and its token_xy must be that patch's centre.
    batch["pixels"] = batch["pixels"][:, :1].repeat(1, T, 1, 1, 1)
    changed = {1: (0, 3), 2: (2, 1)}  # frame -> (patch row, patch column)
    for t, (h, w) in changed.items():
        batch["pixels"][:, t, :, h * 8:(h + 1) * 8, w * 8:(w + 1) * 8] += 3.0
    features = model.encode(batch)
    assert features.visual_tokens.shape == (B, T, k, 32) and features.token_xy.shape == (B, T, k, 2)
    for t, (h, w) in changed.items():
        centre = torch.tensor([(w + 0.5) / 4, (h + 0.5) / 4])
        assert ((features.token_xy[:, t] - centre).abs().sum(-1) < 1e-6).any(dim=-1).all()
        assert (features.visible_indices[:, t] == h * 4 + w).any(dim=-1).all()
    out = model.decode(features)
    assert out.click_logits.shape == (B, T, k)
    losses = build_loss(make_cfg().loss)(out, batch)
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert all(p.grad is not None for p in model.parameter_groups()["lora"])


def test_encode_matches_encoder_token_layout(tokenizer):
    """Dense clip: the decoder's per-frame tokens are the encoder's video tokens, frame by frame."""
    model = make_model(tokenizer, "model.clip_encoding=video").eval()
    batch = make_batch(tokenizer)
    with torch.no_grad():
        features = model.encode(batch)
        hidden, _ = model.vision(batch["pixels"].transpose(1, 2))
        want = model.visual_proj(hidden.reshape(B, T, 16, -1))
    torch.testing.assert_close(features.visual_tokens, want)
    # Raster order within a frame: token 5 of a 4x4 grid is row 1, column 1.
    torch.testing.assert_close(features.token_xy[0, 0, 5], torch.tensor([1.5 / 4, 1.5 / 4]))


@pytest.mark.parametrize("causal", [False, True])
def test_temporal_causal_knob_hides_later_frames(tokenizer, causal):
    model = make_model(tokenizer, f"model.temporal_causal={causal}").eval()
    with torch.no_grad():
        features = model.encode(make_batch(tokenizer))
        before = model.decode(features).action_logits
        features.visual_tokens[:, -1] += 1.0  # change only the last frame
        after = model.decode(features).action_logits
    assert T >= 3
    # The last frame and the one before it (label T-2 is the interval [T-2, T-1): it sees the change into
    # frame T-1) always move; earlier frames only when the clip is read both ways.
    assert not torch.allclose(after[:, -1], before[:, -1]) and not torch.allclose(after[:, -2], before[:, -2])
    assert torch.allclose(after[:, :-2], before[:, :-2]) == causal


def test_click_decoding_from_a_constructed_heatmap():
    grid = 4
    hw = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    token_xy = torch.stack(((hw[:, 1] + 0.5) / grid, (hw[:, 0] + 0.5) / grid), -1)  # (x, y) raster order
    cell = (1 / grid, 1 / grid)

    def at(row: int, col: int) -> int:
        return row * grid + col

    sharp = torch.full((grid * grid,), -50.0)
    sharp[at(1, 2)] = 10.0
    torch.testing.assert_close(decode_click_xy(sharp, token_xy, cell), torch.tensor([2.5 / 4, 1.5 / 4]))

    # Two equal neighbours: half way between their centres, off the token grid.
    pair = torch.full((grid * grid,), -50.0)
    pair[at(2, 0)] = pair[at(2, 1)] = 10.0
    torch.testing.assert_close(decode_click_xy(pair, token_xy, cell), torch.tensor([1.0 / 4, 2.5 / 4]))

    # A distant second mode does not drag the estimate away from the argmax neighbourhood.
    far = sharp.clone()
    far[at(3, 0)] = 9.9
    torch.testing.assert_close(decode_click_xy(far, token_xy, cell), torch.tensor([2.5 / 4, 1.5 / 4]))

    # Batched [B, T, N] through Outputs.click_xy (what the metrics read), with a sparse token set:
    # frame 1 keeps only 3 tokens, so its neighbourhood is what is visible.
    keep = [at(1, 2), at(2, 0), at(2, 1)]
    logits = torch.stack([sharp[keep], pair[keep]]).view(1, 2, 3)
    xy = token_xy[keep].expand(1, 2, 3, 2)
    out = Outputs(action_logits=torch.zeros(1, 2, 1), key_logits=torch.zeros(1, 2, 1),
                  modifier_logits=torch.zeros(1, 2, 1), click_logits=logits, token_xy=xy, token_cell=cell,
                  frame_features=torch.zeros(1, 2, 4))
    torch.testing.assert_close(out.click_xy, torch.tensor([[[2.5 / 4, 1.5 / 4], [1.0 / 4, 2.5 / 4]]]))


def test_prompt_features_ignore_padding_and_survive_empty_prompts(tokenizer):
    model = make_model(tokenizer).eval()
    text = model.text
    short = tokenizer(["Open the file"], return_tensors="pt")
    padded = tokenizer(["Open the file"], padding="max_length", max_length=20, return_tensors="pt")
    with torch.no_grad():
        a = prompt_features(text, short["input_ids"], short["attention_mask"].bool())
        b = prompt_features(text, padded["input_ids"], padded["attention_mask"].bool())
    n = a.shape[1]
    torch.testing.assert_close(b[:, :n], a, rtol=1e-5, atol=1e-5)
    assert (b[:, n:] == 0).all()

    batch = make_batch(tokenizer)
    batch["prompt_mask"][1] = False  # second clip has no task text at all
    batch["prompt_ids"][1] = tokenizer.pad_token_id
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.action_logits).all() and torch.isfinite(out.click_logits).all()


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer):
    no_dropout = ["backbone.lora.dropout=0", "model.dropout=0"]
    batch = make_batch(tokenizer)
    grads = []
    for ckpt in (False, True):
        model = make_model(tokenizer, *no_dropout, f"backbone.gradient_checkpointing={ckpt}")
        loss = build_loss(make_cfg().loss)(model(batch), batch)["total"]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    assert getattr(model.text, "is_activation_checkpointing", None) or model.text.is_gradient_checkpointing
    assert model.vision.gradient_checkpointing
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert grads[0][1].keys() == grads[1][1].keys()
    for name, g in grads[0][1].items():
        torch.testing.assert_close(g, grads[1][1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_towers_are_the_same_in_every_build(tokenizer):
    """Random-init towers come from backbone.init_seed, not the global RNG (checkpoints rely on it)."""
    a, b = make_model(tokenizer, seed=1), make_model(tokenizer, seed=2)
    frozen = lambda m: {n: p for n, p in m.named_parameters() if not m.is_trainable_name(n)}  # noqa: E731
    fa, fb = frozen(a), frozen(b)
    assert fa.keys() == fb.keys() and all(torch.equal(fa[n], fb[n]) for n in fa)
    assert not torch.equal(a.heads.action.weight, b.heads.action.weight)


def test_bf16_text_tower_is_created_in_bf16_with_the_fp32_draws(tokenizer):
    """A random-init Qwen3 in bf16 is made directly in bf16 (no fp32 copy) yet holds exactly the fp32 draws
    rounded: checkpoints trained over the old fp32-then-cast towers meet the very same frozen weights."""
    text_cfg = {**load_config().backbone.text, "name_or_path": None}  # random init: the draws are the point
    torch.manual_seed(0)
    direct = build_text_model(text_cfg, tokenizer, dtype=torch.bfloat16)
    torch.manual_seed(0)
    fp32 = build_text_model(text_cfg, tokenizer, dtype=torch.float32)
    assert torch.get_default_dtype() == torch.float32  # restored after the build
    got, want = direct.state_dict(), fp32.state_dict()
    assert got.keys() == want.keys()
    for name, p in got.items():
        assert p.dtype == torch.bfloat16 and torch.equal(p, want[name].to(torch.bfloat16)), name


# -- real sizes on the meta device ---------------------------------------------------------


def test_real_backbone_sizes_on_meta_device():
    model = build_model(load_config(["backbone=onevision_qwen3_4b"]), None, empty_weights=True)
    assert next(model.text.parameters()).device.type == "meta"

    def count(module, lora):
        return sum(p.numel() for n, p in module.named_parameters() if is_lora_parameter(n) == lora)

    assert count(model.vision, lora=False) == 315_509_760
    assert count(model.text, lora=False) == 4_022_468_096  # tied embeddings, counted once
    assert model.text.lm_head.weight is model.text.model.embed_tokens.weight
    assert count(model.text, lora=True) == 16_515_072
    # 24 layers x r=8 x [4 x (1024 + 1024) attention + 2 x (1024 + 4096) MLP]
    assert count(model.vision, lora=True) == 24 * 8 * (4 * 2048 + 2 * 5120) == 3_538_944
    assert model.vision.config.patch_size == 14 and 224 // 14 == 16  # 256 tokens a 224 px frame


# -- bad configs fail at build time, saying what to change ----------------------------------


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["backbone.lora.text_targets=[q_proj,qkv_proj]"], ["qkv_proj", "o_proj", "backbone.lora.text_targets"]),
        (["backbone.lora.vision_targets=[q_proj,proj]"], ["'proj'", "out_proj", "backbone.lora.vision_targets"]),
        (["backbone.lora.vision_scope=null"], ["MultiheadAttention", "head.attention.out_proj"]),
        (["backbone.vision.num_attention_heads=4"], ["head_dim", "num_attention_heads", "multiple of 32"]),
        (["backbone.text.head_dim=31"], ["backbone.text.head_dim", "even"]),
        (["backbone.text.num_key_value_heads=3"], ["num_key_value_heads"]),
        (["model.d_model=30"], ["model.d_model=30", "model.num_heads=4"]),
        (["model.visible_tokens=17"], ["model.visible_tokens=17", "16"]),
        (["backbone.vision.image_size=36"], ["image_size=36", "patch_size=8"]),
    ],
)
def test_bad_config_fails_at_build_time(tokenizer, overrides, needles):
    with pytest.raises(ValueError) as err:
        make_model(tokenizer, *overrides)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


# -- Qwen3 loading ---------------------------------------------------------------------------


def test_qwen3_loads_from_a_local_folder(tokenizer, tmp_path):
    cfg = make_cfg()
    torch.manual_seed(0)
    saved = build_text_model(cfg.backbone.text, tokenizer)
    saved.save_pretrained(tmp_path / "qwen")
    loaded = load_qwen3(tmp_path / "qwen")
    assert type(loaded).__name__ == "Qwen3ForCausalLM"
    ref, got = saved.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    text_cfg = dict(cfg.backbone.text, name_or_path=str(tmp_path / "qwen"))
    assert build_text_model(text_cfg, tokenizer).lm_head.weight.shape[0] == len(tokenizer)


def test_build_model_loads_both_towers_from_local_folders(tokenizer, tmp_path):
    """name_or_path set: the towers are the saved weights (not backbone.init_seed draws), sizes checked."""
    import json

    from safetensors.torch import save_file

    from action_decoder.models.build import build_vision_model

    cfg = make_cfg()
    torch.manual_seed(7)
    vision = build_vision_model(cfg.backbone.vision, torch.float32, pretrained=False, gradient_checkpointing=False)
    (tmp_path / "ov").mkdir()
    (tmp_path / "ov" / "config.json").write_text(json.dumps(vision.config.to_dict()))
    save_file(vision.state_dict(), str(tmp_path / "ov" / "model.safetensors"))
    text = build_text_model(cfg.backbone.text, tokenizer)
    text.save_pretrained(tmp_path / "qwen")

    model = build_model(
        make_cfg(f"backbone.vision.name_or_path={tmp_path / 'ov'}", f"backbone.text.name_or_path={tmp_path / 'qwen'}"),
        tokenizer,
    )
    for tower, saved in ((model.vision, vision), (model.text, text)):
        base = {n.replace(".base_layer", ""): p for n, p in tower.state_dict().items() if ".lora_" not in n}
        ref = saved.state_dict()
        assert base.keys() == ref.keys() and all(torch.equal(base[k], ref[k]) for k in ref)
    assert torch.isfinite(model(make_batch(tokenizer)).action_logits).all()

    with pytest.raises(ValueError, match="hidden_size: config 128 vs checkpoint 64"):
        build_model(make_cfg(f"backbone.vision.name_or_path={tmp_path / 'ov'}", "backbone.vision.hidden_size=128"),
                    tokenizer)


def test_qwen3_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_qwen3(tmp_path / "nowhere")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(OSError, match="backbone.text.name_or_path"):
        load_qwen3("Qwen/Qwen3-4B")


@pytest.mark.e2e  # an in-process training run (minutes of CPU)
def test_loss_decreases_when_training_the_tiny_model(tokenizer):
    """The wiring learns: a few steps on one batch lower every supervised loss."""
    model = make_model(tokenizer, "backbone.lora.dropout=0", "model.dropout=0")
    batch = make_batch(tokenizer)
    loss_fn = build_loss(make_cfg().loss)
    opt = torch.optim.AdamW([p for g in model.parameter_groups().values() for p in g], lr=3e-3)
    first = None
    for _ in range(8):
        losses = loss_fn(model(batch), batch)
        first = first or {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in loss_fn(model(batch), batch).items()}
    assert last["total"] < 0.5 * first["total"]
    assert all(last[k] < first[k] for k in ("action", "key", "modifier", "click")), (first, last)
    assert math.isfinite(last["total"])
