"""The properties a simulated run or an explored state must keep, and TCommit.

Theory of operation. What a participant has promised or decided is its
*durable* record of the transaction (what survives a crash); a transaction's
view is the tuple of those states, one per participant (None = no record).
Every change of a durable record and every report to a user is judged at the
moment it happens, against the views just before it:

* AC2 stability: a durable record only moves forward: none -> prepared |
  committed | aborted, prepared -> committed | aborted; a decision never changes.
* AC3 validity: a participant commits only when every participant has durably
  voted yes (each is prepared or committed).
* AC1 agreement: no transaction is committed at one participant and aborted at
  another.
* truth: a user told COMMITTED is told so only once every participant has
  durably voted yes, and then no participant ever aborts; a user told ABORTED
  never sees a participant commit.
* refinement: the change maps to a step of Gray and Lamport's TCommit (one
  resource manager's Prepare or Decide) or to no change. The mapping is the
  view itself: none -> working, prepared, committed, aborted.
* lock exclusion: a participant never holds two transactions prepared at
  once (judged on its durable records, after each write).
* AC4 non-triviality: a transaction that met no fault and no conflict is
  reported COMMITTED. The caller decides what "no fault, no conflict" means
  for its model (the simulator and the explorer say it in their docstrings).
* codec: every message decodes (harness.protocol.messages) to what was encoded.
* membership: a PREPARE whose participant list is not the cluster (a subset,
  or one naming an outsider), from someone outside it, changes nothing at the
  participant it reaches: no record, no lock, no timer, nothing sent to a peer
  (the core refuses it with ERROR not-cluster).
* compaction: only a decided record is forgotten, and once forgotten its txid
  stays at or below its client's durable mark (so it is answered "forgotten",
  never anew); the durable summary counts what left the store.

Once faults stop and the system is quiet (:func:`check_quiescent`): every
transaction is decided at every participant that knows of it, a commit is
everywhere, no lock is held, every live client finished, and the replicas are
identical (storage_server, version and committed sequence).

The rule this module keeps: pure functions of views and cores, shared by the
simulator and the explorer, so both judge by the same words.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence

from harness.protocol.coordinator import Result
from harness.protocol.messages import TxState
from harness.protocol.participant import ParticipantCore, Summary, TxRecord, parse_txid
from harness.sim.model import PropertyViolation

View = tuple[TxState | None, ...]

AC1 = "AC1 agreement"
AC2 = "AC2 stability"
AC3 = "AC3 validity"
TRUTH = "client told the truth"
REFINEMENT = "refinement of TCommit"
LIVENESS = "liveness"
LOCK = "lock exclusion"
AC4 = "AC4 non-triviality"
CODEC = "codec round trip"
MEMBERSHIP = "membership"
REPLICAS = "identical replicas"
DEADLOCK = "no deadlock"
COMPACTION = "compaction"

# Gray and Lamport, "Consensus on Transaction Commit" (2004), TCommit.tla with
# RM = {r1, r2, r3}: TLC reports 34 distinct states. Tests enumerate our model
# of TCommit and compare with this published figure.
TCOMMIT_STATES_FOR_3_RMS = 34


# ====================================================================== TCommit


class RM(enum.Enum):
    """TCommit's rmState values."""

    WORKING = "working"
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


TCState = tuple[RM, ...]

RM_OF: dict[TxState | None, RM] = {
    None: RM.WORKING,
    TxState.PREPARED: RM.PREPARED,
    TxState.COMMITTED: RM.COMMITTED,
    TxState.ABORTED: RM.ABORTED,
}


def tcommit_init(rms: int) -> TCState:
    """TCInit: every resource manager working."""
    return (RM.WORKING,) * rms


def tcommit_next(state: TCState) -> Iterator[tuple[str, TCState]]:
    """TCNext: every (action name, successor) of ``state``.

    Prepare(rm): working -> prepared. Decide(rm): prepared -> committed if
    canCommit (all prepared or committed); working or prepared -> aborted if
    notCommitted (none committed)."""
    can_commit = all(s is RM.PREPARED or s is RM.COMMITTED for s in state)
    not_committed = all(s is not RM.COMMITTED for s in state)
    for i, s in enumerate(state):
        if s is RM.WORKING:
            yield f"Prepare(r{i + 1})", (*state[:i], RM.PREPARED, *state[i + 1 :])
        if s is RM.PREPARED and can_commit:
            yield f"Decide(r{i + 1}, commit)", (*state[:i], RM.COMMITTED, *state[i + 1 :])
        if (s is RM.WORKING or s is RM.PREPARED) and not_committed:
            yield f"Decide(r{i + 1}, abort)", (*state[:i], RM.ABORTED, *state[i + 1 :])


