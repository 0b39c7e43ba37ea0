"""Checks a run folder: do the replicas agree, and was every client told the truth?

Theory of operation. The checker reads only the run folder: ``run.json`` (who
took part), every node's event log, and ``final_states.json`` (each
participant's STATUS answer and the records read from its storage after it
stopped). From the participants' ``durable`` and ``restored`` lines it rebuilds,
per participant and transaction, the sequence of durable states; from the
clients' ``begin`` and ``outcome`` lines, what each client proposed and was told.
It then checks (docs/architecture.md lists each rule):

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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import Any

from harness.events.log import typed_fields
from harness.events.schema import COMPACTED, FAULT, FORGOTTEN, HEAL, EventKind
from harness.protocol.messages import FORGOTTEN as FORGOTTEN_REASON
from harness.protocol.messages import NokCode
from harness.protocol.participant import parse_txid
from harness.verify.databases import postmaster_restarts, resolver_decisions
from harness.verify.interrupted import excuse_interrupted
from harness.verify.model import CheckError, CheckReport, ClientStats, ReplicaStats, Violation, ViolationKind
from harness.verify.reader import CLIENT_LOG, NEMESIS_LOG, Log, LogReader, Observation
from harness.verify.stores import check_replicas, parse_storage

# States a participant's record may move through, as the logs spell them.
_NEXT: dict[str | None, set[str]] = {
    None: {"prepared", "aborted"},
    "prepared": {"committed", "aborted"},
    "committed": set(),
    "aborted": set(),
}
# A state's bit in _Track.seen, and the states whose record makes a claim true:
# "prepared" may be said once committed (a late duplicate PREPARE), and
# "committed" once prepared (a lazy commit: the votes decided it).
_STATE_BIT = {"prepared": 1, "committed": 2, "aborted": 4}
_SAYS = {"prepared": 1 | 2, "committed": 2 | 1, "aborted": 4}


@dataclass(slots=True)
class _Track:
    """What the rules need of one transaction's observations at one participant
    (not all of them: a long run has hundreds of thousands)."""

    first: Observation  # the first observation of its current state
    last: Observation = field(init=False)  # the latest observation
    state: str = field(init=False)
    # Of the first prepared observation, only where it is (in first.log) and
    # when: a whole Observation per transaction and participant would be a
    # fifth of the checker's memory on a long run.
    prepared_at: int = -1
    prepared_ts: int = -1
    committed: Observation | None = None  # the first committed observation
    seen: int = 0  # every state it has been durable in (_STATE_BIT)

    def __post_init__(self) -> None:
        self.last, self.state = self.first, self.first.state

    def prepared_cite(self) -> str:
        return self.first.log.cite(self.prepared_at)


# The "why" of a decision a participant reached with its peers, not its client.
_BY_PEERS_PREFIXES = ("every participant voted yes", "peer ")


def _typed(kind: EventKind, fields: dict[str, str]) -> dict[str, object]:
    """The fields as the schema types them; a field that does not parse stays text (the
    line is the nemesis's, not a node's, and nothing is checked on it)."""
    try:
        return typed_fields(kind, fields)
    except ValueError:
        return dict(fields)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckError(f"{path} is missing: is {path.parent} a run folder?") from None
    except OSError as e:
        raise CheckError(f"{path} cannot be read: {e.strerror or e}") from None
    except ValueError as e:
        raise CheckError(f"{path} cannot be read: {e}") from None


def check_run(folder: Path) -> CheckReport:
    """Check a run folder. Raises CheckError if it is not one."""
    run = _load_json(folder / "run.json")
    if not isinstance(run, dict):
        raise CheckError(f"{folder / 'run.json'} lacks participants or clients")
    interrupted = run.get("interrupted")
    if (folder / "final_states.json").exists():
        final = _load_json(folder / "final_states.json")
    else:  # stopped before the runner could read the participants' storage (a signal, a killed runner)
        final, interrupted = {}, interrupted or "stopped before its final states were read"
    try:
        participants = [(p["node"], p["address"]) for p in run["participants"]]
        client_names = list(run["clients"])
    except (KeyError, TypeError):
        raise CheckError(f"{folder / 'run.json'} lacks participants or clients") from None
    if not isinstance(final, dict):
        raise CheckError(f"{folder / 'final_states.json'} does not map participants to their final states")
    checker = _Checker(folder, participants, client_names, final)
    # Remote hosts stamp their logs with clocks of their own (docs/hosts.md):
    # then no timestamp is compared across nodes.
    checker.shared_clock = run.get("clock", "shared") == "shared"
    # The checker builds millions of small objects and frees none until the
    # end: the cyclic garbage collector would only rescan them (20-35% of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        report = checker.check(run)
    finally:
        if collecting:
            gc.enable()
    return excuse_interrupted(report, str(interrupted)) if interrupted else report


class _Checker:
    def __init__(
        self, folder: Path, participants: list[tuple[str, str]], clients: list[str], final: dict[str, Any]
    ) -> None:
        self.folder = folder
        self.shared_clock = True  # every log stamped by one clock: timestamps compare across nodes
        self.participants = participants
        self.node_of = {address: node for node, address in participants}
        self.client_names = clients
        self.final = final
        # Each store's records, parsed before the logs are read (their JSON form is freed).
        self.parsed_stores = {node: parse_storage(final.get(node)) for node, _ in participants}
        self.violations: list[Violation] = []
        self.reader = LogReader(folder, self.violations)
        # participant node -> txid -> what the rules need of its observations
        self.tracks: dict[str, dict[str, _Track]] = {node: {} for node, _ in participants}
        self._stability: list[Violation] = []  # found while reading, reported with the other record rules
        self.replicas = {node: ReplicaStats(node=node, address=address) for node, address in participants}
        self.begins: dict[str, tuple[int, Log, int]] = {}  # txid -> (value, the line: log, at)
        self.outcomes: list[tuple[str, str, Log, int]] = []  # (txid, result, the line: log, at)
        self.clients = {name: ClientStats(name=name) for name in clients}
        self.longest_lock: tuple[float, str | None, str | None] = (0.0, None, None)
        self.resolved_by_peers: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.stored: dict[str, list[tuple[str, int, int]]] = {}  # node -> committed (txid, version, value)
        # node -> the txids its compaction dropped (its "forgotten" lines): its store no longer holds them
        self.forgotten: dict[str, set[str]] = {node: set() for node, _ in participants}
        # Participants that are databases (--backend postgres): no event log of
        # their own; their records are what final_states.json read from them.
        self.databases = {n for n, e in final.items() if isinstance(e, dict) and e.get("backend") == "postgres"}

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None:
        self.violations.append(Violation(kind, txid, message, tuple(evidence)))

    # ------------------------------------------------------------ reading

    def read(self) -> None:
        for node, _ in self.participants:
            if node not in self.databases:
                self._read_participant(node)
        for name in self.client_names:
            cstats = self.clients[name]
            log = self.reader.log(name)
            if log is None:
                continue
            last_outcome = None
            for event, f, at, ts in self.reader.events(log, CLIENT_LOG):
                try:
                    txid = intern(f["txid"])  # one copy, shared with the participants' tracks
                    if event == "begin":
                        if cstats.first_begin is None:
                            cstats.first_begin = ts
                        if txid in self.begins:
                            _, first, first_at = self.begins[txid]
                            self.flag(
                                ViolationKind.TXID_REUSED,
                                txid,
                                f"txid {txid} was begun twice",
                                first.cite(first_at),
                                log.cite(at),
                            )
                        self.begins[txid] = (int(f["value"]), log, at)
                        continue
                    result = intern(f["result"])
                    last_outcome = ts
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
                            # the NOK's code (harness.protocol.messages.NokCode), not its prose
                            cause = "no vote: locked" if f.get("nok") == NokCode.LOCKED.value else "no vote: other"
                        cstats.aborted[cause] = cstats.aborted.get(cause, 0) + 1
                except (KeyError, ValueError):
                    self.reader.lacks_field(log, at, event, f.get("txid"))
            if last_outcome is not None:
                cstats.last_outcome = last_outcome

    def _read_participant(self, node: str) -> None:
        """Observations of every record, vote counts and restarts, and the
        rules that need the log's order at one participant:

        * a yes vote, a NOK or an OUTCOME is sent only once what it says is
          durable (docs/protocol.md, and the Cornus argument: an abort
          recorded for RESOLVE must survive a crash); but "committed" may be
          said once the yes vote is durable (a lazy commit: the votes decided
          it, and a restart learns it again from the peers);
        * one lock: no second transaction prepared while another is;
        * at each restart, every record made durable before it is restored,
          the same or further along its path (nothing durable, and so maybe
          acknowledged, is ever lost or changed).
        """
        stats = self.replicas[node]
        tracks = self.tracks[node]
        durable: dict[str, Observation] = {}  # txid -> its last observation before this start
        restored: dict[str, Observation] = {}  # this start's dump of its storage
        locked: dict[str, Observation] = {}  # txid -> its prepared observation, while undecided
        prepared_ts: dict[str, int] = {}  # txid -> when it was prepared (micros)
        log = self.reader.log(node)
        if log is None:
            return
        marks: dict[str, int] = {}  # this start's compaction marks ("compacted", before "listening")
        for what, at, txid, claim, o in self.reader.participant_lines(log):
            if what == COMPACTED.name:
                for mark in filter(None, txid.split(",")):
                    client, _, seq = mark.rpartition(":")
                    marks[client] = int(seq) if seq.isdigit() else -1
                continue
            if what == "listening":  # a start
                if marks:
                    self._forgotten_unlogged(node, durable, restored, marks)
                    marks = {}
                stats.restarts += 1
                if stats.restarts > 1:
                    self._check_restart(node, durable, restored, log, at)
                durable.update(restored)
                locked = {t: o for t, o in durable.items() if o.state == "prepared"}
                if len(locked) > 1:
                    self.flag(
                        ViolationKind.LOCK,
                        next(iter(locked)),
                        f"{node} restarted holding its lock for "
                        f"{len(locked)} transactions: {', '.join(sorted(locked))}",
                        *[o.cite() for o in locked.values()],
                    )
                restored = {}
                continue
            if what == FORGOTTEN.name:  # compaction (--compact): records dropped, decided ones only
                for t in filter(None, txid.split(",")):  # none: a rejoin's marks alone
                    gone = durable.pop(t, None)
                    if gone is None or gone.state == "prepared":
                        how = "while prepared on it" if gone else "with no durable record of it"
                        self.flag(ViolationKind.LOST, t, f"{node} forgot {t} {how}", log.cite(at))
                    self.forgotten[node].add(intern(t))
                continue
            if claim == FORGOTTEN_REASON:  # a NOK for a forgotten txid claims no record, but none may be held
                stats.no_votes += 1
                if txid in durable:
                    self.flag(
                        ViolationKind.DURABILITY,
                        txid,
                        f"{node} said it forgot {txid} while it holds a record of it",
                        durable[txid].cite(),
                        log.cite(at),
                    )
                continue
            if o is None:
                # What a participant says of a record must have been durable first
                # (a yes vote, a NOK, an OUTCOME), or a crash could unsay it.
                if what == "VOTE":
                    if claim == "prepared":
                        stats.yes_votes += 1
                    else:
                        stats.no_votes += 1
                track = tracks.get(txid)
                states = track.seen if track is not None else 0
                if not states & _SAYS.get(claim, 0):
                    said = {"prepared": "a yes vote", "aborted": "an abort"}.get(claim, f"state {claim}")
                    self.flag(
                        ViolationKind.DURABILITY,
                        txid or None,
                        f"{node} sent {said} on {txid} before making it durable",
                        log.cite(at),
                    )
                continue
            self._observe(node, tracks, txid, o)
            if what == "restored":
                restored[txid] = o
                continue
            durable[txid] = o
            if o.state == "prepared":
                holders = [(t, h) for t, h in locked.items() if t != txid] if locked else []
                if holders:
                    holder, h = holders[0]
                    self.flag(
                        ViolationKind.LOCK,
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
                since = prepared_ts.pop(txid)
                held = (o.ts - since) / 1e6 if since >= 0 and o.ts >= 0 else 0.0
                if held > self.longest_lock[0]:
                    self.longest_lock = (held, node, txid)
            if o.why.startswith(_BY_PEERS_PREFIXES):
                self.resolved_by_peers.add(txid)
        stats.restarts = max(0, stats.restarts - 1)

    def _forgotten_unlogged(
        self, node: str, durable: dict[str, Observation], restored: dict[str, Observation], marks: dict[str, int]
    ) -> None:
        """At a start: a record durable before it, decided, missing from the
        store now and at or below its client's mark was forgotten, though the
        process died before its "forgotten" line (the store's write comes
        first). Anything else missing stays for _check_restart to judge."""
        for t, o in list(durable.items()):
            if t in restored or o.state == "prepared" or (parsed := parse_txid(t)) is None:
                continue
            if parsed[1] <= marks.get(parsed[0], -1):
                del durable[t]
                self.forgotten[node].add(intern(t))

    def _observe(self, node: str, tracks: dict[str, _Track], txid: str, o: Observation) -> None:
        """Stability, as the observations of ``txid`` at ``node`` come in:
        its record only moves forward (none -> prepared -> committed | aborted)."""
        track = tracks.get(txid)
        if track is None:
            if o.state not in _NEXT[None]:
                self._stability.append(
                    Violation(
                        ViolationKind.STABILITY, txid, f"{node} moved {txid} from no record to {o.state}", (o.cite(),)
                    )
                )
            # One copy of each txid for every node's tracks and the clients' lines.
            track = tracks[intern(txid)] = _Track(o)
        else:
            track.last = o
            if o.state != track.state:
                if o.state not in _NEXT.get(track.state, set()):
                    self._stability.append(
                        Violation(
                            ViolationKind.STABILITY,
                            txid,
                            f"{node} moved {txid} from {track.state} to {o.state}",
                            (track.first.cite(), o.cite()),
                        )
                    )
                track.state, track.first = o.state, o
        track.seen |= _STATE_BIT.get(o.state, 0)
        if o.state == "prepared" and track.prepared_at < 0:
            track.prepared_at, track.prepared_ts = o.at, o.ts
        elif o.state == "committed" and track.committed is None:
            track.committed = o

    def _check_restart(
        self, node: str, durable: dict[str, Observation], restored: dict[str, Observation], log: Log, at: int
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
                    ViolationKind.LOST,
                    txid,
                    f"{node} restarted {now}, after making {txid} durable as {o.state}",
                    o.cite(),
                    log.cite(at),
                )
            elif r.state == o.state and (r.value, r.version) != (o.value, o.version):
                self.flag(
                    ViolationKind.STABILITY,
                    txid,
                    f"{node} restored {txid} ({r.state}) with value {r.value} version "
                    f"{r.version}, having made it durable with value {o.value} version {o.version}",
                    o.cite(),
                    r.cite(),
                )

    def _read_faults(self) -> None:
        path = self.folder / "nemesis.log"
        log = self.reader.read(path, "nemesis") if path.exists() else None
        if log is None:
            return
        by_id: dict[str, dict[str, Any]] = {}
        for event, f, at, _ in self.reader.events(log, NEMESIS_LOG):
            typed = _typed(FAULT if event == "fault" else HEAL, f)  # numbers as numbers in summary.json
            if event == "fault":
                by_id[f["id"] if "id" in f else log.where(at)] = {
                    "id": typed.get("id"),
                    "kind": f.get("kind"),
                    "target": f.get("target"),
                    "t": typed.get("t"),
                    "healed": None,
                    **{k: v for k, v in typed.items() if k in ("point", "links", "pid")},
                }
            elif f.get("id") in by_id:
                by_id[f["id"]]["healed"] = typed.get("t") if f.get("how") != "abandoned" else "abandoned"
        self.faults = list(by_id.values())

    # ------------------------------------------------------------ checks

    def check(self, run: dict[str, Any]) -> CheckReport:
        self.read()
        self._read_faults()
        if self.databases:
            resolved, longest = resolver_decisions(self.folder)
            self.resolved_by_peers |= resolved
            self.longest_lock = max(self.longest_lock, longest, key=lambda held: held[0])
            for node in self.databases & set(self.replicas):
                self.replicas[node].restarts = postmaster_restarts(self.faults, node)
        self.check_records()
        check_replicas(self)
        abandoned = self.check_clients()
        return CheckReport(
            self.folder,
            self.violations,
            list(self.clients.values()),
            list(self.replicas.values()),
            self.reader.lines,
            run,
            faults=self.faults,
            resolved_by_peers=len(self.resolved_by_peers),
            abandoned=abandoned,
            longest_lock=self.longest_lock,
        )

    def check_records(self) -> None:
        """Stability per participant (found while reading), then agreement and
        validity per txid, one transaction at a time (a long run has hundreds
        of thousands: nothing per transaction is built for all of them at once)."""
        self.violations += self._stability
        for node, tracks in self.tracks.items():
            stats = self.replicas[node]
            for track in tracks.values():
                if track.state == "committed":
                    stats.commits += 1
                elif track.state == "aborted":
                    stats.aborts += 1
        seen: set[str] = set()
        for tracks in self.tracks.values():
            for txid in tracks:
                if txid in seen:
                    continue
                seen.add(txid)
                by_node = self._final(txid)
                committed = {n: o for n, o in by_node.items() if o.state == "committed"}
                aborted = {n: o for n, o in by_node.items() if o.state == "aborted"}
                if committed and aborted:
                    c_node, c = next(iter(committed.items()))
                    a_node, a = next(iter(aborted.items()))
                    self.flag(
                        ViolationKind.AGREEMENT,
                        txid,
                        f"{txid} committed at {c_node} but aborted at {a_node}",
                        c.cite(),
                        a.cite(),
                    )
                if committed:
                    prepared = {
                        n: t
                        for n, tracks_at in self.tracks.items()
                        if (t := tracks_at.get(txid)) is not None and t.prepared_at >= 0
                    }
                    for node, o in committed.items():
                        self._check_validity(txid, node, o, prepared)

    def _final(self, txid: str) -> dict[str, Observation]:
        """node -> the first observation of ``txid``'s final state there, for every node that knows it."""
        return {n: t.first for n, tracks in self.tracks.items() if (t := tracks.get(txid)) is not None}

    def _check_validity(self, txid: str, node: str, commit: Observation, prepared: dict[str, _Track]) -> None:
        """``prepared``: node -> the track of ``txid`` there, for the nodes where it was prepared."""
        listed = commit.participants
        unknown = [a for a in listed if a not in self.node_of]
        if unknown or not listed:
            self.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} for participants {','.join(listed) or '(none)'}, not the run's participants",
                commit.cite(),
            )
        missing = [self.node_of[a] for a in listed if a in self.node_of and self.node_of[a] not in prepared]
        if missing:
            self.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} but {', '.join(missing)} never voted yes on it",
                commit.cite(),
            )
        # Order, not only existence: the commit point is the last yes vote, so a
        # commit logged before some participant's durable yes came too early.
        # One clock serves every process of a run, and causality orders these
        # lines: a vote is logged durable before it is sent, a commit after.
        # With a clock per host, only a node's own lines compare.
        early = [
            (q, p)
            for q, p in prepared.items()
            if p.prepared_ts >= 0
            and commit.ts >= 0
            and p.prepared_ts > commit.ts
            and q in {self.node_of.get(a) for a in listed}
            and (self.shared_clock or q == node)
        ]
        for q, p in early:
            self.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} before {q} voted yes on it",
                commit.cite(),
                p.prepared_cite(),
            )
        begin = self.begins.get(txid)
        if begin is not None and begin[0] != commit.value:
            self.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} with value {commit.value}, but its client proposed {begin[0]}",
                begin[1].cite(begin[2]),
                commit.cite(),
            )

    def cite_record(self, node: str, txid: str | None) -> list[str]:
        """The log line that shows ``node``'s last record of ``txid``, if any."""
        track = self.tracks[node].get(txid) if txid else None
        return [track.last.cite()] if track is not None else []

    def cite_commit(self, node: str, txid: str | None) -> list[str]:
        """The log line where ``node`` made ``txid`` committed, if any."""
        track = self.tracks[node].get(txid) if txid else None
        return [track.committed.cite()] if track is not None and track.committed is not None else []

    def check_clients(self) -> int:
        """Clients told the truth; returns how many transactions were abandoned
        (begun by a client that died before it could report)."""
        committed_at: dict[str, set[str]] = defaultdict(set)
        for node, seq in self.stored.items():
            for txid, _, _ in seq:
                committed_at[txid].add(node)
            # What compaction dropped from the store, its log shows committed
            # (and check_replicas holds the store's count of them to the log's).
            tracks = self.tracks[node]
            for txid in self.forgotten[node]:
                if (track := tracks.get(txid)) is not None and track.state == "committed":
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
                    ViolationKind.CLIENT_TRUTH,
                    txid,
                    f"client was told {txid} committed, but it is not committed at {missing}",
                    log.cite(at),
                    *self._evidence(txid),
                )
            elif result == "aborted" and here:
                self.flag(
                    ViolationKind.CLIENT_TRUTH,
                    txid,
                    f"client was told {txid} aborted, but it is committed at {', '.join(sorted(here))}",
                    log.cite(at),
                    *self._evidence(txid),
                )
            elif result == "unknown" and here and here != everyone:
                self.flag(
                    ViolationKind.CLIENT_TRUTH,
                    txid,
                    f"{txid} (outcome unknown to its client) is committed at {', '.join(sorted(here))} only",
                    log.cite(at),
                    *self._evidence(txid),
                )
            elif result not in ("committed", "aborted", "unknown"):
                self.flag(ViolationKind.BAD_LOG_LINE, txid, f"{log.where(at)}: unknown result {result!r}", log.cite(at))
        return len(abandoned)

    def _evidence(self, txid: str) -> list[str]:
        return [o.cite() for o in self._final(txid).values()]
