"""One checkpoint format: a file of another format, or no checkpoint at all, is refused with a message that says so."""
from __future__ import annotations

import json

import pytest
import torch

from action_decoder.training.checkpoint import FORMAT_VERSION, MANIFEST, load_checkpoint, verify_resume_state
from action_decoder.training.train_state import file_sha256


def test_a_checkpoint_of_another_format_is_refused_naming_the_file(tmp_path):
    old = tmp_path / "best.pt"
    torch.save({"format_version": FORMAT_VERSION - 1, "state": {}, "config": {}}, old)
    with pytest.raises(ValueError, match=rf"best\.pt: checkpoint format {FORMAT_VERSION - 1}.*format {FORMAT_VERSION} only"):
        load_checkpoint(old)


def test_a_file_that_is_no_checkpoint_is_refused_naming_the_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not a checkpoint"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_resume_state_of_another_format_is_refused_not_half_loaded(tmp_path):
    """accelerate loads resume weights non-strictly: weights under other names would be skipped silently."""
    src = tmp_path / "resume"
    src.mkdir()
    for state, ok in (({"epoch": 1}, False), ({"epoch": 1, "format_version": FORMAT_VERSION}, True)):
        (src / "trainer_state.json").write_text(json.dumps(state))
        (src / MANIFEST).write_text(json.dumps({"trainer_state.json": file_sha256(src / "trainer_state.json")}))
        if ok:
            verify_resume_state(src)
        else:
            with pytest.raises(ValueError, match="format None"):
                verify_resume_state(src)
