"""The scripted user: plays one task on a synthetic desktop and produces DuckTrack input events + narration.

Times here are VIDEO time (seconds from the first frame, pauses excluded); synthetic.py maps them onto
the event clock. Timings follow the labelling rules of data/README.md: the two clicks of a double click
are < 0.5 s apart at the same spot, plain clicks are never repeated at one spot within 0.5 s, drags
travel far more than 5 px, and the cursor rests on a target for more than one video frame before and
after a click (so the frame at the click's time shows the cursor on the click position).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from action_decoder.recorders.synthetic.scene import MENUS, Layout, Rect, centre

TASKS = ("click_button", "double_click_item", "right_click_menu", "drag_item", "scroll_list", "type_text",
         "key_press", "hotkey")
VARIANTS = {
    "click_button": ("button",),
    "double_click_item": ("icon", "row"),
    "right_click_menu": ("icon", "row", "field"),
    "drag_item": ("trash", "folder"),
    "scroll_list": ("down", "up"),
    "type_text": ("word",),
    "key_press": ("enter", "backspace", "tab", "arrows", "esc"),
    "hotkey": ("select_all", "copy", "paste", "save", "save_as", "clear"),
}
WORDS = ["hello", "cat", "report", "budget", "paris", "notes", "mail", "photo", "music", "invoice", "draft",
         "lunch", "travel", "summer", "python", "data", "meeting", "friday", "coffee", "garden", "river", "blue"]
SHIFTED = set('~!@#$%^&*()_+{}|:"<>?')


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


@dataclass
class Script:
    """Accumulates events (video time) while the scripted user acts; `t` is the user's clock."""
    L: Layout
    rng: np.random.Generator
    move_hz: float
    min_dwell: float                 # > one video frame: the cursor rests this long around clicks
    speed: float = 1.0               # < 1 squeezes motion and pauses when a task does not fit
    t: float = 0.0
    x: int = 0
    y: int = 0
    events: list = field(default_factory=list)     # (time, seq, event dict)
    cues: list = field(default_factory=list)       # [start, end, text]
    safe: list = field(default_factory=list)       # idle instants with nothing held: pause candidates
    held: int = 0

    def emit(self, t: float, action: str, **kw) -> None:
        self.events.append((t, len(self.events), {"action": action, **kw}))

    def say(self, start: float, end: float, text: str) -> None:
        self.cues.append([start, max(end, start + 0.4), text])

    def point_in(self, r: Rect, frac: float = 0.5) -> tuple[int, int]:
        cx, cy = centre(r)
        hw, hh = (r[2] - r[0]) * frac / 2, (r[3] - r[1]) * frac / 2
        return int(round(cx + self.rng.uniform(-hw, hw))), int(round(cy + self.rng.uniform(-hh, hh)))

    # --- timing ---
    def idle(self, lo: float, hi: float, jitter: bool = False) -> None:
        d = self.rng.uniform(lo, hi) * self.speed
        if self.held == 0:
            self.safe.append(self.t + d / 2)
            if jitter and d > 0.5 and self.rng.random() < 0.3:
                # a resting hand: 1 px twitches, below the 2 px move threshold (rule 11)
                a = self.t + d * self.rng.uniform(0.1, 0.35)
                self.emit(a, "move", x=min(self.x + 1, self.L.width - 1), y=self.y)
                self.emit(a + d * 0.1, "move", x=self.x, y=self.y)
        self.t += d

    def dwell(self) -> None:
        self.t += max(self.min_dwell, self.rng.uniform(0.12, 0.3) * self.speed)

    # --- mouse ---
    def move_to(self, x: int, y: int, slow: float = 1.0) -> None:
        x = int(np.clip(x, 0, self.L.width - 1))
        y = int(np.clip(y, 0, self.L.height - 1))
        x0, y0 = self.x, self.y
        dx, dy = x - x0, y - y0
        dist = math.hypot(dx, dy)
        if dist < 1:
            return
        dur = float(np.clip((0.25 + dist / self.rng.uniform(350, 700)) * slow * self.speed, 0.2, 1.5))
        n = max(2, math.ceil(dur * self.move_hz))
        bulge = self.rng.normal(0, 0.08 * dist)      # paths bow a little, like a hand
        px, py = -dy / dist, dx / dist
        last = (x0, y0)
        for i in range(1, n + 1):
            u = i / n
            s = 0.5 - 0.5 * math.cos(math.pi * u)         # ease in and out
            b = bulge * math.sin(math.pi * u)
            p = (x, y) if i == n else (int(np.clip(round(x0 + dx * s + px * b), 0, self.L.width - 1)),
                                       int(np.clip(round(y0 + dy * s + py * b), 0, self.L.height - 1)))
            if p != last:
                jitter = 0.0 if i == n else self.rng.uniform(0, 0.4)
                self.emit(self.t + dur * (i - jitter) / n, "move", x=p[0], y=p[1])
                last = p
        self.t += dur
        self.x, self.y = x, y

    def go(self, r: Rect, what: str, frac: float = 0.5) -> tuple[int, int]:
        """Move to a point inside `r`, narrating it, and rest there."""
        x, y = self.point_in(r, frac)
        start = self.t
        self.move_to(x, y)
        self.say(start, self.t, _pick(self.rng, ["move to {}", "go to {}", "head over to {}", "find {}"]).format(what))
        self.dwell()
        return x, y

    def button(self, name: str, pressed: bool) -> None:
        self.emit(self.t, "click", x=self.x, y=self.y, button=name, pressed=pressed)
        self.held += 1 if pressed else -1

    def click(self, name: str = "left", say: str | None = None) -> None:
        start = self.t
        self.button(name, True)
        self.t += self.rng.uniform(0.06, 0.14)
        self.button(name, False)
        if say:
            self.say(start, self.t + 0.3, say)
        self.dwell()

    def double_click(self, say: str) -> None:
        start = self.t
        self.button("left", True)
        self.t += self.rng.uniform(0.05, 0.12)
        self.button("left", False)
        self.t += self.rng.uniform(0.08, 0.22)        # second press < 0.5 s after the first (rule 5)
        self.button("left", True)
        self.t += self.rng.uniform(0.05, 0.12)
        self.button("left", False)
        self.say(start, self.t + 0.3, say)
        self.dwell()

    def drag_to(self, x: int, y: int, say: str) -> None:
        start = self.t
        self.button("left", True)
        self.t += self.rng.uniform(0.08, 0.2)
        self.move_to(x, y, slow=1.4)
        self.t += self.rng.uniform(0.1, 0.25)
        self.button("left", False)
        self.say(start, self.t, say)
        self.dwell()

    def scroll(self, notches: int, down: bool, say: str) -> None:
        start = self.t
        left = notches
        while left > 0:
            step = 2 if left >= 2 and self.rng.random() < 0.15 else 1
            # data/README.md rule 8: dy < 0 is scroll_down (content moves up), whatever scroll_direction says
            dy = -step if down else step
            self.emit(self.t, "scroll", x=self.x, y=self.y, dx=0, dy=dy)
            left -= step
            self.t += self.rng.uniform(0.08, 0.25) * self.speed
        self.say(start, self.t, say)
        self.dwell()

    # --- keyboard ---
    def key(self, name: str, times: int = 1, say: str | None = None) -> None:
        start = self.t
        for _ in range(times):
            self.emit(self.t, "press", name=name)
            self.emit(self.t + self.rng.uniform(0.05, 0.1), "release", name=name)
            self.t += self.rng.uniform(0.18, 0.35) * self.speed
        if say:
            self.say(start, self.t, say)

    def type_text(self, text: str, say: str) -> None:
        start = self.t
        shift: str | None = None
        last_release = self.t
        for ch in text:
            need = ch.isupper() or ch in SHIFTED
            if need and shift is None:
                shift = "shift" if self.rng.random() < 0.85 else "shift_r"
                self.emit(self.t, "press", name=shift)
                self.t += self.rng.uniform(0.05, 0.12)
            elif not need and shift is not None:
                self.t = max(self.t, last_release + 0.02)
                self.emit(self.t, "release", name=shift)
                self.t += self.rng.uniform(0.03, 0.08)
                shift = None
            name = "space" if ch == " " else ch
            gap = self.rng.uniform(0.1, 0.28) * self.speed
            # sometimes the next key goes down before this one is up (rollover), as in real typing
            hold = gap + self.rng.uniform(0.02, 0.05) if self.rng.random() < 0.15 else self.rng.uniform(0.04, 0.09)
            self.emit(self.t, "press", name=name)
            last_release = self.t + hold
            self.emit(last_release, "release", name=name)
            self.t += gap
        self.t = max(self.t, last_release + 0.02)
        if shift is not None:
            self.emit(self.t, "release", name=shift)
            self.t += 0.05
        self.say(start, self.t, say)

    def hotkey(self, mod: str, key: str, shift: bool = False, say: str | None = None) -> None:
        start = self.t
        self.emit(self.t, "press", name=mod)
        self.t += self.rng.uniform(0.08, 0.2)
        if shift:
            self.emit(self.t, "press", name="shift")
            self.t += self.rng.uniform(0.05, 0.1)
        k = key.upper() if shift else key
        self.emit(self.t, "press", name=k)
        self.t += self.rng.uniform(0.06, 0.12)
        self.emit(self.t, "release", name=k)
        self.t += self.rng.uniform(0.03, 0.1)
        if shift:
            self.emit(self.t, "release", name="shift")
            self.t += self.rng.uniform(0.02, 0.06)
        self.emit(self.t, "release", name=mod)
        self.t += 0.05
        if say:
            self.say(start, self.t, say)


