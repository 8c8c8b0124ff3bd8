"""ClipDataset + collate_clips (data/clips.py) on tiny real mp4s: windows, labels, batch layout, skips."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from action_decoder.config import load_config
from action_decoder.data.clips import (ClipDataset, CorruptVideoWarning, EpisodeFormatError,
                                       build_clip_dataset, collate_clips, scoring_windows)
from action_decoder.data.tokenizer import build_tokenizer
from action_decoder.data.video import reader_available
from action_decoder.data.vocab import IGNORE_INDEX, LabelVocab
from tests.episodes import frame_level, make_episode, write_jsonl, write_test_video

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
CLIP_LEN, STRIDE, SIZE = 8, 4, 32


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def vocab(cfg):
    return LabelVocab.from_config(cfg.labels)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("small")


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """Episode A: 20 sampled frames (video 40 at 10 fps, sampled at 5 fps) with labels on a few frames;
    episode B: 5 sampled frames (shorter than a clip); episode C: a truncated video file."""
    root = tmp_path_factory.mktemp("data")
    a = make_episode(write_test_video(root / "a.mp4", 40), 20, episode_id="a", prompt="Type hi",
                     tags=["synthetic", "type_text"])
    a["action"][2], a["modifier"][2], a["click"][2] = "click", "none", [0.25, 0.75]
    a["action"][5], a["key"][5], a["modifier"][5] = "type", "h", "shift"
    a["action"][9], a["key"][9], a["modifier"][9] = "hotkey", "s", "ctrl"
    a["action"][13] = "move"
    a["transcript"][1], a["transcript"][9] = "now", "save it"
    b = make_episode(write_test_video(root / "b.mp4", 10), 5, episode_id="b", prompt="Click the OK button",
                     tags=["synthetic", "click_button"])
    good = (root / "a.mp4").read_bytes()
    (root / "c.mp4").write_bytes(good[: len(good) // 2])
    c = make_episode(root / "c.mp4", 20, episode_id="c", tags=["synthetic", "broken"])
    return root, a, b, c


def dataset(eps, tok, vocab, **kw):
    args = dict(clip_len=CLIP_LEN, clip_stride=STRIDE, image_size=SIZE, mean=MEAN, std=STD, tokenizer=tok,
                vocab=vocab, max_transcript_tokens=16, max_prompt_tokens=32)
    args.update(kw)
    return ClipDataset(eps, **args)


def test_windows_stride_and_short_episodes(episodes, tok, vocab):
    _, a, b, _ = episodes
    ds = dataset([a, b], tok, vocab)
    # 20 frames, clips of 8 every 4: starts 0, 4, 8, 12; the 5-frame episode gives none and is counted.
    assert [ds.clip_id(i) for i in range(len(ds))] == ["a@0", "a@4", "a@8", "a@12"]
    assert ds.short_episodes == 1 and ds.num_episodes == 2
    assert len(dataset([a], tok, vocab, clip_len=20, clip_stride=1)) == 1
    assert len(dataset([a], tok, vocab, clip_len=3, clip_stride=5)) == 4  # starts 0, 5, 10, 15


def test_item_decodes_exactly_the_clips_frame_index(episodes, tok, vocab):
    _, a, _, _ = episodes
    item = dataset([a], tok, vocab)[1]  # clip a@4: sampled frames 4..11 = video frames 8, 10, ..., 22
    assert item["pixels"].shape == (CLIP_LEN, 3, SIZE, SIZE) and item["pixels"].dtype == torch.float32
    gray = item["pixels"][:, 0, SIZE // 2:, :] * STD[0] + MEAN[0]  # undo normalisation (lower half: no square)
    np.testing.assert_allclose(gray.mean(dim=(1, 2)).numpy() * 255,
                               [frame_level(v) for v in range(8, 24, 2)], atol=3)


@pytest.mark.skipif(not reader_available("torchcodec")[0], reason="optional torchcodec reader absent "
                    "(`pip install torchcodec==0.13.0` + `apt-get install -y ffmpeg`)")
def test_torchcodec_reader_gives_the_same_items(episodes, tok, vocab):
    _, a, _, _ = episodes
    dec, tc = dataset([a], tok, vocab, reader="decord"), dataset([a], tok, vocab, reader="torchcodec")
    assert torch.equal(dec[3]["pixels"], tc[3]["pixels"])


def test_collated_batch_follows_the_contract(episodes, tok, vocab):
    _, a, _, _ = episodes
    ds = dataset([a], tok, vocab)
    batch = collate_clips([ds[0], ds[2]], pad_id=tok.pad_token_id)  # a@0 and a@8
    b, t = 2, CLIP_LEN
    expect = {"pixels": (torch.float32, (b, t, 3, SIZE, SIZE)), "prompt_ids": (torch.int64, (b, 7)),
              "prompt_mask": (torch.bool, (b, 7)), "action": (torch.int64, (b, t)), "key": (torch.int64, (b, t)),
              "modifier": (torch.int64, (b, t)), "click_xy": (torch.float32, (b, t, 2)),
              "click_mask": (torch.bool, (b, t)), "transcript_ids": (torch.int64, (b, t, 7)),
              "transcript_mask": (torch.bool, (b, t, 7)), "scored": (torch.bool, (b, t))}
    assert set(batch) == set(expect) | {"clip_id"}
    assert batch["scored"].all()  # training windows score every frame
    for k, (dtype, shape) in expect.items():
        assert batch[k].dtype == dtype and tuple(batch[k].shape) == shape, k
    assert batch["clip_id"] == ["a@0", "a@8"]
    acts, keys, mods = vocab.actions, vocab.keys, vocab.modifiers
    # a@0 covers frames 0..7: click at 2, type 'h' with shift at 5; a@8 covers 8..15: hotkey ctrl+s at 9, move at 13.
    want_action = [[acts.id(n) for n in a["action"][s:s + t]] for s in (0, 8)]
    assert batch["action"].tolist() == want_action
    ign = IGNORE_INDEX
    assert batch["key"].tolist() == [[ign] * 5 + [keys.id("h")] + [ign] * 2, [ign, keys.id("s")] + [ign] * 6]
    assert batch["modifier"].tolist() == [[ign, ign, mods.id("none"), ign, ign, mods.id("shift"), ign, ign],
                                          [ign, mods.id("ctrl")] + [ign] * 6]
    assert batch["click_mask"].tolist() == [[False, False, True] + [False] * 5, [False] * 8]
    assert batch["click_xy"][0, 2].tolist() == [0.25, 0.75]
    assert batch["click_xy"][~batch["click_mask"]].abs().sum() == 0
    # Prompt "Type hi" = 7 chars, right-padded; transcripts: "now" on a@0 frame 1, "save it" on a@8 frame 1.
    assert tok.decode(batch["prompt_ids"][0][batch["prompt_mask"][0]]) == "Type hi"
    assert batch["transcript_mask"].sum(-1).tolist() == [[0, 3, 0, 0, 0, 0, 0, 0], [0, 7, 0, 0, 0, 0, 0, 0]]
    assert tok.decode(batch["transcript_ids"][1, 1]) == "save it"
    assert tok.decode(batch["transcript_ids"][0, 1, :3]) == "now"
    assert (batch["transcript_ids"][~batch["transcript_mask"]] == tok.pad_token_id).all()


def test_prompt_padding_and_empty_transcripts(episodes, tok, vocab):
    _, a, _, _ = episodes
    long = dict(a, id="long", prompt="Click the OK button", transcript=[""] * 20)
    ds = dataset([a, long], tok, vocab)
    batch = collate_clips([ds[0], ds[4]], tok.pad_token_id)  # "Type hi" (7) and "Click the OK button" (19)
    assert batch["prompt_mask"].sum(1).tolist() == [7, 19]
    assert (batch["prompt_ids"][0, 7:] == tok.pad_token_id).all()
    only_empty = collate_clips([ds[4]], tok.pad_token_id)
    assert only_empty["transcript_ids"].shape == (1, CLIP_LEN, 1) and not only_empty["transcript_mask"].any()


def test_truncation_of_prompt_and_transcript_is_counted(episodes, tok, vocab):
    _, a, _, _ = episodes
    with pytest.warns(UserWarning, match="1 prompts cut to 4 tokens and 2 frame transcripts cut to 2 tokens"):
        ds = dataset([a], tok, vocab, max_prompt_tokens=4, max_transcript_tokens=2)  # "now", "save it"
    assert ds.truncated_prompts == 1 and ds.truncated_transcript_frames == 2
    batch = collate_clips([ds[0]], tok.pad_token_id)
    assert batch["prompt_ids"].shape == (1, 4) and tok.decode(batch["prompt_ids"][0]) == "Type"
    assert tok.decode(batch["transcript_ids"][0, 1]) == "no"


def test_filters_by_tag_and_by_action(episodes, tok, vocab):
    _, a, b, _ = episodes
    b_long = dict(b, id="b2", num_frames=20, frame_index=[min(i, 9) for i in range(20)],
                  **{k: b[k] * 4 for k in ("action", "key", "modifier", "click", "transcript")})
    ds = dataset([a, b_long], tok, vocab, filters={"tags": ["click_button"], "actions": None})
    assert {ds.clip_id(i).split("@")[0] for i in range(len(ds))} == {"b2"} and ds.filtered_episodes == 1
    # Clips of `a` holding a hotkey: frame 9 lies in a@4 (4..11) and a@8 (8..15), not a@0 or a@12.
    ds = dataset([a, b_long], tok, vocab, filters={"tags": None, "actions": ["hotkey"]})
    assert [ds.clip_id(i) for i in range(len(ds))] == ["a@4", "a@8"] and ds.filtered_clips == 6
    ds = dataset([a], tok, vocab, filters={"actions": ["click", "move"]})  # any listed action: click@2, move@13
    assert [ds.clip_id(i) for i in range(len(ds))] == ["a@0", "a@8", "a@12"]
    with pytest.raises(ValueError, match="'clik'"):
        dataset([a], tok, vocab, filters={"actions": ["clik"]})


@pytest.mark.parametrize("n, want", [
    (3, [(0, 0, 3)]),                                  # shorter than a clip: one padded window
    (8, [(0, 0, 8)]),
    (12, [(0, 0, 6), (4, 2, 8)]),                      # frames 0-5 | 6-11
    (21, [(0, 0, 6), (4, 2, 6), (8, 2, 6), (12, 2, 5), (13, 4, 8)]),  # tail window flush with the end
])
def test_scoring_windows_cover_every_frame_once_most_central(n, want):
    windows = scoring_windows(n, 8, 4)
    assert windows == want
    scored = [start + f for start, lo, hi in windows for f in range(lo, hi)]
    assert scored == list(range(n))
    for start, lo, hi in windows:  # >= (clip_len - stride) / 2 frames of context each side, where the episode has them
        for f in range(start + lo, start + hi):
            assert min(f - start, start + 7 - f) >= min(f, n - 1 - f, 2)


def test_every_frame_once_items_label_only_their_scored_frames(episodes, tok, vocab):
    _, a, b, _ = episodes  # a: 20 frames, b: 5 frames (shorter than a clip)
    ds = dataset([a, b], tok, vocab, every_frame_once=True)
    assert ds.num_scored_frames == 25 and [ds.clip_id(i) for i in range(len(ds))] == ["a@0", "a@4", "a@8", "a@12", "b@0"]
    batch = collate_clips([ds[i] for i in range(len(ds))], tok.pad_token_id)
    scored = batch["scored"]
    assert scored.sum() == 25 and (batch["action"] != IGNORE_INDEX).sum() == 25
    assert ((batch["action"] != IGNORE_INDEX) == scored).all()
    # frame 9 (hotkey ctrl+s) is scored in a@4 (centre 7.5), not a@8 (centre 11.5)
    assert batch["key"][1, 5] == vocab.keys.id("s") and batch["key"][2, 1] == IGNORE_INDEX
    # b's window repeats its last frame: 3 padded frames, unscored, no transcript
    assert scored[4].tolist() == [True] * 5 + [False] * 3
    assert torch.equal(batch["pixels"][4, 5], batch["pixels"][4, 4]) and not batch["transcript_mask"][4, 5:].any()


def test_corrupt_video_is_skipped_counted_and_dropped(episodes, tok, vocab):
    _, a, _, c = episodes
    ds = dataset([a, c], tok, vocab)
    assert len(ds) == 8
    with pytest.warns(CorruptVideoWarning, match=r"skipping clip c@0: .*c\.mp4"):
        assert ds[4] is None
    assert ds.skipped == 1
    with pytest.warns(CorruptVideoWarning, match="c@4"):
        batch = collate_clips([ds[0], ds[5], ds[1]], tok.pad_token_id)
    assert batch["clip_id"] == ["a@0", "a@4"] and batch["pixels"].shape[0] == 2 and ds.skipped == 2
    assert collate_clips([None, None], tok.pad_token_id) is None


def test_skips_in_dataloader_workers_reach_the_main_process(episodes, tok, vocab):
    _, a, _, c = episodes
    ds = dataset([a, c], tok, vocab)
    loader = DataLoader(ds, batch_size=4, num_workers=2,
                        collate_fn=lambda items: collate_clips(items, tok.pad_token_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptVideoWarning)
        batches = list(loader)
    assert batches[0]["clip_id"] == ["a@0", "a@4", "a@8", "a@12"] and batches[1] is None  # all four of c skipped
    assert ds.skipped == 4  # the epoch went on; counts from both workers


def test_unknown_label_names_file_and_line(episodes, tok, vocab, tmp_path):
    _, a, b, _ = episodes
    bad = dict(a, id="bad", action=a["action"][:3] + ["triple_click"] + a["action"][4:])
    path = write_jsonl(tmp_path / "train.jsonl", [b, bad])
    with pytest.raises(EpisodeFormatError, match=r"train\.jsonl:2: frame 3: action 'triple_click' is not in labels\.actions"):
        dataset(path, tok, vocab)
    bad_key = dict(a, key=a["key"][:5] + ["Key.f13"] + a["key"][6:])
    with pytest.raises(EpisodeFormatError, match=r"train\.jsonl:1: frame 5: key 'Key.f13' is not in labels\.keys"):
        dataset(write_jsonl(tmp_path / "train.jsonl", [bad_key]), tok, vocab)
    short_list = dict(a, transcript=a["transcript"][:-1])
    with pytest.raises(EpisodeFormatError, match=r"train\.jsonl:1: per-frame lists must have num_frames=20"):
        dataset(write_jsonl(tmp_path / "train.jsonl", [short_list]), tok, vocab)
    (tmp_path / "broken.jsonl").write_text(json.dumps(b) + "\n{not json\n")
    with pytest.raises(EpisodeFormatError, match=r"broken\.jsonl:2: not valid JSON"):
        dataset(tmp_path / "broken.jsonl", tok, vocab)


def test_build_clip_dataset_from_config(episodes, cfg, tok, tmp_path):
    root, a, b, _ = episodes
    with pytest.raises(FileNotFoundError, match=r"val\.jsonl not found.*python scripts/prepare_data\.py"):
        build_clip_dataset(cfg, "val", tok, data_cfg=dict_cfg(cfg, prepared_dir=str(tmp_path)))
    write_jsonl(tmp_path / "train.jsonl", [a, b])
    ds = build_clip_dataset(cfg, "train", tok, data_cfg=dict_cfg(cfg, prepared_dir=str(tmp_path)))
    # conf/data: clip_len 8, stride 4; conf/backbone/tiny: image_size [height, width] = [192, 320].
    assert len(ds) == 4 and ds.short_episodes == 1
    assert ds[0]["pixels"].shape == (cfg.data.clip_len, 3, *cfg.backbone.vision.image_size)


def dict_cfg(cfg, **overrides):
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg.data, overrides)


def test_several_prepared_dirs_are_read_as_one_split(episodes, cfg, tok, tmp_path):
    """data.prepared_dir: [a, b] (data=synthetic_desktop): both datasets' episodes, in order, frames of
    different screen sizes resized to the same image_size, normalized clicks kept; a colliding id is named."""
    _, a, b, _ = episodes
    wide = make_episode(write_test_video(tmp_path / "wide.mp4", 40, width=96, height=60), 20, episode_id="wide",
                        screen=(96, 60))
    wide["action"][6], wide["click"][6] = "click", [0.5, 0.25]
    write_jsonl(tmp_path / "one" / "train.jsonl", [a, b])
    write_jsonl(tmp_path / "two" / "train.jsonl", [wide])
    data = dict_cfg(cfg, prepared_dir=[str(tmp_path / "one"), str(tmp_path / "two")], clip_len=4, clip_stride=4)
    ds = build_clip_dataset(cfg, "train", tok, data_cfg=data)
    assert [ep.id for ep in ds.episodes] == ["a", "b", "wide"] and ds.num_episodes == 3
    alone = [build_clip_dataset(cfg, "train", tok, data_cfg=dict_cfg(cfg, prepared_dir=str(tmp_path / d),
                                                                      clip_len=4, clip_stride=4))
             for d in ("one", "two")]
    assert len(ds) == len(alone[0]) + len(alone[1])
    first_wide = next(i for i in range(len(ds)) if ds.clip_id(i).startswith("wide@"))
    item, item_a = ds[first_wide + 1], ds[0]  # frames 4-7 of "wide" hold its click at frame 6
    assert item["pixels"].shape == item_a["pixels"].shape == (4, 3, *cfg.backbone.vision.image_size)
    assert item["click_mask"].tolist() == [False, False, True, False]
    torch.testing.assert_close(item["click_xy"][2], torch.tensor([0.5, 0.25]))

    write_jsonl(tmp_path / "two" / "train.jsonl", [wide, {**a, "prompt": "same id"}])
    with pytest.raises(EpisodeFormatError, match=r"two/train\.jsonl:2: episode id 'a' already used at .*one/train\.jsonl:1"):
        build_clip_dataset(cfg, "train", tok, data_cfg=data)
    write_jsonl(tmp_path / "one" / "val.jsonl", [b])
    with pytest.raises(FileNotFoundError, match=r"two/val\.jsonl not found"):  # each listed dir needs the split
        build_clip_dataset(cfg, "val", tok, data_cfg=data)
