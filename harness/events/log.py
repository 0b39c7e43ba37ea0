"""The per-node event log: one line per event, for people and for the checker.

Format (design section 5), one event per line::

    2026-11-27T02:41:03.123456Z server1 recv peer=127.0.0.1:53422 msg=PREPARE txid=c1-... value=7

a UTC timestamp with microseconds, the node's name, the event, then logfmt
``key=value`` fields (values quoted when they hold spaces). The checker reads
these files and the final states, nothing else.

Lines are written with ``os.write`` on an O_APPEND descriptor, so a line is
in the operating system's hands as soon as the call returns, and a restarted
node appends to the same file. A node's log is *buffered*: the lines of one
pass of its event loop go out in one write, when the node calls ``flush``
before anything leaves the process (a message, a result, a SIGKILL), and
otherwise FLUSH_AFTER seconds after the first of them. So a node killed with
SIGKILL may lose its last few lines, but never a line about something the
world has seen: the log is never behind the node's effects. (Measured: a write
per line was a tenth of a client's CPU, 15 lines per transaction.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from harness.protocol.messages import DecodeError, Message, encode_text, format_fields, quote, split_fields
from harness.protocol.participant import TxRecord

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
        # the resolver of abandoned PostgreSQL prepared transactions
        "resolved",
    }
)  # fmt: skip


# Lines that nothing sends out are written this long after the first of them,
# at the latest. A timer and not loop.call_soon: that would cost the loop a
# pass of its own each time (a poll and its callbacks, a fifth of a
# participant's loop passes), and a person tailing a log cannot tell 5 ms.
FLUSH_AFTER = 0.005

_second: list[object] = [None, ""]  # the last whole second formatted, and its text


def utc_timestamp(t: float) -> str:
    """``t`` (seconds since the epoch) as 2026-11-27T02:41:03.123456Z."""
    seconds = int(t)
    micros = int((t - seconds) * 1_000_000)
    if _second[0] != seconds:  # nodes log many lines a second: format the second once
        _second[0], _second[1] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_second[1]}.{micros:06d}Z"


class EventLog:
    """Appends events for one node to a file (and, optionally, echoes them).

    ``buffered``: keep lines until ``flush``, which runs by itself FLUSH_AFTER
    seconds later on the running event loop (see the module's docstring)."""

    def __init__(self, path: Path | None, node: str, echo: TextIO | None = None, *, buffered: bool = False) -> None:
        self.node = node
        self.path = path
        self._echo = echo
        self._fd: int | None = None
        self._pending: list[str] | None = [] if buffered else None
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop whose timer will flush
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def event(self, event: str, *fields: tuple[str, object]) -> None:
        """Write one event line with ``fields`` as (key, value) pairs."""
        self.line(event, format_fields(fields))

    def message(self, event: str, peer: str, msg: Message | str) -> None:
        """A message sent or received: ``event`` is send or recv. ``msg`` may be
        its wire line already (``encode_text``), to format it only once."""
        text = msg if isinstance(msg, str) else encode_text(msg)
        self.line(event, f"peer={quote(peer)} msg={text}")

    def line(self, event: str, rest: str) -> None:
        """One event line whose fields are formatted already (``key=value ...``)."""
        assert event in EVENTS, f"unknown event {event!r}: add it to harness.eventlog.EVENTS"
        stamp = utc_timestamp(time.time())  # when it happened, not when it is flushed
        line = f"{stamp} {self.node} {event} {rest}\n" if rest else f"{stamp} {self.node} {event}\n"
        if self._pending is None:
            self._write(line)
            return
        self._pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing would flush it later
            self.flush()
            return
        if self._flush_loop is not loop:  # no timer yet, or one on a loop that has ended
            self._flush_loop = loop
            loop.call_later(FLUSH_AFTER, self._scheduled_flush)

    def flush(self) -> None:
        """Write every buffered line now (one write)."""
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._write(text)

    def _scheduled_flush(self) -> None:
        self._flush_loop = None
        self.flush()

    def _write(self, text: str) -> None:
        if self._fd is not None:
            data = text.encode()
            while data:  # a regular file takes it whole; loop in case it does not
                data = data[os.write(self._fd, data) :]
        if self._echo is not None:
            self._echo.write(text)
            self._echo.flush()

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def log_record(log: EventLog, event: str, r: TxRecord, why: str | None = None) -> None:
    """A durable record as the checker reads it (events durable and restored)."""
    log.event(
        event,
        ("txid", r.txid),
        ("state", r.state.value),
        ("value", r.value),
        ("version", r.version),
        ("participants", ",".join(r.participants)),
        ("why", why),
    )


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
