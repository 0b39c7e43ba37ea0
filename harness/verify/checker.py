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

Each participant's log is read in order by harness.verify.records (the rules
that need the order: stability, durability before saying, the lock,
restarts), each client's here; the stores are judged by
harness.verify.stores. What is remembered of every transaction until the
cross-checks lives in typed columns over txid numbers
(harness.verify.columns): a long run has hundreds of thousands, and as
objects they were most of the checker's memory.
"""

from __future__ import annotations

import gc
import json
from array import array
from itertools import chain
from pathlib import Path
from typing import Any

from harness.events.log import typed_fields
from harness.events.schema import FAULT, HEAL, EventKind
from harness.protocol.messages import NokCode
from harness.verify.columns import (
    ABORTED,
    COMMITTED,
    INT_MARK,
    STATES,
    Begins,
    Codes,
    Committed,
    Outcomes,
    Tracks,
    TxIds,
)
from harness.verify.databases import postmaster_restarts, resolver_decisions
from harness.verify.interrupted import excuse_interrupted
from harness.verify.model import CheckError, CheckReport, ClientStats, ReplicaStats, Violation, ViolationKind
from harness.verify.reader import CLIENT_LOG, NEMESIS_LOG, LogReader
from harness.verify.records import read_participant
from harness.verify.stores import check_replicas, parse_storage

_RESULTS = ("committed", "aborted", "unknown")  # what a client may be told (codes in Outcomes.result)


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
    # The checker builds millions of small objects (a match, its fields, an
    # observation per line read) and none makes a cycle: the cyclic garbage
    # collector would only scan them again.
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
        # Every txid numbered once; what is kept of each is in columns over these numbers.
        self.ids = TxIds()
        self.states = Codes(*STATES)
        self.results = Codes(*_RESULTS)
        self.parts: list[tuple[str, ...]] = []  # each distinct participants list, once
        self.parts_index: dict[tuple[str, ...], int] = {}
        self._listed_cache: dict[int, tuple[tuple[str, ...], bool, list[str]]] = {}
        # Each store's records, parsed before the logs are read (their JSON form is freed).
        self.parsed_stores = {node: parse_storage(final.get(node), self.ids) for node, _ in participants}
        self.violations: list[Violation] = []
        self.reader = LogReader(folder, self.violations)
        # participant node -> what the rules need of its observations, per txid
        self.tracks: dict[str, Tracks] = {node: Tracks() for node, _ in participants}
        self.stability: list[Violation] = []  # found while reading, reported with the other record rules
        self.replicas = {node: ReplicaStats(node=node, address=address) for node, address in participants}
        self.begins = Begins(self.ids)
        self.outcomes = Outcomes()
        self.clients = {name: ClientStats(name=name) for name in clients}
        self.longest_lock: tuple[float, str | None, str | None] = (0.0, None, None)
        self.resolved_by_peers: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.stored: dict[str, Committed] = {}  # node -> its store's committed records
        # Participants that are databases (--backend postgres): no event log of
        # their own; their records are what final_states.json read from them.
        self.databases = {n for n, e in final.items() if isinstance(e, dict) and e.get("backend") == "postgres"}

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None:
        self.violations.append(Violation(kind, txid, message, tuple(evidence)))

    # ------------------------------------------------------------ reading

    def read(self) -> None:
        for node, _ in self.participants:
            if node not in self.databases:
                read_participant(self, node)
        for name in self.client_names:
            self._read_client(name)

    def _read_client(self, name: str) -> None:
        cstats = self.clients[name]
        log = self.reader.log(name)
        if log is None:
            return
        ids, index, begins, results = self.ids, self.ids.index, self.begins, self.results
        begun = begins.at  # 0: not begun (yet)
        # The outcome columns, appended to without calls: a client's log has one outcome per transaction.
        out_id, out_result = self.outcomes.ids.append, self.outcomes.result.append
        out_log, out_at = self.outcomes.log.append, self.outcomes.at.append
        li = len(begins.logs)
        begins.logs.append(log)
        latencies = array("d")
        last_outcome = None
        for event, f, at, ts in self.reader.events(log, CLIENT_LOG):
            try:
                txid = f["txid"]
                i = found if (found := index.get(txid)) is not None else ids.id(txid)
                if event == "begin":
                    if cstats.first_begin is None:
                        cstats.first_begin = ts
                    if i < len(begun) and begun[i]:
                        _, first, first_at = begins.line(i)
                        self.flag(
                            ViolationKind.TXID_REUSED,
                            txid,
                            f"txid {txid} was begun twice",
                            first.cite(first_at),
                            log.cite(at),
                        )
                    begins.put(i, int(f["value"]), li, at)
                    continue
                result = f["result"]
                last_outcome = ts
                out_id(i)
                out_result(results.index.get(result) or results.code(result))
                out_log(li)
                out_at(at)
                cstats.attempted += 1
                if int(f.get("attempt", "1")) > 1:
                    cstats.retries += 1
                if "latency_ms" in f:
                    latencies.append(float(f["latency_ms"]))
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
        cstats.latencies_ms = latencies
        if last_outcome is not None:
            cstats.last_outcome = last_outcome

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
        self.violations += self.stability
        for node, tracks in self.tracks.items():
            stats = self.replicas[node]
            stats.commits += tracks.state.count(COMMITTED)
            stats.aborts += tracks.state.count(ABORTED)
        seen = bytearray(len(self.ids))
        # (node, its tracks, their state column, its size) for each participant: read in place, without calls
        everywhere = [(n, t, t.state, t.size) for n, t in self.tracks.items()]
        for tracks in self.tracks.values():
            for i in tracks.order:
                if seen[i]:
                    continue
                seen[i] = 1
                committed: list[tuple[str, Tracks]] = []
                aborted: tuple[str, Tracks] | None = None
                for n, at_n, state, size in everywhere:
                    if i < size:
                        code = state[i]
                        if code == COMMITTED:
                            committed.append((n, at_n))
                        elif code == ABORTED and aborted is None:
                            aborted = (n, at_n)
                if not committed:
                    continue
                txid = self.ids.names[i]
                if aborted is not None:
                    (c_node, c), (a_node, a) = committed[0], aborted
                    self.flag(
                        ViolationKind.AGREEMENT,
                        txid,
                        f"{txid} committed at {c_node} but aborted at {a_node}",
                        c.cite(c.first_at[i]),
                        a.cite(a.first_at[i]),
                    )
                prepared = {n: t for n, t, state, size in everywhere if i < size and state[i] and t.prepared_at[i]}
                for node, at_node in committed:
                    self._check_validity(txid, i, node, at_node, prepared)

    def _check_validity(self, txid: str, i: int, node: str, tracks: Tracks, prepared: dict[str, Tracks]) -> None:
        """``tracks``: ``node``'s, where txid ``i`` is committed (its first committed
        observation is the commit); ``prepared``: node -> its tracks, for the nodes
        where it was prepared."""
        listed, known, nodes = self._listed(tracks.first_parts[i])
        if not known:
            self.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} for participants {','.join(listed) or '(none)'}, not the run's participants",
                tracks.cite(tracks.first_at[i]),
            )
        missing = [n for n in nodes if n not in prepared]
        if missing:
            self.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} but {', '.join(missing)} never voted yes on it",
                tracks.cite(tracks.first_at[i]),
            )
        # Order, not only existence: the commit point is the last yes vote, so a
        # commit logged before some participant's durable yes came too early.
        # One clock serves every process of a run, and causality orders these
        # lines: a vote is logged durable before it is sent, a commit after.
        # With a clock per host, only a node's own lines compare.
        commit_ts = tracks.first_ts.data[i]
        if commit_ts == INT_MARK:
            commit_ts = tracks.first_ts.get(i)
        if commit_ts >= 0:
            for q, p in prepared.items():
                if (voted_ts := p.prepared_ts.data[i]) == INT_MARK:
                    voted_ts = p.prepared_ts.get(i)
                if voted_ts > commit_ts and q in nodes and (self.shared_clock or q == node):
                    self.flag(
                        ViolationKind.VALIDITY,
                        txid,
                        f"{node} committed {txid} before {q} voted yes on it",
                        tracks.cite(tracks.first_at[i]),
                        p.cite(p.prepared_at[i]),
                    )
        begins = self.begins
        if i < len(begins.at) and begins.at[i]:
            if begins.value.data[i] == tracks.first_value.data[i] != INT_MARK:
                return
            proposed, log, at = begins.line(i)
            value = tracks.first_value.get(i)
            if proposed != value:
                self.flag(
                    ViolationKind.VALIDITY,
                    txid,
                    f"{node} committed {txid} with value {value}, but its client proposed {proposed}",
                    log.cite(at),
                    tracks.cite(tracks.first_at[i]),
                )

    def _listed(self, p: int) -> tuple[tuple[str, ...], bool, list[str]]:
        """A commit's participants list (self.parts[p]); whether it is not empty and
        names only the run's participants; the nodes it names, in its order (once per list)."""
        if (found := self._listed_cache.get(p)) is None:
            listed = self.parts[p]
            known = bool(listed) and all(a in self.node_of for a in listed)
            found = self._listed_cache[p] = (listed, known, [self.node_of[a] for a in listed if a in self.node_of])
        return found

    def cite_record(self, node: str, txid: str | None) -> list[str]:
        """The log line that shows ``node``'s last record of ``txid``, if any."""
        tracks, i = self.tracks[node], self.ids.get(txid) if txid else None
        return [tracks.cite(tracks.last_at[i])] if i is not None and tracks.code(i) else []

    def cite_commit(self, node: str, txid: str | None) -> list[str]:
        """The log line where ``node`` made ``txid`` committed, if any."""
        tracks, i = self.tracks[node], self.ids.get(txid) if txid else None
        if i is None or not tracks.code(i) or not tracks.committed_at[i]:
            return []
        return [tracks.cite(tracks.committed_at[i])]

    def check_clients(self) -> int:
        """Clients told the truth; returns how many transactions were abandoned
        (begun by a client that died before it could report)."""
        # Where each txid is committed, a bit per participant whose storage could
        # be read (the others are flagged already): judge only by those.
        nodes = list(self.stored)
        n = len(self.ids)
        here: array[int] | list[int] = array("Q", bytes(8 * n)) if len(nodes) <= 64 else [0] * n
        for b, (node, seq) in enumerate(self.stored.items()):
            bit = 1 << b
            for i in seq.ids:
                here[i] |= bit
            # What compaction dropped from the store, its log shows committed
            # (and check_replicas holds the store's count of them to the log's).
            tracks = self.tracks[node]
            if tracks.forgot.count(1):
                for i, gone in enumerate(tracks.forgot):
                    if gone and tracks.state[i] == COMMITTED:
                        here[i] |= bit
        everyone = (1 << len(nodes)) - 1
        outcomes, begins = self.outcomes, self.begins
        reported = bytearray(n)
        for i in outcomes.ids:
            reported[i] = 1
        # A client that died mid-transaction told nobody anything: like UNKNOWN,
        # the transaction may go either way, but atomically.
        abandoned = [i for i in begins.order if not reported[i]]
        for i in abandoned:
            client = self.clients.get(begins.logs[begins.log[i]].node)
            if client is not None:
                client.abandoned += 1
        unknown = self.results.code("unknown")
        judged = zip(outcomes.ids, outcomes.result, outcomes.log, outcomes.at, strict=True)
        lines = ((i, unknown, begins.log[i], begins.at[i]) for i in abandoned)
        committed, aborted = self.results.index["committed"], self.results.index["aborted"]
        for i, result, li, at in chain(judged, lines):
            mask = here[i]
            if result == committed:
                if mask == everyone:
                    continue
                log = begins.logs[li]
                txid = self.ids.names[i]
                missing = ", ".join(sorted(nd for b, nd in enumerate(nodes) if not mask >> b & 1))
                message = f"client was told {txid} committed, but it is not committed at {missing}"
            elif result in (aborted, unknown):
                if not mask or (result == unknown and mask == everyone):
                    continue
                log = begins.logs[li]
                txid = self.ids.names[i]
                where = ", ".join(sorted(nd for b, nd in enumerate(nodes) if mask >> b & 1))
                message = (
                    f"client was told {txid} aborted, but it is committed at {where}"
                    if result == aborted
                    else f"{txid} (outcome unknown to its client) is committed at {where} only"
                )
            else:
                log = begins.logs[li]
                txid = self.ids.names[i]
                self.flag(
                    ViolationKind.BAD_LOG_LINE,
                    txid,
                    f"{log.where(at)}: unknown result {self.results.names[result]!r}",
                    log.cite(at),
                )
                continue
            self.flag(ViolationKind.CLIENT_TRUTH, txid, message, log.cite(at), *self._evidence(i))
        return len(abandoned)

    def _evidence(self, i: int) -> list[str]:
        """The first observation of txid ``i``'s final state at every participant that knows it."""
        return [tracks.cite(tracks.first_at[i]) for tracks in self.tracks.values() if tracks.code(i)]
