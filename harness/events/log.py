"""The per-node event log: one line per event, for people and for the checker.

Format (docs/architecture.md; every event and its fields: harness.events.schema), one event per line::

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

A log that cannot be written (a full or read-only filesystem, an I/O error)
stops the process at once with exit 3 and one line on standard error: a node
whose log is behind its effects would break the rule above, and one that
stays up answering nothing keeps its peers' transactions prepared.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.events.schema import DURABLE, KINDS, RESTORED, EventKind, FieldType
from harness.protocol.messages import DecodeError, Message, encode_text, quote, split_fields
from harness.protocol.participant import TxRecord

# Lines that nothing sends out are written this long after the first of them,
# at the latest. A timer and not loop.call_soon: that would cost the loop a
# pass of its own each time (a poll and its callbacks, a fifth of a
# participant's loop passes), and a person tailing a log cannot tell 5 ms.
FLUSH_AFTER = 0.005

_PEERS_REMEMBERED = 256  # quoted peer names kept per log (a participant sees a new port per connection)

_second: list[object] = [None, ""]  # the last whole second formatted, and its text


def format_event_fields(kind: EventKind, values: dict[str, object]) -> str:
    """The ``key=value ...`` part of a ``kind`` line, fields in the schema's order.
    ValueError (our bug) for a field ``kind`` does not have, or a required one missing."""
    parts = []
    for f in kind.fields:
        value = values.get(f.name)
        if value is None:  # left out, or None: only an optional field may be
            if not f.optional:
                raise ValueError(f"a {kind.name} event needs {f.name}")
            continue
        if type(value) is int:  # digits and a sign: always a bare token (quote's check, spared)
            parts.append(f"{f.name}={value}")
        else:
            parts.append(f"{f.name}={quote(value if type(value) is str else str(value))}")
    if len(values) != len(parts):  # Nones, or a field the kind lacks
        unknown = ", ".join(sorted(set(values) - set(kind.field_names)))
        if unknown:
            raise ValueError(f"a {kind.name} event has no field {unknown}: add it to harness.events.schema")
    return " ".join(parts)


def format_line(stamp: str, node: str, kind: EventKind, /, **values: object) -> str:
    """A whole event line (no newline), as EventLog writes it at ``stamp`` (utc_timestamp)."""
    rest = format_event_fields(kind, values)
    return f"{stamp} {node} {kind.name} {rest}" if rest else f"{stamp} {node} {kind.name}"


def format_message_line(stamp: str, node: str, kind: EventKind, peer: str, msg: Message | str) -> str:
    """A whole ``send`` or ``recv`` line (no newline), as EventLog.message writes it."""
    return f"{stamp} {node} {kind.name} {_message_fields(peer, msg)}"


def _message_fields(peer: str, msg: Message | str) -> str:
    text = msg if isinstance(msg, str) else encode_text(msg)
    return f"peer={quote(peer)} msg={text}"


def utc_timestamp(t: float) -> str:
    """``t`` (seconds since the epoch) as 2026-11-27T02:41:03.123456Z."""
    seconds = int(t)
    micros = int((t - seconds) * 1_000_000)
    if _second[0] != seconds:  # nodes log many lines a second: format the second once
        _second[0], _second[1] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_second[1]}.{micros:06d}Z"


def path_problem(e: OSError) -> str:
    """What is wrong with a path, in words: ``x is not a folder``, ``Permission denied``."""
    if isinstance(e, FileExistsError | NotADirectoryError) and e.filename:  # a regular file on the way
        blocking = next(
            (p for p in (Path(e.filename), *Path(e.filename).parents) if p.exists() and not p.is_dir()), None
        )
        if blocking is not None:
            return f"{blocking} is a file, not a folder"
    return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")


class EchoSink(Protocol):
    """Where a log echoes its lines for people: a text stream, or one that reformats them
    (harness.node.watch.Echo)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class EventLogError(Exception):
    """The log file cannot be opened for appending (the environment's problem: a path under a
    regular file, a read-only folder)."""


