"""Messages of the 2PC wire protocol and their codec.

Theory of operation: every message is one line of text, ``VERB key=value ...``
terminated by ``\\n`` (a trailing ``\\r`` is tolerated so that ``nc -C`` and
telnet work). Values are bare tokens, or double-quoted with ``\\"``, ``\\\\``
and ``\\n`` escapes when they hold anything else. The format is the same
logfmt-like shape as the event logs, so a person can read and type it.

The rule this module keeps: it knows bytes and fields but no connection state
(wsproto's layering). Bad input from a peer raises :class:`DecodeError` with a
code naming what was wrong; it never raises anything else.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# One line may not exceed this many bytes, terminator included. A PREPARE for
# 16 participants with a 64-character txid is well under 2 KiB; 4 KiB leaves
# room for quoted reasons while bounding what a garbage peer can make us buffer.
MAX_LINE = 4096

# Participant lists are small by design (the product runs three); the bound
# keeps a hostile PREPARE from costing more than one line's worth of work.
MAX_PARTICIPANTS = 16

# storage_server is stored in SQLite's signed 64-bit INTEGER.
VALUE_MIN = -(2**63)
VALUE_MAX = 2**63 - 1

TXID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
ADDRESS_RE = re.compile(r"[A-Za-z0-9._-]+:[0-9]{1,5}")
_INT_RE = re.compile(r"-?[0-9]{1,20}")  # plain ASCII decimal: no "+", "_" or other scripts' digits
_BARE_RE = re.compile(r"[A-Za-z0-9._:,+/@*-]+")


class DecodeError(ValueError):
    """The peer sent something that is not a valid message (their fault).

    ``code`` is a short machine-readable token sent back in the ERROR reply.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Kind(enum.Enum):
    """Message kinds; the value is the verb on the wire."""

    PREPARE = "PREPARE"  # coordinator -> participant: phase 1 (seed: "commit")
    VOTE = "VOTE"  # participant -> coordinator: "ok" or "NOK"
    COMMIT = "COMMIT"  # coordinator -> participant: phase 2 (seed: "alterar")
    ABORT = "ABORT"  # coordinator -> participant: the transaction is aborted
    RESOLVE = "RESOLVE"  # anyone -> participant: your state for txid; abort it if you have not voted
    OUTCOME = "OUTCOME"  # participant -> anyone: reply to COMMIT, ABORT and RESOLVE
    STATUS = "STATUS"  # anyone -> participant: describe yourself
    STATE = "STATE"  # participant -> anyone: reply to STATUS
    ERROR = "ERROR"  # participant -> anyone: the request was refused
    MARKS = "MARKS"  # member -> participant: your compaction high-water marks, clients after ``after``
    MARKED = "MARKED"  # participant -> member: one page of them (reply to MARKS)


class TxState(enum.Enum):
    """What a participant durably knows of one transaction."""

    PREPARED = "prepared"  # voted yes; holds the lock; cannot decide alone
    COMMITTED = "committed"
    ABORTED = "aborted"


class NokCode(enum.Enum):
    """Why a participant voted NOK, for programs (the vote's ``reason`` is for people)."""

    LOCKED = "locked"  # another transaction holds the lock (the seed's pode_Alterar)
    ABORTED = "aborted"  # this transaction is already aborted here (an earlier NOK, ABORT or RESOLVE)


# ERROR code for a txid at or below its client's high-water mark with no record
# left: compacted away, or never seen (harness.protocol.participant, "Compaction").
FORGOTTEN = "forgotten"