def _word(rng: np.random.Generator, fancy: bool = True) -> str:
    w = _pick(rng, WORDS)
    if not fancy:
        return w
    r = rng.random()
    if r < 0.3:
        w = w.capitalize()
    elif r < 0.4:
        w = w.upper()[:4]
    if rng.random() < 0.2:
        w += str(int(rng.integers(0, 100)))
    if rng.random() < 0.12:
        w += " " + _pick(rng, WORDS)
    if rng.random() < 0.05:
        w += "!"
    return w


def _hotkey_mod(s: Script) -> tuple[str, str]:
    """(pynput name, spoken name) of the shortcut modifier for this desktop's platform."""
    if s.L.platform == "Darwin":
        return ("cmd" if s.rng.random() < 0.9 else "cmd_r"), "command"
    return ("ctrl" if s.rng.random() < 0.6 else "ctrl_l"), "control"


def _icon_glyph(L: Layout, i: int) -> Rect:
    ic = L.icons[i]
    return (ic.x + 2, ic.y + 2, ic.x + 14, ic.y + 14)


def _visible_row(s: Script, scroll: int, margin: int = 0) -> int:
    return scroll + int(s.rng.integers(0, s.L.visible_rows - margin))


def _list_point_rect(L: Layout) -> Rect:
    r = L.list_rect
    return (r[0] + 2, r[1] + 2, r[2] - 8, r[3] - 2)


