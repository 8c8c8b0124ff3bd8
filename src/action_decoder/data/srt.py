"""SubRip (.srt) narration: cues with start/end in video seconds and their words.

Accepts what players accept: optional BOM, CRLF, a missing or non-numeric index line, `.` or `,`
before milliseconds, position suffixes after the end time, and inline tags (`<i>`, `{\\an8}`),
which are removed. A timing line that cannot be read raises `DataFormatError` with file and line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from action_decoder.data.events import DataFormatError

_TIME = r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")


@dataclass(frozen=True)
class Cue:
    start: float   # seconds of video time
    end: float
    text: str      # tags removed, lines joined by spaces

    @property
    def words(self) -> list[str]:
        return self.text.split()


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0


def parse_srt(text: str, path: str | Path = "<srt>") -> list[Cue]:
    """Cues in file order."""
    cues: list[Cue] = []
    lines = text.lstrip("\ufeff").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        # A block is: [index line] timing line, text lines, blank line.
        if not _TIMING.match(lines[i]) and i + 1 < len(lines) and (
                lines[i].strip().isdigit() or _TIMING.match(lines[i + 1])):
            i += 1
        match = _TIMING.match(lines[i])
        if match is None:
            raise DataFormatError(path, i + 1,
                                  f"expected a cue timing 'HH:MM:SS,mmm --> HH:MM:SS,mmm', got {lines[i]!r}")
        g = match.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        if end < start:
            raise DataFormatError(path, i + 1, f"cue ends ({end:.3f} s) before it starts ({start:.3f} s)")
        i += 1
        text_lines = []
        while i < len(lines) and lines[i].strip():
            text_lines.append(_TAG.sub("", lines[i]).strip())
            i += 1
        cues.append(Cue(start=start, end=end, text=" ".join(t for t in text_lines if t)))
    return cues


def read_srt(path: str | Path) -> list[Cue]:
    return parse_srt(Path(path).read_text(encoding="utf-8-sig"), path)
