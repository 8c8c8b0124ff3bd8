"""Scripted solvers for MiniWoB++ task types: each reads its targets from the page (the instruction, the DOM
through selenium) and acts only through real X input (`Episode.x`, an `x11.Driver`). Each step it takes is one
narration cue ("click the "no" button"). A target it cannot find raises `TargetNotFound` (a counted fault).

Action classes covered: click (buttons, links, tabs, options, checkboxes, dialogs, widgets), double click (a word,
to select it), drag (drag-box, use-slider, highlight-text), scroll (scroll-text, scroll-text-2), typing, named keys
(tab between fields, down + enter in an autocomplete menu, arrow keys on a slider) and hotkeys (ctrl+a / ctrl+c /
ctrl+v). No MiniWoB++ page listens for a right click (no `contextmenu` handler in any task page), so none does.
"""
from __future__ import annotations

import re
import time

from action_decoder.recorders.miniwob import Episode, TargetNotFound

ORDINALS = {"1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4, "6th": 5, "7th": 6, "8th": 7, "9th": 8, "10th": 9,
            "11th": 10, "12th": 11, "13th": 12, "14th": 13, "15th": 14, "16th": 15, "17th": 16, "18th": 17,
            "19th": 18, "20th": 19}

# Bounding box of the n-th whitespace-separated word under an element, from a DOM Range: [x, y, w, h, word].
_WORD_BOX = """
var root = arguments[0], n = arguments[1], k = 0, node;
var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
while ((node = walker.nextNode())) {
  var re = /\\S+/g, m;
  while ((m = re.exec(node.data))) {
    if (k === n) {  // the box of the word without trailing punctuation: a double click there selects the word
      var w = m[0].replace(/[^A-Za-z0-9]+$/, '') || m[0];
      var r = document.createRange(); r.setStart(node, m.index); r.setEnd(node, m.index + w.length);
      var b = r.getBoundingClientRect(); return [b.left, b.top, b.width, b.height, w];
    }
    k++;
  }
}
return null;"""

# Boxes of the first and the last visible character of an element's text.
_TEXT_ENDS = """
var root = arguments[0], nodes = [], node;
var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
while ((node = walker.nextNode())) { if (node.data.trim()) nodes.push(node); }
if (!nodes.length) return null;
function box(node, i) { var r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
  var b = r.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; }
var a = nodes[0], z = nodes[nodes.length - 1];
return [box(a, a.data.search(/\\S/)), box(z, z.data.search(/\\S\\s*$/))];"""


def quoted(ep: Episode, k: int = 0) -> str:
    found = re.findall(r'"([^"]*)"', ep.instruction)
    if len(found) <= k:
        raise TargetNotFound(f"no quoted text #{k + 1} in the instruction {ep.instruction!r}")
    return found[k]


def ordinal(ep: Episode) -> int:
    m = re.search(r"\b(\d+(?:st|nd|rd|th))\b", ep.instruction)
    if not m or m.group(1) not in ORDINALS:
        raise TargetNotFound(f"no position (1st, 2nd, ...) in the instruction {ep.instruction!r}")
    return ORDINALS[m.group(1)]


def scaled(ep: Episode, r) -> tuple[float, float, float, float]:
    return tuple(v * ep.scale for v in r[:4])


def wait_for(ep: Episode, code: str, timeout: float = 2.0) -> None:
    """Poll a JS condition (an animation ending, a menu opening)."""
    deadline = time.monotonic() + timeout
    while not ep.js(code):
        if time.monotonic() > deadline:
            raise TargetNotFound(f"page never satisfied {code!r}")
        time.sleep(0.05)


# --- click -------------------------------------------------------------------------------------------
def click_button(ep: Episode) -> None:
    text = quoted(ep)
    ep.click(ep.by_text("#area button", text), f'click the "{text}" button')


def click_link(ep: Episode) -> None:
    text = quoted(ep)
    ep.click(ep.by_text("#area .alink", text), f'click the link "{text}"')


def click_dialog(ep: Episode) -> None:
    ep.click(".ui-dialog-titlebar-close", "close the dialog with its x")