def _field_click(s: Script, i: int) -> None:
    f = s.L.fields[i]
    s.go(f.rect, f"the {f.label.lower()} field", frac=0.6)
    s.click(say=_pick(s.rng, ["click in it", "click the field", "click"]))


# --- the tasks: each sets up the start state, acts, and returns the prompt ---

def click_button(s: Script, variant: str) -> str:
    b = s.L.buttons[int(s.rng.integers(len(s.L.buttons)))]
    s.go(b.rect, f"the {b.label.lower()} button", frac=0.5)
    s.click(say=_pick(s.rng, ["click it", "click", "click on it", "press it"]))
    return _pick(s.rng, ["Click the {} button", "Press the {} button", "Click {}"]).format(b.label)


def double_click_item(s: Script, variant: str) -> str:
    L = s.L
    if variant == "icon":
        i = int(s.rng.integers(len(L.icons) - 1))          # any icon but the trash (last)
        ic = L.icons[i]
        s.go(_icon_glyph(L, i), f"the {ic.name.lower()} icon")
        s.double_click(_pick(s.rng, ["double click to open it", "double click it", "open it with a double click"]))
        what = f"the {ic.name} folder" if ic.kind == "folder" else ic.name
        return _pick(s.rng, ["Open {}", "Double-click {} to open it"]).format(what)
    j = _visible_row(s, 0)
    s.go(L.row_rect(j, 0), L.items[j].lower(), frac=0.6)
    s.double_click(_pick(s.rng, ["double click to open it", "double click it"]))
    return _pick(s.rng, ["Open {} from the list", "Double-click {} in the list"]).format(L.items[j])


def _context_target(s: Script, variant: str) -> tuple[str, Rect, str]:
    L = s.L
    if variant == "icon":
        i = int(s.rng.integers(len(L.icons) - 1))
        return "icon", _icon_glyph(L, i), L.icons[i].name
    if variant == "row":
        j = _visible_row(s, 0)
        return "row", L.row_rect(j, 0), L.items[j]
    i = int(s.rng.integers(len(L.fields)))
    L.initial.field_texts[i] = _word(s.rng, fancy=False)
    L.initial.clipboard = _word(s.rng, fancy=False)
    return "field", L.fields[i].rect, f"the {L.fields[i].label} field"


