"""The checker's reader: a run folder's event logs, scanned fast, one line shape at a time.

It yields the lines the checker's rules need (harness.verify.checker) and
flags, as violations, every line that is not an event line.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from sys import intern

from harness.events.schema import (
    BEGIN,
    COMPACTED,
    DURABLE,
    EVENTS,
    FAULT,
    FORGOTTEN,
    HEAL,
    LISTENING,
    OUTCOME,
    RESTORED,
    SEND,
    EventKind,
    FieldType,
)
from harness.protocol.messages import FORGOTTEN as FORGOTTEN_REASON
from harness.protocol.messages import DecodeError, split_fields
from harness.verify.model import Violation, ViolationKind

EVIDENCE_WIDTH = 240  # characters of a log line quoted in a violation

# How the checker reads a log. A log is read whole and scanned once with a
# compiled regex, searched in "\n" + the log and anchored on each newline (the
# engine finds a "\n" fast; "^" in MULTILINE mode is tried at every position).
# A line "timestamp node known-event ..." is well formed, and matched only if
# the checker reads it, so that the others (most lines: messages in and out)
# cost no Python code at all. The lines of the shapes the nodes write are
# parsed by the regex too, each shape a named alternative (Match.lastgroup
# names it); any other line whose event is wanted ("other": a restart, a
# hand-edited or damaged line) is parsed field by field (LogReader.fields).
# A line neither well formed nor blank is "malformed" (a torn write, a stray
# print, a misspelt event): flagged, and still read if its third word is a
# wanted event.
_KNOWN_EVENT = "|".join(sorted(map(re.escape, EVENTS)))
_END = r"(?=\n|\Z)"
# A character of a word: [^ \n]. A log read as text holds no \r (Python turns
# \r\n and \r into \n), and excluding it too makes the engine test the class
# in a table rather than against each character in turn: a fifth of a scan.
_WORD = r"[^ \n\r]"
_BARE = r"[A-Za-z0-9._:,+/@*-]++"  # a value messages.quote leaves bare, as split_fields returns it


class LogKind:
    """The regexes that read one kind of log: ``lines`` finds the lines of
    ``shapes`` (each a named group), the other lines whose event is one of
    ``wanted``, and the malformed lines; ``other`` reads a malformed line
    whose third word is one of ``wanted``."""

    def __init__(self, *shapes: str, wanted: tuple[str, ...]) -> None:
        events = "|".join(
            rf"send(?= peer={_WORD}+ msg=(?:VOTE|OUTCOME) )" if e == "send" else re.escape(e) for e in wanted
        )
        other = rf"(?P<other>(?P<event>{events})(?=[ \n]|\Z)(?: (?P<rest>[^\n]*+))?)"
        self.lines = re.compile(
            # A well-formed line's timestamp and node, its event looked at (not
            # consumed); possessive, so that a well-formed line no alternative
            # wants fails there and then, and is never taken for a malformed one.
            rf"\n(?:(?P<ts>\d{{4}}-\d\d-\d\dT[0-9:.]++Z) (?P<who>{_WORD}++) (?=(?:{_KNOWN_EVENT})(?:[ \n]|\Z)))?+"
            rf"(?(ts)(?:{'|'.join([*shapes, other])})|(?![^\S\n]*+(?:\n|\Z))(?P<malformed>))"
        )
        self.other = re.compile(rf"\n(?P<ts>{_WORD}*+) (?P<who>{_WORD}*+) {other}")


_VALUE = {
    FieldType.INT: r"-?[0-9]++",
    FieldType.FLOAT: _BARE,
    FieldType.WORD: _BARE,
    FieldType.LIST: _BARE,
}


def _unquote(quoted: str) -> str:
    """A quoted value's text as split_fields returns it (escapes undone)."""
    return quoted if "\\" not in quoted else dict(split_fields(f'v="{quoted}"'))["v"]


