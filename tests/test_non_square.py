"""Frames keep the screen's shape: `backbone.vision.image_size: [height, width]` gives a non-square patch
grid, and clips, tokens and click targets stay consistent on it."""
from __future__ import annotations

import pytest
import torch

from action_decoder.config import load_config
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.models.build import build_model
from action_decoder.models.losses import build_loss
from action_decoder.models.outputs import decode_click_xy
from tests.conftest import RANDOM_TOWERS

# 16 x 48 px frames of 8 px patches: 2 rows x 6 columns of tokens.
H, W, P = 16, 48, 8
HP, WP = H // P, W // P
OVERRIDES = [*RANDOM_TOWERS, f"backbone.vision.image_size=[{H},{W}]", f"backbone.vision.patch_size={P}", "model.d_model=32", "model.num_heads=4",
             "model.ffn_dim=64", "loss.class_balance=0",
             "model.clip_encoding=video"]  # the encoder's own token order is compared below


@pytest.fixture(scope="module")
def model():
    cfg = load_config(OVERRIDES)
    torch.manual_seed(0)
    return build_model(cfg, build_tokenizer(cfg.backbone.text)).eval(), cfg


def test_clicks_land_on_the_right_token_on_a_non_square_grid(model):
    model, cfg = model
    tok = build_tokenizer(cfg.backbone.text)
    ids = tok(["Click OK"], return_tensors="pt")
    batch = {"pixels": torch.randn(1, 2, 3, H, W), "prompt_ids": ids["input_ids"], "prompt_mask": ids["attention_mask"].bool()}
    with torch.no_grad():
        features = model.encode(batch)
        hidden, _ = model.vision(batch["pixels"].transpose(1, 2))
    assert features.visual_tokens.shape[2] == HP * WP and features.token_cell == (1 / WP, 1 / HP)
    # The decoder's token n is the encoder's token n (raster order over a 6-wide grid) ...
    torch.testing.assert_close(features.visual_tokens, model.visual_proj(hidden.reshape(1, 2, HP * WP, -1)))
    loss = build_loss(cfg.loss)
    for x, y in [(0.02, 0.1), (0.97, 0.9), (0.4, 0.7), (0.7, 0.2), (0.55, 0.49)]:
        want = int(y * HP) * WP + int(x * WP)  # the token whose patch holds screen point (x, y)
        # ... its centre is that patch's centre ...
        col, row = want % WP, want // WP
        torch.testing.assert_close(features.token_xy[0, 0, want], torch.tensor([(col + 0.5) / WP, (row + 0.5) / HP]))
        # ... the click loss targets it: its CE is the lowest when the heatmap peaks there ...
        click = torch.tensor([[[x, y], [x, y]]])
        ces = []
        for n in range(HP * WP):
            logits = torch.full((1, 2, HP * WP), -10.0)
            logits[..., n] = 10.0
            ces.append(loss.click_loss(logits, features.token_xy, click, torch.ones(1, 2, dtype=torch.bool)).item())
        assert min(range(len(ces)), key=ces.__getitem__) == want
        # ... and a heatmap peaked there decodes to a point inside the same patch.
        logits = torch.full((HP * WP,), -50.0)
        logits[want] = 10.0
        px, py = decode_click_xy(logits, features.token_xy[0, 0], features.token_cell).tolist()
        assert int(px * WP) == col and int(py * HP) == row


def test_clips_are_resized_to_height_by_width(tmp_path):
    from action_decoder.data.clips import build_clip_dataset
    from tests.episodes import make_episode, write_jsonl, write_test_video

    cfg = load_config([*OVERRIDES, f"data.prepared_dir={tmp_path}", "data.clip_len=4", "data.clip_stride=4"])
    video = write_test_video(tmp_path / "ep.mp4", 8, width=64, height=40)
    write_jsonl(tmp_path / "train.jsonl", [make_episode(video, 4, screen=(64, 40))])
    item = build_clip_dataset(cfg, "train", build_tokenizer(cfg.backbone.text))[0]
    assert item["pixels"].shape == (4, 3, H, W)


def test_a_side_that_is_not_a_multiple_of_the_patch_is_refused():
    cfg = load_config([*RANDOM_TOWERS, "backbone.vision.image_size=[20,48]", "backbone.vision.patch_size=8"])
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_model(cfg, build_tokenizer(cfg.backbone.text))
