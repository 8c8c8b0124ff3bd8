"""Label vocabularies (conf/labels/<name>.yaml): name <-> id maps for actions, keys and modifiers.

The importer writes label *names* into prepared episodes; the dataset maps them to ids here, so a
vocabulary edit never silently shifts classes of an already-prepared dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable, Mapping

IGNORE_INDEX = -100  # id of a frame where a head does not apply (torch cross-entropy's ignore_index)

# Action classes the importer can emit (data/README.md §2 rules); the config may order them freely.
IMPORTER_ACTIONS = ("none", "move", "click", "double_click", "right_click", "drag",
                    "scroll_up", "scroll_down", "type", "key", "hotkey")
# Actions whose frames carry a key label / a click target (rule 12).
KEY_ACTIONS = frozenset({"type", "key", "hotkey"})
CLICK_ACTIONS = frozenset({"click", "double_click", "right_click", "drag"})
NO_MODIFIER_ACTIONS = frozenset({"none", "move"})

# Modifier names are the held modifiers joined by "+" in this fixed order ("none" if nothing is held).
MODIFIER_ORDER = ("ctrl", "shift", "alt", "cmd")
# pynput key names (without "Key.") of each modifier's variants; each variant is held separately.
MODIFIER_KEYS: Mapping[str, str] = {
    "shift": "shift", "shift_l": "shift", "shift_r": "shift",
    "ctrl": "ctrl", "ctrl_l": "ctrl", "ctrl_r": "ctrl",
    "alt": "alt", "alt_l": "alt", "alt_r": "alt", "alt_gr": "alt",
    "cmd": "cmd", "cmd_l": "cmd", "cmd_r": "cmd",
}
OTHER_KEY = "other"


def modifier_name(held: Iterable[str]) -> str:
    """Canonical modifier class name of a set of held modifiers, e.g. {"shift", "ctrl"} -> "ctrl+shift"."""
    held = set(held)
    unknown = held - set(MODIFIER_ORDER)
    if unknown:
        raise ValueError(f"unknown modifier(s) {sorted(unknown)}; expected some of {MODIFIER_ORDER}")
    return "+".join(m for m in MODIFIER_ORDER if m in held) or "none"


def all_modifier_names() -> list[str]:
    """The 16 canonical modifier combinations."""
    return [modifier_name(c) for k in range(len(MODIFIER_ORDER) + 1) for c in combinations(MODIFIER_ORDER, k)]


@dataclass(frozen=True)
class Vocabulary:
    """One ordered label list: position = class id."""

    kind: str                     # "actions" | "keys" | "modifiers", for error messages
    names: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids: dict[str, int] = {}
        for i, name in enumerate(self.names):
            if not isinstance(name, str):
                raise ValueError(f"labels.{self.kind}[{i}] must be a string, got {name!r}")
            if name in ids:
                raise ValueError(f"labels.{self.kind} lists {name!r} twice (ids {ids[name]} and {i})")
            ids[name] = i
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in labels.{self.kind}") from None

    def name(self, index: int) -> str:
        return self.names[index]


@dataclass(frozen=True)
class LabelVocab:
    """The three vocabularies of conf/labels/<name>.yaml."""

    actions: Vocabulary
    keys: Vocabulary
    modifiers: Vocabulary

    @classmethod
    def from_config(cls, labels_cfg) -> "LabelVocab":
        """Build from `cfg.labels` (a DictConfig or plain mapping with actions/keys/modifiers lists)."""
        # Index with [] : DictConfig has a `.keys` method that attribute access would return.
        vocab = cls(actions=Vocabulary("actions", tuple(labels_cfg["actions"])),
                    keys=Vocabulary("keys", tuple(labels_cfg["keys"])),
                    modifiers=Vocabulary("modifiers", tuple(labels_cfg["modifiers"])))
        vocab._check_covers_importer()
        return vocab

    def _check_covers_importer(self) -> None:
        missing = [a for a in IMPORTER_ACTIONS if a not in self.actions]
        if missing:
            raise ValueError(f"labels.actions lacks {missing}, which the importer emits")
        if OTHER_KEY not in self.keys:
            raise ValueError(f"labels.keys lacks {OTHER_KEY!r}, where unknown keys go")
        missing = [m for m in all_modifier_names() if m not in self.modifiers]
        if missing:
            raise ValueError(f"labels.modifiers lacks {missing} (names are ctrl+shift+alt+cmd in that order)")

    def key_or_other(self, key: str) -> str:
        """`key` if it is in the key vocabulary, else "other"."""
        return key if key in self.keys else OTHER_KEY
