"""Text that fits the terminal it is printed to: tables, prose, commands, echoed events.

Theory of operation. A line wider than the terminal wraps into fragments that
no one can read, so everything the programs print for a person is fitted to
a width:

* the width is ``$COLUMNS`` when set, else the terminal's when standard
  output is one, else none: output piped to a file or a program keeps whole
  lines (a script reads what the log would say), unless COLUMNS asks otherwise;
* a table first hides its columns that are zero on every row (nothing to
  read there), then drops the padding around its headers; if it is still
  too wide it is folded: its columns go into
  as many tables as needed, each repeating the key column (the client's or
  replica's name), so every figure stays on screen with its row's name;
* prose is wrapped at word boundaries, continuation lines indented;
* a command line is wrapped with shell continuations (`` \\``), so that it can
  still be copied and pasted whole;
* an echoed event line or a quoted log line is cut, ending in ``…``.

Markdown (summary.md) is not fitted: a file is read in an editor or a browser.
"""

from __future__ import annotations

import os
import shlex
import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

import tabulate as tabulate_module
from tabulate import tabulate

MIN_WIDTH = 40  # narrower than this, folding tables helps no one: print them whole


def terminal_width(stream: Any) -> int | None:
    """The width to fit ``stream``'s output to, or None for no limit (see the module's docstring)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return shutil.get_terminal_size().columns
    return None


def clip(line: str, width: int | None) -> str:
    """``line`` cut to ``width`` characters, the last one ``…`` when it was cut."""
    if width is None or len(line) <= width:
        return line
    return line[: max(width - 1, 0)] + "…"


def wrap(line: str, width: int | None, indent: str = "    ") -> list[str]:
    """A line of prose wrapped to ``width``, continuation lines indented."""
    if width is None or len(line) <= width:
        return [line]
    lead = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line, width, initial_indent="", subsequent_indent=lead + indent, break_on_hyphens=False, drop_whitespace=True
    ) or [line]


def shell_wrap(prefix: str, command: str, width: int | None) -> list[str]:
    """``prefix + command`` on lines of at most ``width`` (when a word allows), joined by `` \\``
    continuations: pasted into a shell, it is the same command."""
    if width is None or len(prefix) + len(command) <= width:
        return [prefix + command]
    words = shlex.split(command)
    units: list[str] = []  # a flag and its value stay on one line
    for word in words:
        token = shlex.quote(word)
        if units and units[-1].startswith("--") and " " not in units[-1] and not word.startswith("--"):
            units[-1] += " " + token
        else:
            units.append(token)
    indent = "    "
    lines: list[str] = []
    current = prefix + units[0]
    for unit in units[1:]:
        if len(current) + 1 + len(unit) + 2 > width:  # room for the " \\" continuation
            lines.append(current + " \\")
            current = indent + unit
        else:
            current += " " + unit
    lines.append(current)
    return lines


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def fit_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    width: int | None,
    *,
    keep: Sequence[int] = (0,),
    fmt: str = "simple",
) -> str:
    """The table as text no wider than ``width`` (None: as it is). Column 0 is the key,
    repeated in every fold; ``keep``: columns shown even when all zero."""
    if width is None or not rows:
        return tabulate(rows, headers=list(headers), tablefmt=fmt)
    shown = [i for i in range(len(headers)) if i in keep or not all(_is_zero(r[i]) for r in rows)]

    padding = tabulate_module.MIN_PADDING

    def render(columns: list[int]) -> str:
        saved = tabulate_module.MIN_PADDING
        tabulate_module.MIN_PADDING = padding  # tabulate reads it at each call; no argument sets it
        try:
            return tabulate(
                [[r[i] for i in columns] for r in rows], headers=[headers[i] for i in columns], tablefmt=fmt
            )
        finally:
            tabulate_module.MIN_PADDING = saved

    def wide(text: str) -> int:
        return max(len(line) for line in text.splitlines())

    whole = render(shown)
    if wide(whole) <= width or width < MIN_WIDTH:
        return whole
    padding = 0  # headers as wide as their words: room for a column or two more before folding
    whole = render(shown)
    if wide(whole) <= width:
        return whole
    folds: list[list[int]] = []
    group: list[int] = [0]
    for i in shown[1:]:
        if len(group) > 1 and wide(render([*group, i])) > width:
            folds.append(group)
            group = [0]
        group.append(i)
    folds.append(group)
    return "\n\n".join(render(g) for g in folds)