def tcommit_reachable(rms: int) -> set[TCState]:
    """Every state of TCommit reachable from TCInit (breadth-first)."""
    start = tcommit_init(rms)
    seen = {start}
    frontier = [start]
    while frontier:
        nxt = []
        for state in frontier:
            for _, succ in tcommit_next(state):
                if succ not in seen:
                    seen.add(succ)
                    nxt.append(succ)
        frontier = nxt
    return seen


def tcommit_step(before: View, after: View) -> str | None:
    """The TCommit action that maps ``before`` to ``after`` ("stutter" when
    unchanged), or None when no TCommit action does."""
    a, b = tuple(RM_OF[s] for s in before), tuple(RM_OF[s] for s in after)
    if a == b:
        return "stutter"
    for name, succ in tcommit_next(a):
        if succ == b:
            return name
    return None


# ====================================================================== per step

_FORWARD: dict[TxState | None, frozenset[TxState]] = {
    None: frozenset(TxState),
    TxState.PREPARED: frozenset(TxState),
    TxState.COMMITTED: frozenset({TxState.COMMITTED}),
    TxState.ABORTED: frozenset({TxState.ABORTED}),
}

_YES = (TxState.PREPARED, TxState.COMMITTED)


def _state(s: TxState | None) -> str:
    return s.value if s is not None else "no record"


def check_persist(
    txid: str, names: Sequence[str], before: View, i: int, new: TxState, reported: Result | None
) -> list[PropertyViolation]:
    """Judge participant ``i`` durably writing ``new`` for ``txid``, given the
    view just before and what the user was told (if anything)."""
    old = before[i]
    after = (*before[:i], new, *before[i + 1 :])
    out: list[PropertyViolation] = []
    who = names[i]
    if new not in _FORWARD[old]:
        out.append(
            PropertyViolation(rule=AC2, detail=f"{who}'s durable state of {txid} went {_state(old)} -> {new.value}")
        )
    if new is TxState.COMMITTED and old is not TxState.COMMITTED:
        missing = [f"{names[j]} ({_state(s)})" for j, s in enumerate(before) if s not in _YES]
        if missing:
            out.append(
                PropertyViolation(
                    rule=AC3,
                    detail=f"{who} commits {txid} but not every participant durably voted yes: {', '.join(missing)}",
                )
            )
    if TxState.COMMITTED in after and TxState.ABORTED in after:
        c = ",".join(names[j] for j, s in enumerate(after) if s is TxState.COMMITTED)
        a = ",".join(names[j] for j, s in enumerate(after) if s is TxState.ABORTED)
        out.append(PropertyViolation(rule=AC1, detail=f"{txid} is committed at {c} and aborted at {a}"))
    if reported is Result.ABORTED and new is TxState.COMMITTED:
        out.append(PropertyViolation(rule=TRUTH, detail=f"the user was told {txid} ABORTED, but {who} commits it"))
    if reported is Result.COMMITTED and new is TxState.ABORTED:
        out.append(PropertyViolation(rule=TRUTH, detail=f"the user was told {txid} COMMITTED, but {who} aborts it"))
    if tcommit_step(before, after) is None:
        b = ",".join(RM_OF[s].value for s in before)
        a = ",".join(RM_OF[s].value for s in after)
        out.append(PropertyViolation(rule=REFINEMENT, detail=f"{txid}: <{b}> -> <{a}> is no TCommit action"))
    return out