@dataclass(frozen=True, kw_only=True, slots=True)
class Prepare:
    """Phase 1. The value travels with the request so that a participant knows
    what it promises to write and can finish the transaction without the client."""

    txid: str
    value: int
    participants: tuple[str, ...]
    # The transaction's age for a participant's conflict policy (wait-die):
    # smaller is older. Chosen by the client when the operation first starts
    # and kept across its retries; None from a client that sends none (it
    # counts as the youngest). Participants under the default policy ignore it.
    prio: int | None = None
    # The sender holds no lock anywhere for this transaction (ordered prepare's
    # first PREPARE): under wait-die it may wait whatever its age, since nobody
    # can be waiting for it (harness.protocol.conflict).
    lockless: bool = False
    kind: Kind = field(default=Kind.PREPARE, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Vote:
    """A participant's vote: ``yes`` (wire ``ok``) or no (wire ``NOK``) with a code and a reason."""

    txid: str
    yes: bool
    code: NokCode | None = None  # with NOK; None from a peer that sends none
    reason: str = ""
    kind: Kind = field(default=Kind.VOTE, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Commit:
    """Phase 2, sent only when every participant voted yes."""

    txid: str
    kind: Kind = field(default=Kind.COMMIT, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Abort:
    """Phase 2, sent only when the sender knows the transaction cannot commit."""

    txid: str
    kind: Kind = field(default=Kind.ABORT, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolve:
    """Asks a participant for its state of ``txid``. A participant that has not
    voted durably records abort first, so it can never vote yes afterwards."""

    txid: str
    kind: Kind = field(default=Kind.RESOLVE, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """A participant's durable state of ``txid``."""

    txid: str
    state: TxState
    kind: Kind = field(default=Kind.OUTCOME, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Status:
    """Asks a participant to describe itself."""

    kind: Kind = field(default=Kind.STATUS, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class State:
    """A participant's durable state: the replicated variable and its lock."""

    node: str
    storage_server: int
    version: int
    lock: str | None  # txid holding the lock, None when free
    committed: int  # transactions committed here
    aborted: int  # transactions aborted here
    kind: Kind = field(default=Kind.STATE, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Error:
    """A refused request. ``code`` is a token; ``detail`` is for people."""

    code: str
    detail: str
    txid: str | None = None
    kind: Kind = field(default=Kind.ERROR, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Marks:
    """Asks a participant for its high-water marks (compaction), one page: the
    clients after ``after`` in sorted order ("" = from the first). A rejoining
    participant learns them (harness.node.rejoin)."""

    after: str = ""
    kind: Kind = field(default=Kind.MARKS, init=False, repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class Marked:
    """One page of marks, ``(client, seq)`` in client order; ``more``: ask again after the last."""

    marks: tuple[tuple[str, int], ...]
    more: bool
    kind: Kind = field(default=Kind.MARKED, init=False, repr=False)


# Marks per MARKED line: a mark "client:seq" is no longer than the txid it came
# from (64 characters at most), so a page of 48 (3.1 KiB) stays under MAX_LINE.
MARKS_PAGE = 48

Message = Prepare | Vote | Commit | Abort | Resolve | Outcome | Status | State | Error | Marks | Marked


# ---------------------------------------------------------------- encoding


def quote(value: str) -> str:
    """Return ``value`` as a bare token when possible, else double-quoted."""
    if value and _BARE_RE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    if _NOT_A_SEPARATOR_RE.search(escaped):  # no raw blank but space and tab on the wire (decode)
        escaped = _NOT_A_SEPARATOR_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"{escaped}"'


def format_fields(fields: Iterable[tuple[str, object]]) -> str:
    """``key=value`` pairs joined by spaces; None values are left out."""
    parts = []
    for key, value in fields:
        if value is None:
            continue
        parts.append(f"{key}={quote(str(value))}")
    return " ".join(parts)


def message_fields(msg: Message) -> list[tuple[str, object]]:
    """The message's fields in wire order, as (key, printable value)."""
    match msg:
        case Prepare():
            return [
                ("txid", msg.txid),
                ("value", msg.value),
                ("participants", ",".join(msg.participants)),
                ("prio", msg.prio),
                ("lockless", 1 if msg.lockless else None),
            ]
        case Vote():
            return [
                ("txid", msg.txid),
                ("vote", "ok" if msg.yes else "NOK"),
                ("code", msg.code.value if msg.code else None),
                ("reason", msg.reason or None),
            ]
        case Commit() | Abort() | Resolve():
            return [("txid", msg.txid)]
        case Outcome():
            return [("txid", msg.txid), ("state", msg.state.value)]
        case Status():
            return []
        case State():
            return [
                ("node", msg.node),
                ("storage_server", msg.storage_server),
                ("version", msg.version),
                ("lock", msg.lock or "-"),
                ("committed", msg.committed),
                ("aborted", msg.aborted),
            ]
        case Error():
            return [("code", msg.code), ("txid", msg.txid), ("detail", msg.detail)]
        case Marks():
            return [("after", msg.after or None)]
        case Marked():
            return [("marks", ",".join(f"{c}:{s}" for c, s in msg.marks) or "-"), ("more", int(msg.more))]


def encode_text(msg: Message) -> str:
    """One message as its wire line, without the terminator (logs quote it so)."""
    fast = _ENCODE_FAST.get(type(msg))
    if fast is not None:
        return fast(msg)
    rest = format_fields(message_fields(msg))
    return f"{msg.kind.value} {rest}" if rest else msg.kind.value


# The messages of every transaction, written without building message_fields'
# list of pairs (a third of encode's time): the same text, field for field
# (tests/test_messages.py holds each to the general path).
def _encode_vote(m: Vote) -> str:
    if m.yes and m.code is None and not m.reason:
        return f"VOTE txid={quote(m.txid)} vote=ok"
    return f"VOTE {format_fields(message_fields(m))}"


def _encode_prepare(m: Prepare) -> str:
    line = f"PREPARE txid={quote(m.txid)} value={m.value} participants={quote(','.join(m.participants))}"
    if m.prio is not None:
        line += f" prio={m.prio}"
    return line + " lockless=1" if m.lockless else line


_ENCODE_FAST: dict[type, Callable[[Any], str]] = {
    Prepare: _encode_prepare,
    Vote: _encode_vote,
    Commit: lambda m: f"COMMIT txid={quote(m.txid)}",
    Abort: lambda m: f"ABORT txid={quote(m.txid)}",
    Resolve: lambda m: f"RESOLVE txid={quote(m.txid)}",
    Outcome: lambda m: f"OUTCOME txid={quote(m.txid)} state={m.state.value}",
}


def encode(msg: Message) -> bytes:
    """One message as one wire line, terminator included."""
    return f"{encode_text(msg)}\n".encode()


# ---------------------------------------------------------------- decoding


def split_fields(text: str) -> Iterator[tuple[str, str]]:
    """Parse ``key=value`` pairs (values bare or double-quoted).

    Raises DecodeError on anything else. The fast path, for lines without
    quotes, is a plain split; quoted lines go through one compiled regex per
    field. The checker parses millions of log lines with this.
    """
    if '"' not in text and "\\" not in text:
        for token in text.split():
            key, eq, value = token.partition("=")
            if not eq or not key:
                raise DecodeError("bad-field", f"expected key=value, got {token[:40]!r}")
            yield key, value
        return
    pairs = _PAIR_RE.findall(text)
    if " ".join([f"{k}={v}" for k, v in pairs]) == text:  # the usual shape: one C scan, then check
        for key, raw in pairs:
            yield key, _unquote(raw[1:-1]) if raw[:1] == '"' else raw
        return
    pos, n = 0, len(text)
    match = _FIELD_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            rest = text[pos:]
            if rest.strip(" \t"):
                raise DecodeError("bad-field", f'expected key=value or key="quoted value" at {rest.lstrip()[:40]!r}')
            return
        raw = m.group(2)
        yield m.group(1), _unquote(raw[1:-1]) if raw[:1] == '"' else raw
        pos = m.end()


# One field: a key, "=", then a bare value or a complete quoted one, followed by
# a blank or the end (so junk glued to a value, or a stray quote, is refused).
_FIELD_RE = re.compile(r'[ \t]*([^\s="\\]+)=("[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)(?=[ \t]|$)', re.S)
# Quoted values as an unrolled loop ("[^"\\]*(?:\\.[^"\\]*)*"): four times faster
# than an alternation per character.
_PAIR_RE = re.compile(r'([^\s="\\]+)=("[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)', re.S)
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_ESCAPES = {"n": "\n", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(inner: str) -> str:
    if "\\" not in inner:
        return inner
    # An unknown escape is kept as written, backslash included.
    return _ESCAPE_RE.sub(_unescape, inner)


def _unescape(m: re.Match[str]) -> str:
    code = m.group(1)
    if len(code) == 5:  # \uXXXX: a control character or a blank other than space and tab
        return chr(int(code[1:], 16))
    return _ESCAPES.get(code, m.group(0))


def _txid(fields: dict[str, str]) -> str:
    txid = _require(fields, "txid")
    if not TXID_RE.fullmatch(txid):
        raise DecodeError("bad-txid", "txid must be 1-64 of [A-Za-z0-9._:-], starting alphanumeric")
    return txid


def _require(fields: dict[str, str], key: str) -> str:
    try:
        return fields[key]
    except KeyError:
        raise DecodeError("missing-field", f"field {key!r} is required") from None


def _int(fields: dict[str, str], key: str, lo: int = VALUE_MIN, hi: int = VALUE_MAX) -> int:
    raw = _require(fields, key)
    if not _INT_RE.fullmatch(raw):
        raise DecodeError("bad-value", f"{key} must be a decimal integer, got {raw[:40]!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise DecodeError("bad-value", f"{key} must be within [{lo}, {hi}]")
    return value


def parse_participants(raw: str) -> tuple[str, ...]:
    """A comma-separated list of distinct ``host:port`` names."""
    names = _PARTICIPANTS_SEEN.get(raw)
    if names is not None:  # every PREPARE of a run names the same few lists
        return names
    names = _parse_participants(raw)
    if len(_PARTICIPANTS_SEEN) >= _PARTICIPANTS_REMEMBERED:
        _PARTICIPANTS_SEEN.clear()
    _PARTICIPANTS_SEEN[raw] = names
    return names


# Lists already validated, by their wire text (bounded: a peer sending a new
# list every time only empties it).
_PARTICIPANTS_SEEN: dict[str, tuple[str, ...]] = {}
_PARTICIPANTS_REMEMBERED = 64


def _parse_participants(raw: str) -> tuple[str, ...]:
    names = tuple(raw.split(",")) if raw else ()
    if not names:
        raise DecodeError("bad-participants", "participants must list at least one host:port")
    if len(names) > MAX_PARTICIPANTS:
        raise DecodeError("bad-participants", f"at most {MAX_PARTICIPANTS} participants")
    for name in names:
        if not ADDRESS_RE.fullmatch(name) or int(name.rpartition(":")[2]) > 65535:
            raise DecodeError("bad-participants", f"{name[:40]!r} is not host:port")
    if len(set(names)) != len(names):
        raise DecodeError("bad-participants", "participants must be distinct")
    return names


def decode(line: bytes) -> Message:
    """Decode one wire line (with or without its terminator).

    Raises DecodeError for anything that is not exactly one valid message;
    unknown fields are refused too, so a typo is an error and not a silent default.
    """
    return decode_line(line)[0]


def decode_line(line: bytes) -> tuple[Message, str]:
    """``decode``, and the line's text as a node logs it: without its terminator
    and the blanks around it (the line decoded once, not again for the log)."""
    if len(line) > MAX_LINE:
        raise DecodeError("too-long", f"a line may hold at most {MAX_LINE} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("bad-encoding", "lines must be UTF-8") from None
    text = text.rstrip("\r\n")
    if "\n" in text or "\r" in text:
        raise DecodeError("bad-line", "one message per line")
    if (bad := _NOT_A_SEPARATOR_RE.search(text)) is not None:
        raise DecodeError(
            "bad-line", f"character U+{ord(bad.group()):04X}: only spaces and tabs separate fields, no other blank"
        )
    text = text.strip(" \t")
    if "\t" not in text:  # the usual line: str.partition, not a regex
        verb, _, rest = text.partition(" ")
        rest = rest.lstrip(" ")
    else:
        verb, _, rest = _VERB_RE.fullmatch(text).groups()  # type: ignore[union-attr]
    kind = _KINDS.get(verb)
    if kind is None:
        raise DecodeError("unknown-verb", f"unknown verb {verb[:20]!r}")
    fields: dict[str, str] = {}
    if '"' not in rest and "\\" not in rest:  # split_fields' fast path, inline: no generator
        for token in rest.split():
            key, eq, value = token.partition("=")
            if not eq or not key:
                raise DecodeError("bad-field", f"expected key=value, got {token[:40]!r}")
            if key in fields:
                raise DecodeError("bad-field", f"field {key!r} given twice")
            fields[key] = value
    else:
        for key, value in split_fields(rest):
            if key in fields:
                raise DecodeError("bad-field", f"field {key!r} given twice")
            fields[key] = value
    msg = _build(kind, fields)
    allowed = _FIELDS_BY_VERB[verb]  # by the verb's str: an Enum key hashes in Python
    if not fields.keys() <= allowed:
        extra = sorted(fields.keys() - allowed)
        raise DecodeError("unknown-field", f"{kind.value} has no field {extra[0]!r}")
    return msg, text


_KINDS = {k.value: k for k in Kind}
# The separators are space and tab (docs/protocol.md), nothing else: every other
# control character and Unicode blank is refused anywhere in a line, so that no
# reader (str.split, a person's terminal) can see fields where the codec does not.
_NOT_A_SEPARATOR_RE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\xa0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"
)
_VERB_RE = re.compile(r"([^ \t]*)([ \t]*)(.*)", re.S)
# Every field a message of each kind may carry: what message_fields writes
# (tests/test_messages.py holds the two together).
MESSAGE_FIELDS: dict[Kind, frozenset[str]] = {
    Kind.PREPARE: frozenset({"txid", "value", "participants", "prio", "lockless"}),
    Kind.VOTE: frozenset({"txid", "vote", "code", "reason"}),
    Kind.COMMIT: frozenset({"txid"}),
    Kind.ABORT: frozenset({"txid"}),
    Kind.RESOLVE: frozenset({"txid"}),
    Kind.OUTCOME: frozenset({"txid", "state"}),
    Kind.STATUS: frozenset(),
    Kind.STATE: frozenset({"node", "storage_server", "version", "lock", "committed", "aborted"}),
    Kind.ERROR: frozenset({"code", "txid", "detail"}),
    Kind.MARKS: frozenset({"after"}),
    Kind.MARKED: frozenset({"marks", "more"}),
}
_FIELDS_BY_VERB = {k.value: names for k, names in MESSAGE_FIELDS.items()}


def _build(kind: Kind, f: dict[str, str]) -> Message:
    match kind:
        case Kind.PREPARE:
            return Prepare(
                txid=_txid(f),
                value=_int(f, "value"),
                participants=parse_participants(_require(f, "participants")),
                prio=_int(f, "prio", 0) if "prio" in f else None,
                lockless=_int(f, "lockless", 1, 1) == 1 if "lockless" in f else False,
            )
        case Kind.VOTE:
            vote = _require(f, "vote")
            if vote not in ("ok", "NOK"):
                raise DecodeError("bad-value", "vote must be ok or NOK")
            raw_code = f.get("code")
            try:
                code = NokCode(raw_code) if raw_code is not None else None
            except ValueError:
                raise DecodeError("bad-value", f"code must be one of {', '.join(c.value for c in NokCode)}") from None
            return Vote(txid=_txid(f), yes=vote == "ok", code=code, reason=f.get("reason", ""))
        case Kind.COMMIT:
            return Commit(txid=_txid(f))
        case Kind.ABORT:
            return Abort(txid=_txid(f))
        case Kind.RESOLVE:
            return Resolve(txid=_txid(f))
        case Kind.OUTCOME:
            raw_state = _require(f, "state")
            try:
                state = TxState(raw_state)
            except ValueError:
                raise DecodeError("bad-value", "state must be prepared, committed or aborted") from None
            return Outcome(txid=_txid(f), state=state)
        case Kind.STATUS:
            return Status()
        case Kind.STATE:
            lock = _require(f, "lock")
            return State(
                node=_require(f, "node"),
                storage_server=_int(f, "storage_server"),
                version=_int(f, "version", 0),
                lock=None if lock == "-" else lock,
                committed=_int(f, "committed", 0),
                aborted=_int(f, "aborted", 0),
            )
        case Kind.ERROR:
            txid = f.get("txid")
            return Error(code=_require(f, "code"), detail=f.get("detail", ""), txid=txid)
        case Kind.MARKS:
            return Marks(after=f.get("after", ""))
        case Kind.MARKED:
            raw = _require(f, "marks")
            marks = []
            for item in [] if raw == "-" else raw.split(","):
                client, sep, seq = item.rpartition(":")
                if not sep or not client or not _INT_RE.fullmatch(seq) or seq.startswith("-"):
                    raise DecodeError("bad-value", f"marks must be client:seq, got {item[:40]!r}")
                marks.append((client, int(seq)))
            return Marked(marks=tuple(marks), more=_int(f, "more", 0, 1) == 1)


class LineBuffer:
    """Splits a byte stream into lines, enforcing MAX_LINE.

    ``feed`` accepts any chunking, down to one byte at a time, and returns the
    complete lines (terminator stripped). An over-long line (complete, or a
    partial one already MAX_LINE bytes long) ends the stream: the lines before
    it are still returned, whatever the chunking, and ``error`` is set; a
    ``feed`` that has no line to return raises it. The caller answers the
    lines, then refuses the connection with ``error``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: DecodeError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self.error is not None:
            raise self.error
        self._buf += data
        out: list[bytes] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                over = len(self._buf) - start >= MAX_LINE
                break
            if end + 1 - start > MAX_LINE:
                over = True
                break
            out.append(bytes(self._buf[start:end]))
            start = end + 1
        if over:
            self._buf.clear()
            self.error = DecodeError("too-long", f"a line may hold at most {MAX_LINE} bytes")
            if not out:
                raise self.error
            return out
        del self._buf[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held back."""
        return len(self._buf)
