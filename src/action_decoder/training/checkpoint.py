"""Checkpoint files: weights for use (`best.pt`, `epoch_NNN.pt`) and state for resuming (`resume/`).

`best.pt` / `epoch_NNN.pt` = {format_version, state (trainable weights only), config, epoch, stage, metrics},
plain tensors and Python primitives, so `torch.load(path, weights_only=True)` reads them. They are written
by the main process to a temp file and renamed (a crash never leaves half a checkpoint).

`resume/` = accelerate's save_state (optimizer, scheduler, RNG of every process, sampler) with the frozen
base weights left out, plus `trainer_state.json` (training/train_state.py) and `manifest.json` (sha256 of every
file, checked before anything in the folder is unpickled). These hold pickles: load only your own.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from action_decoder.cli import SettingError
from action_decoder.training.run_dir import RESUME_DIRNAME, TRAINER_STATE
from action_decoder.training.train_state import file_sha256

FORMAT_VERSION = 3
# Config sections whose values change parameter shapes or label meaning: a checkpoint only loads
# into a model built with the same values.
ARCH_KEYS = ("backbone", "model", "labels")
# Keys inside those sections that change neither shapes nor label meaning: regularisation, memory and loading
# knobs, and the transcript's generation settings.
NON_ARCH_LEAVES = ("dropout", "lora.dropout", "pretrained", "gradient_checkpointing", "tokenizer_cache",
                   "max_text_tokens", "eof_threshold", "history_dropout")


def is_zero3(accelerator) -> bool:
    ds = getattr(accelerator.state, "deepspeed_plugin", None)
    return ds is not None and ds.zero_stage == 3


def gather_trainable_state(accelerator, model) -> dict[str, torch.Tensor]:
    """Trainable weights on CPU. Collective under ZeRO-3 (call on every rank); only trained weights are gathered."""
    unwrapped = accelerator.unwrap_model(model)
    if is_zero3(accelerator):
        import deepspeed

        params = [p for p in unwrapped.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in unwrapped.trainable_state_dict().items()}
    return {k: v.detach().cpu().clone() for k, v in unwrapped.trainable_state_dict().items()}


def save_checkpoint(path: Path, state: dict, cfg: DictConfig, epoch: int, stage: str, metrics: dict) -> None:
    payload = {
        "format_version": FORMAT_VERSION,
        "state": state,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "epoch": epoch,
        "stage": stage,
        "metrics": metrics,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated, or a pickle of other objects
        raise SettingError(f"{path}: not a checkpoint this repo wrote ({type(err).__name__}); pass a best.pt or "
                         "epoch_NNN.pt from a run dir, or an export folder (scripts/export_checkpoint.py)") from None
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version != FORMAT_VERSION:
        raise SettingError(f"{path}: checkpoint format {version}, but this code reads format {FORMAT_VERSION} only; "
                         "retrain with this code, or evaluate it with the commit that wrote it")
    return ckpt


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_mismatches(saved: dict, cfg: DictConfig) -> list[str]:
    """Architecture keys whose values differ between a checkpoint's config and `cfg`."""
    now = OmegaConf.to_container(cfg, resolve=True)
    bad = []
    for section in ARCH_KEYS:
        a, b = _flatten(saved.get(section, {}), section + "."), _flatten(now.get(section, {}), section + ".")
        for key in sorted(set(a) | set(b)):
            if any(key.startswith(f"{section}.") and (f".{leaf}" in key) for leaf in NON_ARCH_LEAVES):
                continue
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                bad.append(f"{key}: checkpoint={a.get(key, '<absent>')!r} config={b.get(key, '<absent>')!r}")
    return bad


def check_compatible(ckpt: dict, cfg: DictConfig, path: str | Path) -> None:
    bad = config_mismatches(ckpt["config"], cfg)
    if bad:
        raise SettingError(f"{path} was trained with a different architecture; mismatched keys:\n  " + "\n  ".join(bad))