def check_report(txid: str, names: Sequence[str], view: View, result: Result, client: str) -> list[PropertyViolation]:
    """Judge a client telling its user ``result``, given the durable view now."""
    if result is Result.COMMITTED:
        missing = [f"{names[j]} ({_state(s)})" for j, s in enumerate(view) if s not in _YES]
        if missing:
            return [
                PropertyViolation(
                    rule=TRUTH,
                    detail=f"{client} reports {txid} COMMITTED before every participant durably voted yes: "
                    + ", ".join(missing),
                )
            ]
    if result is Result.ABORTED:
        committed = [names[j] for j, s in enumerate(view) if s is TxState.COMMITTED]
        if committed:
            return [
                PropertyViolation(
                    rule=TRUTH, detail=f"{client} reports {txid} ABORTED but it is committed at {','.join(committed)}"
                )
            ]
    return []


def check_lock(name: str, prepared: Sequence[str]) -> list[PropertyViolation]:
    """Judge participant ``name`` whose durable records hold ``prepared``
    (the txids in state PREPARED) after a write."""
    if len(prepared) > 1:
        return [
            PropertyViolation(
                rule=LOCK, detail=f"{name} holds {len(prepared)} transactions prepared: " + ", ".join(sorted(prepared))
            )
        ]
    return []


# One wait (wait-die): at participant ``where``, transaction ``waiter`` waits for the lock ``holder`` holds.
Wait = tuple[str, str, str]


def waits_of(name: str, core: ParticipantCore) -> list[Wait]:
    """The waits at participant ``name``: each queued PREPARE waits for the lock's holder."""
    if not core.waiting or core.lock is None:
        return []
    return [(name, txid, core.lock) for txid in sorted(core.waiting)]


def check_waits(waits: Sequence[Wait]) -> list[PropertyViolation]:
    """Judge the waits at every participant at one moment: no cycle of
    transactions each waiting for the next (a deadlock, which wait-die rules out)."""
    if len(waits) < 2:
        return []
    edges: dict[str, list[tuple[str, str]]] = {}  # waiter -> (where, holder), one per place it waits
    for where, waiter, holder in waits:
        edges.setdefault(waiter, []).append((where, holder))
    for start in sorted(edges):
        found = _cycle(edges, start, [])
        if found:
            detail = "; ".join(f"{t} waits at {w} for {h}" for t, w, h in found)
            return [PropertyViolation(rule=DEADLOCK, detail=f"a cycle of waits: {detail}")]
    return []


def _cycle(
    edges: Mapping[str, list[tuple[str, str]]], node: str, path: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]] | None:
    """A cycle of waits back to the first transaction of ``path`` (or ``node``), depth first."""
    first = path[0][0] if path else node
    for where, holder in edges.get(node, []):
        step = [*path, (node, where, holder)]
        if holder == first:
            return step
        if holder not in {t for t, _, _ in step}:
            found = _cycle(edges, holder, step)
            if found:
                return found
    return None


def check_nontrivial(txid: str, result: Result, client: str) -> list[PropertyViolation]:
    """Judge ``client`` reporting ``result`` for a transaction that met no
    fault and no conflict (AC4: it must commit)."""
    if result is Result.COMMITTED:
        return []
    return [
        PropertyViolation(
            rule=AC4, detail=f"{client} reports {txid} {result.value.upper()} although it met no fault and no conflict"
        )
    ]


def check_stranger(who: str, message: str, changes: Sequence[str]) -> list[PropertyViolation]:
    """Judge participant ``who`` handling a stranger's ``message`` (a PREPARE
    whose participant list is not the cluster); ``changes`` says what it
    changed or did besides answering (nothing, for a participant that keeps
    the membership rule)."""
    if not changes:
        return []
    return [PropertyViolation(rule=MEMBERSHIP, detail=f"{who} acted on a stranger's {message}: {'; '.join(changes)}")]


def check_forgotten(
    name: str,
    durable: Mapping[str, TxRecord],
    forgotten: Mapping[str, TxRecord],
    marks: Mapping[str, int],
    summary: Summary | None,
) -> list[PropertyViolation]:
    """Judge participant ``name`` after it forgot records: each was decided, is
    gone from the store and covered by its client's durable mark, and the
    summary counts them (``forgotten``: every record it ever dropped)."""
    out: list[PropertyViolation] = []
    for txid, r in forgotten.items():
        parsed = parse_txid(txid)
        if r.state is TxState.PREPARED:
            out.append(PropertyViolation(rule=COMPACTION, detail=f"{name} forgot {txid} while prepared on it"))
        elif txid in durable:
            out.append(PropertyViolation(rule=COMPACTION, detail=f"{name} forgot {txid} but still stores it"))
        elif parsed is None or parsed[1] > marks.get(parsed[0], -1):
            out.append(PropertyViolation(rule=COMPACTION, detail=f"{name} forgot {txid} but no mark covers it"))
    committed = sum(1 for r in forgotten.values() if r.state is TxState.COMMITTED)
    counted = (summary.committed, summary.aborted) if summary is not None else (0, 0)
    if counted != (committed, len(forgotten) - committed):
        out.append(
            PropertyViolation(
                rule=COMPACTION,
                detail=f"{name}'s summary counts {counted[0]} committed and {counted[1]} aborted forgotten, "
                f"but it forgot {committed} and {len(forgotten) - committed}",
            )
        )
    return out


