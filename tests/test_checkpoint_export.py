"""scripts/export_checkpoint.py: best.pt -> PEFT adapters + safetensors + config + model card; the folder scores and
annotates like the .pt (eval.py / annotate.py checkpoint=<folder>) and peft loads its adapters onto the towers."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO, only_run_dir, run_cli, run_eval, run_train

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def exported(prepared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    run_train(prepared_data, out / "runs", "train.epochs=1")
    run = only_run_dir(out / "runs")
    run_eval(f"checkpoint={run / 'best.pt'}", "split=test")  # its eval.json goes into the model card
    proc = run_cli([sys.executable, str(REPO / "scripts" / "export_checkpoint.py"), str(run / "best.pt"),
                    str(out / "export")])
    assert "exported" in proc.stdout
    return run, out / "export"


def a_batch(cfg, prepared):
    from action_decoder.data.clips import build_clip_dataset, collate_clips
    from action_decoder.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(cfg.backbone.text)
    dataset = build_clip_dataset(cfg, "val", tokenizer, every_frame_once=True)
    return collate_clips([dataset[i] for i in range(3)], tokenizer.pad_token_id)


def test_export_folder_holds_peft_adapters_safetensors_config_and_a_model_card(exported):
    run, folder = exported
    for tower in ("vision", "text"):
        adapter = json.loads((folder / f"{tower}_adapter" / "adapter_config.json").read_text())
        assert adapter["peft_type"] == "LORA" and adapter["r"] == 8 and adapter["target_modules"]
        assert (folder / f"{tower}_adapter" / "adapter_model.safetensors").is_file()
    assert (folder / "decoder.safetensors").is_file() and (folder / "config.yaml").is_file()
    card = (folder / "README.md").read_text()
    assert "| validation (at export) |" in card and "| test (" in card  # the checkpoint's eval table
    assert "`None`" in card  # the tiny test towers are random-init: their id is null


def test_round_trip_gives_identical_outputs(exported, prepared_data):
    from action_decoder.evaluation.evaluate import load_model_from_checkpoint

    run, folder = exported
    from_pt, _, cfg, ckpt = load_model_from_checkpoint(run / "best.pt")
    from_folder, _, _, back = load_model_from_checkpoint(folder)
    assert set(back["state"]) == set(ckpt["state"])
    assert all(torch.equal(back["state"][k], v) for k, v in ckpt["state"].items())
    batch = a_batch(cfg, prepared_data)
    from_pt.eval(), from_folder.eval()
    with torch.no_grad():
        a, b = from_pt(batch), from_folder(batch)
    for name in ("action_logits", "key_logits", "modifier_logits", "click_logits"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_peft_loads_the_adapters_onto_the_towers(exported):
    from peft import PeftModel

    from action_decoder.data.tokenizer import build_tokenizer
    from action_decoder.evaluation.evaluate import load_model_from_checkpoint
    from action_decoder.models.build import build_model

    _, folder = exported
    ours, *_ = load_model_from_checkpoint(folder)
    cfg = OmegaConf.load(folder / "config.yaml")
    cfg.backbone.lora.r = 0  # the same towers without adapters: what someone downloading the base model has
    base = build_model(cfg, build_tokenizer(cfg.backbone.text))
    ids = torch.randint(0, 50, (2, 7))
    ours.eval(), base.eval()
    with torch.no_grad():
        plain = base.text(input_ids=ids).logits
        text = PeftModel.from_pretrained(base.text, str(folder / "text_adapter")).eval()
        adapted, expected = text(input_ids=ids).logits, ours.text(input_ids=ids).logits
    assert torch.allclose(adapted, expected, atol=1e-6) and not torch.equal(plain, expected)  # the adapters count
    vision = PeftModel.from_pretrained(base.vision, str(folder / "vision_adapter"))
    lora = {k for k in vision.state_dict() if "lora_" in k}
    assert len(lora) == sum(1 for k in ours.trainable_state_dict() if k.startswith("vision.") and "lora_" in k)


def test_eval_and_annotate_take_the_folder(exported, prepared_data, tmp_path):
    run, folder = exported
    run_eval(f"checkpoint={folder}", "split=test")
    split = f"test_{prepared_data.parent.name}-prepared"
    mine = json.loads((folder / "eval" / f"export_{split}" / "eval.json").read_text())["metrics"]
    theirs = json.loads((run / "eval" / f"best_{split}" / "eval.json").read_text())["metrics"]
    assert mine == theirs
    recording = sorted((prepared_data.parent / "recordings").iterdir())[0]
    proc = run_cli([sys.executable, str(REPO / "annotate.py"), f"checkpoint={folder}", f"input={recording}",
                    f"output={tmp_path / 'ann'}"])
    assert "annotated 1 of 1 recordings" in proc.stdout
    assert (tmp_path / "ann" / recording.name / "actions.jsonl").is_file()
