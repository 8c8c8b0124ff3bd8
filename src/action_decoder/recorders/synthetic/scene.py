"""A small synthetic desktop: a seeded layout, the app logic that reacts to input events, and its renderer.

The scripted user (tasks.py) only produces DuckTrack input events; the desktop here reacts to
those events the way a real app would (a press on a button presses it, a character goes into the focused
field, a wheel notch scrolls the list). So every trace in the video follows from the event log, and the
two cannot disagree.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The cursor is pure magenta, a colour no widget uses (see _colour), so tests and debugging can find
# its tip in a decoded frame. Arrow polygon, tip at (0, 0).
CURSOR_FILL = (255, 0, 255)
CURSOR_SHADOW = (20, 20, 20)
CURSOR_SHAPE = [(0, 0), (0, 11), (3, 8), (5, 12), (7, 11), (5, 7), (9, 7)]

MIN_SIZE = (240, 160)
ICON = 16                      # icon glyph size in pixels
BUTTON_FLASH_S = 0.35          # a clicked button stays drawn pressed this long after the release
TOAST_S = 1.5                  # toast messages ("Copied", "Saved") stay this long
DOUBLE_CLICK_S = 0.5           # same thresholds as the labelling rules (data/README.md rules 4-6)
SAME_SPOT_PX = 5

ICON_NAMES = ["Notes", "Photos", "Report", "Music", "Budget", "Drafts", "Games", "Mail", "Docs", "Backup",
              "Videos", "Tax", "Recipes", "Travel"]
WINDOW_TITLES = ["Files", "Editor", "Search", "Contacts", "Settings", "Library", "Orders", "Inbox", "Notes"]
LIST_NOUNS = ["Item", "File", "Track", "Note", "Row", "Task", "Photo"]
FIELD_LABELS = ["Search", "Name", "Title", "Email", "City", "Tag", "Subject", "User", "Filter"]
BUTTON_MESSAGES = {"Save": "Saved", "Open": "Opened", "OK": "Confirmed", "Cancel": "Cancelled",
                   "Send": "Sent", "Print": "Printing...", "Apply": "Applied", "Delete": "Deleted",
                   "New": "New item", "Help": "Help opened", "Reset": "Reset done", "Export": "Exported",
                   "Close": "Closed", "Next": "Next page"}
MENUS = {"icon": ["Open", "Rename", "Copy", "Delete"],
         "row": ["Open", "Rename", "Delete"],
         "field": ["Cut", "Copy", "Paste", "Select all"],
         "desktop": ["Refresh", "New folder", "Properties"]}
MODIFIER_KEYS = {"shift": "shift", "shift_l": "shift", "shift_r": "shift", "ctrl": "ctrl", "ctrl_l": "ctrl",
                 "ctrl_r": "ctrl", "alt": "alt", "alt_l": "alt", "alt_r": "alt", "alt_gr": "alt",
                 "cmd": "cmd", "cmd_l": "cmd", "cmd_r": "cmd"}

Rect = tuple  # (x0, y0, x1, y1), x1/y1 exclusive


def inside(r: Rect, x: float, y: float) -> bool:
    return r[0] <= x < r[2] and r[1] <= y < r[3]


def centre(r: Rect) -> tuple[int, int]:
    return (r[0] + r[2]) // 2, (r[1] + r[3]) // 2


def _colour(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[int, int, int]:
    # Hues 0.72-0.95 (purple to magenta) are never used, so the magenta cursor stays unique on screen.
    h = rng.uniform(0.0, 0.72) if rng.random() < 0.85 else rng.uniform(0.95, 1.0)
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*s), rng.uniform(*v))
    return int(r * 255), int(g * 255), int(b * 255)


def _grey(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    g = int(rng.integers(lo, hi + 1))
    tint = rng.integers(-6, 7, size=3)
    return tuple(int(np.clip(g + t, 0, 255)) for t in tint)


@dataclass
class Icon:
    name: str
    kind: str            # folder | file | trash
    colour: tuple
    x: int               # glyph top-left
    y: int

    def rect(self, x: int | None = None, y: int | None = None) -> Rect:
        """Clickable area: the glyph plus its label below."""
        x = self.x if x is None else x
        y = self.y if y is None else y
        return (x - 6, y - 2, x + ICON + 6, y + ICON + 12)


@dataclass
class Field:
    label: str
    rect: Rect           # the input box


@dataclass
class Button:
    label: str
    rect: Rect

    @property
    def message(self) -> str:
        return BUTTON_MESSAGES.get(self.label, self.label)


@dataclass
class Initial:
    """Start state a task may set before the recording (prefilled text, a scrolled list, ...)."""
    field_texts: list = field(default_factory=list)
    list_scroll: int = 0
    list_selected: int | None = None
    clipboard: str = ""
    cursor: tuple = (0, 0)         # where the cursor sits when the video starts
    modified: bool = True          # unsaved-changes dot in the title (ctrl+s clears it)


class Layout:
    """Everything fixed for one recording: geometry, colours, words. Built from a seeded numpy Generator."""

    def __init__(self, width: int, height: int, rng: np.random.Generator, platform: str, scroll_direction: int):
        if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
            raise ValueError(f"synthetic screen {width}x{height} is too small; need at least {MIN_SIZE[0]}x{MIN_SIZE[1]}")
        self.width, self.height = width, height
        self.platform, self.scroll_direction = platform, scroll_direction
        self.font_size = int(rng.integers(9, 12))
        self.font = ImageFont.load_default(size=self.font_size)
        self.row_h = self.font_size + 4
        dark = rng.random() < 0.3
        self.c = {
            "desktop": _colour(rng, (0.2, 0.7), (0.25, 0.7)),
            "taskbar": _grey(rng, 25, 60),
            "taskbar_fg": (230, 230, 230),
            "window": _grey(rng, 40, 60) if dark else _grey(rng, 225, 248),
            "text": (225, 225, 225) if dark else (20, 20, 25),
            "muted": (150, 150, 150) if dark else (110, 110, 115),
            "field": _grey(rng, 20, 35) if dark else (255, 255, 255),
            "border": _grey(rng, 90, 110) if dark else _grey(rng, 140, 170),
            "accent": _colour(rng, (0.5, 0.9), (0.55, 0.85)),
            "button": _grey(rng, 65, 85) if dark else _grey(rng, 200, 220),
            "list": _grey(rng, 30, 45) if dark else _grey(rng, 245, 255),
            "list_alt": _grey(rng, 48, 58) if dark else _grey(rng, 232, 240),
            "toast": (40, 40, 45),
            "icon_label": (255, 255, 255),
        }
        self.c["title"] = self.c["accent"]
        self.c["select"] = tuple(int(0.55 * a + 0.45 * 255) for a in self.c["accent"]) if not dark else \
            tuple(int(0.7 * a) for a in self.c["accent"])
        W, H = width, height
        self.taskbar = (0, H - 12, W, H)
        self.clock = f"{int(rng.integers(7, 19)):02d}:{int(rng.integers(0, 60)):02d}"

        # Desktop icons in a left strip; the trash at the bottom of the strip.
        strip_w = int(rng.integers(52, 64))
        names = list(rng.choice(ICON_NAMES, size=4, replace=False))
        n_icons = int(rng.integers(3, 5))
        top = int(rng.integers(4, 10))
        spacing = max(ICON + 16, min(40, (H - 12 - top - 40) // n_icons))
        ix = strip_w // 2 - ICON // 2
        self.icons = [Icon(str(names[i]), "folder" if rng.random() < 0.6 else "file",
                           _colour(rng, (0.4, 0.8), (0.6, 0.95)), ix, top + i * spacing) for i in range(n_icons)]
        self.icons.append(Icon("Trash", "trash", (150, 155, 160), ix, H - 12 - ICON - 18))

        # Main window right of the strip.
        x0 = strip_w + int(rng.integers(2, 10))
        y0 = int(rng.integers(2, 8))
        x1 = W - int(rng.integers(2, 8))
        y1 = H - 12 - int(rng.integers(2, 6))
        self.window = (x0, y0, x1, y1)
        self.title = str(rng.choice(WINDOW_TITLES))
        self.title_bar = (x0, y0, x1, y0 + self.row_h + 2)
        self.status_bar = (x0 + 1, y1 - self.row_h, x1 - 1, y1 - 1)
        body = (x0 + 4, self.title_bar[3] + 4, x1 - 4, self.status_bar[1] - 3)

        # List on one side, the form (fields + buttons) on the other.
        list_w = int((body[2] - body[0]) * rng.uniform(0.38, 0.48))
        list_left = rng.random() < 0.5
        if list_left:
            self.list_rect = (body[0], body[1], body[0] + list_w, body[3])
            form = (body[0] + list_w + 6, body[1], body[2], body[3])
        else:
            self.list_rect = (body[2] - list_w, body[1], body[2], body[3])
            form = (body[0], body[1], body[2] - list_w - 6, body[3])
        self.visible_rows = (self.list_rect[3] - self.list_rect[1] - 2) // self.row_h
        noun = str(rng.choice(LIST_NOUNS))
        self.items = [f"{noun} {i + 1}" for i in range(int(rng.integers(max(18, self.visible_rows + 8), 41)))]

        labels = list(rng.choice(FIELD_LABELS, size=2, replace=False))
        fh = self.row_h + 3
        fy = form[1] + self.row_h
        self.fields = []
        for i in range(2):
            self.fields.append(Field(str(labels[i]), (form[0], fy, form[2], fy + fh)))
            fy += fh + self.row_h + 4
        bl = list(rng.choice(list(BUTTON_MESSAGES), size=int(rng.integers(2, 4)), replace=False))
        by = fy + int(rng.integers(0, max(1, form[3] - fy - self.row_h - 6)))
        bx = form[0]
        self.buttons = []
        for label in bl:
            w = int(self.font.getlength(str(label))) + 12
            if bx + w > form[2]:
                break
            self.buttons.append(Button(str(label), (bx, by, bx + w, by + self.row_h + 4)))
            bx += w + int(rng.integers(4, 10))
        self.initial = Initial(field_texts=["", ""])

    # --- geometry shared with the scripted user ---
    def row_rect(self, index: int, scroll: int) -> Rect | None:
        """Screen rect of list item `index` at scroll offset `scroll`, or None when not visible."""
        slot = index - scroll
        if not 0 <= slot < self.visible_rows:
            return None
        x0, y0, x1, _ = self.list_rect
        top = y0 + 1 + slot * self.row_h
        return (x0 + 1, top, x1 - 7, top + self.row_h)

    def max_scroll(self, n_items: int | None = None) -> int:
        return max(0, (len(self.items) if n_items is None else n_items) - self.visible_rows)

    def menu_rect(self, x: int, y: int, items: list[str]) -> Rect:
        w = max(int(self.font.getlength(s)) for s in items) + 14
        h = len(items) * self.row_h + 4
        mx = x + 1 if x + 1 + w <= self.width else x - w
        my = y + 1 if y + 1 + h <= self.taskbar[1] else y - h
        return (mx, my, mx + w, my + h)

    def menu_item_rect(self, menu: Rect, i: int) -> Rect:
        top = menu[1] + 2 + i * self.row_h
        return (menu[0] + 2, top, menu[2] - 2, top + self.row_h)

    def popup_rect(self) -> Rect:
        x0, y0, x1, y1 = self.window
        w, h = int((x1 - x0) * 0.55), int((y1 - y0) * 0.5)
        px, py = x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2
        return (px, py, px + w, py + h)


class _UiKey(NamedTuple):
    """Everything visible except the cursor: the UI is redrawn only when this changes."""
    state: tuple
    hover_menu: int | None
    toast: str | None
    pressed: tuple            # buttons still drawn pressed after a click
    down_button: int | None   # button under a held left press
    hover_button: int | None


@dataclass
class _Menu:
    rect: Rect
    items: list
    target: tuple            # ("icon", i) | ("row", i) | ("field", i) | ("desktop",)


class Desktop:
    """The app: mutable state driven by DuckTrack events (`handle`) and drawn by `render`."""

    def __init__(self, layout: Layout):
        L = self.L = layout
        init = layout.initial
        self.x, self.y = init.cursor
        self.texts = list(init.field_texts)
        self.select_all = False
        self.focus: tuple | None = None
        self.items = list(L.items)
        self.scroll = init.list_scroll
        self.selected = init.list_selected
        self.icon_pos = [(ic.x, ic.y) for ic in L.icons]
        self.icon_gone = [False] * len(L.icons)
        self.icon_selected: int | None = None
        self.trash_full = False
        self.clipboard = init.clipboard
        self.modified = init.modified
        self.menu: _Menu | None = None
        self.popup: tuple | None = None           # (title, lines)
        self.toast: tuple | None = None           # (text, until)
        self.status = "Ready"
        self.flash: dict[int, float] = {}         # button index -> pressed-look until
        self.left_down = False
        self.down_on: tuple | None = None         # what the left button went down on
        self.down_xy = (0, 0)
        self.drag: tuple | None = None            # (icon index, grab dx, grab dy)
        self.last_press: tuple | None = None      # (t, x, y) of the last left press, for double clicks
        self.mods: set[str] = set()               # held modifier key names (left/right kept apart)
        self._cache_key = None
        self._cache_img: Image.Image | None = None

    # --- hit testing (topmost first) ---
    def _hit(self, x: float, y: float) -> tuple:
        L = self.L
        if self.popup is not None and inside(L.popup_rect(), x, y):
            return ("popup",)
        if inside(L.window, x, y):
            for i, b in enumerate(L.buttons):
                if inside(b.rect, x, y):
                    return ("button", i)
            for i, f in enumerate(L.fields):
                if inside(f.rect, x, y):
                    return ("field", i)
            for i in range(len(self.items)):
                r = L.row_rect(i, self.scroll)
                if r is not None and inside(r, x, y):
                    return ("row", i)
            if inside(L.list_rect, x, y):
                return ("list",)
            return ("window",)
        for i, ic in enumerate(L.icons):
            if not self.icon_gone[i] and inside(ic.rect(*self.icon_pos[i]), x, y):
                return ("icon", i)
        return ("desktop",)

    def _name(self, target: tuple) -> str:
        if target[0] == "icon":
            return self.L.icons[target[1]].name
        if target[0] == "row":
            return self.items[target[1]]
        if target[0] == "field":
            return self.L.fields[target[1]].label
        return "Desktop"

    def _toast(self, text: str, t: float) -> None:
        self.toast = (text, t + TOAST_S)

    def _open(self, target: tuple) -> None:
        name = self._name(target)
        lines = [f"{int(3 + len(name) % 5)} files", "Modified today"] if target[0] == "icon" else \
            [f"{name} details", "Size 12 KB"]
        self.popup = (name, lines)
        self.status = f"Opened {name}"

    # --- events ---
    def handle(self, ev: dict, t: float) -> None:
        a = ev["action"]
        if a == "move":
            self.x, self.y = ev["x"], ev["y"]
            if self.drag is not None:
                i, dx, dy = self.drag
                self.icon_pos[i] = (int(self.x) - dx, int(self.y) - dy)
        elif a == "click":
            self.x, self.y = ev["x"], ev["y"]
            if ev["button"] == "left":
                (self._left_press if ev["pressed"] else self._left_release)(t)
            elif ev["button"] == "right" and ev["pressed"]:
                self._right_press()
        elif a == "scroll":
            self.x, self.y = ev["x"], ev["y"]
            if inside(self.L.list_rect, self.x, self.y) and ev["dy"]:
                # data/README.md rule 8: dy < 0 is a scroll down (content moves up); the flag does not matter.
                down = ev["dy"] < 0
                step = abs(int(ev["dy"]))
                self.scroll = int(np.clip(self.scroll + (step if down else -step), 0, self.L.max_scroll(len(self.items))))
        elif a == "press":
            self._key(ev["name"], t)
        elif a == "release":
            self.mods.discard(ev["name"])

    def _left_press(self, t: float) -> None:
        x, y = self.x, self.y
        double = (self.last_press is not None and t - self.last_press[0] <= DOUBLE_CLICK_S
                  and abs(x - self.last_press[1]) <= SAME_SPOT_PX and abs(y - self.last_press[2]) <= SAME_SPOT_PX)
        self.last_press = None if double else (t, x, y)
        self.left_down, self.down_xy = True, (x, y)
        if self.menu is not None:
            menu, self.menu = self.menu, None
            for i, item in enumerate(menu.items):
                if inside(self.L.menu_item_rect(menu.rect, i), x, y):
                    self._menu_action(item, menu.target, t)
                    self.down_on = ("menu",)
                    return
        hit = self._hit(x, y)
        self.down_on = hit
        if hit[0] == "popup":
            p = self.L.popup_rect()
            if inside((p[2] - self.L.row_h - 2, p[1], p[2], p[1] + self.L.row_h + 2), x, y):
                self.popup = None
            return
        self.icon_selected = None
        if hit[0] == "field":
            self.focus, self.select_all = ("field", hit[1]), False
        elif hit[0] == "row":
            self.focus, self.selected = ("list",), hit[1]
            if double:
                self._open(hit)
        elif hit[0] == "icon":
            i = hit[1]
            self.icon_selected = i
            self.drag = (i, int(x) - self.icon_pos[i][0], int(y) - self.icon_pos[i][1])
            if double:
                self._open(hit)
        elif hit[0] in ("desktop", "window", "list"):
            self.focus = ("list",) if hit[0] == "list" else None

    def _left_release(self, t: float) -> None:
        self.left_down = False
        if self.drag is not None:
            i = self.drag[0]
            self.drag = None
            moved = abs(self.x - self.down_xy[0]) + abs(self.y - self.down_xy[1]) > SAME_SPOT_PX
            if moved:
                for j, ic in enumerate(self.L.icons):
                    if j != i and not self.icon_gone[j] and ic.kind != "file" \
                            and inside(ic.rect(*self.icon_pos[j]), self.x, self.y):
                        self.icon_gone[i] = True
                        self.icon_selected = None
                        if ic.kind == "trash":
                            self.trash_full = True
                            self._toast("Moved to Trash", t)
                        else:
                            self._toast(f"Moved to {ic.name}", t)
                        break
        if self.down_on is not None and self.down_on[0] == "button":
            b = self.down_on[1]
            if inside(self.L.buttons[b].rect, self.x, self.y):
                self.flash[b] = t + BUTTON_FLASH_S
                self.status = self.L.buttons[b].message
        self.down_on = None

    def _right_press(self) -> None:
        hit = self._hit(self.x, self.y)
        if hit[0] in ("icon", "row", "field"):
            target = hit
            if hit[0] == "row":
                self.selected = hit[1]
            if hit[0] == "icon":
                self.icon_selected = hit[1]
        else:
            target = ("desktop",)
        items = MENUS[target[0]]
        self.menu = _Menu(self.L.menu_rect(int(self.x), int(self.y), items), items, target)

    def _menu_action(self, item: str, target: tuple, t: float) -> None:
        name = self._name(target)
        if item == "Open":
            self._open(target)
        elif item == "Delete":
            if target[0] == "icon":
                self.icon_gone[target[1]] = True
            elif target[0] == "row":
                del self.items[target[1]]
                self.selected = None
                self.scroll = min(self.scroll, self.L.max_scroll(len(self.items)))
            self._toast(f"Deleted {name}", t)
        elif item == "Rename":
            self.status = f"Renaming {name}"
            self._toast("Rename...", t)
        elif item in ("Copy", "Cut"):
            if target[0] == "field":
                self.clipboard = self.texts[target[1]]
                if item == "Cut":
                    self.texts[target[1]] = ""
            else:
                self.clipboard = name
            self._toast("Copied" if item == "Copy" else "Cut", t)
        elif item == "Paste" and target[0] == "field":
            self.texts[target[1]] += self.clipboard
            self.focus = target
        elif item == "Select all" and target[0] == "field":
            self.focus, self.select_all = target, True
        else:
            self._toast(item, t)

    def _key(self, name: str, t: float) -> None:
        if name in MODIFIER_KEYS:
            self.mods.add(name)
            return
        held = {MODIFIER_KEYS[m] for m in self.mods}
        if held & {"ctrl", "cmd"}:
            self._hotkey(name.lower(), "shift" in held, t)
            return
        field_i = self.focus[1] if self.focus and self.focus[0] == "field" else None
        if len(name) == 1 or name == "space":
            if field_i is not None:
                ch = " " if name == "space" else name
                self.texts[field_i] = ch if self.select_all else self.texts[field_i] + ch
                self.select_all, self.modified = False, True
        elif name == "backspace" and field_i is not None:
            self.texts[field_i] = "" if self.select_all else self.texts[field_i][:-1]
            self.select_all, self.modified = False, True
        elif name == "enter" and field_i is not None:
            label = self.L.fields[field_i].label
            self.status = f"{label}: {self.texts[field_i]}"
            self.texts[field_i], self.select_all = "", False
            self._toast("Submitted", t)
        elif name == "tab":
            n = len(self.L.fields)
            step = -1 if "shift" in held else 1
            self.focus = ("field", (field_i + step) % n if field_i is not None else 0)
            self.select_all = False
        elif name == "esc":
            if self.menu is not None:
                self.menu = None
            elif self.popup is not None:
                self.popup = None
        elif name in ("up", "down") and self.focus == ("list",) and self.items:
            cur = -1 if self.selected is None else self.selected
            self.selected = int(np.clip(cur + (1 if name == "down" else -1), 0, len(self.items) - 1))
            if self.selected < self.scroll:
                self.scroll = self.selected
            elif self.selected >= self.scroll + self.L.visible_rows:
                self.scroll = self.selected - self.L.visible_rows + 1

    def _hotkey(self, key: str, shift: bool, t: float) -> None:
        field_i = self.focus[1] if self.focus and self.focus[0] == "field" else None
        if key == "a" and field_i is not None:
            self.select_all = True
        elif key == "c":
            if field_i is not None:
                self.clipboard = self.texts[field_i]
            self._toast("Copied", t)
        elif key == "x" and field_i is not None:
            self.clipboard, self.texts[field_i], self.select_all = self.texts[field_i], "", False
            self._toast("Cut", t)
        elif key == "v" and field_i is not None:
            base = "" if self.select_all else self.texts[field_i]
            self.texts[field_i], self.select_all = base + self.clipboard, False
        elif key == "s":
            self.modified = False
            self._toast("Save as..." if shift else "Saved", t)
            self.status = "Saved"

    # --- drawing ---
    def _ui_key(self, t: float) -> "_UiKey":
        hover_button = next((i for i, b in enumerate(self.L.buttons) if inside(b.rect, self.x, self.y)), None)
        hover_menu = None
        if self.menu is not None:
            hover_menu = next((i for i in range(len(self.menu.items))
                               if inside(self.L.menu_item_rect(self.menu.rect, i), self.x, self.y)), None)
        pressed = tuple(sorted(i for i, until in self.flash.items() if t < until))
        down_button = self.down_on[1] if self.left_down and self.down_on and self.down_on[0] == "button" \
            and inside(self.L.buttons[self.down_on[1]].rect, self.x, self.y) else None
        return _UiKey(
            state=(tuple(self.texts), self.select_all, self.focus, tuple(self.items), self.scroll, self.selected,
                   tuple(self.icon_pos), tuple(self.icon_gone), self.icon_selected, self.trash_full, self.modified,
                   None if self.menu is None else self.menu.rect, self.popup, self.status, self.drag is not None),
            hover_menu=hover_menu, toast=self.toast[0] if self.toast and t < self.toast[1] else None,
            pressed=pressed, down_button=down_button, hover_button=hover_button)

    def render(self, t: float, cursor: bool = True) -> np.ndarray:
        """The screen at video time t as an RGB uint8 array [H, W, 3] (cursor=False: the UI alone)."""
        key = self._ui_key(t)
        if key != self._cache_key:
            # the UI is redrawn only when something visible changed; idle frames reuse it
            self._cache_key, self._cache_img = key, self._draw_ui(t, key)
        if not cursor:
            return np.array(self._cache_img)
        img = self._cache_img.copy()
        d = ImageDraw.Draw(img)
        x, y = int(round(self.x)), int(round(self.y))
        d.polygon([(x + px + 1, y + py + 1) for px, py in CURSOR_SHAPE], fill=CURSOR_SHADOW)
        d.polygon([(x + px, y + py) for px, py in CURSOR_SHAPE], fill=CURSOR_FILL)
        return np.asarray(img)

    def _text(self, d: ImageDraw.ImageDraw, xy, s: str, fill, anchor: str = "lm") -> None:
        d.text(xy, s, fill=fill, font=self.L.font, anchor=anchor)

    def _draw_icon(self, d, ic: Icon, x: int, y: int, selected: bool, full: bool = False) -> None:
        c = ic.colour
        if ic.kind == "folder":
            d.rectangle((x, y + 2, x + 6, y + 4), fill=c)
            d.rectangle((x, y + 4, x + ICON - 1, y + ICON - 2), fill=c, outline=(40, 40, 40))
        elif ic.kind == "file":
            d.polygon([(x + 2, y), (x + 10, y), (x + 14, y + 4), (x + 14, y + ICON - 1), (x + 2, y + ICON - 1)],
                      fill=(245, 245, 245), outline=(40, 40, 40))
            d.rectangle((x + 4, y + 6, x + 12, y + 7), fill=c)
            d.rectangle((x + 4, y + 10, x + 12, y + 11), fill=c)
        else:
            d.rectangle((x + 2, y + 3, x + 13, y + ICON - 1), fill=c, outline=(40, 40, 40))
            d.rectangle((x, y + 1, x + 15, y + 3), fill=(110, 110, 115))
            if full:
                d.rectangle((x + 4, y, x + 11, y + 5), fill=(235, 235, 220), outline=(60, 60, 60))
        tx, ty = x + ICON // 2, y + ICON + 6
        if selected:
            w = self.L.font.getlength(ic.name)
            d.rectangle((tx - w / 2 - 2, ty - 6, tx + w / 2 + 2, ty + 5), fill=self.L.c["accent"])
        self._text(d, (tx, ty), ic.name, self.L.c["icon_label"], anchor="mm")

    def _draw_ui(self, t: float, key: _UiKey) -> Image.Image:
        L, c = self.L, self.L.c
        img = Image.new("RGB", (L.width, L.height), c["desktop"])
        d = ImageDraw.Draw(img)
        # desktop icons (the dragged one is drawn last, on top of everything but the cursor)
        dragged = self.drag[0] if self.drag is not None else None
        for i, ic in enumerate(L.icons):
            if not self.icon_gone[i] and i != dragged:
                self._draw_icon(d, ic, *self.icon_pos[i], self.icon_selected == i, self.trash_full)
        # taskbar
        d.rectangle(L.taskbar, fill=c["taskbar"])
        d.rectangle((L.taskbar[0] + 2, L.taskbar[1] + 2, L.taskbar[0] + 9, L.taskbar[3] - 2), fill=c["accent"])
        self._text(d, (L.taskbar[0] + 14, (L.taskbar[1] + L.taskbar[3]) // 2), L.title, c["taskbar_fg"])
        self._text(d, (L.taskbar[2] - 3, (L.taskbar[1] + L.taskbar[3]) // 2), L.clock, c["taskbar_fg"], "rm")
        self._draw_window(d, t, key)
        if self.popup is not None:
            self._draw_popup(d)
        if self.menu is not None:
            hover = key.hover_menu
            d.rectangle(self.menu.rect, fill=c["window"], outline=c["border"])
            for i, item in enumerate(self.menu.items):
                r = L.menu_item_rect(self.menu.rect, i)
                if i == hover:
                    d.rectangle(r, fill=c["accent"])
                self._text(d, (r[0] + 5, (r[1] + r[3]) // 2), item, (255, 255, 255) if i == hover else c["text"])
        if key.toast is not None:
            w = L.font.getlength(key.toast) + 16
            cx, by = (L.window[0] + L.window[2]) // 2, L.status_bar[1] - 6
            d.rounded_rectangle((cx - w / 2, by - L.row_h - 2, cx + w / 2, by), radius=4, fill=c["toast"])
            self._text(d, (cx, by - L.row_h // 2 - 1), key.toast, (255, 255, 255), "mm")
        if dragged is not None:
            self._draw_icon(d, L.icons[dragged], *self.icon_pos[dragged], True)
        return img

    def _draw_window(self, d, t: float, key: _UiKey) -> None:
        L, c = self.L, self.L.c
        d.rectangle(L.window, fill=c["window"], outline=c["border"])
        d.rectangle(L.title_bar, fill=c["title"])
        title = L.title + (" *" if self.modified else "")  # unsaved-changes mark
        self._text(d, (L.title_bar[0] + 5, (L.title_bar[1] + L.title_bar[3]) // 2), title, (255, 255, 255))
        cx = L.title_bar[2] - 8
        cy = (L.title_bar[1] + L.title_bar[3]) // 2
        d.line((cx - 3, cy - 3, cx + 3, cy + 3), fill=(255, 255, 255))
        d.line((cx - 3, cy + 3, cx + 3, cy - 3), fill=(255, 255, 255))
        # list with scrollbar
        lr = L.list_rect
        d.rectangle(lr, fill=c["list"], outline=c["border"])
        for i in range(self.scroll, min(len(self.items), self.scroll + L.visible_rows)):
            r = L.row_rect(i, self.scroll)
            sel = i == self.selected
            fill = c["select"] if sel else (c["list_alt"] if i % 2 else c["list"])
            d.rectangle(r, fill=fill)
            self._text(d, (r[0] + 4, (r[1] + r[3]) // 2), self.items[i], c["text"])
        track = (lr[2] - 6, lr[1] + 1, lr[2] - 1, lr[3] - 1)
        d.rectangle(track, fill=c["list_alt"])
        n = max(1, len(self.items))
        th = track[3] - track[1]
        t0 = track[1] + th * self.scroll / n
        t1 = track[1] + th * min(n, self.scroll + L.visible_rows) / n
        d.rectangle((track[0], t0, track[2], max(t0 + 3, t1)), fill=c["border"])
        # fields
        for i, f in enumerate(L.fields):
            r = f.rect
            self._text(d, (r[0], r[1] - L.row_h // 2 - 1), f.label, c["muted"])
            focused = self.focus == ("field", i)
            d.rectangle(r, fill=c["field"], outline=c["accent"] if focused else c["border"], width=2 if focused else 1)
            s = self.texts[i]
            room = r[2] - r[0] - 10
            while s and L.font.getlength(s) > room:
                s = s[1:]                      # keep the tail visible, like a real field scrolled to the caret
            ty = (r[1] + r[3]) // 2
            w = L.font.getlength(s)
            if focused and self.select_all and s:
                d.rectangle((r[0] + 4, r[1] + 3, r[0] + 5 + w, r[3] - 4), fill=c["select"])
            self._text(d, (r[0] + 5, ty), s, c["text"])
            if focused and not self.select_all:
                d.line((r[0] + 6 + w, r[1] + 3, r[0] + 6 + w, r[3] - 4), fill=c["text"])
        # buttons: hover lighter; pressed (held down, or just clicked) drawn sunken in the accent colour
        pressed, down_button, hover = set(key.pressed), key.down_button, key.hover_button
        for i, b in enumerate(L.buttons):
            r = b.rect
            if i in pressed or i == down_button:
                d.rectangle(r, fill=c["accent"], outline=c["text"])
                self._text(d, ((r[0] + r[2]) // 2 + 1, (r[1] + r[3]) // 2 + 1), b.label, (255, 255, 255), "mm")
            else:
                fill = tuple(min(255, v + 18) for v in c["button"]) if i == hover else c["button"]
                d.rectangle(r, fill=fill, outline=c["border"])
                d.line((r[0] + 1, r[3] - 1, r[2] - 1, r[3] - 1), fill=c["border"])
                self._text(d, ((r[0] + r[2]) // 2, (r[1] + r[3]) // 2), b.label, c["text"], "mm")
        # status bar
        d.rectangle(L.status_bar, fill=c["list_alt"])
        self._text(d, (L.status_bar[0] + 4, (L.status_bar[1] + L.status_bar[3]) // 2), self.status, c["muted"])

    def _draw_popup(self, d) -> None:
        L, c = self.L, self.L.c
        p = L.popup_rect()
        d.rectangle((p[0] + 2, p[1] + 2, p[2] + 2, p[3] + 2), fill=(0, 0, 0))
        d.rectangle(p, fill=c["window"], outline=c["border"])
        bar = (p[0], p[1], p[2], p[1] + L.row_h + 2)
        d.rectangle(bar, fill=c["title"])
        title, lines = self.popup
        self._text(d, (bar[0] + 4, (bar[1] + bar[3]) // 2), title, (255, 255, 255))
        self._text(d, (bar[2] - 8, (bar[1] + bar[3]) // 2), "x", (255, 255, 255), "mm")
        for j, line in enumerate(lines):
            self._text(d, (p[0] + 6, bar[3] + 4 + L.row_h // 2 + j * L.row_h), line, c["text"])
