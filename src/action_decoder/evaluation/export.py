"""A checkpoint as a folder to share: PEFT adapters per tower, safetensors for the rest, the config, a model card.

    <folder>/
      vision_adapter/  adapter_config.json + adapter_model.safetensors   (PEFT's format: PeftModel.from_pretrained
      text_adapter/    adapter_config.json + adapter_model.safetensors    loads each onto its base tower)
      decoder.safetensors   every other trained weight: projections, decoder trunk, heads (names as in best.pt)
      config.yaml           the run's resolved config (towers, sizes, vocabularies)
      export.json           what the folder was made from: epoch, stage, validation metrics, source checkpoint
      README.md             model card: the towers' ids, the evaluation tables, how to load it

A tower without adapters (backbone.lora.r=0: frozen) gets no adapter folder. `load_export` (used by
evaluation/evaluate.py's `load_checkpoint_file`) turns the folder back into the checkpoint dict best.pt holds.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from action_decoder.cli import MissingFileError, SettingError
from action_decoder.evaluation.report import summary_rows

TOWERS = ("vision", "text")
ADAPTER_DIR = "{tower}_adapter"
DECODER_FILE = "decoder.safetensors"
META_FILE = "export.json"
PEFT_PREFIX = "base_model.model."  # PeftModel's names for the wrapped tower's modules
ADAPTER = ".default"                # our adapter name inside parameter names; PEFT's files leave it out
LORA_PARTS = (".lora_A", ".lora_B", ".lora_embedding_A", ".lora_embedding_B")


def _lora_part(name: str) -> str | None:
    return next((p for p in LORA_PARTS if f"{p}{ADAPTER}." in name), None)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """({tower: its LoRA weights under PEFT's names}, the other trained weights under their own names)."""
    adapters: dict[str, dict[str, torch.Tensor]] = {t: {} for t in TOWERS}
    rest = {}
    for name, tensor in state.items():
        tower, _, inner = name.partition(".")
        part = _lora_part(name)
        if tower in TOWERS and part is not None:
            adapters[tower][PEFT_PREFIX + inner.replace(f"{part}{ADAPTER}.", f"{part}.")] = tensor.contiguous()
        else:
            rest[name] = tensor.contiguous()
    return {t: a for t, a in adapters.items() if a}, rest


def join_state(adapters: dict[str, dict[str, torch.Tensor]], rest: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """split_state, inverted."""
    state = dict(rest)
    for tower, weights in adapters.items():
        for name, tensor in weights.items():
            if not name.startswith(PEFT_PREFIX) or _peft_part(name) is None:
                raise SettingError(f"{tower}_adapter: weight {name!r} is not a LoRA weight in PEFT's naming")
            part = _peft_part(name)
            state[f"{tower}." + name[len(PEFT_PREFIX):].replace(f"{part}.", f"{part}{ADAPTER}.", 1)] = tensor
    return state


def _peft_part(name: str) -> str | None:
    return next((p for p in LORA_PARTS if f"{p}." in name), None)


def _lora_config(cfg: dict, tower: str, weights: dict[str, torch.Tensor]):
    from peft import LoraConfig

    lora = cfg["backbone"]["lora"]
    modules = sorted({n[len(PEFT_PREFIX):].split(_peft_part(n))[0] for n in weights})
    return LoraConfig(r=int(lora["r"]), lora_alpha=float(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                      target_modules=modules, bias="none",
                      base_model_name_or_path=cfg["backbone"][tower].get("name_or_path"))


def export_checkpoint(ckpt: dict, source: str | Path, folder: str | Path, evals: list[dict] | None = None) -> Path:
    """Write the export folder of a loaded checkpoint dict (`evals`: eval.json results for the model card)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = ckpt["config"]
    adapters, rest = split_state(ckpt["state"])
    for tower, weights in adapters.items():
        out = folder / ADAPTER_DIR.format(tower=tower)
        _lora_config(cfg, tower, weights).save_pretrained(str(out))
        save_file(weights, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    save_file(rest, str(folder / DECODER_FILE), metadata={"format": "pt"})
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    meta = {"source": str(source), "epoch": ckpt["epoch"], "stage": ckpt["stage"], "metrics": ckpt["metrics"],
            "adapters": sorted(adapters)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))
    (folder / "README.md").write_text(model_card(cfg, meta, evals or []))
    return folder


def is_export(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def load_export(folder: str | Path) -> dict:
    """The checkpoint dict ({state, config, epoch, stage, metrics}) of an export folder."""
    folder = Path(folder)
    for needed in (META_FILE, "config.yaml", DECODER_FILE):
        if not (folder / needed).is_file():
            raise MissingFileError(f"checkpoint={folder}: {needed} is missing; an export folder holds what "
                                   "scripts/export_checkpoint.py writes")
    meta = json.loads((folder / META_FILE).read_text())
    adapters = {t: load_file(str(folder / ADAPTER_DIR.format(tower=t) / "adapter_model.safetensors"))
                for t in meta.get("adapters", [])}
    state = join_state(adapters, load_file(str(folder / DECODER_FILE)))
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
    return {"state": state, "config": cfg, "epoch": meta["epoch"], "stage": meta["stage"], "metrics": meta["metrics"]}


def model_card(cfg: dict, meta: dict, evals: list[dict]) -> str:
    """README.md of an export: the towers, what was trained, the evaluation tables, how to load it."""
    b, lora = cfg["backbone"], cfg["backbone"]["lora"]
    lines = [
        f"# Task-aware action decoder ({cfg.get('experiment_name', 'run')}, model={cfg['model']['name']})",
        "",
        "Per frame of a screen recording and its task prompt: an action class, a key, a modifier and a click point.",
        "",
        "## Towers",
        "",
        "| tower | base weights (`name_or_path`) | fingerprint | adapter |",
        "|---|---|---|---|",
    ]
    for tower in TOWERS:
        adapter = f"`{ADAPTER_DIR.format(tower=tower)}/` (LoRA r={lora['r']}, α={lora['alpha']})" \
            if tower in meta["adapters"] else "none (frozen)"
        lines.append(f"| {tower} | `{b[tower].get('name_or_path')}` | `{b[tower].get('fingerprint')}` | {adapter} |")
    lines += ["", f"Decoder and heads: `{DECODER_FILE}`. Trained to epoch {meta['epoch']} (stage `{meta['stage']}`), "
              f"exported from `{meta['source']}`.", "", "## Evaluation", ""]
    val = (meta.get("metrics") or {}).get("val")
    rows = ([("validation (at export)", val)] if val else []) + [
        (f"{e['split']} (`{e['prepared_dir']}`)", e["metrics"]) for e in evals]
    lines += summary_rows(rows) if rows else ["No evaluation recorded."]
    lines += ["", "## Loading", "", "```bash",
              "python eval.py checkpoint=<this folder> split=test",
              "python annotate.py checkpoint=<this folder> input=<video> output=annotations", "```", "",
              "```python", "from peft import PeftModel",
              "tower = PeftModel.from_pretrained(base_text_tower, '<this folder>/text_adapter')", "```", ""]
    return "\n".join(lines)
