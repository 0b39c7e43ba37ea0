"""Checks a run folder: do the replicas agree, and was every client told the truth?

Theory of operation. The checker reads only the run folder: ``run.json`` (who
took part), every node's event log, and ``final_states.json`` (each
participant's STATUS answer and the records read from its storage after it
stopped). From the participants' ``durable`` and ``restored`` lines it rebuilds,
per participant and transaction, the sequence of durable states; from the
clients' ``begin`` and ``outcome`` lines, what each client proposed and was told.
It then checks design section 4:

* stability (AC2): each participant's record moves only forward:
  none -> prepared -> committed | aborted, or none -> aborted;
* agreement (AC1): no transaction committed at one participant and aborted at another;
* validity (AC3): a commit only where every listed participant durably voted
  yes, with the value its client proposed;
* replicas: the same storage_server, version and sequence of committed txids
  everywhere, versions 1..n without gaps, the value that of the last commit,
  logs and storage telling the same story;
* clients told the truth: COMMITTED means committed everywhere, ABORTED
  committed nowhere, UNKNOWN either, atomically;
* termination (AC5): nothing left prepared and no lock held at the end.

Every violation names its transaction and the log lines that prove it.
"""

from __future__ import annotations

import gc
import json
import re
import statistics
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.eventlog import EVENTS
from harness.protocol.messages import DecodeError, split_fields

# States a participant's record may move through, as the logs spell them.
_NEXT: dict[str | None, set[str]] = {
    None: {"prepared", "aborted"},
    "prepared": {"committed", "aborted"},
    "committed": set(),
    "aborted": set(),
}
_EVIDENCE_WIDTH = 240  # characters of a log line quoted in a violation
# The "why" of a decision a participant reached with its peers, not its client.
_BY_PEERS_PREFIXES = ("every participant voted yes", "peer ")


# How the checker reads a log. A log is read whole and scanned once with a
# compiled regex, searched in "\n" + the log and anchored on each newline (the
# engine finds a "\n" fast; "^" in MULTILINE mode is tried at every position).
# A line "timestamp node known-event ..." is well formed, and matched only if
# the checker reads it, so that the others (most lines: messages in and out)
# cost no Python code at all. The lines of the shapes the nodes write are
# parsed by the regex too, each shape a named alternative (Match.lastgroup
# names it); any other line whose event is wanted ("other": a restart, a
# hand-edited or damaged line) is parsed field by field (_Checker._fields).
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


class _LogKind:
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


_PARTICIPANT_LOG = _LogKind(
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
_CLIENT_LOG = _LogKind(
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
_RECORD_GROUPS = ("ts", "kind", "txid", "state", "value", "version", "participants", "why", "quoted")
_OUTCOME_GROUPS = ("txid", "result", "op", "attempt", "outcome_value", "latency_ms", "cause", "quoted_reason", "reason")
_NEMESIS_LOG = _LogKind(wanted=("fault", "heal"))


def _seconds(start: str, end: str) -> float | None:
    """Seconds between two log timestamps, None if either does not parse."""
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


class CheckError(Exception):
    """The folder is not a run folder (missing or unreadable files)."""


@dataclass(frozen=True)
class Violation:
    kind: str
    txid: str | None
    message: str
    evidence: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "txid": self.txid, "message": self.message, "evidence": list(self.evidence)}


@dataclass
class ClientStats:
    name: str
    attempted: int = 0
    committed: int = 0
    aborted: dict[str, int] = field(default_factory=dict)  # by cause
    unknown: int = 0
    abandoned: int = 0  # begun, then the client died before it could report
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def aborted_total(self) -> int:
        return sum(self.aborted.values())

    def latency(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q * 100) - 1]


@dataclass
class ReplicaStats:
    node: str
    address: str
    storage_server: int | None = None
    version: int | None = None
    lock: str | None = None
    commits: int = 0
    aborts: int = 0
    yes_votes: int = 0
    no_votes: int = 0
    restarts: int = 0


