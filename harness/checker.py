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

import functools
import gc
import json
import re
import statistics
from collections import defaultdict
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
_PARTICIPANT_EVENTS = frozenset({"durable", "restored", "send", "listening"})
# The "why" of a decision a participant reached with its peers, not its client.
_BY_PEERS_PREFIXES = ("every participant voted yes", "peer ")


# Searched in "\n" + the log: the start of a line that is neither blank nor
# "timestamp node known-event ..." (a torn write, a stray print, a misspelt
# event). A search for "\n" is fast; "^" in MULTILINE mode is not.
_MALFORMED_RE = re.compile(
    r"\n(?![^\S\n]*(?:\n|$))(?!\d{4}-\d\d-\d\dT[0-9:.]+Z [^ \n]+ (?:"
    + "|".join(sorted(map(re.escape, EVENTS)))
    + r")(?:[ \n]|$))"
)


# A durable or restored line as harness.nodes.log_record writes it.
_RECORD_FIELDS = ("txid", "state", "value", "version", "participants", "why")
_RECORD_RE = re.compile(
    r"txid=([^ ]+) state=([a-z]+) value=(-?[0-9]+) version=([0-9]+) participants=([^ ]*)"
    r'(?: why=("[^"\\]*(?:\\.[^"\\]*)*"|[^ "]+))?'
)


@functools.cache
def _wanted_re(events: frozenset[str]) -> re.Pattern[str]:
    """The event token of wanted lines (a "send" only when it sends a VOTE);
    the caller checks that the token is the line's third."""
    alternatives = sorted(
        re.escape(e) if e != "send" else r"send(?= peer=[^ \n]+ msg=(?:VOTE|OUTCOME) )" for e in events
    )
    return re.compile(rf" ({'|'.join(alternatives)})(?=[ \n]|$)")


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
    """One observation of a participant's durable record."""

    state: str
    value: int
    version: int
    participants: tuple[str, ...]
    where: str
    text: str
    why: str = ""
    ts: str = ""  # the line's UTC timestamp; ISO strings of one width compare in time order


