"""What every entry (train.py, eval.py, annotate.py, scripts/*.py) does with a mistake of its user's.

A `UserError` is a mistake the user can fix: a missing or wrong file, an unknown preset, a setting that cannot
work. The entry prints it as one line, `error: <what> ... <the fix>`, and exits 1. Anything else is a bug and
keeps its traceback; `HYDRA_FULL_ERROR=1` shows the traceback for user errors too.

    @hydra.main(...)
    @cli.user_errors             # inside hydra.main: Hydra would otherwise print its own traceback
    def main(cfg): ...

    if __name__ == "__main__":
        cli.entry(main)          # the argv checks (unknown presets), and errors raised before Hydra starts
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from action_decoder.config import CONF_DIR


class UserError(Exception):
    """A mistake of the user's, phrased for them: what is wrong (the file or setting) and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or that a step before should have made) is not there."""


class SettingError(UserError, ValueError):
    """A setting, or a file's content, that cannot work as given."""


def full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(err: UserError) -> None:
    """One line on stderr (a multi-line message, e.g. a list of changed keys, is joined with '; ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    print(f"error: {text}", file=sys.stderr, flush=True)


def user_errors(fn: Callable) -> Callable:
    """A UserError leaving `fn` becomes one line and exit status 1 (re-raised under HYDRA_FULL_ERROR=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            if full_errors():
                raise
            report(err)
            sys.exit(1)

    return wrapper


def check_group_choices(argv: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """`group=option` overrides naming a config group of conf/ must name one of its files: one line listing
    the options, instead of Hydra's composition error (or its traceback, for scripts composing by hand).
    Sweep lists (`a,b`) are checked value by value; sweep functions (`choice(...)`) are left to Hydra."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = conf_dir / key
        if not key or key.startswith("hydra/") or "(" in value or not group.is_dir():  # hydra/*: plugins add options
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in (v.strip() for v in value.split(",")):
            if choice and choice != "null" and choice not in options:
                raise SettingError(f"{key}={choice}: no such preset (conf/{key}/{choice}.yaml); "
                                   f"choose one of: {', '.join(options)}")


def entry(main: Callable[[], Any], argv: list[str] | None = None) -> Any:
    """Run an entry's `main()` with the argv checks first; UserErrors become one line and exit 1."""

    @user_errors
    def checked() -> Any:
        check_group_choices((argv or sys.argv)[1:])
        return main()

    return checked()
