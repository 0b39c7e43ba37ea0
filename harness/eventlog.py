"""The per-node event log: one line per event, for people and for the checker.

Format (design section 5), one event per line::

    2026-11-27T02:41:03.123456Z server1 recv peer=127.0.0.1:53422 msg=PREPARE txid=c1-... value=7

a UTC timestamp with microseconds, the node's name, the event, then logfmt
``key=value`` fields (values quoted when they hold spaces). The checker reads
these files and the final states, nothing else.

Lines are written with one ``os.write`` on an O_APPEND descriptor, so a line
is in the operating system's hands as soon as the call returns: a node killed
with SIGKILL loses no line it wrote, and a restarted node appends to the same
file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.protocol.messages import DecodeError, Message, format_fields, message_fields, split_fields

# Every event a node writes. The checker flags any other as a bad line (a torn
# write, a stray print), so a new event must be added here.
EVENTS = frozenset(
    {
        # participants
        "listening", "restored", "recovered", "durable", "bad-input", "fatal", "error",
        # clients
        "connected", "begin", "decide", "outcome", "error-reply",
        # both
        "recv", "send", "timeout", "disconnect", "unreachable", "crash", "stopped",
        # the runner's nemesis and fault proxy
        "fault", "heal", "drop", "cut",
    }
)  # fmt: skip


_second: list[object] = [None, ""]  # the last whole second formatted, and its text


def utc_timestamp(t: float) -> str:
    """``t`` (seconds since the epoch) as 2026-11-27T02:41:03.123456Z."""
    seconds = int(t)
    micros = int((t - seconds) * 1_000_000)
    if _second[0] != seconds:  # nodes log many lines a second: format the second once
        _second[0], _second[1] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_second[1]}.{micros:06d}Z"


class EventLog:
    """Appends events for one node to a file (and, optionally, echoes them)."""

    def __init__(self, path: Path | None, node: str, echo: TextIO | None = None) -> None:
        self.node = node
        self.path = path
        self._echo = echo
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def event(self, event: str, *fields: tuple[str, object]) -> None:
        """Write one event line with ``fields`` as (key, value) pairs."""
        assert event in EVENTS, f"unknown event {event!r}: add it to harness.eventlog.EVENTS"
        rest = format_fields(fields)
        line = (
            f"{utc_timestamp(time.time())} {self.node} {event} {rest}\n"
            if rest
            else f"{utc_timestamp(time.time())} {self.node} {event}\n"
        )
        if self._fd is not None:
            os.write(self._fd, line.encode())
        if self._echo is not None:
            self._echo.write(line)
            self._echo.flush()

    def message(self, event: str, peer: str, msg: Message) -> None:
        """A message sent or received: ``event`` is send or recv."""
        self.event(event, ("peer", peer), ("msg", msg.kind.value), *message_fields(msg))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One parsed event line; ``where`` is ``file:line`` for violation reports."""

    ts: str
    node: str
    event: str
    fields: dict[str, str]
    where: str
    text: str


def read_log(path: Path) -> Iterator[LogLine]:
    """Parse an event log. A line that does not parse raises ValueError naming it."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, 1):
            text = raw.rstrip("\n")
            if not text:
                continue
            parts = text.split(" ", 3)
            if len(parts) < 3:
                raise ValueError(f"{path.name}:{number}: not an event line: {text[:80]!r}")
            try:
                fields = dict(split_fields(parts[3])) if len(parts) == 4 else {}
            except DecodeError as e:
                raise ValueError(f"{path.name}:{number}: {e.detail}") from None
            yield LogLine(parts[0], parts[1], parts[2], fields, f"{path.name}:{number}", text)