class Shape:
    """The regex of one event's lines as EventLog writes them, made from the
    event's fields in harness.events.schema: every field in order, optional
    ones optional, each value captured as split_fields would return it (a TEXT
    value bare, or quoted: group ``<field>_q``). A line that does not fit (a
    value written another way, a field missing) is read field by field
    instead, so the shape only ever makes reading faster, never different.
    Groups are named ``<prefix>_<field>``; ``groups`` lists them in the
    schema's order, a TEXT field's quoted group right after its bare one."""

    def __init__(self, prefix: str, *kinds: EventKind) -> None:
        fields = kinds[0].fields
        assert all(k.fields == fields for k in kinds), "one shape reads events with the same fields"
        self.prefix = prefix
        self.fields = fields
        names = "|".join(re.escape(k.name) for k in kinds)
        parts = [rf"(?P<{prefix}>(?P<{prefix}_event>{names})"]
        groups = [f"{prefix}_event"]
        for f in fields:
            g = f"{prefix}_{f.name}"
            if f.type is FieldType.TEXT:
                value = rf'(?:"(?P<{g}_q>[^"\\\n]*+(?:\\.[^"\\\n]*+)*+)"|(?P<{g}>{_BARE}))'
                groups += [g, f"{g}_q"]
            else:
                value = rf"(?P<{g}>{_VALUE[f.type]})"
                groups.append(g)
            piece = rf" {f.name}={value}"
            parts.append(rf"(?:{piece})?" if f.optional else piece)
        parts.append(rf"{_END})")
        self.pattern = "".join(parts)
        self.groups = tuple(groups)
        # values' plan: each field's name and where its value is in m.group(*self.groups)
        # (a TEXT field's quoted form right after it), worked out once, not per line.
        self._plan = tuple((f.name, groups.index(f"{prefix}_{f.name}"), f.type is FieldType.TEXT) for f in fields)

    def values(self, m: re.Match[str]) -> dict[str, str]:
        """The fields present in a line this shape matched, as split_fields returns them."""
        found = m.group(*self.groups)
        out = {}
        for name, k, text in self._plan:
            raw = found[k]
            if raw is None and text and (q := found[k + 1]) is not None:
                raw = _unquote(q)
            if raw is not None:
                out[name] = raw
        return out


# The shapes the checker reads fast. The record's fields are unpacked in the
# schema's order (participant_lines): a change of DURABLE's fields must show here.
RECORD = Shape("record", DURABLE, RESTORED)
assert DURABLE.field_names == ("txid", "state", "value", "version", "participants", "why")
BEGIN_SHAPE = Shape("begin", BEGIN)
OUTCOME_SHAPE = Shape("outcome", OUTCOME)

PARTICIPANT_LOG = LogKind(
    RECORD.pattern,
    # a sent VOTE, its reason free of "=" (so that the field-by-field reading
    # of a vote, which looks for " vote=ok" anywhere, would find the same vote);
    # the message's fields are the protocol's (harness.protocol.messages)
    rf"(?P<vote>send peer={_WORD}++ msg=VOTE txid=(?P<vote_txid>{_WORD}++) vote=(?P<yes>ok|NOK)"
    rf"(?: code=[a-z]++)?(?: reason=(?P<vote_reason>[^=\n]*+))?{_END})",
    # a sent OUTCOME and the state it claims
    rf"(?P<outcome>send peer={_WORD}++ msg=OUTCOME txid=(?P<outcome_txid>{_WORD}++) state=(?P<claim>{_WORD}*+){_END})",
    wanted=(DURABLE.name, RESTORED.name, SEND.name, LISTENING.name, FORGOTTEN.name, COMPACTED.name),
)
CLIENT_LOG = LogKind(BEGIN_SHAPE.pattern, OUTCOME_SHAPE.pattern, wanted=(BEGIN.name, OUTCOME.name))
NEMESIS_LOG = LogKind(wanted=(FAULT.name, HEAL.name))


_EPOCH_SECOND: dict[str, int] = {}  # "2026-11-27T02:41:03" -> its second since the epoch


def micros(ts: str) -> int:
    """A log timestamp (2026-11-27T02:41:03.123456Z) as microseconds since the
    epoch; -1 if it does not parse. (An int is a third of the timestamp's
    string in memory, and the checker keeps one per durable record.)"""
    second = _EPOCH_SECOND.get(ts[:19])
    try:
        if second is None:
            second = _EPOCH_SECOND[ts[:19]] = int(datetime.fromisoformat(ts[:19] + "+00:00").timestamp())
        if len(ts) != 27 or ts[19] != "." or ts[26] != "Z":
            return -1
        return second * 1_000_000 + int(ts[20:26])
    except ValueError:
        return -1


def seconds_between(start: str, end: str) -> float | None:
    """Seconds between two log timestamps, None if either does not parse."""
    a, b = micros(start), micros(end)
    return None if a < 0 or b < 0 else (b - a) / 1_000_000


@dataclass(slots=True)
class Observation:
    """One observation of a participant's durable record: the line at ``at`` of ``log``."""

    state: str
    value: int
    version: int
    participants: tuple[str, ...]
    log: Log
    at: int
    why: str = ""
    ts: int = -1  # the line's UTC time in microseconds since the epoch (micros); -1 unknown

    def cite(self) -> str:
        return self.log.cite(self.at)


def cite(where: str, text: str) -> str:
    return f"{where}: {text[:EVIDENCE_WIDTH]}"


