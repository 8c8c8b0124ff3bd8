"""Pretrained tiny towers: scripts/pretrain_tiny_towers.py writes the published layouts, backbone=tiny
loads them strictly through `name_or_path` (frozen, with LoRA), broken files are named, and a checkpoint
refuses towers other than the ones it was trained on."""
from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from action_decoder.config import load_config
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.towers.fingerprint import tower_fingerprint
from action_decoder.models.towers.lora import is_lora_parameter
from action_decoder.models.towers.onevision_encoder import OneVisionEncoder, OneVisionEncoderConfig
from action_decoder.pretraining.towers import GLYPH_ID, GlyphDesktop
from tests.conftest import REPO, only_run_dir, run_cli, run_eval, run_train

# Pretraining in seconds: a few recordings and steps, a small non-square frame (4 x 6 patches of 8 px).
QUICK = [
    "backbone.vision.image_size=[32,48]",
    "backbone.pretrain.vision_recordings=2",
    "backbone.pretrain.vision_val_recordings=1",
    "backbone.pretrain.vision_steps=3",
    "backbone.pretrain.text_recordings=20",
    "backbone.pretrain.text_val_recordings=6",
    "backbone.pretrain.text_steps=3",
    "backbone.pretrain.batch_size=2",
]
SMALL_DECODER = ["model.d_model=32", "model.num_heads=4", "model.ffn_dim=64"]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    paths = [f"backbone.vision.name_or_path={root / 'vision'}", f"backbone.text.name_or_path={root / 'text'}"]
    first = run_cli([sys.executable, str(REPO / "scripts" / "pretrain_tiny_towers.py"), *QUICK, *paths])
    return root, [*QUICK, *paths], first


def _cfg(overrides):
    return load_config([*overrides, *SMALL_DECODER])


@pytest.mark.e2e
def test_script_writes_the_published_layouts_and_reuses_them(towers):
    root, overrides, first = towers
    vision, text = root / "vision", root / "text"
    config = OneVisionEncoderConfig.from_json_file(vision / "config.json")
    reference_names = list(OneVisionEncoder(config).state_dict())
    assert set(load_file(str(vision / "model.safetensors"))) == set(reference_names)  # the published names
    assert len(reference_names) == 47 and "head.attention.in_proj_weight" in reference_names
    OneVisionEncoder.from_pretrained(vision)  # strict=True inside
    assert (text / "config.json").is_file() and (text / "model.safetensors").is_file()
    for tower in (vision, text):
        report = json.loads((tower / "pretrain_report.json").read_text())
        assert report["metrics"] and report["settings"]["pretrain"]["seed"] == 9001
    before = {p: p.read_bytes() for p in (vision / "model.safetensors", text / "model.safetensors")}
    second = run_cli([sys.executable, str(REPO / "scripts" / "pretrain_tiny_towers.py"), *overrides])
    assert second.stdout.count("reusing") == 2, second.stdout
    assert all(p.read_bytes() == b for p, b in before.items())
    assert "wrote" in first.stdout


@pytest.mark.e2e
def test_backbone_loads_the_pretrained_towers_strictly_frozen_with_lora(towers):
    root, overrides, _ = towers
    cfg = _cfg(overrides)
    assert cfg.backbone.vision.fingerprint == tower_fingerprint(root / "vision") is not None
    assert cfg.backbone.text.fingerprint == tower_fingerprint(root / "text") is not None
    model = build_model(cfg, build_tokenizer(cfg.backbone.text))
    saved = {"vision": load_file(str(root / "vision" / "model.safetensors")),
             "text": load_file(str(root / "text" / "model.safetensors"))}
    for name in ("vision", "text"):
        tower = getattr(model, name)
        base = {n.replace(".base_layer", ""): p for n, p in tower.state_dict().items() if ".lora_" not in n}
        ref = saved[name]
        if name == "text":  # tied: save_pretrained writes the embedding once
            base.pop("lm_head.weight", None)
        assert base.keys() == ref.keys(), sorted(set(base) ^ set(ref))
        assert all(torch.equal(base[k], ref[k]) for k in ref)
        params = dict(tower.named_parameters())
        assert any(is_lora_parameter(n) for n in params)
        assert all(p.requires_grad == is_lora_parameter(n) for n, p in params.items())