def right_click_menu(s: Script, variant: str) -> str:
    kind, rect, name = _context_target(s, variant)
    x, y = s.go(rect, name.lower(), frac=0.5)
    s.click("right", say=_pick(s.rng, ["right click", "right click to open the menu", "open the context menu"]))
    if s.rng.random() < 0.35:
        s.idle(0.5, 1.2)
        return _pick(s.rng, ["Open the context menu of {}", "Right-click {}"]).format(name)
    items = MENUS[kind]
    j = int(s.rng.integers(len(items)))
    menu = s.L.menu_rect(x, y, items)
    s.idle(0.2, 0.5)
    s.go(s.L.menu_item_rect(menu, j), items[j].lower(), frac=0.4)
    s.click(say=_pick(s.rng, ["choose {}", "pick {}", "select {}"]).format(items[j].lower()))
    return _pick(s.rng, ["Right-click {} and choose {}", "Use the context menu on {} to pick {}"]).format(name, items[j])


def drag_item(s: Script, variant: str) -> str:
    L = s.L
    folders = [i for i, ic in enumerate(L.icons[:-1]) if ic.kind == "folder"]
    target = len(L.icons) - 1
    if variant == "folder" and len(folders) >= 2:
        target = folders[int(s.rng.integers(len(folders)))]
    src = _pick(s.rng, [i for i in range(len(L.icons) - 1) if i != target])
    ic = L.icons[src]
    s.go(_icon_glyph(L, src), f"the {ic.name.lower()} icon")
    tx, ty = s.point_in(_icon_glyph(L, target), 0.6)
    tname = "trash" if target == len(L.icons) - 1 else f"{L.icons[target].name.lower()} folder"
    s.drag_to(tx, ty, _pick(s.rng, ["drag it to the {}", "hold and drag it over to the {}", "drop it on the {}"]).format(tname))
    if target == len(L.icons) - 1:
        return _pick(s.rng, ["Drag {} to the Trash", "Move {} to the Trash", "Put {} in the Trash"]).format(ic.name)
    return _pick(s.rng, ["Drag {} into the {} folder", "Move {} into {}"]).format(ic.name, L.icons[target].name)


def scroll_list(s: Script, variant: str) -> str:
    L = s.L
    R, top = L.visible_rows, L.max_scroll()
    if variant == "down":
        j = int(s.rng.integers(R, len(L.items)))
        final = min(top, j - R + 1 + int(s.rng.integers(0, 3)))
        start = 0
    else:
        start = int(s.rng.integers(4, top + 1))
        L.initial.list_scroll = start
        j = int(s.rng.integers(0, start))
        final = max(0, j - int(s.rng.integers(0, 3)))
    s.go(_list_point_rect(L), "the list", frac=0.6)
    word = "down" if variant == "down" else "up"
    s.scroll(abs(final - start), variant == "down",
             _pick(s.rng, [f"scroll {word}", f"scroll {word} the list", f"keep scrolling {word} until {{}}"]).format(
                 L.items[j].lower()))
    if s.rng.random() < 0.35:
        s.idle(0.2, 0.5)
        s.go(L.row_rect(j, final), L.items[j].lower(), frac=0.6)
        s.click(say="click it")
        return f"Scroll {word} to {L.items[j]} and select it"
    return _pick(s.rng, [f"Scroll the list {word} to {{}}", f"Scroll {word} until {{}} is visible"]).format(L.items[j])


def type_text(s: Script, variant: str) -> str:
    i = int(s.rng.integers(len(s.L.fields)))
    label = s.L.fields[i].label
    w = _word(s.rng)
    _field_click(s, i)
    s.idle(0.2, 0.5)
    s.type_text(w, _pick(s.rng, ["type {}", "now type {}", "enter {}"]).format(w.lower()))
    return _pick(s.rng, ["Type '{}' into the {} field", "Enter '{}' in the {} box", "Write '{}' in {}"]).format(w, label)