# Characters read from a log at a time (1 Mi: larger pieces gain no speed): the checker streams each log in pieces
# of whole lines, so that its memory does not grow with the logs' size.
CHUNK = 1 << 20


class Log:
    """One node's event log, streamed in pieces of whole lines (``pieces``).

    A line is named by ``at``: the offset of its first character in "\n" + the
    whole decoded text (so every line, the first too, follows a newline). It
    becomes ``file:line`` and text only when a violation cites it, as most
    lines never are; the text is read again for that, once per log."""

    __slots__ = ("_content", "_newlines", "name", "node", "path")

    def __init__(self, path: Path, node: str) -> None:
        self.path = path
        self.name = path.name
        self.node = node
        self._content: str | None = None  # read back when the first line is cited
        self._newlines: list[int] | None = None  # their offsets, found when the first line is cited

    def pieces(self) -> Iterator[tuple[int, str]]:
        """(base, piece): the log as "\n" + whole lines, CHUNK characters at a time;
        offset i of a piece is offset base + i of the whole. OSError if it cannot be read."""
        base = 0
        carry = ""
        with open(self.path, encoding="utf-8", errors="replace") as f:
            while block := f.read(CHUNK):
                text = carry + block
                cut = text.rfind("\n") + 1
                if cut == 0:  # no line ends in this block: read on
                    carry = text
                    continue
                yield base, "\n" + text[:cut]
                base += cut
                carry = text[cut:]
        if carry:
            yield base, "\n" + carry

    def content(self) -> str:
        if self._content is None:
            self._content = "\n" + self.path.read_text(encoding="utf-8", errors="replace")
        return self._content

    def where(self, at: int) -> str:
        """``file:line`` of the line at ``at`` (the newlines are found once, so
        that citing many lines costs no more than counting them)."""
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.content())]
        return f"{self.name}:{bisect_left(self._newlines, at)}"

    def text(self, at: int) -> str:
        content = self.content()
        end = content.find("\n", at)
        return content[at : end if end >= 0 else None]

    def cite(self, at: int) -> str:
        return cite(self.where(at), self.text(at))


