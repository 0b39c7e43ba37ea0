"""The checker's reader: a run folder's event logs, scanned fast, one line shape at a time.

It yields the lines the checker's rules need (harness.verify.checker) and
flags, as violations, every line that is not an event line.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from harness.events.log import EVENTS
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


PARTICIPANT_LOG = LogKind(
    # durable and restored as harness.nodes.log_record writes them; a quoted
    # "why" is captured between its quotes
    rf"(?P<record>(?P<kind>durable|restored) txid=(?P<txid>{_WORD}++) state=(?P<state>[a-z]++)"
    rf" value=(?P<value>-?[0-9]++) version=(?P<version>[0-9]++) participants=(?P<participants>{_WORD}*+)"
    rf'(?: why=(?:"(?P<quoted>[^"\\\n]*+(?:\\.[^"\\\n]*+)*+)"|(?P<why>[^ "\n]++)))?{_END})',
    # a sent VOTE, its reason free of "=" (so that the field-by-field reading
    # of a vote, which looks for " vote=ok" anywhere, would find the same vote)
    rf"(?P<vote>send peer={_WORD}++ msg=VOTE txid=(?P<vote_txid>{_WORD}++) vote=(?P<yes>ok|NOK)"
    rf"(?: reason=[^=\n]*+)?{_END})",
    # a sent OUTCOME and the state it claims
    rf"(?P<outcome>send peer={_WORD}++ msg=OUTCOME txid=(?P<outcome_txid>{_WORD}++) state=(?P<claim>{_WORD}*+){_END})",
    wanted=("durable", "restored", "send", "listening"),
)
CLIENT_LOG = LogKind(
    # begin and outcome as harness.client writes them: bare values, the reason
    # bare or quoted without escapes, so that each group is what split_fields returns
    rf"(?P<begin>begin txid=(?P<begin_txid>{_BARE}) value=(?P<value>{_BARE})"
    rf" participants=(?P<participants>{_BARE})(?: prepare=(?P<prepare>{_BARE}))?{_END})",
    rf"(?P<outcome>outcome txid=(?P<txid>{_BARE}) result=(?P<result>{_BARE}) op=(?P<op>{_BARE})"
    rf" attempt=(?P<attempt>{_BARE}) value=(?P<outcome_value>{_BARE}) latency_ms=(?P<latency_ms>{_BARE})"
    rf' cause=(?P<cause>{_BARE})(?: reason=(?:"(?P<quoted_reason>[^"\\\n]*+)"|(?P<reason>{_BARE})))?{_END})',
    wanted=("begin", "outcome"),
)
# The groups the checker reads of a shape, in the order it reads them.
RECORD_GROUPS = ("ts", "kind", "txid", "state", "value", "version", "participants", "why", "quoted")
OUTCOME_GROUPS = ("txid", "result", "op", "attempt", "outcome_value", "latency_ms", "cause", "quoted_reason", "reason")
NEMESIS_LOG = LogKind(wanted=("fault", "heal"))


def seconds_between(start: str, end: str) -> float | None:
    """Seconds between two log timestamps, None if either does not parse."""
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


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
    ts: str = ""  # the line's UTC timestamp; ISO strings of one width compare in time order

    def cite(self) -> str:
        return self.log.cite(self.at)


def cite(where: str, text: str) -> str:
    return f"{where}: {text[:EVIDENCE_WIDTH]}"


class Log:
    """One node's event log, read whole. A line is named by ``at``, the offset
    of its first character in ``content``; it becomes ``file:line`` and text
    only when a violation cites it, as most lines never are."""

    __slots__ = ("_newlines", "content", "name", "node")

    def __init__(self, name: str, node: str, content: str) -> None:
        self.name = name
        self.node = node
        self.content = "\n" + content  # so that every line, the first too, follows a newline
        self._newlines: list[int] | None = None  # their offsets, found when the first line is cited

    def where(self, at: int) -> str:
        """``file:line`` of the line at ``at`` (the newlines are found once, so
        that citing many lines costs no more than counting them)."""
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.content)]
        return f"{self.name}:{bisect_left(self._newlines, at)}"

    def text(self, at: int) -> str:
        end = self.content.find("\n", at)
        return self.content[at : end if end >= 0 else None]

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

    def log(self, node: str) -> Log | None:
        """A node's log (see _read), or None (flagged) when it is missing."""
        path = self.folder / f"{node}.log"
        if not path.exists():
            self.flag(ViolationKind.MISSING_LOG, None, f"{path.name} is missing")
            return None
        return self.read(path, node)

    def read(self, path: Path, node: str) -> Log | None:
        """The log at ``path``, its lines counted, or None (flagged) when it cannot be read."""
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            self.flag(ViolationKind.MISSING_LOG, None, f"{path.name} cannot be read: {e.strerror}")
            return None
        self.lines += content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return Log(path.name, node, content)

    def lines_of(self, log: Log, kind: LogKind) -> Iterator[re.Match[str]]:
        """Matches for the lines of ``log`` the checker reads, in log order, each
        starting at the newline before its line: its lastgroup names the shape
        that matched, or is "other" (with the groups event and rest); every one
        has the groups ts and who. A line written by another node is flagged
        instead; so is every malformed line, ahead of whatever else the log
        shows, as if the log had been searched for them first."""
        ahead, malformed = len(self.violations), []
        content, node = log.content, log.node
        for m in kind.lines.finditer(content):
            if m.lastgroup == "malformed":
                at = m.start() + 1
                where, text = log.where(at), log.text(at)
                malformed.append(
                    Violation(ViolationKind.BAD_LOG_LINE, None, f"{where} is not an event line", (cite(where, text),))
                )
                if (read := kind.other.match(content, m.start())) is None:
                    continue
                m = read
            if (who := m["who"]) != node:
                at = m.start() + 1
                self.flag(
                    ViolationKind.BAD_LOG_LINE, None, f"{log.where(at)} is written by {who!r}, not {node}", log.cite(at)
                )
                continue
            yield m
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

    def events(self, log: Log, kind: LogKind) -> Iterator[tuple[str, dict[str, str], int]]:
        """(event, fields, at) for the lines of a client's or the nemesis's log
        the checker reads."""
        for m in self.lines_of(log, kind):
            at, shape = m.start() + 1, m.lastgroup
            if shape == "begin":
                txid, value, participants, prepare = m.group("begin_txid", "value", "participants", "prepare")
                fields = {"txid": txid, "value": value, "participants": participants}
                if prepare is not None:
                    fields["prepare"] = prepare
                yield "begin", fields, at
            elif shape == "outcome":
                txid, result, op, attempt, value, latency, cause, quoted, reason = m.group(*OUTCOME_GROUPS)
                fields = {
                    "txid": txid,
                    "result": result,
                    "op": op,
                    "attempt": attempt,
                    "value": value,
                    "latency_ms": latency,
                    "cause": cause,
                }
                if quoted is not None or reason is not None:
                    fields["reason"] = reason if quoted is None else quoted
                yield "outcome", fields, at
            elif (f := self.fields(log, at, m["event"], m["rest"] or "")) is not None:
                yield m["event"], f, at

    def participant_lines(self, log: Log) -> Iterator[tuple[str, int, str, str, Observation | None]]:
        """(what, at, txid, claim, observation) for the lines of a participant's
        log the checker reads, in log order: a sent "VOTE" or "OUTCOME" and the
        state it claims; a "durable" or "restored" record and its observation;
        or "listening" (a start)."""
        listed: dict[str, tuple[str, ...]] = {}  # participants field -> tuple: one per distinct list
        for m in self.lines_of(log, PARTICIPANT_LOG):
            at, shape = m.start() + 1, m.lastgroup
            if shape == "vote":
                txid, yes = m.group("vote_txid", "yes")
                yield "VOTE", at, txid, "prepared" if yes == "ok" else "aborted", None
                continue
            if shape == "outcome":
                txid, claim = m.group("outcome_txid", "claim")
                yield "OUTCOME", at, txid, claim, None
                continue
            if shape == "record":
                ts, event, txid, state, value, version, parts, why, quoted = m.group(*RECORD_GROUPS)
                value, version = int(value), int(version)
                if quoted is not None:
                    why = quoted if "\\" not in quoted else dict(split_fields(f'why="{quoted}"'))["why"]
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
                try:
                    txid, state, value, version = f["txid"], f["state"], int(f["value"]), int(f["version"])
                except (KeyError, ValueError):
                    self.flag(
                        ViolationKind.BAD_LOG_LINE,
                        f.get("txid"),
                        f"{log.where(at)}: {event} line lacks a field",
                        log.cite(at),
                    )
                    continue
                parts, why = f.get("participants", ""), f.get("why", "")
            if (participants := listed.get(parts)) is None:
                participants = listed[parts] = tuple(parts.split(",")) if parts else ()
            yield event, at, txid, "", Observation(state, value, version, participants, log, at, why or "", ts)