@pytest.mark.e2e
@pytest.mark.parametrize("tower", ["vision", "text"])
def test_a_missing_or_corrupted_weights_file_is_named(towers, tower, tmp_path):
    root, overrides, _ = towers
    broken = tmp_path / tower
    shutil.copytree(root / tower, broken)
    cfg = _cfg([*overrides, f"backbone.{tower}.name_or_path={broken}"])
    tokenizer = build_tokenizer(cfg.backbone.text)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated download
    with pytest.raises(ValueError, match=str(weights)):
        build_model(cfg, tokenizer)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=str(broken)):
        build_model(cfg, tokenizer)


@pytest.mark.e2e
def test_towers_changed_after_training_are_refused(towers, tmp_path):
    """A run records the towers' fingerprint in its resolved config (so in best.pt); other towers fail."""
    root, overrides, _ = towers
    copy = tmp_path / "vision"
    shutil.copytree(root / "vision", copy)
    cfg = _cfg([*overrides, f"backbone.vision.name_or_path={copy}"])
    recorded = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("backbone", "model", "labels")}
    tokenizer = build_tokenizer(cfg.backbone.text)
    build_model(recorded, tokenizer)  # the same towers: fine
    state = load_file(str(copy / "model.safetensors"))
    state["layernorm_pre.weight"] = state["layernorm_pre.weight"] + 1.0
    save_file(state, str(copy / "model.safetensors"))
    with pytest.raises(ValueError, match="fingerprint"):
        build_model(recorded, tokenizer)


def test_glyph_labels_sit_on_the_drawn_characters():
    """The glyph probe's labels: every recorded character centre lies on ink of the rendered UI."""
    from action_decoder.recorders.synthetic.recorder import SyntheticConfig, plan_recording

    plan = plan_recording(3, SyntheticConfig(seed=9001))
    desk = GlyphDesktop(plan.layout)
    ui = desk.render(0.0, cursor=False).astype(int)
    assert len(desk.glyphs) > 20
    hits = 0
    for x, y, g in desk.glyphs:
        assert 0 <= g < len(GLYPH_ID)
        patch = ui[int(y) - 4:int(y) + 5, max(0, int(x) - 2):int(x) + 3]
        hits += int(patch.reshape(-1, 3).std(axis=0).max() > 20)  # ink: contrast within the glyph's box
    assert hits >= 0.9 * len(desk.glyphs)


@pytest.mark.e2e
def test_a_run_on_the_towers_records_them_and_eval_refuses_others(towers, prepared_data, tmp_path):
    """train.py on pretrained towers (through name_or_path): best.pt records their fingerprints; eval.py
    reloads them, and refuses once the towers were re-made."""
    root, _, _ = towers
    vision = tmp_path / "vision"
    shutil.copytree(root / "vision", vision)
    run_train(prepared_data, tmp_path / "out", "train.epochs=1", "backbone.vision.image_size=[32,48]",
              "backbone.vision.patch_size=16", f"backbone.vision.name_or_path={vision}",
              f"backbone.text.name_or_path={root / 'text'}")
    best = only_run_dir(tmp_path / "out") / "best.pt"
    saved = torch.load(best, weights_only=True)["config"]["backbone"]
    assert saved["vision"]["fingerprint"] == tower_fingerprint(vision) and saved["text"]["fingerprint"]
    run_eval(f"checkpoint={best}", "split=val", f"data.prepared_dir={prepared_data}")
    state = load_file(str(vision / "model.safetensors"))
    save_file({k: v * 1.01 for k, v in state.items()}, str(vision / "model.safetensors"))
    proc = run_eval(f"checkpoint={best}", "split=val", f"data.prepared_dir={prepared_data}", check=False)
    assert proc.returncode != 0 and "fingerprint" in proc.stderr


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_towers_not_made_yet_say_how_to_make_them(tower, tmp_path):
    cfg = _cfg(["backbone.vision.name_or_path=null", "backbone.text.name_or_path=null",
                f"backbone.{tower}.name_or_path={tmp_path / 'not_made' / tower}"])
    with pytest.raises(FileNotFoundError, match=r"(?s)not_made.*pretrain_tiny_towers\.py"):
        build_model(cfg, build_tokenizer(cfg.backbone.text))