def click_dialog_2(ep: Episode) -> None:
    label = quoted(ep)
    if label.lower() == "x":
        ep.click(".ui-dialog-titlebar-close", "close the dialog with its x")
    else:
        ep.click(ep.by_text(".ui-dialog button", label), f'click "{label}" in the dialog')


def _checkbox(ep: Episode, name: str):
    for label in ep.els("#boxes label"):
        if label.text.strip() == name:
            inputs = label.find_elements("css selector", "input")
            return inputs[0] if inputs else label
    raise TargetNotFound(f"no checkbox labelled {name!r}")


def click_checkboxes(ep: Episode) -> None:
    m = re.match(r"Select (.*) and click Submit\.", ep.instruction)
    if not m:
        raise TargetNotFound(f"cannot read the boxes to tick from {ep.instruction!r}")
    names = [] if m.group(1) == "nothing" else [n.strip() for n in m.group(1).split(",") if n.strip()]
    for name in names:
        ep.click(_checkbox(ep, name), f"tick {name}")
    ep.submit()


def click_option(ep: Episode) -> None:
    m = re.match(r"Select (.*) and click Submit\.", ep.instruction)
    if not m:
        raise TargetNotFound(f"cannot read the option from {ep.instruction!r}")
    ep.click(_checkbox(ep, m.group(1).strip()), f"select {m.group(1).strip()}")
    ep.submit()


def click_tab(ep: Episode) -> None:
    m = re.search(r"Tab #(\d+)", ep.instruction)
    if not m:
        raise TargetNotFound(f"no tab number in {ep.instruction!r}")
    ep.click(ep.by_text("#area ul a", f"Tab #{m.group(1)}"), f"click tab {m.group(1)}")


def click_test(ep: Episode) -> None:
    ep.click("#subbtn", "click the button")


def click_test_2(ep: Episode) -> None:
    m = re.search(r"button (ONE|TWO)", ep.instruction)
    if not m:
        raise TargetNotFound(f"no button name in {ep.instruction!r}")
    ep.click(ep.by_text("#area button", m.group(1)), f"click button {m.group(1)}")


def click_button_sequence(ep: Episode) -> None:
    for name in ("ONE", "TWO"):
        ep.click(ep.by_text("#area button", name), f"click button {name}")


def click_widget(ep: Episode) -> None:
    kind = quoted(ep)
    found = ep.els(f'#area [data-type="{kind}"]')
    if not found:
        raise TargetNotFound(f"no {kind} widget")
    ep.click(found[int(ep.rng.integers(len(found)))], f"click a {kind} widget")


def click_collapsible(ep: Episode) -> None:
    ep.click("#area h3", "open the section")
    wait_for(ep, "var b = document.getElementById('subbtn'); return !!b && b.getBoundingClientRect().height > 0"
                 " && !$('#area .ui-accordion-content').is(':animated');")
    ep.submit()


def focus_text(ep: Episode) -> None:
    ep.click("#tt", "click into the textbox")


def focus_text_2(ep: Episode) -> None:
    n = ordinal(ep)
    boxes = ep.els("#area input")
    if n >= len(boxes):
        raise TargetNotFound(f"no input #{n + 1}")
    ep.click(boxes[n], f"click into the {n + 1}. textbox")


# --- typing, named keys ----------------------------------------------------------------------------------
def enter_text(ep: Episode) -> None:
    text = quoted(ep)
    ep.type_into("#tt", text, f'type "{text}" into the field')
    ep.submit()


def enter_text_2(ep: Episode) -> None:
    text = quoted(ep)
    text = text.upper() if "upper case" in ep.instruction else text.lower()
    ep.type_into("#tt", text, f'type "{text}"')
    ep.submit()


def enter_password(ep: Episode) -> None:
    password = quoted(ep)
    ep.type_into("#password", password, "type the password")
    with ep.step("press tab, type it again"):
        ep.x.key("Tab", "key", "tab")
        ep.type(password)
    ep.submit()


def login_user(ep: Episode) -> None:
    user, password = quoted(ep, 0), quoted(ep, 1)
    ep.type_into("#username", user, f"type the username {user}")
    with ep.step("press tab, type the password"):
        ep.x.key("Tab", "key", "tab")
        ep.type(password)
    ep.submit()