@dataclass
class CheckReport:
    folder: Path
    violations: list[Violation]
    clients: list[ClientStats]
    replicas: list[ReplicaStats]
    lines: int  # event lines read
    run: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)  # from nemesis.log
    resolved_by_peers: int = 0  # transactions some participant decided with its peers, not its client
    abandoned: int = 0  # transactions begun by a client that died before reporting
    longest_lock: tuple[float, str | None, str | None] = (0.0, None, None)  # seconds, node, txid

    @property
    def consistent(self) -> bool:
        return not self.violations

    @property
    def verdict(self) -> str:
        return "consistent" if self.consistent else "violation"


@dataclass(slots=True)
class _Obs:
    """One observation of a participant's durable record: the line at ``at`` of ``log``."""

    state: str
    value: int
    version: int
    participants: tuple[str, ...]
    log: _Log
    at: int
    why: str = ""
    ts: str = ""  # the line's UTC timestamp; ISO strings of one width compare in time order

    def cite(self) -> str:
        return self.log.cite(self.at)


def _cite(where: str, text: str) -> str:
    return f"{where}: {text[:_EVIDENCE_WIDTH]}"


class _Log:
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
        return _cite(self.where(at), self.text(at))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"{path} is missing: is {path.parent} a run folder?") from None
    except (OSError, ValueError) as e:
        raise CheckError(f"{path} cannot be read: {e}") from None


def check_run(folder: Path) -> CheckReport:
    """Check a run folder. Raises CheckError if it is not one."""
    run = _load_json(folder / "run.json")
    final = _load_json(folder / "final_states.json")
    try:
        participants = [(p["node"], p["address"]) for p in run["participants"]]
        client_names = list(run["clients"])
    except (KeyError, TypeError):
        raise CheckError(f"{folder / 'run.json'} lacks participants or clients") from None
    if not isinstance(final, dict):
        raise CheckError(f"{folder / 'final_states.json'} does not map participants to their final states")
    checker = _Checker(folder, participants, client_names, final)
    # The checker builds millions of small objects and frees none until the
    # end: the cyclic garbage collector would only rescan them (20-35% of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return checker.check(run)
    finally:
        if collecting:
            gc.enable()