def prune_epoch_snapshots(run_dir: Path, keep_last: int) -> None:
    snaps = sorted(run_dir.glob("epoch_*.pt"))
    for old in snaps[:-keep_last] if keep_last > 0 else []:
        old.unlink()


# ---- resume state -------------------------------------------------------------------------------

def install_trainable_only_hooks(accelerator) -> None:
    """Leave frozen base weights out of save_state (they come back from the pretrained backbone)."""
    if accelerator.state.deepspeed_plugin is not None:
        return  # DeepSpeed: exclude_frozen_parameters is passed to save_checkpoint instead

    def drop_frozen(models, weights, output_dir):
        for model, sd in zip(models, weights):
            keep = set(accelerator.unwrap_model(model).trainable_state_dict())
            for k in [k for k in sd if k not in keep]:
                del sd[k]

    accelerator.register_save_state_pre_hook(drop_frozen)


MANIFEST = "manifest.json"  # sha256 of every file of the resume state, written last


def save_resume_state(accelerator, run_dir: Path, trainer_state: dict) -> None:
    """All ranks call this. Writes resume.tmp/ then swaps it in, so a kill mid-save keeps the old state."""
    final, tmp = run_dir / RESUME_DIRNAME, run_dir / (RESUME_DIRNAME + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    kwargs = {"exclude_frozen_parameters": True} if accelerator.state.deepspeed_plugin is not None else {}
    accelerator.save_state(str(tmp), **kwargs)
    accelerator.wait_for_everyone()  # every rank has written its files (RNG state, ZeRO shards) before the swap
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps({**trainer_state, "format_version": FORMAT_VERSION}, indent=1))
        hashes = {str(f.relative_to(tmp)): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(hashes, indent=1))
        old = run_dir / (RESUME_DIRNAME + ".old")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def verify_resume_state(src: Path) -> None:
    """Every file of a resume state must be the one written with it, before anything is unpickled
    (accelerate and DeepSpeed load pickles from it). Catches corruption, swapped and extra files; it is no
    signature: never resume from a state someone else wrote (best.pt / epoch_NNN.pt are the safe files)."""
    manifest = src / MANIFEST
    try:
        hashes = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{manifest}: unreadable ({err}); this resume state cannot be checked, so it is not loaded") from None
    present = {str(f.relative_to(src)) for f in src.rglob("*") if f.is_file()} - {MANIFEST}
    extra = sorted(present - set(hashes))
    if extra:
        raise ValueError(f"{src / extra[0]}: not part of the resume state that was written; remove it")
    for name, digest in sorted(hashes.items()):
        if name not in present:
            raise ValueError(f"{src / name}: missing from the resume state")
        if file_sha256(src / name) != digest:
            raise ValueError(f"{src / name}: contents changed since it was written (sha256 mismatch); "
                             "the resume state is corrupt or tampered with")
    # accelerate loads resume weights non-strictly (frozen weights are left out): weights saved under other
    # names would be skipped without a word, so a state of another format is refused.
    version = json.loads((src / TRAINER_STATE).read_text()).get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{src}: a resume state of checkpoint format {version}; this code continues format "
                         f"{FORMAT_VERSION} only. Start a new run")


def read_trainer_state(run_dir: Path) -> dict:
    """trainer_state.json of a run's resume state (plain JSON: safe to read before the files are checked)."""
    return json.loads((run_dir / RESUME_DIRNAME / TRAINER_STATE).read_text())


def load_resume_state(accelerator, run_dir: Path) -> dict:
    """Check, then restore model/optimizer/scheduler/RNG; return trainer_state.json."""
    src = run_dir / RESUME_DIRNAME
    verify_resume_state(src)  # again, right before unpickling (the loop checked it before building anything)
    if accelerator.state.deepspeed_plugin is not None:
        accelerator.load_state(str(src), load_module_strict=False)
    else:
        accelerator.load_state(str(src), strict=False)
    return read_trainer_state(run_dir)
