"""The tour's pictures: real runs, their report.html photographed in headless Chromium.

Theory of operation. Each picture of docs/tutorial.md is one ``Shot``: the
``python -m harness.run`` flags of a step of the tour. ``take`` runs that very
command as a child process (on free ports, into a folder of its own), checks
it ended as the tour says (consistent, or, for the broken variant, caught),
opens the run's report.html in the system's Chromium through Playwright,
waits for the page to say it is drawn (``window.REPORT.ready``), and saves a
PNG of the top of the page: the verdict, the space-time diagram and the lock
timeline. So the pictures are never drawn by hand: when the report changes,
``python -m harness.tour pictures`` makes them again from new runs.

A picture is kept under MAX_BYTES (the docs are read in a repository, and a
PNG of a canvas compresses well at the viewport chosen here).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import chromium
from harness.report.files import REPORT

# Small enough to keep in the repository beside the text (each a few of them per page).
MAX_BYTES = 150_000
# A laptop's browser window: the diagram's arrows stay legible when the PNG is shown at
# the width of a rendered Markdown page.
VIEWPORT = {"width": 1000, "height": 620}
# A real run with faults settles within this (the resolve-after timers, a restart).
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Shot:
    """One picture: ``name``.png from a run of ``python -m harness.run`` with ``flags``."""

    name: str
    flags: tuple[str, ...]
    exit_status: int = 0  # 0: consistent; 1: the checker found the variant's violations
    caption: str = ""


SHOTS: tuple[Shot, ...] = (
    Shot("1-one-client", ("--clients", "1", "--transactions", "3"), caption="PREPARE, three ok, COMMIT"),
    Shot("2-two-clients", ("--clients", "2", "--transactions", "5"), caption="a NOK, an ABORT"),
    Shot("3-client-crash", ("--clients", "1", "--crash", "client:after-prepare"), caption="the participants finish it"),
    Shot("4-participant-crash", ("--clients", "1", "--crash", "participant:after-vote"), caption="a restart remembers"),
    Shot("5-partition", ("--clients", "1", "--crash", "partition:between-phases"), caption="a cut link"),
    Shot(
        "6-broken",
        ("--clients", "3", "--transactions", "5", "--variant", "count-no-as-yes"),
        exit_status=1,
        caption="a broken coordinator caught",
    ),
)


class PictureError(Exception):
    """A picture could not be made: no browser, or the run did not end as the tour says."""


def run_command(shot: Shot, folder: Path) -> list[str]:
    """The command of ``shot``, as the tour writes it, on free ports, into ``folder``."""
    return [sys.executable, "-m", "harness.run", *shot.flags, "--base-port", "0", "--out", str(folder)]


def real_run(shot: Shot, folder: Path) -> Path:
    """Run ``shot``'s command; the run folder, once it ended as the tour says."""
    done = subprocess.run(
        run_command(shot, folder), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=folder.parent
    )
    if done.returncode != shot.exit_status:
        raise PictureError(
            f"{shot.name}: harness.run exited {done.returncode}, the tour expects {shot.exit_status}\n"
            + done.stdout[-2000:]
            + done.stderr[-2000:]
        )
    return folder


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's) through Playwright; PictureError if either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PictureError("Playwright is not installed (pip install '.[test]')") from None
    binary = chromium.binary()
    if binary is None:
        raise PictureError("Chromium is not installed (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def photograph(b: Any, folder: Path, png: Path) -> int:
    """Save the top of ``folder``'s report.html as ``png``; its size in bytes."""
    page = b.new_page(viewport=VIEWPORT)
    try:
        page.goto((folder / REPORT).as_uri())
        page.wait_for_function("window.REPORT && (REPORT.ready || REPORT.errors.length)", timeout=30_000)
        errors = page.evaluate("REPORT.errors")
        if errors:
            raise PictureError(f"{folder / REPORT}: the page reports {errors}")
        page.screenshot(path=str(png))
    finally:
        page.close()
    size = png.stat().st_size
    if size > MAX_BYTES:
        raise PictureError(f"{png}: {size:,} bytes, more than {MAX_BYTES:,}")
    return size


def take(shots: Sequence[Shot], out: Path, workdir: Path) -> list[tuple[Path, int]]:
    """Make every picture of ``shots`` into ``out`` from real runs in ``workdir``.
    Every run happens before the browser starts (Playwright's synchronous API
    keeps an event loop on this thread)."""
    out.mkdir(parents=True, exist_ok=True)
    folders = [real_run(shot, workdir / shot.name) for shot in shots]
    made = []
    with browser() as b:
        for shot, folder in zip(shots, folders, strict=True):
            png = out / f"{shot.name}.png"
            made.append((png, photograph(b, folder, png)))
    return made
