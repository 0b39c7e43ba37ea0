"""The checker reads a participant's log: its records' observations, and the rules that need the log's order.

Theory of operation. A participant's log is read once, in order
(harness.verify.reader.LogReader.participant_lines). Every "durable" or
"restored" line is an observation of one transaction's record; what the later
rules need of it (harness.verify.checker: agreement, validity, the stores)
goes into the participant's columns (harness.verify.columns.Tracks), written
in place in the loop, without calls: a long run has hundreds of thousands of
such lines and this loop is most of the checker's own time. The rules that
need the order of the log are checked here, as it is read:

* stability (AC2): each record moves only forward (none -> prepared ->
  committed | aborted, or none -> aborted);
* a yes vote, a NOK or an OUTCOME is sent only once what it says is durable
  (docs/protocol.md, and the Cornus argument: an abort recorded for RESOLVE
  must survive a crash); but "committed" may be said once the yes vote is
  durable (a lazy commit: the votes decided it, and a restart learns it again
  from the peers);
* one lock: no second transaction prepared while another is;
* at each restart, every record made durable before it is restored, the same
  or further along its path (nothing durable, and so maybe acknowledged, is
  ever lost or changed); with compaction, only decided records are forgotten.
"""

from __future__ import annotations

from typing import Protocol

from harness.events.schema import COMPACTED, FORGOTTEN
from harness.protocol.messages import FORGOTTEN as FORGOTTEN_REASON
from harness.protocol.participant import parse_txid
from harness.verify.columns import ABORTED, COMMITTED, INT_MARK, PREPARED, Codes, Tracks, TxIds
from harness.verify.model import ReplicaStats, Violation, ViolationKind
from harness.verify.reader import LogReader, Observation

# States a participant's record may move through, as the logs spell them.
NEXT: dict[str | None, set[str]] = {
    None: {"prepared", "aborted"},
    "prepared": {"committed", "aborted"},
    "committed": set(),
    "aborted": set(),
}
# A state's bit in Tracks.seen, and the states whose record makes a claim true:
# "prepared" may be said once committed (a late duplicate PREPARE), and
# "committed" once prepared (a lazy commit: the votes decided it).
_STATE_BIT = {"prepared": 1, "committed": 2, "aborted": 4}
_SAYS = {"prepared": 1 | 2, "committed": 2 | 1, "aborted": 4}
# NEXT by state code (harness.verify.columns: 0 is no record); a code not here moves nowhere.
_NEXT_CODE: dict[int, tuple[int, ...]] = {0: (PREPARED, ABORTED), PREPARED: (COMMITTED, ABORTED)}
# The "why" of a decision a participant reached with its peers, not its client.
_BY_PEERS_PREFIXES = ("every participant voted yes", "peer ")


class RecordChecker(Protocol):
    """What of the checker (harness.verify.checker) reading a participant's log uses."""

    ids: TxIds
    states: Codes
    reader: LogReader
    tracks: dict[str, Tracks]
    replicas: dict[str, ReplicaStats]
    stability: list[Violation]  # found while reading, reported with the other record rules
    longest_lock: tuple[float, str | None, str | None]
    resolved_by_peers: set[str]
    parts: list[tuple[str, ...]]  # each distinct participants list, once
    parts_index: dict[tuple[str, ...], int]

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None: ...


