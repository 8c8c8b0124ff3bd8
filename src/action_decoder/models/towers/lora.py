"""LoRA (peft) on the vision and text towers, base weights frozen.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the towers stay a plain
`OneVisionEncoder` / `Qwen3ForCausalLM` and their parameter names stay those of the published
checkpoints plus `.lora_A.default.weight` / `.lora_B.default.weight`.

Targets are resolved here, before peft sees them: every configured target must name at least one
`nn.Linear` under the configured scope, else the build fails listing the names that exist
(peft's own error only says "not found").
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import cast_adapter_dtype
from torch import nn

ADAPTER = "default"  # peft adapter name; part of every LoRA parameter name in checkpoints


def resolve_lora_targets(
    model: nn.Module, targets: Sequence[str], scope: str | None, where: str
) -> list[str]:
    """Full module names of the `nn.Linear`s under `scope` whose last name part is in `targets`.

    `where` names the config key in error messages (e.g. "backbone.lora.vision_targets").
    """
    if not targets:
        raise ValueError(f"{where} is empty: list the Linear layers to adapt, or set backbone.lora.r=0")
    prefix = f"{scope}." if scope else ""
    linears = {
        name: mod for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and name.startswith(prefix)
    }
    parents = dict(model.named_modules())
    available = sorted({name.rsplit(".", 1)[-1] for name in linears})
    missing = [t for t in targets if t not in available]
    if missing:
        raise ValueError(
            f"{where}: LoRA target(s) {missing} match no nn.Linear under '{scope or '<model root>'}' of "
            f"{type(model).__name__}. Linear module names that exist there: {available}. "
            f"Fix {where} (or the scope)."
        )
    chosen = []
    for name, mod in linears.items():
        if name.rsplit(".", 1)[-1] not in targets:
            continue
        parent = parents[name.rsplit(".", 1)[0]] if "." in name else model
        if isinstance(parent, nn.MultiheadAttention):
            # nn.MultiheadAttention reads out_proj.weight directly: a LoRA wrapper there would be
            # silently bypassed (the encoder's pooling head is such a module).
            raise ValueError(
                f"{where}: '{name}' belongs to an nn.MultiheadAttention, which bypasses LoRA wrappers; "
                f"narrow the scope (e.g. 'encoder.layers') so it is not targeted."
            )
        chosen.append(name)
    return sorted(chosen)


def apply_lora(
    model: nn.Module,
    *,
    r: int,
    alpha: float,
    dropout: float,
    targets: Sequence[str],
    scope: str | None,
    where: str,
) -> nn.Module:
    """Freeze `model`, inject LoRA adapters into the resolved targets; returns the same module."""
    if r <= 0:
        raise ValueError(f"backbone.lora.r={r} must be >= 1 (backbone.lora.r=0 freezes the towers)")
    names = resolve_lora_targets(model, targets, scope, where)
    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=float(dropout), target_modules=names, bias="none")
    model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    # Adapters of a bf16/fp16 tower are created in its dtype; train them in float32 (as
    # get_peft_model's autocast_adapter_dtype does): tiny LoRA updates vanish in bf16 rounding.
    cast_adapter_dtype(model, adapter_name=ADAPTER, autocast_adapter_dtype=True)
    for name, p in model.named_parameters():
        p.requires_grad_(is_lora_parameter(name))
    return model


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name


def apply_tower_lora(tower: nn.Module, lora_cfg: Mapping[str, Any], side: str) -> nn.Module:
    """LoRA from `backbone.lora` for one tower (`side` = "vision" | "text"); r = 0 freezes it (the r = 0 point of a
    LoRA-rank sweep: towers frozen, only the new layers train)."""
    if int(lora_cfg.get("r", 1)) == 0:
        for p in tower.parameters():
            p.requires_grad_(False)
        return tower
    return apply_lora(
        tower,
        r=int(lora_cfg["r"]),
        alpha=float(lora_cfg["alpha"]),
        dropout=float(lora_cfg["dropout"]),
        targets=list(lora_cfg[f"{side}_targets"]),
        scope=lora_cfg.get(f"{side}_scope"),
        where=f"backbone.lora.{side}_targets",
    )