# ====================================================================== once quiet


def committed_sequence(records: Mapping[str, TxRecord]) -> tuple[str, ...]:
    """The txids committed, in version order."""
    done = sorted((r.version, r.txid) for r in records.values() if r.state is TxState.COMMITTED)
    return tuple(t for _, t in done)


def check_quiescent(
    names: Sequence[str],
    cores: Sequence[ParticipantCore],
    stores: Sequence[Mapping[str, TxRecord]],
    reports: Mapping[str, Result],
    waiting: Sequence[str],
) -> list[PropertyViolation]:
    """Liveness and replica checks once faults stopped and nothing is left to
    happen: every participant up (``cores``, with its durable ``stores``),
    ``reports`` what users were told per txid, ``waiting`` the live clients
    whose transaction never finished."""
    out: list[PropertyViolation] = []
    for name, core, store in zip(names, cores, stores, strict=True):
        held = sorted(t for t, r in store.items() if r.state is TxState.PREPARED)
        if held:
            out.append(
                PropertyViolation(rule=LIVENESS, detail=f"{name} is still prepared (locked) on {', '.join(held)}")
            )
        elif core.lock is not None:
            out.append(PropertyViolation(rule=LIVENESS, detail=f"{name} still holds its lock for {core.lock}"))
        if core.waiting:
            queued = ", ".join(sorted(core.waiting))
            out.append(
                PropertyViolation(rule=LIVENESS, detail=f"{name} still has {queued} waiting for its lock, unanswered")
            )
    txids = sorted({t for store in stores for t in store})
    for txid in txids:
        known = [(name, store[txid]) for name, store in zip(names, stores, strict=True) if txid in store]
        committed = [name for name, r in known if r.state is TxState.COMMITTED]
        if committed:
            members = set(known[0][1].participants) or set(names)
            lacking = [
                name
                for name, store in zip(names, stores, strict=True)
                if name in members and (txid not in store or store[txid].state is not TxState.COMMITTED)
            ]
            if lacking:
                out.append(
                    PropertyViolation(
                        rule=LIVENESS,
                        detail=f"{txid} is committed at {','.join(committed)} but never at {','.join(lacking)}",
                    )
                )
    for txid, result in sorted(reports.items()):
        if result is Result.COMMITTED:
            lacking = [
                name
                for name, store in zip(names, stores, strict=True)
                if txid not in store or store[txid].state is not TxState.COMMITTED
            ]
            if lacking:
                out.append(
                    PropertyViolation(
                        rule=TRUTH, detail=f"{txid} was reported COMMITTED but is not committed at {lacking}"
                    )
                )
    for client in waiting:
        out.append(PropertyViolation(rule=LIVENESS, detail=f"{client} never finished its transaction"))
    finals = []
    for name, core, store in zip(names, cores, stores, strict=True):
        seq = committed_sequence(store)
        last = store[seq[-1]].value if seq else 0
        if core.storage_server != last or core.version != len(seq):
            out.append(
                PropertyViolation(
                    rule=REPLICAS,
                    detail=f"{name} has storage_server={core.storage_server} version={core.version}, but its "
                    f"records say {last} after {len(seq)} commits",
                )
            )
        finals.append((name, core.storage_server, core.version, seq))
    if len({f[1:] for f in finals}) > 1:
        detail = "; ".join(
            f"{n}: storage_server={v} version={ver} committed={','.join(s) or '-'}" for n, v, ver, s in finals
        )
        out.append(PropertyViolation(rule=REPLICAS, detail=detail))
    return out
