"""Simulated nodes: the real cores, driven one action at a time.

Theory of operation. A simulated participant is its core (volatile memory), a
durable store (txid -> TxRecord, what SQLite would hold), the lazy records it
holds (volatile, see below), its pending timers (volatile) and whether it is
up. A simulated client is one coordinator core per transaction, its timers,
and what it reported to its user. Every input (a message, a timeout, a start
or a restart) is fed to the core, and the returned actions are executed *one
at a time, in list order*: a Persist writes the store, a Reply or SendPeer
becomes an outgoing message, timers are set or cancelled. ``crash_after=k``
executes the first k actions and then crashes the node, so a crash can fall
between two actions of one step; that is how a reply sent before its persist
is caught. In the real driver (nodes.py) a send waits until every earlier
persist is durable, which for a core that lists each Persist before the reply
it backs is the same as executing in list order. A lazy Persist (a commit)
waits for nothing: as in nodes.py, its record is *held*, not yet durable, and
the replies after it leave at once; the record is written with the node's next
Persist that is not lazy (before it, in the same atomic write: writes stay in
order), or on its own by a later step, ``write_held`` (nodes.py's
LAZY_WRITE_AFTER timer), whichever comes first. Other steps may come in
between, and a crash loses what is held.

The nodes know nothing of the network: they return *effects* (what left the
node, what became durable, what the user was told) and the simulator or the
explorer routes them. The same node code therefore runs under both, and the
cores come from factories, so broken variants can be driven too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, cast

from harness.protocol import coordinator as co
from harness.protocol.conflict import ConflictPolicy
from harness.protocol.messages import DecodeError, Message, TxState, decode, encode
from harness.protocol.participant import (
    CancelTimer,
    Close,
    Forget,
    ParticipantCore,
    Persist,
    Reply,
    SendPeer,
    StartTimer,
    Summary,
    TxRecord,
)


class ParticipantFactory(Protocol):
    """A participant core from its name, its durable records and its cluster
    (every member's name): ParticipantCore.restore's signature."""

    def __call__(
        self, name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None
    ) -> ParticipantCore: ...


# A coordinator core from (txid, value, participants).
CoordinatorFactory = Callable[[str, int, tuple[str, ...]], co.CoordinatorCore]


class Cut(NamedTuple):
    """A crash inside a step: the node performs its first ``reached`` actions,
    except the sends whose indices are bits of ``unsent`` (they never left),
    then crashes. The explorer's mid-step crashes (harness.sim.transitions)."""

    reached: int
    unsent: int = 0


# Where a step crashes its node: after that many actions (a Cut with nothing
# unsent), at a Cut, or never (None); or a function of the number of actions
# the core returned (the simulator draws it).
CrashAfter = int | Cut | Callable[[int], int | None] | None


def real_participant(name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None) -> ParticipantCore:
    """The protocol's own participant (the default factory)."""
    return ParticipantCore.restore(name, records, cluster)


def wait_die_participant(
    name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None
) -> ParticipantCore:
    """The protocol's own participant under the wait-die conflict policy (harness.protocol.conflict)."""
    return ParticipantCore.restore(name, records, cluster, conflict=ConflictPolicy.WAIT_DIE)


# By conflict policy (``--conflict``).
PARTICIPANTS: dict[str, ParticipantFactory] = {
    ConflictPolicy.NOK: real_participant,
    ConflictPolicy.WAIT_DIE: wait_die_participant,
}


def uses_ages(factory: ParticipantFactory) -> bool:
    """Do this factory's participants heed a PREPARE's age? Then clients send one
    (the real clients always do; the models only when it matters, so that the
    state spaces and traces of the default policy stay as they were)."""
    return factory("p0:0", []).conflict is not ConflictPolicy.NOK


def real_coordinator(txid: str, value: int, participants: tuple[str, ...]) -> co.CoordinatorCore:
    """The protocol's own coordinator (the default factory)."""
    return co.CoordinatorCore(txid=txid, value=value, participants=participants)


def compacting(factory: ParticipantFactory) -> ParticipantFactory:
    """``factory``'s participants with compaction on (they forget decided records)."""

    def make(name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None) -> ParticipantCore:
        core = factory(name, records, cluster)
        core.compact = True
        return core

    return make


compacting_participant = compacting(real_participant)  # the protocol's own participant, compacting


def ordered_coordinator(txid: str, value: int, participants: tuple[str, ...]) -> co.CoordinatorCore:
    """The protocol's own coordinator with ordered prepare (the first participant, then the rest)."""
    return co.CoordinatorCore(txid=txid, value=value, participants=participants, ordered=True)


COORDINATORS: dict[str, CoordinatorFactory] = {"parallel": real_coordinator, "ordered": ordered_coordinator}


class Wire(enum.IntEnum):
    """What an entry in the simulated network is."""

    __hash__ = int.__hash__  # at C speed: entries are hashed when interned

    REQUEST = 0  # a message to a participant's on_request (from a client or a peer)
    REPLY = 1  # a reply: to a coordinator's on_reply, or a participant's on_peer_reply
    REFUSED = 2  # a client learns that a connection could not be opened (on_unreachable)
    LOST = 3  # a client learns that an open connection closed (on_connection_lost)


class Fx(enum.Enum):
    """Kinds of effect a node step has."""

    PERSIST = "persist"  # (Fx.PERSIST, record, why): now durable
    FORGET = "forget"  # (Fx.FORGET, txids, marks): records dropped, marks durable (compaction)
    HOLD = "hold"  # (Fx.HOLD, record, why): a lazy record, held until a later write
    SEND = "send"  # (Fx.SEND, dst index or -1, Wire, msg): a participant's reply or peer request
    CSEND = "csend"  # (Fx.CSEND, participant index, msg): a client's send (routed by connection)
    REPORT = "report"  # (Fx.REPORT, result, reason): the client told its user
    FINISHED = "finished"  # (Fx.FINISHED,): the coordinator is done
    TIMER_SET = "timer-set"  # (Fx.TIMER_SET, key)
    TIMER_CANCEL = "timer-cancel"  # (Fx.TIMER_CANCEL, key)
    CLOSE = "close"  # (Fx.CLOSE, conn): the core closed an inbound connection
    CRASH = "crash"  # (Fx.CRASH, actions done, actions in the step): the node crashed mid-step


Effect = tuple[object, ...]


class Topology:
    """Names and indices: participants are nodes 0..P-1, clients P..P+C-1.

    Participant names are ``host:port``-like ("p1:1") because the codec's
    participant lists require that; people read the host part ("p1")."""

    def __init__(self, participants: int, clients: int) -> None:
        if participants < 1 or clients < 0:
            raise ValueError("need at least one participant and no negative client count")
        self.participants = participants
        self.clients = clients
        self.participant_names = tuple(f"p{i}:{i}" for i in range(1, participants + 1))
        self.client_names = tuple(f"client{i}" for i in range(1, clients + 1))
        self.names = self.participant_names + self.client_names
        self.display = tuple(n.partition(":")[0] for n in self.names)
        self.index = {name: i for i, name in enumerate(self.names)}

    def is_participant(self, node: int) -> bool:
        return node < self.participants


# ====================================================================== participant


class PNode:
    """A simulated participant: core, durable store, held lazy records, timers, up or down.

    Compaction: a Forget drops records from the durable store and makes the
    marks and summary durable (after the held records, in the same write);
    a restart gives them back to the core (ParticipantCore.adopt). The records
    dropped are kept aside in ``forgotten`` for judging only (``history``):
    the core never sees them again."""

    __slots__ = (
        "actions",
        "core",
        "durable",
        "forgotten",
        "held",
        "index",
        "marks",
        "summary",
        "timers",
        "topo",
        "up",
    )

    def __init__(
        self,
        topo: Topology,
        index: int,
        core: ParticipantCore | None,
        durable: dict[str, TxRecord],
        timers: set[str],
        up: bool,
        held: Sequence[TxRecord] = (),
    ) -> None:
        self.topo = topo
        self.index = index
        self.core = core
        self.durable = durable
        self.timers = timers
        self.held = list(held)  # lazy records not yet durable, in the order they were issued
        self.up = up
        self.actions: Sequence[object] = ()  # the actions the last core call returned
        self.marks: dict[str, int] = {}  # durable high-water marks (compaction)
        self.summary: Summary | None = None  # durable summary of the forgotten records
        self.forgotten: dict[str, TxRecord] = {}  # what Forget dropped: for judging, never for the core

    @property
    def name(self) -> str:
        return self.topo.names[self.index]

    @property
    def history(self) -> dict[str, TxRecord]:
        """Every record this participant ever made durable: the store and what it forgot."""
        return {**self.forgotten, **self.durable} if self.forgotten else self.durable

    def request(self, conn: int, msg: Message, crash_after: CrashAfter = None) -> list[Effect]:
        """A request on inbound connection ``conn`` (the sender's node index)."""
        assert self.core is not None
        return self._run(self.core.on_request(conn, msg), crash_after)

    def peer_reply(self, peer: str, msg: Message, crash_after: CrashAfter = None) -> list[Effect]:
        assert self.core is not None
        return self._run(self.core.on_peer_reply(peer, msg), crash_after)

    def timeout(self, txid: str, crash_after: CrashAfter = None) -> list[Effect]:
        assert self.core is not None
        self.timers.discard(txid)
        return self._run(self.core.on_timeout(txid), crash_after)

    def write_held(self) -> list[Effect]:
        """The lazy write on its own (nodes.py: LAZY_WRITE_AFTER after the first
        held record): what is held becomes durable, in order, in one write."""
        self.actions = ()
        return self._write_held()

    def crash(self) -> None:
        """Memory, held records and timers are lost; the durable store stays."""
        self.up = False
        self.core = None
        self.timers = set()
        self.held = []

    def restart(self, factory: ParticipantFactory, crash_after: CrashAfter = None) -> list[Effect]:
        """Restore from the durable records (in txid order), then recover()."""
        self.core = factory(self.name, [self.durable[t] for t in sorted(self.durable)], self.topo.participant_names)
        if self.summary is not None or self.marks:
            self.core.adopt(self.summary, self.marks)
        self.up = True
        self.timers = set()
        return self._run(self.core.recover(), crash_after)

    def _run(self, actions: Sequence[object], crash_after: CrashAfter) -> list[Effect]:
        return _perform(self, actions, crash_after, self._apply)

    def _write_held(self) -> list[Effect]:
        effects: list[Effect] = []
        for record in self.held:
            self.durable[record.txid] = record
            effects.append((Fx.PERSIST, record, "held record written"))
        self.held = []
        return effects

    def _apply(self, action: object) -> Effect | list[Effect]:
        match action:
            case Persist(lazy=True):
                self.held.append(action.record)
                return (Fx.HOLD, action.record, action.why)
            case Persist():
                effects = self._write_held()  # an earlier lazy record goes first, in the same write
                self.durable[action.record.txid] = action.record
                effects.append((Fx.PERSIST, action.record, action.why))
                return effects
            case Forget():
                effects = self._write_held()
                for txid in action.txids:
                    self.forgotten[txid] = self.durable.pop(txid)
                self.marks.update(action.marks)
                self.summary = action.summary
                effects.append((Fx.FORGET, action.txids, action.marks))
                return effects
            case Reply():
                return (Fx.SEND, action.conn, Wire.REPLY, action.msg)
            case SendPeer():
                return (Fx.SEND, self.topo.index.get(action.peer, -1), Wire.REQUEST, action.msg)
            case StartTimer():
                self.timers.add(action.txid)
                return (Fx.TIMER_SET, action.txid)
            case CancelTimer():
                self.timers.discard(action.txid)
                return (Fx.TIMER_CANCEL, action.txid)
            case Close():
                return (Fx.CLOSE, action.conn)
            case _:
                raise TypeError(f"participant core returned {action!r}, not an action")


# ====================================================================== client


class CNode:
    """A simulated client running one coordinator core at a time.

    ``reported`` is what the user was told about the current transaction; it
    survives the client's crash (the user heard it). A crashed client never
    comes back."""

    __slots__ = ("actions", "alive", "core", "index", "reported", "timers", "topo")

    def __init__(
        self,
        topo: Topology,
        index: int,
        core: co.CoordinatorCore | None,
        reported: co.Result | None,
        timers: set[co.Timer],
        alive: bool,
    ) -> None:
        self.topo = topo
        self.index = index
        self.core = core
        self.reported = reported
        self.timers = timers
        self.alive = alive
        self.actions: Sequence[object] = ()

    @property
    def name(self) -> str:
        return self.topo.names[self.index]

    @property
    def active(self) -> bool:
        """Alive and coordinating a transaction that is not finished."""
        return self.alive and self.core is not None and self.core.phase is not co.Phase.DONE

    def start(
        self,
        factory: CoordinatorFactory,
        txid: str,
        value: int,
        crash_after: CrashAfter = None,
        prio: int | None = None,
    ) -> list[Effect]:
        """Begin transaction ``txid``; ``prio``: its age, an input of the coordinator (wait-die)."""
        self.core = factory(txid, value, self.topo.participant_names)
        self.core.prio = prio
        self.reported = None
        self.timers = set()
        return self._run(self.core.start(), crash_after)

    # The real client (nodes.py) feeds nothing to a finished transaction: its
    # replies are dropped, its timers cancelled. The same guards here.

    def reply(self, src: str, msg: Message, crash_after: CrashAfter = None) -> list[Effect]:
        if not self.active:
            return []
        assert self.core is not None
        return self._run(self.core.on_reply(src, msg), crash_after)

    def unreachable(self, participant: str, crash_after: CrashAfter = None) -> list[Effect]:
        if not self.active:
            return []
        assert self.core is not None
        return self._run(self.core.on_unreachable(participant), crash_after)

    def connection_lost(self, participant: str, crash_after: CrashAfter = None) -> list[Effect]:
        if not self.active:
            return []
        assert self.core is not None
        return self._run(self.core.on_connection_lost(participant), crash_after)

    def timeout(self, timer: co.Timer, crash_after: CrashAfter = None) -> list[Effect]:
        self.timers.discard(timer)
        if not self.active:
            return []
        assert self.core is not None
        return self._run(self.core.on_timeout(timer), crash_after)

    def crash(self) -> None:
        self.alive = False
        self.core = None
        self.timers = set()

    def _run(self, actions: Sequence[object], crash_after: CrashAfter) -> list[Effect]:
        return _perform(self, actions, crash_after, self._apply)

    def _apply(self, action: object) -> Effect:
        match action:
            case co.Send():
                return (Fx.CSEND, self.topo.index.get(action.to, -1), action.msg)
            case co.SetTimer():
                self.timers.add(action.timer)
                return (Fx.TIMER_SET, action.timer)
            case co.Report():
                self.reported = action.result
                return (Fx.REPORT, action.result, action.reason)
            case co.Finished():
                self.timers = set()  # nodes.py cancels a finished transaction's timers
                return (Fx.FINISHED,)
            case _:
                raise TypeError(f"coordinator core returned {action!r}, not an action")


def _perform(
    node: PNode | CNode,
    actions: Sequence[object],
    crash_after: CrashAfter,
    apply: Callable[[object], Effect | list[Effect]],
) -> list[Effect]:
    """A core's actions performed one at a time, in order, as the real driver
    does, so that a crash can fall between two of them (after ``crash_after``;
    at a Cut, some of the sends before it never left)."""
    node.actions = actions
    if callable(crash_after):
        crash_after = crash_after(len(actions))
    if type(crash_after) is Cut:
        return _perform_cut(node, actions, crash_after, apply)
    effects: list[Effect] = []
    for i, action in enumerate(actions):
        if i == crash_after:
            node.crash()
            effects.append((Fx.CRASH, i, len(actions)))
            break
        done = apply(action)
        if isinstance(done, list):
            effects.extend(done)
        else:
            effects.append(done)
    return effects


def _perform_cut(
    node: PNode | CNode, actions: Sequence[object], cut: Cut, apply: Callable[[object], Effect | list[Effect]]
) -> list[Effect]:
    """_perform up to ``cut``: its first ``reached`` actions but the sends in
    ``unsent`` (the crash came before they left), then the crash."""
    effects: list[Effect] = []
    for i, action in enumerate(actions[: cut.reached]):
        if not cut.unsent >> i & 1:
            done = apply(action)
            if isinstance(done, list):
                effects.extend(done)
            else:
                effects.append(done)
    node.crash()
    effects.append((Fx.CRASH, cut.reached, len(actions)))
    return effects


# ====================================================================== words


def message_text(msg: Message) -> str:
    """A message as it would appear on the wire, without the newline."""
    return encode(msg).decode().rstrip("\n")


def _node_text(topo: Topology, node: int) -> str:
    if node == len(topo.names):
        return "the stranger"  # the explorer's sender from outside the cluster (harness.sim.transitions)
    return topo.display[node] if 0 <= node < len(topo.names) else "(unknown node)"


def effect_text(topo: Topology, node: int, effect: Effect) -> str | None:
    """One effect in the protocol's words, or None for those not worth a line."""
    who = topo.display[node]
    kind = effect[0]
    if kind is Fx.PERSIST:
        record = effect[1]
        assert isinstance(record, TxRecord)
        version = f" version={record.version}" if record.state is TxState.COMMITTED else ""
        return f"{who} persists {record.txid} {record.state.value}{version} ({effect[2]})"
    if kind is Fx.HOLD:
        record = effect[1]
        assert isinstance(record, TxRecord)
        return f"{who} holds {record.txid} {record.state.value} version={record.version} (lazy: not yet durable)"
    if kind is Fx.FORGET:
        marks = ", ".join(f"{c}<={s}" for c, s in cast(tuple[tuple[str, int], ...], effect[2]))
        return f"{who} forgets {','.join(cast(tuple[str, ...], effect[1]))} (marks {marks})"
    if kind is Fx.SEND:
        dst, msg = cast(int, effect[1]), cast(Message, effect[3])
        return f"{who} -> {_node_text(topo, dst)}: {message_text(msg)}"
    if kind is Fx.CSEND:
        dst, msg = cast(int, effect[1]), cast(Message, effect[2])
        return f"{who} -> {_node_text(topo, dst)}: {message_text(msg)}"
    if kind is Fx.REPORT:
        result = effect[1]
        assert isinstance(result, co.Result)
        return f"{who} reports {result.value.upper()} to its user ({effect[2]})"
    if kind is Fx.FINISHED:
        return f"{who} is finished with the transaction"
    if kind is Fx.TIMER_SET:
        key = effect[1]
        return f"{who} sets its {key.value} timer" if isinstance(key, co.Timer) else f"{who} sets its timer for {key}"
    if kind is Fx.TIMER_CANCEL:
        return f"{who} cancels its timer for {effect[1]}"
    if kind is Fx.CLOSE:
        return f"{who} closes the connection"
    if kind is Fx.CRASH:
        return f"{who} CRASHES after {effect[1]} of its {effect[2]} actions"
    return None


# ====================================================================== the wire


Encoder = Callable[[Message], bytes]
Decoder = Callable[[bytes], Message]


class WireCodec:
    """Every simulated message goes through the real codec (or a broken one a
    test passes): what arrives is what ``decode(encode(msg))`` gives. The
    codec is pure, so each distinct message is converted once (memoised).
    ``carry`` returns the message that arrives, or None with ``problem`` set
    when the message does not come back as it left (or does not decode)."""

    def __init__(self, encoder: Encoder = encode, decoder: Decoder = decode) -> None:
        self.encoder, self.decoder = encoder, decoder
        self._seen: dict[Message, tuple[Message | None, str]] = {}
        # The last message carried and what arrived: a core sends one message
        # object to every participant (PREPARE, COMMIT, ABORT), so most
        # fan-outs skip hashing it (a frozen dataclass hashes in Python).
        self._last: tuple[Message | None, tuple[Message | None, str]] = (None, (None, ""))

    def carry(self, msg: Message) -> tuple[Message | None, str]:
        last, seen = self._last
        if msg is last:
            return seen
        hit = self._seen.get(msg)
        if hit is None:
            line = b""
            try:
                line = self.encoder(msg)
                back = self.decoder(line)
            except DecodeError as e:
                hit = (None, f"{msg!r} was encoded as {line!r}, which does not decode: {e}")
            else:
                hit = (back, "" if back == msg else f"{msg!r} was encoded as {line!r} and decoded as {back!r}")
            self._seen[msg] = hit
        self._last = (msg, hit)
        return hit


@dataclass(frozen=True, kw_only=True, slots=True)
class PropertyViolation:
    """A property that does not hold. ``rule`` names it (AC1, truth, ...)."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"
