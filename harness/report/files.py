"""Every file the report adds to a run folder: report.html, history.jsonl, events.jsonl.

Theory of operation. One pass over the folder's logs (``rundata.read_run``)
yields the columns the page draws and, on the way, events.jsonl; the
history and the page are written from the columns. The checker's report, when
the caller has one, gives the violations the page lists; otherwise the folder
is checked here.
"""

from __future__ import annotations

import gc
from pathlib import Path

from harness.report import history, html
from harness.report.rundata import read_run
from harness.verify.checker import check_run
from harness.verify.model import CheckReport

REPORT, HISTORY, EVENTS = "report.html", "history.jsonl", "events.jsonl"


def write_all(folder: Path, report: CheckReport | None = None, *, events: bool = True) -> list[Path]:
    """Write the report files of ``folder``; ``report`` is its check (done here
    when None; CheckError when the folder is not a run folder)."""
    if report is None:
        report = check_run(folder)
    # Millions of small objects, none freed until the end: the cyclic garbage
    # collector would only rescan them (a third of the time, as in the checker).
    collecting = gc.isenabled()
    gc.disable()
    try:
        if events:
            with open(folder / EVENTS, "w", encoding="utf-8") as out:
                data = read_run(folder, out)
        else:
            data = read_run(folder)
        written = [html.write(folder, data, report), history.write(folder, data)]
    finally:
        if collecting:
            gc.enable()
    return written + ([folder / EVENTS] if events else [])