def _cite(where: str, text: str) -> str:
    return f"{where}: {text[:_EVIDENCE_WIDTH]}"


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
        self.begins: dict[str, tuple[int, str, str]] = {}  # txid -> (value, where, text)
        self.outcomes: list[tuple[str, str, str, str]] = []  # (txid, result, where, text)
        self.clients = {name: ClientStats(name=name) for name in clients}
        self.longest_lock: tuple[float, str | None, str | None] = (0.0, None, None)
        self.resolved_by_peers: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.stored: dict[str, list[tuple[str, int, int]]] = {}  # node -> committed (txid, version, value)

    def flag(self, kind: str, txid: str | None, message: str, *evidence: str) -> None:
        self.violations.append(Violation(kind, txid, message, tuple(evidence)))

    # ------------------------------------------------------------ reading

    def _lines(self, node: str, wanted: frozenset[str]) -> Any:
        """(event, fields, where, text, ts) for the wanted events of a node's log."""
        path = self.folder / f"{node}.log"
        if not path.exists():
            self.flag("missing-log", None, f"{path.name} is missing")
            return
        yield from self._lines_of(path, node, wanted)

    def _lines_of(self, path: Path, node: str, wanted: frozenset[str]) -> Any:
        """(event, fields, where, text, ts) for the wanted events of one log.

        The file is read whole and scanned with compiled regexes, so that the
        lines the checker does not need (most of them: messages in and out)
        cost no Python code at all. Sent messages count only as votes."""
        name = path.name
        try:
            content = path.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            self.flag("missing-log", None, f"{name} cannot be read: {e.strerror}")
            return
        self.lines += content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        for m in _MALFORMED_RE.finditer("\n" + content.rstrip("\n")):
            number = content.count("\n", 0, m.start()) + 1
            line = content[m.start() : content.find("\n", m.start())]
            self.flag("bad-log-line", None, f"{name}:{number} is not an event line", _cite(f"{name}:{number}", line))
        at, number = 0, 1
        for m in _wanted_re(wanted).finditer(content):
            # The event token matched; the line around it must have it third.
            start = content.rfind("\n", 0, m.start()) + 1
            end = content.find("\n", m.end())
            text = content[start:end] if end >= 0 else content[start:]
            parts = text.split(" ", 3)
            if len(parts) < 3 or parts[2] != m.group(1) or len(parts[0]) + len(parts[1]) + 1 + start != m.start():
                continue  # the word appears inside some field instead
            number += content.count("\n", at, start)
            at = start
            where = f"{name}:{number}"
            ts, who, event, rest = parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else ""
            if who != node:
                self.flag("bad-log-line", None, f"{where} is written by {who!r}, not {node}", _cite(where, text))
                continue
            if event == "send":
                # Only what a sent VOTE or OUTCOME claims about the sender's record.
                at_txid = rest.find(" txid=") + 6
                txid = rest[at_txid : rest.find(" ", at_txid)] if at_txid > 5 else ""
                if " msg=VOTE " in rest:
                    claim = "prepared" if " vote=ok" in rest else "aborted"
                else:
                    at_state = rest.find(" state=") + 7
                    claim = rest[at_state:].split(" ", 1)[0] if at_state > 6 else ""
                yield (
                    "send",
                    {"msg": "VOTE" if " msg=VOTE " in rest else "OUTCOME", "txid": txid, "claim": claim},
                    where,
                    text,
                    ts,
                )
                continue
            record = _RECORD_RE.fullmatch(rest) if event in ("durable", "restored") else None
            if record is not None:  # the shape nodes write: one regex instead of a field-by-field parse
                fields = {k: v for k, v in zip(_RECORD_FIELDS, record.groups(), strict=True) if v is not None}
                if "why" in fields and fields["why"][:1] == '"':
                    fields["why"] = dict(split_fields("why=" + fields["why"]))["why"]
                yield event, fields, where, text, ts
                continue
            try:
                fields = dict(split_fields(rest))
            except DecodeError as e:
                self.flag("bad-log-line", None, f"{where}: {e.detail}", _cite(where, text))
                continue
            yield event, fields, where, text, ts

    def read(self) -> None:
        for node, _ in self.participants:
            self._read_participant(node)
        for name in self.client_names:
            cstats = self.clients[name]
            for event, f, where, text, _ in self._lines(name, frozenset({"begin", "outcome"})):
                try:
                    txid = f["txid"]
                    if event == "begin":
                        if txid in self.begins:
                            self.flag(
                                "txid-reused",
                                txid,
                                f"txid {txid} was begun twice",
                                _cite(self.begins[txid][1], self.begins[txid][2]),
                                _cite(where, text),
                            )
                        self.begins[txid] = (int(f["value"]), where, text)
                        continue
                    result = f["result"]
                    self.outcomes.append((txid, result, where, text))
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
                    self.flag("bad-log-line", f.get("txid"), f"{where}: {event} line lacks a field", _cite(where, text))

    def _read_participant(self, node: str) -> None:
        """Observations of every record, vote counts and restarts, and the
        rules that need the log's order at one participant:

        * a yes vote, a NOK or an OUTCOME is sent only once what it says is
          durable (design section 4, and the Cornus argument: an abort
          recorded for RESOLVE must survive a crash);
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
        for event, f, where, text, ts in self._lines(node, _PARTICIPANT_EVENTS):
            if event == "send":
                # What a participant says of a record must have been durable first
                # (a yes vote, a NOK, an OUTCOME), or a crash could unsay it.
                txid, claim = f["txid"], f["claim"]
                if f["msg"] == "VOTE":
                    if claim == "prepared":
                        stats.yes_votes += 1
                    else:
                        stats.no_votes += 1
                if claim not in seen.get(txid, ()) and not (claim == "prepared" and "committed" in seen.get(txid, ())):
                    what = {"prepared": "a yes vote", "aborted": "an abort"}.get(claim, f"state {claim}")
                    self.flag(
                        "durability",
                        txid or None,
                        f"{node} sent {what} on {txid} before making it durable",
                        _cite(where, text),
                    )
                continue
            if event == "listening":
                stats.restarts += 1
                if stats.restarts > 1:
                    self._check_restart(node, durable, restored, where, text)
                durable.update(restored)
                locked = {t: o for t, o in durable.items() if o.state == "prepared"}
                if len(locked) > 1:
                    self.flag(
                        "lock",
                        next(iter(locked)),
                        f"{node} restarted holding its lock for "
                        f"{len(locked)} transactions: {', '.join(sorted(locked))}",
                        *[_cite(o.where, o.text) for o in locked.values()],
                    )
                restored = {}
                continue
            try:
                parts = f.get("participants", "")
                o = _Obs(
                    f["state"],
                    int(f["value"]),
                    int(f["version"]),
                    tuple(parts.split(",")) if parts else (),
                    where,
                    text,
                    f.get("why", ""),
                    ts,
                )
                txid = f["txid"]
            except (KeyError, ValueError):
                self.flag("bad-log-line", f.get("txid"), f"{where}: {event} line lacks a field", _cite(where, text))
                continue
            per_txid[txid].append(o)
            seen.setdefault(txid, set()).add(o.state)
            if event == "restored":
                restored[txid] = o
                continue
            durable[txid] = o
            if o.state == "prepared":
                holders = [(t, h) for t, h in locked.items() if t != txid]
                if holders:
                    holder, h = holders[0]
                    self.flag(
                        "lock",
                        txid,
                        f"{node} prepared {txid} while {holder} held its lock",
                        _cite(h.where, h.text),
                        _cite(where, text),
                    )
                locked[txid] = o
                prepared_ts.setdefault(txid, ts)
                continue
            locked.pop(txid, None)
            if txid in prepared_ts:
                held = _seconds(prepared_ts.pop(txid), ts)
                if held is not None and held > self.longest_lock[0]:
                    self.longest_lock = (held, node, txid)
            if o.why.startswith(_BY_PEERS_PREFIXES):
                self.resolved_by_peers.add(txid)
        stats.restarts = max(0, stats.restarts - 1)

    def _check_restart(
        self, node: str, durable: dict[str, _Obs], restored: dict[str, _Obs], where: str, text: str
    ) -> None:
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
                    _cite(o.where, o.text),
                    _cite(where, text),
                )
            elif r.state == o.state and (r.value, r.version) != (o.value, o.version):
                self.flag(
                    "stability",
                    txid,
                    f"{node} restored {txid} ({r.state}) with value {r.value} version "
                    f"{r.version}, having made it durable with value {o.value} version {o.version}",
                    _cite(o.where, o.text),
                    _cite(r.where, r.text),
                )

    def _read_faults(self) -> None:
        path = self.folder / "nemesis.log"
        if not path.exists():
            return
        by_id: dict[str, dict[str, Any]] = {}
        for event, f, where, _text, _ts in self._lines_of(path, "nemesis", frozenset({"fault", "heal"})):
            if event == "fault":
                by_id[f.get("id", where)] = {
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
                        evidence = [_cite(previous.where, previous.text)] if previous else []
                        self.flag(
                            "stability",
                            txid,
                            f"{node} moved {txid} from {state or 'no record'} to {o.state}",
                            *evidence,
                            _cite(o.where, o.text),
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
                    _cite(c.where, c.text),
                    _cite(a.where, a.text),
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
                _cite(commit.where, commit.text),
            )
        missing = [self.node_of[a] for a in listed if a in self.node_of and self.node_of[a] not in prepared]
        if missing:
            self.flag(
                "validity",
                txid,
                f"{node} committed {txid} but {', '.join(missing)} never voted yes on it",
                _cite(commit.where, commit.text),
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
                _cite(commit.where, commit.text),
                _cite(p.where, p.text),
            )
        begin = self.begins.get(txid)
        if begin is not None and begin[0] != commit.value:
            self.flag(
                "validity",
                txid,
                f"{node} committed {txid} with value {commit.value}, but its client proposed {begin[0]}",
                _cite(begin[1], begin[2]),
                _cite(commit.where, commit.text),
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
        return [_cite(observations[-1].where, observations[-1].text)] if observations else []

    def _cite_commit(self, node: str, txid: str | None) -> list[str]:
        """The log line where ``node`` made ``txid`` committed, if any."""
        for o in self.obs[node].get(txid, ()) if txid else ():
            if o.state == "committed":
                return [_cite(o.where, o.text)]
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
                        _cite(o.where, o.text),
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
                        _cite(o.where, o.text),
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
        abandoned = [
            (txid, "unknown", where, text) for txid, (_, where, text) in self.begins.items() if txid not in reported
        ]
        for _, _, where, _ in abandoned:
            client = self.clients.get(where.partition(".log:")[0])
            if client is not None:
                client.abandoned += 1
        for txid, result, where, text in [*self.outcomes, *abandoned]:
            here = committed_at.get(txid, set())
            if result == "committed" and here != everyone:
                missing = ", ".join(sorted(everyone - here))
                self.flag(
                    "client-truth",
                    txid,
                    f"client was told {txid} committed, but it is not committed at {missing}",
                    _cite(where, text),
                    *self._evidence(last, txid),
                )
            elif result == "aborted" and here:
                self.flag(
                    "client-truth",
                    txid,
                    f"client was told {txid} aborted, but it is committed at {', '.join(sorted(here))}",
                    _cite(where, text),
                    *self._evidence(last, txid),
                )
            elif result == "unknown" and here and here != everyone:
                self.flag(
                    "client-truth",
                    txid,
                    f"{txid} (outcome unknown to its client) is committed at {', '.join(sorted(here))} only",
                    _cite(where, text),
                    *self._evidence(last, txid),
                )
            elif result not in ("committed", "aborted", "unknown"):
                self.flag("bad-log-line", txid, f"{where}: unknown result {result!r}", _cite(where, text))
        return len(abandoned)

    @staticmethod
    def _evidence(last: dict[str, dict[str, _Obs]], txid: str) -> list[str]:
        return [_cite(o.where, o.text) for o in last.get(txid, {}).values()]
