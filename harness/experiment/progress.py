"""What a person sees while a run is under way: a progress line, and the protocol's events when watched.

Theory of operation. The runner reports each attempt's result and the number
of operations finished; ``Progress`` keeps one self-rewriting line on a
terminal (standard error), silent when that is not a terminal:

    37/50 transactions (30 committed, 7 aborted, 0 unknown), 3.1s, about 1s left

With ``--transactions`` the time left is the pace so far applied to what is
left; with ``--duration`` it is the time until clients stop starting
transactions. The line is cut to the terminal's width, never wrapped.

``Watch`` streams the events of the run folder's logs as they are written
(harness.node.watch), one compact line each, on standard output: the runner
polls it from its loop, so nothing is read when no one watches. The progress
line is cleared before events are printed and drawn again after, so the two
never mix on one screen line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from harness.console.terminal import clip, terminal_width
from harness.node.watch import LogTail, compact

REDRAW_EVERY = 0.1  # seconds between redraws of the progress line: faster is flicker


class Progress:
    """One self-rewriting line on a terminal; silent otherwise."""

    def __init__(self, total: int | None, duration: float | None = None, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total  # operations the run will do (--transactions), None with --duration
        self.duration = duration
        self.counts: dict[str, int] = {}
        self.done = 0  # operations finished (retried attempts count once)
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def add(self, result: str, done: int) -> None:
        """An attempt ended with ``result``; ``done`` operations are finished in all."""
        self.counts[result] = self.counts.get(result, 0) + 1
        self.done = done
        self.show()

    def text(self, now: float) -> str:
        c = self.counts
        elapsed = now - self.started
        outcomes = f"{c.get('committed', 0)} committed, {c.get('aborted', 0)} aborted, {c.get('unknown', 0)} unknown"
        if self.total:
            head = f"{self.done}/{self.total} transactions ({outcomes})"
            left = elapsed / self.done * (self.total - self.done) if self.done else None
        else:
            head = f"{sum(c.values())} attempts ({outcomes})"
            left = max(0.0, (self.duration or 0.0) - elapsed) if self.duration else None
        tail = f", {elapsed:.1f}s" + (f", about {left:.0f}s left" if left is not None else "")
        return head + tail

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < REDRAW_EVERY):
            return
        self._last = now
        width = terminal_width(self.stream)
        self.stream.write("\r\x1b[K" + clip(self.text(now), (width - 1) if width else None))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Blank the line, so that other output can take its place."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def end(self) -> None:
        if self.enabled:
            self.show(force=True)
            self.stream.write("\n")
            self.stream.flush()


class Watch:
    """The run folder's events, compact, as they are written (``harness.run --watch``)."""

    def __init__(self, folder: Path, stream: TextIO | None = None) -> None:
        self.tail = LogTail(folder)
        self.stream = stream if stream is not None else sys.stdout

    def poll(self, progress: Progress | None = None) -> None:
        lines = self.tail.poll()
        if not lines:
            return
        if progress is not None:
            progress.clear()
        width = terminal_width(self.stream)
        self.stream.write("".join(clip(compact(line, node=True), width) + "\n" for line in lines))
        self.stream.flush()
        if progress is not None:
            progress.show(force=True)