class _Checker:
    def __init__(
        self, folder: Path, participants: list[tuple[str, str]], clients: list[str], final: dict[str, Any]
    ) -> None:
        self.folder = folder
        self.participants = participants
        self.node_of = {address: node for node, address in participants}
        self.client_names = clients
        self.final = final
        self.violations: list[Violation] = []
        self.lines = 0
        # participant node -> txid -> observations in log order
        self.obs: dict[str, dict[str, list[_Obs]]] = {node: defaultdict(list) for node, _ in participants}
        self.replicas = {node: ReplicaStats(node=node, address=address) for node, address in participants}
        self.begins: dict[str, tuple[int, _Log, int]] = {}  # txid -> (value, the line: log, at)
        self.outcomes: list[tuple[str, str, _Log, int]] = []  # (txid, result, the line: log, at)
        self.clients = {name: ClientStats(name=name) for name in clients}
        self.longest_lock: tuple[float, str | None, str | None] = (0.0, None, None)
        self.resolved_by_peers: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.stored: dict[str, list[tuple[str, int, int]]] = {}  # node -> committed (txid, version, value)

    def flag(self, kind: str, txid: str | None, message: str, *evidence: str) -> None:
        self.violations.append(Violation(kind, txid, message, tuple(evidence)))

    # ------------------------------------------------------------ reading

    def _log(self, node: str) -> _Log | None:
        """A node's log (see _read), or None (flagged) when it is missing."""
        path = self.folder / f"{node}.log"
        if not path.exists():
            self.flag("missing-log", None, f"{path.name} is missing")
            return None
        return self._read(path, node)

    def _read(self, path: Path, node: str) -> _Log | None:
        """The log at ``path``, its lines counted, or None (flagged) when it cannot be read."""
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            self.flag("missing-log", None, f"{path.name} cannot be read: {e.strerror}")
            return None
        self.lines += content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return _Log(path.name, node, content)

    def _lines(self, log: _Log, kind: _LogKind) -> Iterator[re.Match[str]]:
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
                    Violation("bad-log-line", None, f"{where} is not an event line", (_cite(where, text),))
                )
                if (read := kind.other.match(content, m.start())) is None:
                    continue
                m = read
            if (who := m["who"]) != node:
                at = m.start() + 1
                self.flag("bad-log-line", None, f"{log.where(at)} is written by {who!r}, not {node}", log.cite(at))
                continue
            yield m
        self.violations[ahead:ahead] = malformed

    def _fields(self, log: _Log, at: int, event: str, rest: str) -> dict[str, str] | None:
        """The fields of an "other" line, or None (flagged) when they do not
        parse. Of a sent message, only what a VOTE or OUTCOME claims about the
        sender's record."""
        try:
            fields = dict(split_fields(rest))
        except DecodeError as e:
            self.flag("bad-log-line", None, f"{log.where(at)}: {e.detail}", log.cite(at))
            return None
        if event != "send":
            return fields
        msg = fields.get("msg", "")
        vote = {"ok": "prepared"}.get(fields.get("vote", ""), "aborted")
        return {"msg": msg, "txid": fields.get("txid", ""), "claim": vote if msg == "VOTE" else fields.get("state", "")}

    def _events(self, log: _Log, kind: _LogKind) -> Iterator[tuple[str, dict[str, str], int]]:
        """(event, fields, at) for the lines of a client's or the nemesis's log
        the checker reads."""
        for m in self._lines(log, kind):
            at, shape = m.start() + 1, m.lastgroup
            if shape == "begin":
                txid, value, participants, prepare = m.group("begin_txid", "value", "participants", "prepare")
                fields = {"txid": txid, "value": value, "participants": participants}
                if prepare is not None:
                    fields["prepare"] = prepare
                yield "begin", fields, at
            elif shape == "outcome":
                txid, result, op, attempt, value, latency, cause, quoted, reason = m.group(*_OUTCOME_GROUPS)
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
            elif (f := self._fields(log, at, m["event"], m["rest"] or "")) is not None:
                yield m["event"], f, at

    def _participant_lines(self, log: _Log) -> Iterator[tuple[str, int, str, str, _Obs | None]]:
        """(what, at, txid, claim, observation) for the lines of a participant's
        log the checker reads, in log order: a sent "VOTE" or "OUTCOME" and the
        state it claims; a "durable" or "restored" record and its observation;
        or "listening" (a start)."""
        listed: dict[str, tuple[str, ...]] = {}  # participants field -> tuple: one per distinct list
        for m in self._lines(log, _PARTICIPANT_LOG):
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
                ts, event, txid, state, value, version, parts, why, quoted = m.group(*_RECORD_GROUPS)
                value, version = int(value), int(version)
                if quoted is not None:
                    why = quoted if "\\" not in quoted else dict(split_fields(f'why="{quoted}"'))["why"]
            else:
                ts, event = m.group("ts", "event")
                f = self._fields(log, at, event, m["rest"] or "")
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
                        "bad-log-line", f.get("txid"), f"{log.where(at)}: {event} line lacks a field", log.cite(at)
                    )
                    continue
                parts, why = f.get("participants", ""), f.get("why", "")
            if (participants := listed.get(parts)) is None:
                participants = listed[parts] = tuple(parts.split(",")) if parts else ()
            yield event, at, txid, "", _Obs(state, value, version, participants, log, at, why or "", ts)

    def read(self) -> None:
        for node, _ in self.participants:
            self._read_participant(node)
        for name in self.client_names:
            cstats = self.clients[name]
            log = self._log(name)
            if log is None:
                continue
            for event, f, at in self._events(log, _CLIENT_LOG):
                try:
                    txid = f["txid"]
                    if event == "begin":
                        if txid in self.begins:
                            _, first, first_at = self.begins[txid]
                            self.flag(
                                "txid-reused",
                                txid,
                                f"txid {txid} was begun twice",
                                first.cite(first_at),
                                log.cite(at),
                            )
                        self.begins[txid] = (int(f["value"]), log, at)
                        continue
                    result = f["result"]
                    self.outcomes.append((txid, result, log, at))
                    cstats.attempted += 1
                    if int(f.get("attempt", "1")) > 1:
                        cstats.retries += 1
                    if "latency_ms" in f:
                        cstats.latencies_ms.append(float(f["latency_ms"]))
                    if result == "committed":
                        cstats.committed += 1
                    elif result == "unknown":
                        cstats.unknown += 1
                    else:
                        cause = f.get("cause", "other")
                        if cause == "no-vote":
                            cause = "no vote: locked" if "locked by" in f.get("reason", "") else "no vote: other"
                        cstats.aborted[cause] = cstats.aborted.get(cause, 0) + 1
                except (KeyError, ValueError):
                    self.flag(
                        "bad-log-line", f.get("txid"), f"{log.where(at)}: {event} line lacks a field", log.cite(at)
                    )

    def _read_participant(self, node: str) -> None:
        """Observations of every record, vote counts and restarts, and the
        rules that need the log's order at one participant:

        * a yes vote, a NOK or an OUTCOME is sent only once what it says is
          durable (design section 4, and the Cornus argument: an abort
          recorded for RESOLVE must survive a crash); but "committed" may be
          said once the yes vote is durable (a lazy commit: the votes decided
          it, and a restart learns it again from the peers);
        * one lock: no second transaction prepared while another is;
        * at each restart, every record made durable before it is restored,
          the same or further along its path (nothing durable, and so maybe
          acknowledged, is ever lost or changed).
        """
        stats = self.replicas[node]
        per_txid = self.obs[node]
        durable: dict[str, _Obs] = {}  # txid -> its last observation before this start
        restored: dict[str, _Obs] = {}  # this start's dump of its storage
        locked: dict[str, _Obs] = {}  # txid -> its prepared observation, while undecided
        prepared_ts: dict[str, str] = {}
        seen: dict[str, set[str]] = {}  # txid -> every state it has been durable in
        log = self._log(node)
        if log is None:
            return
        for what, at, txid, claim, o in self._participant_lines(log):
            if what == "listening":  # a start
                stats.restarts += 1
                if stats.restarts > 1:
                    self._check_restart(node, durable, restored, log, at)
                durable.update(restored)
                locked = {t: o for t, o in durable.items() if o.state == "prepared"}
                if len(locked) > 1:
                    self.flag(
                        "lock",
                        next(iter(locked)),
                        f"{node} restarted holding its lock for "
                        f"{len(locked)} transactions: {', '.join(sorted(locked))}",
                        *[o.cite() for o in locked.values()],
                    )
                restored = {}
                continue
            if o is None:
                # What a participant says of a record must have been durable first
                # (a yes vote, a NOK, an OUTCOME), or a crash could unsay it.
                if what == "VOTE":
                    if claim == "prepared":
                        stats.yes_votes += 1
                    else:
                        stats.no_votes += 1
                states = seen.get(txid, ())
                if claim not in states and not (
                    (claim == "prepared" and "committed" in states) or (claim == "committed" and "prepared" in states)
                ):
                    said = {"prepared": "a yes vote", "aborted": "an abort"}.get(claim, f"state {claim}")
                    self.flag(
                        "durability",
                        txid or None,
                        f"{node} sent {said} on {txid} before making it durable",
                        log.cite(at),
                    )
                continue
            per_txid[txid].append(o)
            seen.setdefault(txid, set()).add(o.state)
            if what == "restored":
                restored[txid] = o
                continue
            durable[txid] = o
            if o.state == "prepared":
                holders = [(t, h) for t, h in locked.items() if t != txid] if locked else []
                if holders:
                    holder, h = holders[0]
                    self.flag(
                        "lock",
                        txid,
                        f"{node} prepared {txid} while {holder} held its lock",
                        h.cite(),
                        o.cite(),
                    )
                locked[txid] = o
                prepared_ts.setdefault(txid, o.ts)
                continue
            locked.pop(txid, None)
            if txid in prepared_ts:
                held = _seconds(prepared_ts.pop(txid), o.ts)
                if held is not None and held > self.longest_lock[0]:
                    self.longest_lock = (held, node, txid)
            if o.why.startswith(_BY_PEERS_PREFIXES):
                self.resolved_by_peers.add(txid)
        stats.restarts = max(0, stats.restarts - 1)

    def _check_restart(
        self, node: str, durable: dict[str, _Obs], restored: dict[str, _Obs], log: _Log, at: int
    ) -> None:
        """Every record made durable before the start logged at ``at`` is restored
        by it, as it was or further along its path."""
        for txid, o in durable.items():
            r = restored.get(txid)
            # A record may have moved forward after its last "durable" line (a
            # SIGKILL can fall between the fsync and the log line), never back.
            if r is None or (r.state != o.state and r.state not in _NEXT[o.state]):
                now = f"as {r.state}" if r is not None else "without it"
                self.flag(
                    "lost",
                    txid,
                    f"{node} restarted {now}, after making {txid} durable as {o.state}",
                    o.cite(),
                    log.cite(at),
                )
            elif r.state == o.state and (r.value, r.version) != (o.value, o.version):
                self.flag(
                    "stability",
                    txid,
                    f"{node} restored {txid} ({r.state}) with value {r.value} version "
                    f"{r.version}, having made it durable with value {o.value} version {o.version}",
                    o.cite(),
                    r.cite(),
                )

    def _read_faults(self) -> None:
        path = self.folder / "nemesis.log"
        log = self._read(path, "nemesis") if path.exists() else None
        if log is None:
            return
        by_id: dict[str, dict[str, Any]] = {}
        for event, f, at in self._events(log, _NEMESIS_LOG):
            if event == "fault":
                by_id[f["id"] if "id" in f else log.where(at)] = {
                    "id": f.get("id"),
                    "kind": f.get("kind"),
                    "target": f.get("target"),
                    "t": f.get("t"),
                    "healed": None,
                    **{k: v for k, v in f.items() if k in ("point", "links", "pid")},
                }
            elif f.get("id") in by_id:
                by_id[f["id"]]["healed"] = f.get("t") if f.get("how") != "abandoned" else "abandoned"
        self.faults = list(by_id.values())

    # ------------------------------------------------------------ checks

    def check(self, run: dict[str, Any]) -> CheckReport:
        self.read()
        self._read_faults()
        final_state = self.check_records()
        self.check_replicas()
        abandoned = self.check_clients(final_state)
        return CheckReport(
            self.folder,
            self.violations,
            list(self.clients.values()),
            list(self.replicas.values()),
            self.lines,
            run,
            faults=self.faults,
            resolved_by_peers=len(self.resolved_by_peers),
            abandoned=abandoned,
            longest_lock=self.longest_lock,
        )

    def check_records(self) -> dict[str, dict[str, _Obs]]:
        """Stability per participant, then agreement and validity per txid.
        Returns txid -> node -> its last observation."""
        last: dict[str, dict[str, _Obs]] = defaultdict(dict)
        prepared_at: dict[str, dict[str, _Obs]] = defaultdict(dict)
        for node, per_txid in self.obs.items():
            stats = self.replicas[node]
            for txid, observations in per_txid.items():
                state: str | None = None
                previous: _Obs | None = None
                for o in observations:
                    if o.state == "prepared":
                        prepared_at[txid].setdefault(node, o)
                    if o.state == state:
                        continue
                    if o.state not in _NEXT.get(state, set()):
                        evidence = [previous.cite()] if previous else []
                        self.flag(
                            "stability",
                            txid,
                            f"{node} moved {txid} from {state or 'no record'} to {o.state}",
                            *evidence,
                            o.cite(),
                        )
                    state, previous = o.state, o
                assert previous is not None
                last[txid][node] = previous
                if previous.state == "committed":
                    stats.commits += 1
                elif previous.state == "aborted":
                    stats.aborts += 1

        for txid, by_node in last.items():
            committed = {n: o for n, o in by_node.items() if o.state == "committed"}
            aborted = {n: o for n, o in by_node.items() if o.state == "aborted"}
            if committed and aborted:
                c_node, c = next(iter(committed.items()))
                a_node, a = next(iter(aborted.items()))
                self.flag(
                    "agreement",
                    txid,
                    f"{txid} committed at {c_node} but aborted at {a_node}",
                    c.cite(),
                    a.cite(),
                )
            for node, o in committed.items():
                self._check_validity(txid, node, o, prepared_at.get(txid, {}))
        return last

    def _check_validity(self, txid: str, node: str, commit: _Obs, prepared: dict[str, _Obs]) -> None:
        listed = commit.participants
        unknown = [a for a in listed if a not in self.node_of]
        if unknown or not listed:
            self.flag(
                "validity",
                txid,
                f"{node} committed {txid} for participants {','.join(listed) or '(none)'}, not the run's participants",
                commit.cite(),
            )
        missing = [self.node_of[a] for a in listed if a in self.node_of and self.node_of[a] not in prepared]
        if missing:
            self.flag(
                "validity",
                txid,
                f"{node} committed {txid} but {', '.join(missing)} never voted yes on it",
                commit.cite(),
            )
        # Order, not only existence: the commit point is the last yes vote, so a
        # commit logged before some participant's durable yes came too early.
        # One clock serves every process of a run, and causality orders these
        # lines: a vote is logged durable before it is sent, a commit after.
        early = [
            (q, p)
            for q, p in prepared.items()
            if p.ts and commit.ts and p.ts > commit.ts and q in {self.node_of.get(a) for a in listed}
        ]
        for q, p in early:
            self.flag(
                "validity",
                txid,
                f"{node} committed {txid} before {q} voted yes on it",
                commit.cite(),
                p.cite(),
            )
        begin = self.begins.get(txid)
        if begin is not None and begin[0] != commit.value:
            self.flag(
                "validity",
                txid,
                f"{node} committed {txid} with value {commit.value}, but its client proposed {begin[0]}",
                begin[1].cite(begin[2]),
                commit.cite(),
            )

    def _storage(self, node: str) -> tuple[list[tuple[str, int, int]], list[str]] | None:
        """The node's committed (txid, version, value) list and prepared txids
        from final_states.json, or None (flagged) when they are missing or malformed."""
        entry = self.final.get(node)
        storage = entry.get("storage") if isinstance(entry, dict) else None
        if not isinstance(storage, dict) or "committed" not in storage:
            self.flag("missing-final-state", None, f"final_states.json has no storage records for {node}")
            return None
        try:
            seq = [(str(t), int(v), int(val)) for t, v, val in storage["committed"]]
            raw_prepared = storage.get("prepared", [])
            if not isinstance(raw_prepared, list):
                raise TypeError("prepared is not a list")
            prepared = [str(t) for t in raw_prepared]
        except (TypeError, ValueError):
            self.flag("missing-final-state", None, f"final_states.json: {node}'s storage records are malformed")
            return None
        return seq, prepared

    def _cite_record(self, node: str, txid: str | None) -> list[str]:
        """The log line that shows ``node``'s last record of ``txid``, if any."""
        observations = self.obs[node].get(txid) if txid else None
        return [observations[-1].cite()] if observations else []

    def _cite_commit(self, node: str, txid: str | None) -> list[str]:
        """The log line where ``node`` made ``txid`` committed, if any."""
        for o in self.obs[node].get(txid, ()) if txid else ():
            if o.state == "committed":
                return [o.cite()]
        return []

    def check_replicas(self) -> None:
        sequences: dict[str, list[tuple[str, int, int]]] = {}
        for node, _ in self.participants:
            entry = self.final.get(node) or {}
            status = entry.get("status") if isinstance(entry, dict) else None
            stats = self.replicas[node]
            stored_records = self._storage(node)
            if stored_records is None:
                continue
            seq, prepared = stored_records
            self.stored[node] = seq
            sequences[node] = seq
            for i, (txid, version, _) in enumerate(seq):
                if version != i + 1:
                    self.flag(
                        "replicas",
                        txid,
                        f"{node}'s commit of {txid} has version {version}, not {i + 1}: "
                        f"versions must run 1..{len(seq)} without gaps",
                        *self._cite_commit(node, txid),
                    )
                    break
            value = seq[-1][2] if seq else 0
            version = seq[-1][1] if seq else 0
            last_txid = seq[-1][0] if seq else None
            stats.storage_server, stats.version = value, version
            if not isinstance(status, dict):
                self.flag(
                    "lock-held",
                    None,
                    f"{node} did not answer STATUS at the end: "
                    f"{entry.get('status_error', 'no status') if isinstance(entry, dict) else 'no entry'}",
                )
            else:
                stats.lock = status.get("lock")
                if (status.get("storage_server"), status.get("version")) != (value, version):
                    self.flag(
                        "replicas",
                        last_txid,
                        f"{node} answered storage_server={status.get('storage_server')} "
                        f"version={status.get('version')} but its storage holds {value} (version {version})",
                        *self._cite_commit(node, last_txid),
                    )
                if status.get("lock"):
                    lock = str(status["lock"])
                    self.flag(
                        "lock-held", lock, f"{node} still holds its lock for {lock}", *self._cite_record(node, lock)
                    )
            for txid in prepared:
                self.flag(
                    "undecided", txid, f"{txid} is still prepared at {node} at the end", *self._cite_record(node, txid)
                )
            # the logs and the storage must tell the same story
            logged = {txid: o for txid, obs in self.obs[node].items() if (o := obs[-1]).state == "committed"}
            stored = {t: (v, val) for t, v, val in seq}
            for txid in sorted(set(logged) ^ set(stored)):
                if txid in logged:
                    o = logged[txid]
                    self.flag(
                        "log-storage",
                        txid,
                        f"{node}'s log says {txid} committed, its storage does not",
                        o.cite(),
                    )
                else:
                    self.flag(
                        "log-storage",
                        txid,
                        f"{node}'s storage holds {txid} committed at version {stored[txid][0]}, its log never says so",
                        *self._cite_record(node, txid),
                    )
            for txid in set(logged) & set(stored):
                o = logged[txid]
                if (o.version, o.value) != stored[txid]:
                    self.flag(
                        "log-storage",
                        txid,
                        f"{node} logged {txid} at version {o.version} value {o.value}, "
                        f"storage says version {stored[txid][0]} value {stored[txid][1]}",
                        o.cite(),
                    )
        if sequences:
            reference_node, reference = next(iter(sequences.items()))
            for node, seq in sequences.items():
                if seq == reference:
                    continue
                at = next(
                    (i for i, (a, b) in enumerate(zip(seq, reference, strict=False)) if a != b),
                    min(len(seq), len(reference)),
                )
                mine = seq[at] if at < len(seq) else None
                theirs = reference[at] if at < len(reference) else None

                def show(item: tuple[str, int, int] | None) -> str:
                    return f"{item[0]} (value {item[2]})" if item else "nothing"

                self.flag(
                    "replicas",
                    (mine or theirs or ("?",))[0],
                    f"{node} and {reference_node} differ at version {at + 1}: {show(mine)} vs {show(theirs)} "
                    f"(they hold {len(seq)} and {len(reference)} commits)",
                    *(self._cite_commit(node, mine[0]) if mine else []),
                    *(self._cite_commit(reference_node, theirs[0]) if theirs else []),
                )

    def check_clients(self, last: dict[str, dict[str, _Obs]]) -> int:
        """Clients told the truth; returns how many transactions were abandoned
        (begun by a client that died before it could report)."""
        committed_at: dict[str, set[str]] = defaultdict(set)
        for node, seq in self.stored.items():
            for txid, _, _ in seq:
                committed_at[txid].add(node)
        # Judge only by the participants whose storage could be read (the others are flagged already).
        everyone = set(self.stored)
        reported = {txid for txid, _, _, _ in self.outcomes}
        # A client that died mid-transaction told nobody anything: like UNKNOWN,
        # the transaction may go either way, but atomically.
        abandoned = [(txid, "unknown", log, at) for txid, (_, log, at) in self.begins.items() if txid not in reported]
        for _, _, log, _ in abandoned:
            client = self.clients.get(log.node)
            if client is not None:
                client.abandoned += 1
        for txid, result, log, at in [*self.outcomes, *abandoned]:
            here = committed_at.get(txid, set())
            if result == "committed" and here != everyone:
                missing = ", ".join(sorted(everyone - here))
                self.flag(
                    "client-truth",
                    txid,
                    f"client was told {txid} committed, but it is not committed at {missing}",
                    log.cite(at),
                    *self._evidence(last, txid),
                )
            elif result == "aborted" and here:
                self.flag(
                    "client-truth",
                    txid,
                    f"client was told {txid} aborted, but it is committed at {', '.join(sorted(here))}",
                    log.cite(at),
                    *self._evidence(last, txid),
                )
            elif result == "unknown" and here and here != everyone:
                self.flag(
                    "client-truth",
                    txid,
                    f"{txid} (outcome unknown to its client) is committed at {', '.join(sorted(here))} only",
                    log.cite(at),
                    *self._evidence(last, txid),
                )
            elif result not in ("committed", "aborted", "unknown"):
                self.flag("bad-log-line", txid, f"{log.where(at)}: unknown result {result!r}", log.cite(at))
        return len(abandoned)

    @staticmethod
    def _evidence(last: dict[str, dict[str, _Obs]], txid: str) -> list[str]:
        return [o.cite() for o in last.get(txid, {}).values()]
