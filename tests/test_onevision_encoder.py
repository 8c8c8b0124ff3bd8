"""Native OneVision encoder against the reference's golden fixture, plus its options and loaders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from action_decoder.models.towers.onevision_encoder import OneVisionEncoder, OneVisionEncoderConfig
from action_decoder.models.visible_tokens import select_visible_tokens

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-5  # docs/onevision_encoder.md §11: float64 reference differs from the float32 goldens by <= ~4e-6


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The goldens were produced with one thread; also keeps reductions deterministic.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads((FIXTURES / "ov_encoder_tiny.json").read_text())
    tensors = load_file(str(FIXTURES / "ov_encoder_tiny.safetensors"))
    state = {k: tensors[k] for k in meta["state_dict_keys"]}
    return meta, tensors, state


def tiny_config(meta, **overrides):
    return OneVisionEncoderConfig.from_dict({**meta["config"], **overrides})


def loaded_model(fixture, **overrides):
    meta, _, state = fixture
    model = OneVisionEncoder(tiny_config(meta, **overrides)).eval()
    model.load_state_dict(state, strict=True)
    return model


def case_inputs(tensors, case):
    return {arg: tensors[key] for arg, key in case["input_keys"].items()}


CASES = ["image", "video", "video_pos", "video_sparse"]


def test_state_dict_names_and_order_match_the_checkpoint(fixture):
    meta, _, _ = fixture
    model = OneVisionEncoder(tiny_config(meta))
    assert list(model.state_dict()) == meta["state_dict_keys"]
    for k, v in model.state_dict().items():
        assert list(v.shape) == meta["tensors"][k]["shape"], k


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case_name", CASES)
def test_reproduces_reference_outputs(fixture, case_name, attn):
    meta, tensors, _ = fixture
    model = loaded_model(fixture, attn_implementation=attn)
    case = next(c for c in meta["cases"] if c["name"] == case_name)
    with torch.no_grad():
        hidden, pooled = model(**case_inputs(tensors, case))
    expected_h = tensors[f"expected.{case_name}.last_hidden_state"]
    expected_p = tensors[f"expected.{case_name}.pooler_output"]
    assert hidden.shape == expected_h.shape and pooled.shape == expected_p.shape
    assert (hidden - expected_h).abs().max().item() <= TOL
    assert (pooled - expected_p).abs().max().item() <= TOL


@pytest.mark.parametrize("case_name", CASES)
def test_rope_angles_are_the_reference_float32_angles(fixture, case_name):
    meta, tensors, _ = fixture
    model = OneVisionEncoder(tiny_config(meta))
    inputs = case_inputs(tensors, next(c for c in meta["cases"] if c["name"] == case_name))
    pix = inputs["pixel_values"]
    B = pix.shape[0]
    if "patch_positions" in inputs:
        positions = inputs["patch_positions"]
    else:  # dense grid, frame-major: t = frame index
        T = pix.shape[2] if pix.dim() == 5 else 1
        Hp, Wp = pix.shape[-2] // 14, pix.shape[-1] // 14
        _, positions = select_visible_tokens(torch.zeros(B, T, 3, Hp * 14, Wp * 14), 14)
    assert torch.equal(model.video_rope(positions), tensors[f"debug.{case_name}.rope_angles"])


def test_use_head_false_returns_the_pre_postnorm_encoder_output(fixture):
    meta, tensors, state = fixture
    model = OneVisionEncoder(tiny_config(meta, use_head=False)).eval()
    body = {k: v for k, v in state.items() if not k.startswith(("head.", "layernorm_post."))}
    model.load_state_dict(body, strict=True)
    L = meta["config"]["num_hidden_layers"]
    for case in meta["cases"]:
        with torch.no_grad():
            hidden, pooled = model(**case_inputs(tensors, case))
        assert pooled is None
        assert (hidden - tensors[f"debug.{case['name']}.hidden_states.{L}"]).abs().max().item() <= TOL


def test_sdpa_equals_explicit_softmax_attention_in_values_and_gradients(fixture):
    sdpa, eager = loaded_model(fixture), loaded_model(fixture, attn_implementation="eager")
    torch.manual_seed(0)
    video = torch.randn(2, 3, 3, 42, 56)
    outs = []
    for model in (sdpa, eager):
        hidden, pooled = model(video)
        (hidden.square().mean() + pooled.sum()).backward()
        outs.append((hidden.detach(), pooled.detach(), model.encoder.layers[0].self_attn.q_proj.weight.grad))
    for a, b in zip(*outs):
        assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())
    # The switch on a built model reaches every layer.
    sdpa.attn_implementation = "eager"
    assert all(layer.self_attn.attn_implementation == "eager" for layer in sdpa.encoder.layers)


def test_rms_norm_variant_drops_norm_biases():
    cfg = OneVisionEncoderConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, layer_norm_type="rms_norm"
    )
    model = OneVisionEncoder(cfg)
    keys = list(model.state_dict())
    assert len(keys) == 55
    assert not any(k.endswith("bias") and ("layer_norm" in k or "layernorm" in k) for k in keys)
    hidden, pooled = model(torch.randn(1, 3, 28, 42))
    assert hidden.shape == (1, 6, 64) and pooled.shape == (1, 64)


def test_large_config_on_meta_device_has_the_published_size():
    with torch.device("meta"):
        large = OneVisionEncoder(OneVisionEncoderConfig())
        no_head = OneVisionEncoder(OneVisionEncoderConfig(use_head=False))
        rms = OneVisionEncoder(OneVisionEncoderConfig(layer_norm_type="rms_norm"))
    assert sum(p.numel() for p in large.parameters()) == 315_509_760
    assert len(large.state_dict()) == 399
    assert sum(p.numel() for p in no_head.parameters()) == 302_913_536
    assert sum(p.numel() for p in rms.parameters()) == 315_458_560


def test_head_size_the_rope_cannot_split_fails_at_build_with_a_fix():
    with pytest.raises(ValueError) as err:
        OneVisionEncoderConfig(hidden_size=64, num_attention_heads=4)  # head_dim 16
    msg = str(err.value)
    assert "head_dim" in msg and "divisible by 16" in msg and "num_attention_heads" in msg
    assert "[1, 2]" in msg  # the head counts that would work for hidden_size=64
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        OneVisionEncoderConfig(hidden_size=64, num_attention_heads=3)


def test_config_reads_published_json_and_ignores_unused_fields(tmp_path, fixture):
    meta, _, _ = fixture
    path = tmp_path / "config.json"
    path.write_text(json.dumps(meta["config"]))  # has model_type, id2label, ... besides ours
    cfg = OneVisionEncoderConfig.from_json_file(path)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers, cfg.rope_temporal_size) == (64, 2, 2, 64)
    assert cfg.head_dim == 32 and cfg.attn_implementation == "sdpa"


def test_video_longer_than_the_rope_table_asks_for_positions(fixture):
    model = loaded_model(fixture, rope_temporal_size=2)
    video = torch.randn(1, 3, 3, 28, 28)
    with pytest.raises(ValueError, match="patch_positions"):
        model(video)
    idx, pos = select_visible_tokens(video.transpose(1, 2), 14)
    hidden, _ = model(video, visible_indices=idx, patch_positions=pos)  # explicit positions still work
    assert hidden.shape == (1, 12, 64)


# --- visible-token selection -------------------------------------------------------------------


def test_selector_dense_default_matches_the_encoder_grid(fixture):
    meta, tensors, _ = fixture
    video = tensors["inputs.video.pixel_values"]  # [B, C, T, H, W]
    idx, pos = select_visible_tokens(video.transpose(1, 2), 14)
    B, _, T, H, W = video.shape
    N = T * (H // 14) * (W // 14)
    assert torch.equal(idx, torch.arange(N).expand(B, N))
    assert pos.shape == (B, N, 3)
    assert pos[0, 17].tolist() == [1, 0, 1]  # 17 = frame 1 (16 per frame), row 0, column 1
    model = loaded_model(fixture)
    with torch.no_grad():
        dense, _ = model(video)
        given, _ = model(video, visible_indices=idx, patch_positions=pos)
    assert torch.equal(dense, given)


def test_selector_keeps_changing_patches_and_sparse_forward_runs(fixture):
    torch.manual_seed(0)
    B, T, C, P = 2, 3, 3, 14
    frames = torch.zeros(B, T, C, 4 * P, 5 * P)  # 4x5 patch grid
    frames[:, 0, :, 0:P, 2 * P : 3 * P] = torch.randn(B, C, P, P)  # frame 0: one textured patch (0, 2)
    frames[:, 1] = frames[:, 0]
    frames[:, 1, :, 3 * P :, 4 * P :] += 1.0  # frame 1 changes patch (3, 4)
    frames[:, 2] = frames[:, 1]
    frames[0, 2, :, P : 2 * P, 0:P] -= 2.0  # frame 2: sample 0 changes (1, 0), sample 1 (2, 3)
    frames[1, 2, :, 2 * P : 3 * P, 3 * P : 4 * P] += 0.5
    idx, pos = select_visible_tokens(frames, P, k=2)
    assert idx.shape == (B, T * 2) and pos.shape == (B, T * 2, 3)
    kept = [set(map(tuple, pos[b].tolist())) for b in range(B)]
    for b in range(B):
        assert (0, 0, 2) in kept[b] and (1, 3, 4) in kept[b]
    assert (2, 1, 0) in kept[0] and (2, 2, 3) in kept[1]
    # Ascending within each frame, each frame's block inside its own token range, positions consistent.
    per_frame = idx.view(B, T, 2)
    assert torch.all(per_frame[..., 1] > per_frame[..., 0])
    assert torch.all(per_frame // 20 == torch.arange(T).view(1, T, 1))
    assert torch.equal(pos[..., 0] * 20 + pos[..., 1] * 5 + pos[..., 2], idx)

    model = loaded_model(fixture)
    video = frames.transpose(1, 2)
    with torch.no_grad():
        with_pos, pooled = model(video, visible_indices=idx, patch_positions=pos)
        without_pos, _ = model(video, visible_indices=idx)
    assert with_pos.shape == (B, T * 2, 64) and pooled.shape == (B, 64)
    assert torch.equal(with_pos, without_pos)


def test_selector_rejects_bad_k():
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        select_visible_tokens(torch.zeros(1, 2, 3, 28, 28), 14, k=5)


# --- gradient checkpointing --------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(fixture):
    torch.manual_seed(1)
    video = torch.randn(2, 3, 2, 28, 42, requires_grad=True)
    results = []
    for ckpt in (False, True):
        model = loaded_model(fixture).train()
        model.gradient_checkpointing = ckpt
        hidden, pooled = model(video)
        (hidden.square().mean() + pooled.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((hidden.detach(), pooled.detach(), grads, video.grad.clone()))
        video.grad = None
    (h0, p0, g0, x0), (h1, p1, g1, x1) = results
    assert torch.equal(h0, h1) and torch.equal(p0, p1)
    assert torch.allclose(x0, x1, atol=1e-6)
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-6), name
    # Checkpointing really ran: the layer's inner modules are recomputed during backward
    # (the layer's own hook would not fire again: recomputation stops after the last saved tensor).
    calls = []
    model = loaded_model(fixture).train()
    model.gradient_checkpointing_enable()
    model.encoder.layers[0].mlp.fc1.register_forward_hook(lambda *a: calls.append(1))
    model(video)[0].sum().backward()
    assert len(calls) == 2


# --- from_pretrained ---------------------------------------------------------------------------


def write_checkpoint(folder: Path, meta, state, shards: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(meta["config"]))
    if shards == 1:
        save_file(state, str(folder / "model.safetensors"))
        return
    keys = list(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("shards", [1, 2])
def test_from_pretrained_local_folder(tmp_path, fixture, shards):
    meta, tensors, state = fixture
    write_checkpoint(tmp_path / "ckpt", meta, state, shards)
    model = OneVisionEncoder.from_pretrained(tmp_path / "ckpt").eval()
    assert all(p.device.type == "cpu" for p in model.parameters())
    case = next(c for c in meta["cases"] if c["name"] == "video_sparse")
    with torch.no_grad():
        hidden, pooled = model(**case_inputs(tensors, case))
    assert (hidden - tensors["expected.video_sparse.last_hidden_state"]).abs().max().item() <= TOL
    assert (pooled - tensors["expected.video_sparse.pooler_output"]).abs().max().item() <= TOL


def test_from_pretrained_casts_each_tensor_to_the_requested_dtype(tmp_path, fixture):
    meta, _, state = fixture
    write_checkpoint(tmp_path / "ckpt", meta, state, shards=2)
    model = OneVisionEncoder.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    got = model.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], v.to(torch.bfloat16)), k


def test_from_pretrained_rejects_a_checkpoint_with_missing_keys(tmp_path, fixture):
    meta, _, state = fixture
    partial = {k: v for k, v in state.items() if not k.startswith("head.")}
    write_checkpoint(tmp_path / "ckpt", meta, partial)
    with pytest.raises(RuntimeError, match="head.probe"):
        OneVisionEncoder.from_pretrained(tmp_path / "ckpt")


@pytest.mark.e2e
def test_from_pretrained_offline_hub_id_fails_fast_with_instructions(tmp_path):
    code = (
        "from action_decoder.models.towers.onevision_encoder import OneVisionEncoder\n"
        "try:\n"
        "    OneVisionEncoder.from_pretrained('no-such-owner/no-such-encoder')\n"
        "except OSError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no-such-owner/no-such-encoder" in out.stdout
    assert "HF_HUB_OFFLINE" in out.stdout and "local folder" in out.stdout