def simple_arithmetic(ep: Episode) -> None:
    m = re.match(r"\s*(-?\d+)\s*([-+x*/])\s*(-?\d+)", ep.el("#math-problem").text)
    if not m:
        raise TargetNotFound("no math problem on the page")
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    value = {"+": a + b, "-": a - b, "x": a * b, "*": a * b, "/": a // b if b else 0}[op]
    ep.type_into("#math-answer", str(value), f"type the answer {value}")
    ep.submit()


def use_autocomplete(ep: Episode) -> None:
    start = quoted(ep)
    end = quoted(ep, 1) if ep.instruction.count('"') >= 4 else ""
    ep.type_into("#tags", start, f'type "{start}"')
    wait_for(ep, "return $('.ui-autocomplete .ui-menu-item:visible').length > 0;")
    items = [e.text.strip() for e in ep.els(".ui-autocomplete .ui-menu-item")]
    picks = [i for i, t in enumerate(items) if t.startswith(start) and t.endswith(end)]
    if not picks:
        raise TargetNotFound(f"no suggestion starting with {start!r} and ending with {end!r}: {items}")
    with ep.step(f"pick {items[picks[0]]} from the list"):
        for _ in range(picks[0] + 1):
            ep.x.key("Down", "key", "down")
        ep.x.key("Return", "key", "enter")
    ep.submit()


# --- hotkeys, double click ------------------------------------------------------------------------------
def _paste_and_submit(ep: Episode) -> None:
    """What copy-paste and find-word end with: paste the copied text into the answer box and submit."""
    with ep.step("paste it into the textbox"):
        ep.x.move(*ep.point(ep.box("#answer-input")))
        ep.x.click()
        ep.x.hotkey("ctrl", "v")
    ep.submit()


def _copy_paste(ep: Episode, source: str) -> None:
    with ep.step("select the text and copy it"):
        ep.x.move(*ep.point(ep.box(source)))
        ep.x.click()
        ep.x.hotkey("ctrl", "a")
        ep.x.hotkey("ctrl", "c")
    _paste_and_submit(ep)


def copy_paste(ep: Episode) -> None:
    _copy_paste(ep, "#area textarea")


def copy_paste_2(ep: Episode) -> None:
    _copy_paste(ep, f"#text-{ordinal(ep) + 1}")


def find_word(ep: Episode) -> None:
    n = ordinal(ep)
    found = ep.js(_WORD_BOX, ep.el("#area p"), n)
    if not found:
        raise TargetNotFound(f"the paragraph has no word #{n + 1}")
    word = found[4]
    with ep.step(f"double-click {word} and copy it"):
        ep.x.move(*ep.point(scaled(ep, found), spread=0.2))
        ep.x.double_click()
        ep.x.hotkey("ctrl", "c")
    _paste_and_submit(ep)


# --- scroll ------------------------------------------------------------------------------------------------
def _scroll_to(ep: Episode, css: str, down: bool) -> None:
    """Wheel over the element until its scrollTop reaches the end (a few clicks at a time, then a look)."""
    at_end = ("var t = document.querySelector(arguments[0]); return " +
              ("t.scrollTop + t.clientHeight >= t.scrollHeight - 1;" if down else "t.scrollTop <= 0;"))
    with ep.step(f"scroll the text {'down' if down else 'up'} to its {'end' if down else 'top'}"):
        ep.x.move(*ep.point(ep.box(css)))
        for _ in range(12):
            if ep.js(at_end, css):
                return
            ep.x.scroll(not down, int(ep.rng.integers(2, 5)))
        raise TargetNotFound(f"{css} did not scroll to its {'end' if down else 'top'}")


def scroll_text(ep: Episode) -> None:
    _scroll_to(ep, "#text-area", down=True)
    words = ep.js("return document.getElementById('text-area').value.trim().split(/\\s+/);")
    word = re.sub(r"[^\w-]+$", "", words[-1]) if words else ""
    if not word:
        raise TargetNotFound("the text area is empty")
    ep.type_into("#answer-input", word, f'type the last word, "{word}"')
    ep.submit()


def scroll_text_2(ep: Episode) -> None:
    down = "bottom" in ep.instruction
    _scroll_to(ep, "#text-area", down=down)
    ep.submit()


# --- drag --------------------------------------------------------------------------------------------------
def drag_box(ep: Episode) -> None:
    small, large = ep.box("#draggableSmall"), ep.box("#draggableLarge")
    with ep.step("drag the small box into the large one"):
        ep.x.move(*ep.point(small, 0.2))
        grab = (ep.x.xy[0] - small[0], ep.x.xy[1] - small[1])
        cx, cy = large[0] + large[2] / 2, large[1] + large[3] / 2
        ep.x.drag(int(round(cx - small[2] / 2 + grab[0])), int(round(cy - small[3] / 2 + grab[1])))
    ep.submit()


def use_slider(ep: Episode) -> None:
    m = re.search(r"Select (-?\d+) with the slider", ep.instruction)
    if not m:
        raise TargetNotFound(f"no value in {ep.instruction!r}")
    want = int(m.group(1))
    lo, hi, vertical = ep.js("var s = $('#slider'); return [s.slider('option', 'min'), s.slider('option', 'max'),"
                             " s.slider('option', 'orientation') === 'vertical'];")
    track, handle = ep.box("#slider"), ep.box("#slider .ui-slider-handle")
    u = (want - lo) / max(1, hi - lo)
    with ep.step(f"drag the slider to {want}"):
        ep.x.move(*ep.point(handle, 0.2))
        if vertical:
            ep.x.drag(ep.x.xy[0], int(round(track[1] + track[3] * (1 - u))))
        else:
            ep.x.drag(int(round(track[0] + track[2] * u)), ep.x.xy[1])
    value = lambda: int(ep.js("return $('#slider').slider('value');"))   # noqa: E731
    if value() != want:
        with ep.step(f"nudge it to {want} with the arrow keys"):
            for _ in range(10):
                v = value()
                if v == want:
                    break
                up = v < want
                ep.x.key(("Up" if up else "Down") if vertical else ("Right" if up else "Left"), "key",
                         ("up" if up else "down") if vertical else ("right" if up else "left"))
    ep.submit()


def _highlight(ep: Episode, paragraph) -> None:
    ends = ep.js(_TEXT_ENDS, paragraph)
    if not ends:
        raise TargetNotFound("the paragraph has no text")
    a, z = scaled(ep, ends[0]), scaled(ep, ends[1])
    with ep.step("drag across the paragraph to select it"):
        ep.x.move(int(round(a[0] + 0.15 * a[2])), int(round(a[1] + a[3] / 2)))
        ep.x.drag(int(round(z[0] + z[2] + 2 * ep.scale)), int(round(z[1] + z[3] / 2)))
    ep.submit()


def highlight_text(ep: Episode) -> None:
    _highlight(ep, ep.el("#randomText"))


def highlight_text_2(ep: Episode) -> None:
    n = ordinal(ep)
    paragraphs = ep.els("#area p")
    if n >= len(paragraphs):
        raise TargetNotFound(f"no paragraph #{n + 1}")
    _highlight(ep, paragraphs[n])


SOLVERS = {
    "click-button": click_button, "click-link": click_link, "click-dialog": click_dialog,
    "click-dialog-2": click_dialog_2, "click-checkboxes": click_checkboxes, "click-option": click_option,
    "click-tab": click_tab, "click-test": click_test, "click-test-2": click_test_2,
    "click-button-sequence": click_button_sequence, "click-widget": click_widget,
    "click-collapsible": click_collapsible, "focus-text": focus_text, "focus-text-2": focus_text_2,
    "enter-text": enter_text, "enter-text-2": enter_text_2, "enter-text-dynamic": enter_text,
    "enter-password": enter_password, "login-user": login_user, "simple-arithmetic": simple_arithmetic,
    "use-autocomplete": use_autocomplete, "copy-paste": copy_paste, "copy-paste-2": copy_paste_2,
    "find-word": find_word, "scroll-text": scroll_text, "scroll-text-2": scroll_text_2, "drag-box": drag_box,
    "use-slider": use_slider, "highlight-text": highlight_text, "highlight-text-2": highlight_text_2,
}