class LogReader:
    """Reads the logs of one run folder; what is wrong with a line goes to ``violations``."""

    def __init__(self, folder: Path, violations: list[Violation]) -> None:
        self.folder = folder
        self.violations = violations
        self.lines = 0  # event lines read

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None:
        self.violations.append(Violation(kind, txid, message, tuple(evidence)))

    def lacks_field(self, log: Log, at: int, event: str, txid: str | None) -> None:
        """Flag the ``event`` line at ``at``: a field it needs is missing or malformed."""
        self.flag(ViolationKind.BAD_LOG_LINE, txid, f"{log.where(at)}: {event} line lacks a field", log.cite(at))

    def log(self, node: str) -> Log | None:
        """A node's log (see _read), or None (flagged) when it is missing."""
        path = self.folder / f"{node}.log"
        if not path.exists():
            self.flag(ViolationKind.MISSING_LOG, None, f"{path.name} is missing")
            return None
        return self.read(path, node)

    def read(self, path: Path, node: str) -> Log | None:
        """The log at ``path``, or None (flagged) when it cannot be read. Its
        lines are counted as ``lines_of`` streams them."""
        if not path.is_file() or not os.access(path, os.R_OK):
            reason = "is not a file" if path.exists() and not path.is_file() else "cannot be read"
            self.flag(ViolationKind.MISSING_LOG, None, f"{path.name} {reason}")
            return None
        return Log(path, node)

    def lines_of(self, log: Log, kind: LogKind) -> Iterator[tuple[int, re.Match[str]]]:
        """(at, match) for the lines of ``log`` the checker reads, in log order,
        each match starting at the newline before its line: its lastgroup names
        the shape that matched, or is "other" (with the groups event and rest);
        every one has the groups ts and who. A line written by another node is
        flagged instead; so is every malformed line, ahead of whatever else the
        log shows, as if the log had been searched for them first."""
        ahead, malformed = len(self.violations), []
        node = log.node
        try:
            for base, piece in log.pieces():
                self.lines += piece.count("\n") - (1 if piece.endswith("\n") else 0)  # less the "\n" before it
                for m in kind.lines.finditer(piece):
                    at = base + m.start() + 1
                    if m.lastgroup == "malformed":
                        where, text = log.where(at), log.text(at)
                        malformed.append(
                            Violation(
                                ViolationKind.BAD_LOG_LINE, None, f"{where} is not an event line", (cite(where, text),)
                            )
                        )
                        if (read := kind.other.match(piece, m.start())) is None:
                            continue
                        m = read
                    if (who := m["who"]) != node:
                        self.flag(
                            ViolationKind.BAD_LOG_LINE,
                            None,
                            f"{log.where(at)} is written by {who!r}, not {node}",
                            log.cite(at),
                        )
                        continue
                    yield at, m
        except OSError as e:
            self.flag(ViolationKind.MISSING_LOG, None, f"{log.name} cannot be read: {e.strerror}")
        self.violations[ahead:ahead] = malformed

    def fields(self, log: Log, at: int, event: str, rest: str) -> dict[str, str] | None:
        """The fields of an "other" line, or None (flagged) when they do not
        parse. Of a sent message, only what a VOTE or OUTCOME claims about the
        sender's record."""
        try:
            fields = dict(split_fields(rest))
        except DecodeError as e:
            self.flag(ViolationKind.BAD_LOG_LINE, None, f"{log.where(at)}: {e.detail}", log.cite(at))
            return None
        if event != "send":
            return fields
        msg = fields.get("msg", "")
        vote = {"ok": "prepared"}.get(fields.get("vote", ""), "aborted")
        return {"msg": msg, "txid": fields.get("txid", ""), "claim": vote if msg == "VOTE" else fields.get("state", "")}

    def events(self, log: Log, kind: LogKind) -> Iterator[tuple[str, dict[str, str], int, str]]:
        """(event, fields, at, timestamp) for the lines of a client's or the
        nemesis's log the checker reads. The timestamp comes with the line so
        that nobody reads the log again for it (a client's log is as large as
        a participant's)."""
        for at, m in self.lines_of(log, kind):
            shape = m.lastgroup
            if shape == "begin":
                yield BEGIN.name, BEGIN_SHAPE.values(m), at, m["ts"]
            elif shape == "outcome":
                yield OUTCOME.name, OUTCOME_SHAPE.values(m), at, m["ts"]
            elif (f := self.fields(log, at, m["event"], m["rest"] or "")) is not None:
                yield m["event"], f, at, m["ts"]

    def participant_lines(self, log: Log) -> Iterator[tuple[str, int, str, str, Observation | None]]:
        """(what, at, txid, claim, observation) for the lines of a participant's
        log the checker reads, in log order: a sent "VOTE" or "OUTCOME" and the
        state it claims ("forgotten" for the NOK of a txid compaction forgot,
        which claims no record); a "durable" or "restored" record and its
        observation; "listening" (a start); "forgotten" (compaction), with
        the txids it dropped, comma-separated, in place of one txid; or
        "compacted" (a start's marks, client:seq comma-separated, in its place)."""
        listed: dict[str, tuple[str, ...]] = {}  # participants field -> tuple: one per distinct list
        for at, m in self.lines_of(log, PARTICIPANT_LOG):
            shape = m.lastgroup
            if shape == "vote":
                txid, yes, reason = m.group("vote_txid", "yes", "vote_reason")
                claim = "prepared" if yes == "ok" else FORGOTTEN_REASON if reason == FORGOTTEN_REASON else "aborted"
                yield "VOTE", at, txid, claim, None
                continue
            if shape == "outcome":
                txid, claim = m.group("outcome_txid", "claim")
                yield "OUTCOME", at, txid, claim, None
                continue
            if shape == "record":
                ts = m["ts"]
                event, txid, state, value, version, parts, why, quoted = m.group(*RECORD.groups)
                value, version = int(value), int(version)
                if quoted is not None:
                    why = _unquote(quoted)
            else:
                ts, event = m.group("ts", "event")
                f = self.fields(log, at, event, m["rest"] or "")
                if f is None:
                    continue
                if event == "send":
                    yield f["msg"], at, f["txid"], f["claim"], None
                    continue
                if event == "listening":
                    yield "listening", at, "", "", None
                    continue
                if event == FORGOTTEN.name:
                    yield FORGOTTEN.name, at, f.get("txids", ""), "", None
                    continue
                if event == COMPACTED.name:
                    yield COMPACTED.name, at, f.get("marks", ""), "", None
                    continue
                try:
                    txid, state, value, version = f["txid"], f["state"], int(f["value"]), int(f["version"])
                except (KeyError, ValueError):
                    self.lacks_field(log, at, event, f.get("txid"))
                    continue
                parts, why = f.get("participants", ""), f.get("why", "")
            if (participants := listed.get(parts)) is None:
                participants = listed[parts] = tuple(parts.split(",")) if parts else ()
            # One copy of each state (a few): the checker's tables look them up. A why is
            # only looked at (often unique: "vote no: locked by <txid>"), never kept.
            state = intern(state)
            yield event, at, txid, "", Observation(state, value, version, participants, log, at, why or "", micros(ts))