def read_participant(c: RecordChecker, node: str) -> None:
    """Read ``node``'s log into its tracks, and flag what breaks the rules above."""
    stats = c.replicas[node]
    log = c.reader.log(node)
    if log is None:
        return
    tracks = c.tracks[node]
    tracks.log = log
    ids, index, codes = c.ids, c.ids.index, c.states.index
    durable = tracks.durable  # txid -> its last observation before this start (a dict, in columns)
    # The columns, held here: they grow in place (Tracks.ensure), so these stay theirs.
    t_state, t_order, t_seen = tracks.state, tracks.order, tracks.seen
    t_first_at, t_last_at, t_prepared_at, t_committed_at = (
        tracks.first_at,
        tracks.last_at,
        tracks.prepared_at,
        tracks.committed_at,
    )
    t_prepared_ts, t_last_value, t_last_version = tracks.prepared_ts.data, tracks.last_value, tracks.last_version
    d_state, d_at, d_pos, d_seq = durable.state, durable.at, durable.pos, durable.seq
    d_value, d_version = durable.value, durable.version
    restored: dict[str, Observation] = {}  # this start's dump of its storage
    locked: dict[str, int] = {}  # txid -> its prepared line, while undecided
    prepared_ts: dict[str, int] = {}  # txid -> when it was prepared (micros)
    marks: dict[str, int] = {}  # this start's compaction marks ("compacted", before "listening")
    for what, at, txid, claim, o in c.reader.participant_lines(log):
        if o is not None:  # a record: most lines read
            i = found if (found := index.get(txid)) is not None else ids.id(txid)
            if i >= tracks.size:
                tracks.ensure(i, len(ids))
            code = codes.get(o.state) or c.states.code(o.state)
            # Stability, as the observations come in; then the columns (Tracks).
            state = t_state[i]
            if code != state:  # the first observation of its current state
                if code not in _NEXT_CODE.get(state, ()):
                    _moved(c, node, tracks, i, state, o)
                if not state:
                    t_order.append(i)
                t_state[i] = code
                t_first_at[i] = at
                if code == COMMITTED:
                    _first_commit(c, tracks, i, o)
            t_last_at[i] = at
            if code == PREPARED:
                t_seen[i] |= 1
                if not t_prepared_at[i]:
                    t_prepared_at[i] = at
                    if 0 <= o.ts < INT_MARK:
                        t_prepared_ts[i] = o.ts
                    else:
                        tracks.prepared_ts.put(i, o.ts)
            elif code == COMMITTED:
                t_seen[i] |= 2
                if not t_committed_at[i]:
                    t_committed_at[i] = at
                value, version = o.value, o.version  # what the store is held to
                if 0 <= value < INT_MARK and 0 <= version < INT_MARK:
                    t_last_value.data[i], t_last_version.data[i] = value, version
                else:
                    t_last_value.put(i, value)
                    t_last_version.put(i, version)
            elif code == ABORTED:
                t_seen[i] |= 4
            if what == "restored":
                restored[txid] = o
                continue
            # durable[txid] = o (Durable.put, without the call)
            if not d_pos[i]:
                d_seq.append(i)
                d_pos[i] = len(d_seq)
            d_state[i], d_at[i] = code, at
            value, version = o.value, o.version
            if 0 <= value < INT_MARK and 0 <= version < INT_MARK:
                d_value.data[i], d_version.data[i] = value, version
            else:
                d_value.put(i, value)
                d_version.put(i, version)
            if code == PREPARED:
                if locked:
                    _check_lock(c, node, txid, locked, o)
                locked[txid] = at
                prepared_ts.setdefault(txid, o.ts)
                continue
            locked.pop(txid, None)
            if txid in prepared_ts:
                since = prepared_ts.pop(txid)
                held = (o.ts - since) / 1e6 if since >= 0 and o.ts >= 0 else 0.0
                if held > c.longest_lock[0]:
                    c.longest_lock = (held, node, ids.names[i])
            if o.why.startswith(_BY_PEERS_PREFIXES):
                c.resolved_by_peers.add(ids.names[i])
            continue
        if (what == "VOTE" or what == "OUTCOME") and claim != FORGOTTEN_REASON:
            # What a participant says of a record must have been durable first
            # (a yes vote, a NOK, an OUTCOME), or a crash could unsay it.
            if what == "VOTE":
                if claim == "prepared":
                    stats.yes_votes += 1
                else:
                    stats.no_votes += 1
            said_id = index.get(txid)
            if not (t_seen[said_id] if said_id is not None and said_id < tracks.size else 0) & _SAYS.get(claim, 0):
                _unsaid(c, node, txid, claim, log.cite(at))
            continue
        if what == COMPACTED.name:
            for mark in filter(None, txid.split(",")):
                client, _, seq = mark.rpartition(":")
                marks[client] = int(seq) if seq.isdigit() else -1
            continue
        if what == "listening":  # a start
            if marks:
                _forgotten_unlogged(c, tracks, restored, marks)
                marks = {}
            stats.restarts += 1
            if stats.restarts > 1:
                _check_restart(c, node, tracks, restored, at)
            for t, r in restored.items():
                durable.put(ids.id(t), c.states.code(r.state), r.at, r.value, r.version)
            locked = {ids.names[i]: durable.at[i] for i in durable.rows() if durable.state[i] == PREPARED}
            if len(locked) > 1:
                c.flag(
                    ViolationKind.LOCK,
                    next(iter(locked)),
                    f"{node} restarted holding its lock for {len(locked)} transactions: {', '.join(sorted(locked))}",
                    *[log.cite(h) for h in locked.values()],
                )
            restored = {}
            continue
        if what == FORGOTTEN.name:  # compaction (--compact): records dropped, decided ones only
            for t in filter(None, txid.split(",")):  # none: a rejoin's marks alone
                i = ids.id(t)
                tracks.ensure(i, len(ids))
                gone = durable.pop(i)
                if gone is None or gone[0] == PREPARED:
                    how = "while prepared on it" if gone else "with no durable record of it"
                    c.flag(ViolationKind.LOST, t, f"{node} forgot {t} {how}", log.cite(at))
                tracks.forgot[i] = 1
            continue
        if claim == FORGOTTEN_REASON:  # a NOK for a forgotten txid claims no record, but none may be held
            stats.no_votes += 1
            if durable.has(held_id := ids.get(txid)):
                assert held_id is not None
                c.flag(
                    ViolationKind.DURABILITY,
                    txid,
                    f"{node} said it forgot {txid} while it holds a record of it",
                    log.cite(durable.at[held_id]),
                    log.cite(at),
                )
            continue
        # Any other line read (none today) is judged as what it says.
        said_id = index.get(txid)
        if not (t_seen[said_id] if said_id is not None and said_id < tracks.size else 0) & _SAYS.get(claim, 0):
            _unsaid(c, node, txid, claim, log.cite(at))
    stats.restarts = max(0, stats.restarts - 1)


