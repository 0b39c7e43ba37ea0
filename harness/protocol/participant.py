"""The participant's state machine: pure, one instance per participant.

Theory of operation. A participant holds the replicated variable
``storage_server`` and one lock. For every transaction it knows of, it keeps
one durable record whose state only moves forward::

    (none) --PREPARE, lock free--------> PREPARED --COMMIT / all peers yes--> COMMITTED
    (none) --PREPARE while locked,------------------------------------------> ABORTED
            ABORT or RESOLVE
    PREPARED --ABORT / a peer aborted--> ABORTED

The value, version and lock are derived from the records: the lock is the one
PREPARED record, the version counts COMMITTED records, and storage_server is
the value of the last one committed. That is why a participant restarted from
its storage has exactly the state it had acknowledged.

Commit point (as in Cornus): a transaction is committed exactly when every
participant in its list has durably voted yes. A participant that has not
voted and is asked about the transaction (RESOLVE) durably records abort, so
it can never vote yes afterwards. Hence a prepared participant whose client
went silent can finish on its own: it asks its peers and commits when all say
prepared or committed, aborts when one says aborted. It never aborts on a
timeout alone.

Compaction (``compact=True``, docs/protocol.md "Forgetting"). A txid
``<client>-<seq>`` (decimal tail, :func:`parse_txid`) names a client's
seq-th transaction; a client runs one at a time. A decided record of client c
may be forgotten once (a) a request named a later txid of c (its coordinator
moved on, so the normal path never asks again) and (b), for a COMMITTED one, a
later commit happened here (``version`` above its own): at every commit point
every member holds the committing transaction's lock, and each got it only
after it had durably decided every earlier committed transaction, so no member
can still be prepared on a forgotten commit. The core keeps per client a
high-water mark ``forgotten[c]``: a txid of c at or below it without a record
is forgotten or was never seen here, and is answered without a new record:
PREPARE gets VOTE NOK (code aborted, reason "forgotten"; a yes would reopen a
decided transaction), COMMIT, ABORT and RESOLVE get ERROR ``forgotten``. A peer
prepared on a transaction that a member answers ``forgotten`` decides ABORTED:
had it committed and been forgotten there, a later commit would exist, which
the asker could only have voted on after deciding this one; so the asker can
be prepared on it now only through a first, late PREPARE, and then it never
committed (it lacked this vote); and a member that never saw it never voted
yes on it, and never will (the mark). Forgetting is a :class:`Forget` action,
durable in one write with the marks and a summary (value, version, counts of
what was forgotten), placed before the replies that rely on it; losing it in
a crash only brings the records back. Txids of other shapes are never forgotten.

The rule this module keeps: no I/O, no clock, no randomness. Inputs are a
message (with the connection it came on) or a timeout; outputs are a list of
actions the driver (harness.node, or the simulator) must perform *in order*, with
one guarantee on its side: a Persist is durable before any later Reply or Send
leaves the node. Every state change is a Persist, so nothing a peer sees can be
lost by a crash, with one exception, a *lazy* Persist: a committed record. The
transaction was committed the moment its last yes vote became durable; the
record only spares this participant a RESOLVE after a crash. So the OUTCOME
that acknowledges a COMMIT leaves at once, and the record needs only be
durable before any later Persist that is not lazy (writes stay in order): a
restart that finds it missing finds the durable yes vote instead, and learns
the commit from its peers.

Membership (docs/security.md). A participant built with a ``cluster`` (the
names of every member, itself included) refuses, with ERROR ``not-cluster``
and no state change, a PREPARE whose participant list is not exactly that set:
a transaction on a subset would let a stranger commit on one replica alone, and
one naming an outsider would make the participant ask, and believe, a peer the
sender controls. It asks RESOLVE of members only and hears only members'
answers. Without a cluster (``None``, the simulator's default) any list that
names this participant is accepted, as before.

Conflict policy (``conflict``): what a PREPARE that finds the lock held gets,
an immediate NOK (the seed's rule, the default) or wait-die
(harness.protocol.conflict says how and why it is deadlock- and starvation-free).

Rejoining (``rejoining=True``): a participant whose store was lost and that was
told to start empty answers every transactional request with ERROR
``rejoining`` (no record, no vote) until its driver has learnt the decided
state from every peer and calls :meth:`ParticipantCore.rejoined`, which records
it as one committed snapshot record, with the transactions the peers still hold
prepared settled as the driver found them in this participant's own log: a yes
vote that left (prepared again, then resolved with the peers as after a
restart) or none (aborted: nobody can have counted a vote that never left). It
never votes, and never records an abort it might once have contradicted,
before then.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from harness.protocol.conflict import DEFAULT_CONFLICT, ConflictPolicy, ConnId, Waiter, age_of
from harness.protocol.messages import (
    FORGOTTEN,
    MARKS_PAGE,
    Abort,
    Commit,
    Error,
    Marked,
    Marks,
    Message,
    NokCode,
    Outcome,
    Prepare,
    Resolve,
    State,
    Status,
    TxState,
    Vote,
)

# The requests that name a transaction (refused while rejoining).
TXN_REQUESTS = (Prepare, Commit, Abort, Resolve)


@dataclass(frozen=True, kw_only=True, slots=True)
class TxRecord:
    """One durable row: what this participant knows of one transaction."""

    txid: str
    state: TxState
    value: int  # the value PREPARE promised to write (0 for an abort before any PREPARE)
    participants: tuple[str, ...]  # empty for an abort before any PREPARE
    version: int = 0  # for COMMITTED: the version this commit produced


def parse_txid(txid: str) -> tuple[str, int] | None:
    """(client, seq) of a txid ``<client>-<seq>`` whose tail is a canonical
    decimal (no sign, no leading zero); None for any other txid, which is
    never forgotten (a hand-typed ``t1``)."""
    client, sep, tail = txid.rpartition("-")
    if not sep or not client or not tail.isascii() or not tail.isdigit() or (tail[0] == "0" and tail != "0"):
        return None
    return client, int(tail)


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """What the forgotten records used to give: the value and version when
    they were dropped, and how many of each decision were dropped."""

    storage_server: int = 0
    version: int = 0
    committed: int = 0
    aborted: int = 0


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, kw_only=True, slots=True)
class Persist:
    """Make ``record`` durable; ``why`` says which rule wrote it (for the log).
    ``lazy``: later replies and sends need not wait for it (the module's docstring)."""

    record: TxRecord
    why: str
    lazy: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """Send ``msg`` on inbound connection ``conn`` (after earlier Persists are durable)."""

    conn: ConnId
    msg: Message


@dataclass(frozen=True, kw_only=True, slots=True)
class Close:
    """Close inbound connection ``conn`` after the replies before it."""

    conn: ConnId


@dataclass(frozen=True, kw_only=True, slots=True)
class SendPeer:
    """Send ``msg`` to the participant named ``peer``; its reply comes back
    through :meth:`ParticipantCore.on_peer_reply`. Losing it is harmless."""

    peer: str
    msg: Message


@dataclass(frozen=True, kw_only=True, slots=True)
class StartTimer:
    """Call :meth:`ParticipantCore.on_timeout` with ``txid`` after the
    configured resolve delay, replacing any timer for that txid."""

    txid: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelTimer:
    txid: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Forget:
    """Drop the records ``txids`` and store ``marks`` (the new high-water
    marks of the clients concerned) and ``summary``, all in one atomic write,
    after every earlier Persist (lazy ones too) and before any later output
    (like a Persist that is not lazy). A crash that loses it loses nothing:
    the records are still there."""

    txids: tuple[str, ...]
    marks: tuple[tuple[str, int], ...]
    summary: Summary


Action = Persist | Forget | Reply | Close | SendPeer | StartTimer | CancelTimer


# ---------------------------------------------------------------- transitions as data


class Event(enum.Enum):
    """A request as the transition table sees it."""

    PREPARE_LOCK_FREE = "prepare (lock free)"
    PREPARE_LOCK_HELD = "prepare (locked by another)"
    COMMIT = "commit"
    ABORT = "abort"
    RESOLVE = "resolve"


class Answer(enum.Enum):
    """What the reply to a request says."""

    VOTE = "vote"  # VOTE ok when the resulting state is PREPARED or COMMITTED, else NOK
    OUTCOME = "outcome"  # OUTCOME with the resulting state
    NOT_PREPARED = "not-prepared"  # ERROR: COMMIT for a transaction never prepared here


_EVENT_OF: dict[type, Event] = {Commit: Event.COMMIT, Abort: Event.ABORT, Resolve: Event.RESOLVE}

NONE = None  # no record of the transaction

# (state before, event) -> (state after, answer). Absent pairs cannot happen:
# the table is total over states x events (tests/test_participant.py checks).
TRANSITIONS: dict[tuple[TxState | None, Event], tuple[TxState | None, Answer]] = {
    (NONE, Event.PREPARE_LOCK_FREE): (TxState.PREPARED, Answer.VOTE),
    (NONE, Event.PREPARE_LOCK_HELD): (TxState.ABORTED, Answer.VOTE),  # no vote, remembered
    (NONE, Event.COMMIT): (NONE, Answer.NOT_PREPARED),  # never voted: cannot commit
    (NONE, Event.ABORT): (TxState.ABORTED, Answer.OUTCOME),  # a late PREPARE will get NOK
    (NONE, Event.RESOLVE): (TxState.ABORTED, Answer.OUTCOME),  # Cornus: no vote -> abort
    (TxState.PREPARED, Event.PREPARE_LOCK_FREE): (TxState.PREPARED, Answer.VOTE),  # duplicate
    (TxState.PREPARED, Event.PREPARE_LOCK_HELD): (TxState.PREPARED, Answer.VOTE),  # we hold it
    (TxState.PREPARED, Event.COMMIT): (TxState.COMMITTED, Answer.OUTCOME),
    (TxState.PREPARED, Event.ABORT): (TxState.ABORTED, Answer.OUTCOME),
    (TxState.PREPARED, Event.RESOLVE): (TxState.PREPARED, Answer.OUTCOME),
    (TxState.COMMITTED, Event.PREPARE_LOCK_FREE): (TxState.COMMITTED, Answer.VOTE),
    (TxState.COMMITTED, Event.PREPARE_LOCK_HELD): (TxState.COMMITTED, Answer.VOTE),
    (TxState.COMMITTED, Event.COMMIT): (TxState.COMMITTED, Answer.OUTCOME),
    (TxState.COMMITTED, Event.ABORT): (TxState.COMMITTED, Answer.OUTCOME),  # too late: says so
    (TxState.COMMITTED, Event.RESOLVE): (TxState.COMMITTED, Answer.OUTCOME),
    (TxState.ABORTED, Event.PREPARE_LOCK_FREE): (TxState.ABORTED, Answer.VOTE),
    (TxState.ABORTED, Event.PREPARE_LOCK_HELD): (TxState.ABORTED, Answer.VOTE),
    (TxState.ABORTED, Event.COMMIT): (TxState.ABORTED, Answer.OUTCOME),  # too late: says so
    (TxState.ABORTED, Event.ABORT): (TxState.ABORTED, Answer.OUTCOME),
    (TxState.ABORTED, Event.RESOLVE): (TxState.ABORTED, Answer.OUTCOME),
}


@dataclass
class ParticipantCore:
    """One participant's protocol state. Build it from the stored records with
    :meth:`restore`, then feed it inputs; it returns the actions to perform."""

    name: str  # this participant's address as it appears in participant lists
    # Every member's name, this one's included; None: no membership rule (the module's docstring).
    cluster: frozenset[str] | None = None
    rejoining: bool = False  # store lost, told to start empty: refuse until rejoined()
    conflict: ConflictPolicy = DEFAULT_CONFLICT
    records: dict[str, TxRecord] = field(default_factory=dict)
    storage_server: int = 0  # 0 = never changed
    version: int = 0
    lock: str | None = None
    committed_count: int = 0
    aborted_count: int = 0
    compact: bool = False  # forget decided records (the module's docstring, "Compaction")
    # Per client, the high-water mark of forgotten txids (durable, with the summary).
    forgotten: dict[str, int] = field(default_factory=dict)
    forgotten_committed: int = 0  # committed records forgotten (in the summary)
    forgotten_aborted: int = 0
    # Volatile, rebuilt from the records: per client, seq -> txid of its records;
    # and the participants of the latest commit (condition (b) without a cluster).
    _by_client: dict[str, dict[int, str]] = field(default_factory=dict)
    _latest_members: frozenset[str] = frozenset()
    # Volatile: peers that answered "prepared" to our RESOLVE, per txid. Lost on
    # a crash, which only means asking again.
    _peer_yes: dict[str, set[str]] = field(default_factory=dict)
    # Volatile (wait-die): PREPAREs waiting for the lock, by txid; and the
    # holder's priority (None: it came without one, or from storage).
    waiting: dict[str, Waiter] = field(default_factory=dict)
    lock_prio: int | None = None

    @classmethod
    def restore(
        cls,
        name: str,
        records: Iterable[TxRecord],
        cluster: Iterable[str] | None = None,
        rejoining: bool = False,
        conflict: ConflictPolicy = DEFAULT_CONFLICT,
        *,
        compact: bool = False,
        summary: Summary | None = None,
        marks: Mapping[str, int] | None = None,
    ) -> ParticipantCore:
        """Rebuild the state from durable records (a fresh node passes none),
        and what compaction left of the forgotten ones (``summary``, ``marks``)."""
        core = cls(
            name=name,
            cluster=frozenset(cluster) if cluster is not None else None,
            rejoining=rejoining,
            conflict=conflict,
            compact=compact,
        )
        core.adopt(summary, marks)
        for record in records:
            core._apply(record)
        return core

    def adopt(self, summary: Summary | None, marks: Mapping[str, int] | None) -> None:
        """Take what compaction left durable (before or after the remaining records)."""
        if summary is not None:
            if summary.version > self.version:  # else a record applied already holds that version or a later one
                self.storage_server, self.version = summary.storage_server, summary.version
            self.forgotten_committed, self.forgotten_aborted = summary.committed, summary.aborted
            self.committed_count += summary.committed
            self.aborted_count += summary.aborted
        if marks:
            for client, seq in marks.items():
                self.forgotten[client] = max(seq, self.forgotten.get(client, seq))

    def summary(self) -> Summary:
        return Summary(
            storage_server=self.storage_server,
            version=self.version,
            committed=self.forgotten_committed,
            aborted=self.forgotten_aborted,
        )

    def recover(self) -> list[Action]:
        """After a restart: resolve every transaction left prepared, at once.
        Its client may be gone; if it is not, asking costs one round trip."""
        actions: list[Action] = []
        for record in self.records.values():
            if record.state is TxState.PREPARED:
                actions += self._resolve_with_peers(record)
        return actions

    # ------------------------------------------------------------ inputs

    def on_request(self, conn: ConnId, msg: Message) -> list[Action]:
        """A request from a client or a peer on inbound connection ``conn``."""
        if not self.waiting:
            return self._request(conn, msg)
        # Wait-die: replies on one connection go in order, so another request on
        # a waiter's connection ends its wait first; so does any RESOLVE or ABORT
        # of a waiting transaction (Cornus: asked before it voted, it aborts).
        txid = getattr(msg, "txid", None)
        actions: list[Action] = []
        for w in sorted(self.waiting.values(), key=lambda w: w.age):  # by age, not by name (harness.sim.symmetry)
            same = w.prepare.txid == txid
            if (conn in w.conns and not (same and isinstance(msg, Prepare))) or (
                same and isinstance(msg, Abort | Resolve)
            ):
                actions += self._die(w)
        if isinstance(msg, Prepare) and (dup := self.waiting.get(msg.txid)) is not None:
            if (dup.prepare.value, dup.prepare.participants) != (msg.value, msg.participants):
                promised = f"value={dup.prepare.value} for {','.join(dup.prepare.participants)}"
                detail = f"{msg.txid} waits to prepare with {promised}"
                return [*actions, Reply(conn=conn, msg=Error(code="conflict", txid=msg.txid, detail=detail))]
            # A duplicate of a waiting PREPARE: owed a reply too, when the wait ends.
            self.waiting[msg.txid] = Waiter(prepare=dup.prepare, conns=(*dup.conns, conn))
            return actions
        actions += self._request(conn, msg)
        return actions + self._grant()

    def on_closed(self, conn: ConnId) -> list[Action]:
        """Inbound connection ``conn`` closed: a PREPARE waiting on it alone is
        forgotten, as if it had been lost (its coordinator resolves it)."""
        for txid, w in list(self.waiting.items()):
            if conn in w.conns:
                rest = tuple(c for c in w.conns if c != conn)
                if rest:
                    self.waiting[txid] = Waiter(prepare=w.prepare, conns=rest)
                else:
                    del self.waiting[txid]
        return []

    def _request(self, conn: ConnId, msg: Message) -> list[Action]:
        if self.rejoining and isinstance(msg, TXN_REQUESTS):
            detail = "this participant lost its store and is learning the decided state from its peers"
            return [Reply(conn=conn, msg=Error(code="rejoining", txid=msg.txid, detail=detail))]
        match msg:
            case Prepare():
                if self.cluster is not None and frozenset(msg.participants) != self.cluster:
                    return [
                        Reply(
                            conn=conn,
                            msg=Error(
                                code="not-cluster",
                                txid=msg.txid,
                                detail="the participant list must be exactly this cluster: "
                                + ",".join(sorted(self.cluster)),
                            ),
                        )
                    ]
                if self.name not in msg.participants:
                    return [
                        Reply(
                            conn=conn,
                            msg=Error(
                                code="not-participant",
                                txid=msg.txid,
                                detail=f"this participant is {self.name}, not in the list",
                            ),
                        )
                    ]
                if self.is_forgotten(msg.txid):
                    return [
                        *self._forget_before(msg.txid),
                        Reply(conn=conn, msg=Vote(txid=msg.txid, yes=False, code=NokCode.ABORTED, reason=FORGOTTEN)),
                    ]
                known = self.records.get(msg.txid)
                promised = (known.value, known.participants) if known is not None and known.participants else None
                if promised is not None and promised != (msg.value, msg.participants):
                    detail = f"{msg.txid} was prepared with value={promised[0]} for {','.join(promised[1])}"
                    return [Reply(conn=conn, msg=Error(code="conflict", txid=msg.txid, detail=detail))]
                held = self.lock is not None and self.lock != msg.txid
                if held and known is None and self.conflict is ConflictPolicy.WAIT_DIE and self._may_wait(msg):
                    self.waiting[msg.txid] = Waiter(prepare=msg, conns=(conn,))  # waits: no record, no reply yet
                    return []
                event = Event.PREPARE_LOCK_HELD if held else Event.PREPARE_LOCK_FREE
                actions = [*self._forget_before(msg.txid), *self._transition(conn, msg.txid, event, msg)]
                if not held and known is None and self.lock == msg.txid:
                    self.lock_prio = msg.prio
                return actions
            case Commit() | Abort() | Resolve():
                forget = self._forget_before(msg.txid)
                if self.is_forgotten(msg.txid):
                    detail = "decided here long ago and forgotten (compaction): its decision was final"
                    return [*forget, Reply(conn=conn, msg=Error(code=FORGOTTEN, txid=msg.txid, detail=detail))]
                event = (
                    Event.COMMIT
                    if isinstance(msg, Commit)
                    else Event.ABORT
                    if isinstance(msg, Abort)
                    else Event.RESOLVE
                )
                return [*forget, *self._transition(conn, msg.txid, event, None)]
            case Status():
                return [Reply(conn=conn, msg=self.status())]
            case Marks():
                page = sorted((c, s) for c, s in self.seen_marks().items() if c > msg.after)
                return [Reply(conn=conn, msg=Marked(marks=tuple(page[:MARKS_PAGE]), more=len(page) > MARKS_PAGE))]
            case _:
                return [
                    Reply(
                        conn=conn, msg=Error(code="not-a-request", detail=f"{msg.kind.value} is a reply, not a request")
                    ),
                    Close(conn=conn),
                ]

    def on_peer_reply(self, peer: str, msg: Message) -> list[Action]:
        """A peer's reply to our RESOLVE (cooperative termination)."""
        if isinstance(msg, Error) and msg.code == FORGOTTEN and msg.txid is not None:
            # Decided there and forgotten, or never seen below its mark: never
            # committed, since we are prepared on it (the module's docstring).
            record = self.records.get(msg.txid)
            if self.cluster is not None and peer not in self.cluster:
                return []
            if record is None or record.state is not TxState.PREPARED or peer not in record.participants:
                return []
            # The lock is free again: the oldest waiter (wait-die) is granted at once, as after any decision.
            return self._decide(record, TxState.ABORTED, f"peer {peer} forgot it: it never committed") + self._grant()
        if not isinstance(msg, Outcome):
            return []  # an ERROR or stray reply: the timer will ask again
        if self.cluster is not None and peer not in self.cluster:
            return []  # only members are asked, only members are heard
        record = self.records.get(msg.txid)
        if record is None or record.state is not TxState.PREPARED or peer not in record.participants:
            return []  # decided meanwhile, or not ours to hear about
        if msg.state is TxState.COMMITTED:
            return self._decide(record, TxState.COMMITTED, f"peer {peer} committed") + self._grant()
        if msg.state is TxState.ABORTED:
            return self._decide(record, TxState.ABORTED, f"peer {peer} aborted") + self._grant()
        yes = self._peer_yes.setdefault(msg.txid, set())
        yes.add(peer)
        if yes >= self._peers(record):
            return self._decide(record, TxState.COMMITTED, "every participant voted yes") + self._grant()
        return []

    def on_timeout(self, txid: str) -> list[Action]:
        """No decision arrived in time for a prepared transaction: ask the peers."""
        record = self.records.get(txid)
        if record is None or record.state is not TxState.PREPARED:
            return []
        return self._resolve_with_peers(record) + self._grant()  # alone in its transaction, it may decide

    def rejoined(
        self,
        storage_server: int,
        version: int,
        in_flight: Iterable[TxRecord] = (),
        marks: Mapping[str, int] | None = None,
    ) -> list[Action]:
        """The driver learnt the decided state from every peer (all agree on it):
        record it as one committed snapshot, then ``in_flight``, the transactions
        the peers hold prepared, each PREPARED (this participant's yes vote left,
        says its log) or ABORTED (it never did); then serve as usual. ``marks``:
        the peers' high-water marks (the highest per client), so that a
        duplicate PREPARE of a transaction they forgot is refused here too."""
        assert self.rejoining and not self.records
        self.rejoining = False
        actions: list[Action] = []
        if marks:
            self.adopt(None, marks)
            actions.append(Forget(txids=(), marks=tuple(sorted(self.forgotten.items())), summary=self.summary()))
        if version > 0:  # else nothing was ever committed: nothing to learn
            snapshot = TxRecord(
                txid=f"rejoined-v{version}",
                state=TxState.COMMITTED,
                value=storage_server,
                participants=tuple(sorted(self.cluster or {self.name})),
                version=version,
            )
            self._apply(snapshot)
            actions.append(Persist(record=snapshot, why="rejoined: the state every peer reported", lazy=False))
        for record in in_flight:
            assert record.state in (TxState.PREPARED, TxState.ABORTED)
            if record.state is TxState.PREPARED:
                self._apply(record)
                actions.append(Persist(record=record, why="rejoined: its yes vote left, says its log"))
                actions += self._resolve_with_peers(record)
            else:
                actions += self._record(record, "rejoined: no yes vote of it ever left, says its log")
        return actions

    # ------------------------------------------------------------ views

    def status(self) -> State:
        return State(
            node=self.name,
            storage_server=self.storage_server,
            version=self.version,
            lock=self.lock,
            committed=self.committed_count,
            aborted=self.aborted_count,
        )

    def seen_marks(self) -> dict[str, int]:
        """Per client, the highest seq this participant forgot or holds a record
        of: what MARKS answers a rejoining peer. Not the forgotten marks alone: a
        peer that lost its store must refuse a duplicate PREPARE of every
        transaction decided before it rejoined, forgotten here or not (a
        committed one still held here would otherwise get a fresh yes there,
        and be applied twice); the ones still undecided it learns apart, as
        in-flight records (:meth:`rejoined`)."""
        seen = dict(self.forgotten)
        for client, seqs in self._by_client.items():
            top = max(seqs)
            if top > seen.get(client, 0):
                seen[client] = top
        return seen

    def is_forgotten(self, txid: str) -> bool:
        """No record of ``txid``, and it is at or below its client's mark."""
        if not self.forgotten or txid in self.records:
            return False
        parsed = parse_txid(txid)
        return parsed is not None and parsed[0] in self.forgotten and parsed[1] <= self.forgotten[parsed[0]]

    def may_forget(self, record: TxRecord) -> bool:
        """Whether a decided ``record`` may be forgotten once a later txid of its
        client was seen: an abort at once; a commit once a later commit here
        had all its members (the module's docstring, condition (b))."""
        if record.state is TxState.ABORTED:
            return True
        if record.state is TxState.PREPARED:
            return False
        # No later commit here by all its members yet: one of them may still be prepared on it.
        return record.version < self.version and frozenset(record.participants) <= self._latest_members

    # ------------------------------------------------------------ internals

    def _may_wait(self, prepare: Prepare) -> bool:
        """Wait-die: may ``prepare`` wait for the lock's holder? Yes when its
        transaction holds no lock anywhere (nobody can wait for it), or is older
        than the holder. A holder of unknown age (restored from storage, or
        sent none) is taken as older than anyone."""
        if prepare.lockless:
            return True
        if self.lock_prio is None or self.lock is None:
            return False
        return age_of(prepare.prio, prepare.txid) < age_of(self.lock_prio, self.lock)

    def _die(self, w: Waiter) -> list[Action]:
        """End ``w``'s wait with the NOK it would have had at once (a durable
        abort, as for any PREPARE that finds the lock held), on each of its connections."""
        del self.waiting[w.prepare.txid]
        actions: list[Action] = []
        for conn in w.conns:
            actions += self._transition(conn, w.prepare.txid, Event.PREPARE_LOCK_HELD, w.prepare)
        return actions

    def _grant(self) -> list[Action]:
        """The lock is free and PREPAREs wait: the oldest is handled as a PREPARE
        on a free lock; the others are judged again against it (younger: die)."""
        if not self.waiting or self.lock is not None:
            return []
        actions: list[Action] = []
        for w in sorted(self.waiting.values(), key=lambda w: w.age):
            if self.is_forgotten(w.prepare.txid):  # its client moved on meanwhile: never a new yes below a mark
                del self.waiting[w.prepare.txid]
                nok = Vote(txid=w.prepare.txid, yes=False, code=NokCode.ABORTED, reason=FORGOTTEN)
                actions += [Reply(conn=conn, msg=nok) for conn in w.conns]
        if not self.waiting:
            return actions
        first = min(self.waiting.values(), key=lambda w: w.age)
        del self.waiting[first.prepare.txid]
        for conn in first.conns:
            actions += self._transition(conn, first.prepare.txid, Event.PREPARE_LOCK_FREE, first.prepare)
        self.lock_prio = first.prepare.prio
        for w in sorted(self.waiting.values(), key=lambda w: w.age):
            if not self._may_wait(w.prepare):
                actions += self._die(w)
        return actions

    def _forget_before(self, txid: str) -> list[Action]:
        """A request names ``txid``: forget its client's earlier records that
        may be (conditions (a) and (b) of the module's docstring). The work is
        bounded by that client's records, a few."""
        if not self.compact or (parsed := parse_txid(txid)) is None:
            return []
        client, seq = parsed
        mine = self._by_client.get(client)
        if not mine:
            return []
        gone: list[tuple[int, TxRecord]] = []
        for s, t in mine.items():
            if s < seq and self.may_forget(r := self.records[t]):
                gone.append((s, r))
        if not gone:
            return []
        for s, r in gone:
            del mine[s]
            del self.records[r.txid]
            if r.state is TxState.COMMITTED:
                self.forgotten_committed += 1
            else:
                self.forgotten_aborted += 1
        if not mine:
            del self._by_client[client]
        self.forgotten[client] = max(self.forgotten.get(client, 0), max(s for s, _ in gone))
        txids = tuple(r.txid for _, r in gone)
        return [Forget(txids=txids, marks=((client, self.forgotten[client]),), summary=self.summary())]

    def _peers(self, record: TxRecord) -> set[str]:
        peers = set(record.participants) - {self.name}
        return peers & self.cluster if self.cluster is not None else peers

    def _transition(self, conn: ConnId, txid: str, event: Event, prepare: Prepare | None) -> list[Action]:
        record = self.records.get(txid)
        before = record.state if record else NONE
        after, answer = TRANSITIONS[(before, event)]
        actions: list[Action] = []
        if after is not before:
            assert after is not None  # the table never forgets a record
            actions += self._write(txid, after, prepare, event)
            record = self.records[txid]
        if answer is Answer.NOT_PREPARED:
            actions.append(
                Reply(
                    conn=conn,
                    msg=Error(code="not-prepared", txid=txid, detail="this participant never voted yes on it"),
                )
            )
        elif answer is Answer.VOTE:
            assert record is not None
            yes = record.state is not TxState.ABORTED
            if yes:
                actions.append(Reply(conn=conn, msg=Vote(txid=txid, yes=True)))
            else:
                code, reason = self._no_reason(before, event)
                actions.append(Reply(conn=conn, msg=Vote(txid=txid, yes=False, code=code, reason=reason)))
        else:
            assert record is not None
            actions.append(Reply(conn=conn, msg=Outcome(txid=txid, state=record.state)))
        return actions

    def _no_reason(self, before: TxState | None, event: Event) -> tuple[NokCode, str]:
        if before is NONE and event is Event.PREPARE_LOCK_HELD:
            return NokCode.LOCKED, f"locked by {self.lock}"
        return NokCode.ABORTED, "already aborted"

    def _write(self, txid: str, state: TxState, prepare: Prepare | None, event: Event) -> list[Action]:
        old = self.records.get(txid)
        if old is not None:
            value, participants = old.value, old.participants
        elif prepare is not None:
            value, participants = prepare.value, prepare.participants
        else:
            value, participants = 0, ()
        if state is TxState.COMMITTED:
            record = TxRecord(txid=txid, state=state, value=value, participants=participants, version=self.version + 1)
        else:
            record = TxRecord(txid=txid, state=state, value=value, participants=participants)
        why = {
            Event.PREPARE_LOCK_FREE: "vote yes",
            Event.PREPARE_LOCK_HELD: f"vote no: locked by {self.lock}",
            Event.COMMIT: "COMMIT received",
            Event.ABORT: "ABORT received",
            Event.RESOLVE: "RESOLVE before any vote",
        }[event]
        return self._record(record, why)

    def _decide(self, record: TxRecord, state: TxState, why: str) -> list[Action]:
        version = self.version + 1 if state is TxState.COMMITTED else 0
        new = TxRecord(
            txid=record.txid, state=state, value=record.value, participants=record.participants, version=version
        )
        return self._record(new, why)

    def _record(self, record: TxRecord, why: str) -> list[Action]:
        """Apply a new record in memory and emit its Persist and timer changes."""
        was_prepared = (old := self.records.get(record.txid)) is not None and old.state is TxState.PREPARED
        self._apply(record)
        actions: list[Action] = [Persist(record=record, why=why, lazy=record.state is TxState.COMMITTED)]
        if record.state is TxState.PREPARED:
            actions.append(StartTimer(txid=record.txid))
        elif was_prepared:
            self._peer_yes.pop(record.txid, None)
            actions.append(CancelTimer(txid=record.txid))
        return actions

    def _apply(self, record: TxRecord) -> None:
        old = self.records.get(record.txid)
        self.records[record.txid] = record
        if old is None and (parsed := parse_txid(record.txid)) is not None:
            self._by_client.setdefault(parsed[0], {})[parsed[1]] = record.txid
        if old is not None and old.state is TxState.PREPARED and self.lock == record.txid:
            self.lock = None
            self.lock_prio = None
        if record.state is TxState.PREPARED:
            self.lock = record.txid
        elif record.state is TxState.COMMITTED:
            self.committed_count += 1
            if record.version > self.version:
                self.version = record.version
                self.storage_server = record.value
            if record.version >= self.version:
                self._latest_members = frozenset(record.participants)
        else:
            self.aborted_count += 1

    def _resolve_with_peers(self, record: TxRecord) -> list[Action]:
        actions: list[Action] = [SendPeer(peer=p, msg=Resolve(txid=record.txid)) for p in sorted(self._peers(record))]
        if not self._peers(record):  # a participant alone in its transaction decides alone
            return self._decide(record, TxState.COMMITTED, "every participant voted yes")
        actions.append(StartTimer(txid=record.txid))
        return actions