def key_press(s: Script, variant: str) -> str:
    L = s.L
    i = int(s.rng.integers(len(L.fields)))
    label = L.fields[i].label
    if variant == "enter":
        w = _word(s.rng, fancy=False)
        _field_click(s, i)
        s.idle(0.2, 0.4)
        s.type_text(w, f"type {w}")
        s.idle(0.2, 0.4)
        s.key("enter", say=_pick(s.rng, ["press enter", "hit enter to submit", "and press return"]))
        return _pick(s.rng, ["Type '{}' in the {} field and press Enter", "Submit '{}' in {}"]).format(w, label)
    if variant == "backspace":
        w = _word(s.rng, fancy=False) + _pick(s.rng, ["s", "xx", "123", "ing", "z"])
        L.initial.field_texts[i] = w
        n = int(s.rng.integers(1, min(4, len(w) - 1) + 1))
        _field_click(s, i)
        s.idle(0.2, 0.4)
        s.key("backspace", n, say=_pick(s.rng, ["press backspace", "delete with backspace", "backspace"]))
        what = "the last character" if n == 1 else f"the last {n} characters"
        return f"Delete {what} in the {label} field"
    if variant == "tab":
        w = _word(s.rng, fancy=False)
        other = L.fields[(i + 1) % len(L.fields)].label
        _field_click(s, i)
        s.idle(0.2, 0.5)
        s.key("tab", say=_pick(s.rng, ["press tab", "tab to the next field"]))
        s.idle(0.2, 0.4)
        s.type_text(w, f"type {w}")
        return f"Press Tab to go to the {other} field and type '{w}'"
    if variant == "arrows":
        down = s.rng.random() < 0.6
        k = int(s.rng.integers(1, 4))
        j = int(s.rng.integers(0, L.visible_rows - k)) if down else int(s.rng.integers(k, L.visible_rows))
        s.go(L.row_rect(j, 0), L.items[j].lower(), frac=0.6)
        s.click(say="click it")
        s.idle(0.2, 0.5)
        key = "down" if down else "up"
        s.key(key, k, say=f"press {key}" + (f" {k} times" if k > 1 else ""))
        target = L.items[j + k if down else j - k]
        return f"Select {target} using the {key.capitalize()} arrow key, starting from {L.items[j]}"
    # esc: open a context menu, then dismiss it
    kind, rect, name = _context_target(s, _pick(s.rng, ["icon", "row", "field"]))
    s.go(rect, name.lower(), frac=0.5)
    s.click("right", say="right click")
    s.idle(0.4, 0.8)
    s.key("esc", say=_pick(s.rng, ["press escape to close it", "escape"]))
    return f"Open the context menu on {name}, then close it with Escape"


def hotkey(s: Script, variant: str) -> str:
    L = s.L
    mod, spoken = _hotkey_mod(s)
    i = int(s.rng.integers(len(L.fields)))
    label = L.fields[i].label
    if variant in ("select_all", "copy", "clear"):
        L.initial.field_texts[i] = _word(s.rng)
        _field_click(s, i)
        s.idle(0.2, 0.5)
        s.hotkey(mod, "a", say=f"{spoken} a to select all")
        if variant == "copy":
            s.idle(0.2, 0.5)
            s.hotkey(mod, "c", say=f"{spoken} c to copy")
            return f"Copy the text of the {label} field"
        if variant == "clear":
            s.idle(0.2, 0.4)
            s.key("backspace", say="and delete it")
            return f"Clear the {label} field"
        return f"Select all the text in the {label} field"
    if variant == "paste":
        L.initial.clipboard = _word(s.rng)
        _field_click(s, i)
        s.idle(0.2, 0.5)
        s.hotkey(mod, "v", say=f"{spoken} v to paste")
        return f"Paste the clipboard into the {label} field"
    s.go(L.window, "the window", frac=0.6)
    s.idle(0.2, 0.5)
    if variant == "save":
        s.hotkey(mod, "s", say=f"{spoken} s to save")
        return _pick(s.rng, ["Save the document with the keyboard", "Save your changes"])
    s.hotkey(mod, "s", shift=True, say=f"{spoken} shift s")
    return "Open Save As with the keyboard shortcut"


TASK_FUNCS = {f.__name__: f for f in (click_button, double_click_item, right_click_menu, drag_item, scroll_list,
                                      type_text, key_press, hotkey)}


def fill(s: Script, end: float) -> None:
    """Idle and wander (hover without clicking) until `end`: 'none' and 'move' frames around the task."""
    while s.t < end - 0.6:
        if s.rng.random() < 0.4 or end - s.t < 1.6:
            s.idle(0.3, min(0.9, end - s.t - 0.3), jitter=True)
        else:
            x = int(s.rng.integers(4, s.L.width - 12))
            y = int(s.rng.integers(4, s.L.taskbar[1] - 12))
            s.move_to(x, y)
            s.idle(0.1, 0.3)
