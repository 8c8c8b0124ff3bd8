"""Tokenizers (data/tokenizer.py): small char-level, offline Qwen3 (real ids), and folder loading."""
from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from action_decoder.data.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tokcache")


@pytest.fixture(scope="module")
def qwen(qwen_cache):
    return build_tokenizer({"tokenizer": "qwen3_offline", "tokenizer_cache": str(qwen_cache)})


def test_small_round_trip_and_specials():
    tok = build_tokenizer("small")
    assert isinstance(tok, PreTrainedTokenizerFast)
    text = "Rename report.txt to final.txt!\n\tOK? {a: 1, b: ~}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one id per character
    assert tok.decode(ids) == text
    assert len(tok) < 128
    special = {tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.eof_token_id}
    assert None not in special and len(special) == 4  # four distinct ids
    assert tok.eof_token == "<|eof|>"
    assert tok("<|eof|>", add_special_tokens=False)["input_ids"] == [tok.eof_token_id]  # one token, not 7 chars
    # Characters outside printable ASCII become <|unk|>, and decoding drops specials on request.
    ids = tok("né", add_special_tokens=False)["input_ids"]
    assert ids[1] == tok.unk_token_id
    assert tok.decode(ids + [tok.eof_token_id, tok.pad_token_id], skip_special_tokens=True) == "n"


def test_qwen3_offline_has_the_real_ids(qwen):
    assert len(qwen) == 151669
    assert qwen("Hello, world!", add_special_tokens=False)["input_ids"] == [9707, 11, 1879, 0]
    assert qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "</think>"]) == [
        151643, 151644, 151645, 151668]
    assert qwen.pad_token_id == 151643
    assert qwen.eof_token == "<|im_end|>" and qwen.eof_token_id == 151645
    # Special tokens written in text stay single ids; no BOS/EOS is added around the text.
    assert qwen("hi<|im_end|>")["input_ids"][-1] == 151645
    text = "Tippe „Grüße“ ein — 12345 ✓\n"
    assert qwen.decode(qwen(text, add_special_tokens=False)["input_ids"]) == text


def test_qwen3_offline_is_cached_and_reloads_identically(qwen, qwen_cache):
    folders = [p for p in qwen_cache.iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()
    again = build_tokenizer({"tokenizer": "qwen3_offline", "tokenizer_cache": str(qwen_cache)})
    text = "Click the OK button, then type 'final.txt'"
    assert again(text)["input_ids"] == qwen(text)["input_ids"]
    assert (again.pad_token_id, again.eof_token_id, len(again)) == (qwen.pad_token_id, qwen.eof_token_id, len(qwen))


def test_local_folder_loads_through_auto_tokenizer(qwen, tmp_path):
    # Option (a): a hub id or a folder goes through AutoTokenizer; a saved Qwen tokenizer stands in for
    # a downloaded Qwen/Qwen3-4B folder (no network in tests).
    qwen.save_pretrained(tmp_path / "qwen3")
    tok = build_tokenizer({"tokenizer": str(tmp_path / "qwen3")})
    assert tok("Hello, world!", add_special_tokens=False)["input_ids"] == [9707, 11, 1879, 0]
    assert tok.pad_token_id == 151643 and tok.eof_token_id == 151645


def test_config_default_is_small():
    from action_decoder.config import load_config

    cfg = load_config()
    tok = build_tokenizer(cfg.backbone.text)
    assert tok.name_or_path == "small" and tok.eof_token_id is not None


def test_missing_tokenizer_key_is_a_clear_error():
    with pytest.raises(ValueError, match="backbone.text.tokenizer is not set"):
        build_tokenizer({"tokenizer": None})


def test_saved_small_and_foreign_tokenizers_get_pad_and_eof(tmp_path):
    build_tokenizer("small").save_pretrained(tmp_path / "small")
    tok = build_tokenizer(str(tmp_path / "small"))
    assert tok("ab c", add_special_tokens=False)["input_ids"] == build_tokenizer("small")("ab c", add_special_tokens=False)["input_ids"]
    assert (tok.pad_token_id, tok.eof_token_id) == (0, 3)
    # A folder tokenizer with neither pad nor an end-of-frame marker gets both (pad = its eos).
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2, "</s>": 3}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>").save_pretrained(tmp_path / "wl")
    tok = build_tokenizer(str(tmp_path / "wl"))
    assert tok.pad_token == "</s>" and tok.eof_token == "<|eof|>" and tok.eof_token_id == 4
    assert tok("a <|eof|> b", add_special_tokens=False)["input_ids"] == [0, 4, 1]
