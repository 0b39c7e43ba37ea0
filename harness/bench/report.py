"""The report's benchmark: writing report.html for a million-line folder, its size, and its speed in a browser.

Theory of operation. On a synthetic run folder (harness.bench.synth, the
checker's own), each repetition times ``check_run`` (the floor: the report
must cost at most twice the check), then the report as ``harness.run``
writes it (the folder read once, report.html, history.jsonl), with the
garbage collector off as both do. events.jsonl (every line as JSON) is
timed once, apart. report.html's size is given per log line. Where
Chromium and Playwright are installed, the page is opened headless: the
first paint (from navigation to the diagram drawn, in the page's own
clock) and the redraw after a zoom, from the whole run down to a
millisecond (the page's ``REPORT.redraw``).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from statistics import median
from typing import Any

from harness.bench.synth import synthesize_run
from harness.report import chromium, history, html
from harness.report.files import EVENTS
from harness.report.rundata import read_run
from harness.verify.checker import check_run

TARGET_RATIO = 2.0  # report.html + history.jsonl, as a multiple of check_run on the same folder
TARGET_FIRST_PAINT_MS = 3000.0
TARGET_REDRAW_MS = 100.0
ZOOMS = 12  # redraws timed, each view a third as wide as the one before


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def measure(workdir: Path, lines: int, repeat: int) -> dict[str, Any]:
    folder = workdir / "report-folder"
    written = synthesize_run(folder, lines)
    checks, reports = [], []
    for _ in range(repeat):
        gc.collect()
        check_s, checked = _timed(check_run, folder)
        checks.append(check_s)
        gc.collect()
        gc.disable()
        try:
            read_s, data = _timed(read_run, folder)
            page_s, path = _timed(html.write, folder, data, checked)
            history_s, _ = _timed(history.write, folder, data)
        finally:
            gc.enable()
        reports.append(read_s + page_s + history_s)
        del data
    gc.collect()
    gc.disable()
    try:
        with open(folder / EVENTS, "w", encoding="utf-8") as sink:
            events_s, _ = _timed(read_run, folder, sink)
    finally:
        gc.enable()
    size = path.stat().st_size
    out: dict[str, Any] = {
        "lines": written,
        "check_s": median(checks),
        "report_s": median(reports),
        "ratio": median(reports) / median(checks),
        "events_s": events_s,
        "events_bytes_per_line": (folder / EVENTS).stat().st_size / written,
        "html_bytes": size,
        "bytes_per_line": size / written,
        "check_reps_s": checks,
        "report_reps_s": reports,
    }
    out.update(_browser(path))
    return out


def _browser(path: Path) -> dict[str, Any]:
    binary = chromium.binary()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"browser": "playwright not installed"}
    if binary is None:
        return {"browser": "chromium not installed"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(path.as_uri())
            page.wait_for_function("window.REPORT && (REPORT.ready || REPORT.errors.length)", timeout=120_000)
            errors = page.evaluate("REPORT.errors")
            first_paint = page.evaluate("REPORT.firstPaintMs")
            redraws = page.evaluate(
                f"""(() => {{
                    const out = [], end = REPORT.header.end, c = end / 2;
                    let w = end;
                    for (let k = 0; k < {ZOOMS}; k++, w /= 3) {{
                        out.push(REPORT.redraw(c - w / 2, c + w / 2));
                        console.log(JSON.stringify(REPORT.parts));
                    }}
                    return out;
                }})()"""
            )
        finally:
            browser.close()
    return {
        "browser": binary,
        "browser_errors": errors,
        "first_paint_ms": first_paint,
        "redraw_ms": redraws,
        "redraw_median_ms": median(redraws),
        "redraw_max_ms": max(redraws),
    }