class EventLog:
    """Appends events for one node to a file (and, optionally, echoes them).

    ``buffered``: keep lines until ``flush``, which runs by itself FLUSH_AFTER
    seconds later on the running event loop (see the module's docstring)."""

    def __init__(self, path: Path | None, node: str, echo: EchoSink | None = None, *, buffered: bool = False) -> None:
        self.node = node
        self.path = path
        self._echo = echo
        self._fd: int | None = None
        self._pending: list[str] | None = [] if buffered else None
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop whose timer will flush
        self._peers: dict[str, str] = {}  # peer name -> its quoted form
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise EventLogError(f"cannot write the event log {path}: {path_problem(e)}") from None

    def write(self, kind: EventKind, /, **values: object) -> None:
        """Write one event of ``kind`` (harness.events.schema) with these field values;
        None leaves an optional field out."""
        self.line(kind.name, format_event_fields(kind, values))

    def message(self, kind: EventKind, peer: str, msg: Message | str) -> None:
        """A message sent or received: ``kind`` is SEND or RECV. ``msg`` may be
        its wire line already (``encode_text``), to format it only once."""
        quoted = self._peers.get(peer)
        if quoted is None:  # a node talks to a few peers: quote each name once
            if len(self._peers) >= _PEERS_REMEMBERED:
                self._peers.clear()
            quoted = self._peers[peer] = quote(peer)
        self.line(kind.name, f"peer={quoted} msg={msg if isinstance(msg, str) else encode_text(msg)}")

    def line(self, event: str, rest: str) -> None:
        """One event line whose fields are formatted already (``key=value ...``)."""
        t = time.time()  # when it happened, not when it is flushed
        seconds = int(t)
        if _second[0] != seconds:  # utc_timestamp, inline: a node logs a line per message
            utc_timestamp(t)
        stamp = f"{_second[1]}.{int((t - seconds) * 1_000_000):06d}Z"
        line = f"{stamp} {self.node} {event} {rest}\n" if rest else f"{stamp} {self.node} {event}\n"
        if self._pending is None:
            self._write(line)
            return
        self._pending.append(line)
        if self._flush_loop is not None and self._flush_loop.is_running():
            return  # a flush is due on the running loop already (spares a get_running_loop: a getpid each)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing would flush it later
            self.flush()
            return
        # no timer yet, or one on a loop that has ended
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
            try:
                while data:  # a regular file takes it whole; loop in case it does not
                    data = data[os.write(self._fd, data) :]
            except OSError as e:
                # Fail-stop (the module's docstring): nothing may happen that the log does not hold.
                print(
                    f"{self.node}: cannot write its event log {self.path}: {e.strerror or e}; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(3)
        if self._echo is not None:
            self._echo.write(text)
            self._echo.flush()

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def log_record(log: EventLog, kind: EventKind, r: TxRecord, why: str | None = None) -> None:
    """A durable record as the checker reads it: ``kind`` is DURABLE or RESTORED.

    Two lines a transaction at every participant: formatted here field by field,
    in the schema's order (tests/test_eventlog.py holds it to EventLog.write's
    text), the participant list and the reason quoted once each and remembered."""
    assert kind is DURABLE or kind is RESTORED
    participants = _QUOTED_LISTS.get(r.participants)
    if participants is None:
        if len(_QUOTED_LISTS) >= _QUOTED_REMEMBERED:
            _QUOTED_LISTS.clear()
        participants = _QUOTED_LISTS[r.participants] = quote(",".join(r.participants))
    rest = f"txid={quote(r.txid)} state={r.state.value} value={r.value} version={r.version} participants={participants}"
    if why is not None:
        said = _QUOTED_WHY.get(why)
        if said is None:
            if len(_QUOTED_WHY) >= _QUOTED_REMEMBERED:
                _QUOTED_WHY.clear()
            said = _QUOTED_WHY[why] = quote(why)
        rest = f"{rest} why={said}"
    log.line(kind.name, rest)


# Quoted participant lists and reasons, bounded: a run has a few of each.
_QUOTED_LISTS: dict[tuple[str, ...], str] = {}
_QUOTED_WHY: dict[str, str] = {}
_QUOTED_REMEMBERED = 256


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


def typed_fields(kind: EventKind, fields: dict[str, str]) -> dict[str, object]:
    """A line's fields as the schema types them (int, float or str); ValueError names a bad one.
    A MESSAGE field stays the wire text; fields the schema does not know are kept as text."""
    out: dict[str, object] = dict(fields)
    for f in kind.fields:
        raw = fields.get(f.name)
        if raw is None:
            continue
        try:
            if f.type is FieldType.INT:
                out[f.name] = int(raw)
            elif f.type is FieldType.FLOAT:
                out[f.name] = float(raw)
        except ValueError:
            raise ValueError(f"{kind.name}: {f.name}={raw!r} is not a {f.type.value}") from None
    return out


def event_kind(line: LogLine) -> EventKind | None:
    """The schema's kind of a parsed line, None for an event the schema does not have."""
    return KINDS.get(line.event)