def _unsaid(c: RecordChecker, node: str, txid: str, claim: str, line: str) -> None:
    """``node`` said ``claim`` of ``txid`` (the line cited) before it was durable."""
    said = {"prepared": "a yes vote", "aborted": "an abort"}.get(claim, f"state {claim}")
    c.flag(ViolationKind.DURABILITY, txid or None, f"{node} sent {said} on {txid} before making it durable", line)


def _moved(c: RecordChecker, node: str, tracks: Tracks, i: int, state: int, o: Observation) -> None:
    """A record moved where NEXT does not let it: from ``state`` (a code) to ``o``'s."""
    txid, was = c.ids.names[i], c.states.names[state]
    evidence = (o.cite(),) if was is None else (tracks.cite(tracks.first_at[i]), o.cite())
    message = f"{node} moved {txid} from {'no record' if was is None else was} to {o.state}"
    c.stability.append(Violation(ViolationKind.STABILITY, txid, message, evidence))


def _first_commit(c: RecordChecker, tracks: Tracks, i: int, o: Observation) -> None:
    """What validity reads of the commit ``o`` (the first committed observation of txid ``i``)."""
    tracks.first_ts.put(i, o.ts)
    tracks.first_value.put(i, o.value)
    if (p := c.parts_index.get(o.participants)) is None:
        p = c.parts_index[o.participants] = len(c.parts)
        c.parts.append(o.participants)
    tracks.first_parts[i] = p


def _check_lock(c: RecordChecker, node: str, txid: str, locked: dict[str, int], o: Observation) -> None:
    """One lock: ``txid`` is prepared (``o``) while no other transaction holds it."""
    holders = [(t, h) for t, h in locked.items() if t != txid]
    if holders:
        holder, h = holders[0]
        c.flag(
            ViolationKind.LOCK, txid, f"{node} prepared {txid} while {holder} held its lock", o.log.cite(h), o.cite()
        )


def _forgotten_unlogged(
    c: RecordChecker, tracks: Tracks, restored: dict[str, Observation], marks: dict[str, int]
) -> None:
    """At a start: a record durable before it, decided, missing from the
    store now and at or below its client's mark was forgotten, though the
    process died before its "forgotten" line (the store's write comes
    first). Anything else missing stays for _check_restart to judge."""
    durable = tracks.durable
    for i in durable.rows():
        t = c.ids.names[i]
        if t in restored or durable.state[i] == PREPARED or (parsed := parse_txid(t)) is None:
            continue
        if parsed[1] <= marks.get(parsed[0], -1):
            durable.pop(i)
            tracks.forgot[i] = 1


def _check_restart(c: RecordChecker, node: str, tracks: Tracks, restored: dict[str, Observation], at: int) -> None:
    """Every record made durable before the start logged at ``at`` is restored
    by it, as it was or further along its path."""
    durable = tracks.durable
    for i in durable.rows():
        txid = c.ids.names[i]
        code, o_at, value, version = durable.entry(i)
        state = c.states.names[code]
        r = restored.get(txid)
        # A record may have moved forward after its last "durable" line (a
        # SIGKILL can fall between the fsync and the log line), never back. A
        # state of no path moves nowhere (its line is flagged where it was read).
        if r is None or (r.state != state and r.state not in NEXT.get(state, ())):
            now = f"as {r.state}" if r is not None else "without it"
            c.flag(
                ViolationKind.LOST,
                txid,
                f"{node} restarted {now}, after making {txid} durable as {state}",
                tracks.cite(o_at),
                tracks.cite(at),
            )
        elif r.state == state and (r.value, r.version) != (value, version):
            c.flag(
                ViolationKind.STABILITY,
                txid,
                f"{node} restored {txid} ({r.state}) with value {r.value} version "
                f"{r.version}, having made it durable with value {value} version {version}",
                tracks.cite(o_at),
                r.cite(),
            )
