"""The explorer's vocabulary: global states, node snapshots, network entries and steps, as named types.

Theory of operation. A global state (:class:`State`) is immutable and made of
small integers: one snapshot id per node (participants first, then clients),
each client's connection state to each participant, the network as a bit mask
over interned :class:`Entry` ids, and the fault budgets left. A snapshot
(:class:`PSnap`, :class:`CSnap`) is a canonical frozen copy of one node (its
core's fields, durable store, timers, up or down, and a participant's held
lazy records); the explorer interns snapshots and entries, so states hash and
compare as tuples of ints. A :class:`Step` names one transition; its ``kind``
says which of its fields are used.

The rule this module keeps: data and pure conversions only (freezing a core to
a hashable value and back); the search lives in :mod:`harness.sim.explore`.
"""

from __future__ import annotations

import enum
import struct
from array import array
from dataclasses import dataclass
from typing import Any, NamedTuple

from harness.protocol import coordinator as co
from harness.protocol.messages import Message
from harness.protocol.participant import Summary, TxRecord
from harness.sim.model import Cut, Effect, Wire


@dataclass(frozen=True, kw_only=True)
class Bounds:
    """Fault budgets for one exploration (each a total over the whole run)."""

    crashes: int = 1  # node crashes, participants or clients, between or inside steps
    losses: int = 0  # messages lost in flight
    duplicates: int = 0  # messages delivered twice
    early: int = 0  # timer firings and restarts while messages are still in flight


class Fate(enum.Enum):
    """What happens to a participant's reply to its client, besides arriving."""

    LOST = "lost"
    DUPLICATED = "duplicated"


class StepKind(enum.IntEnum):
    """A kind of step, and the :class:`Step` fields it uses. (An IntEnum with
    int's hash: it hashes at C speed in the explorer's memo keys; Enum's own
    __hash__ is a Python function.)"""

    __hash__ = int.__hash__

    START = 0  # node (a client), crash_after
    DELIVER = 1  # entry, crash_after, fate of the reply
    DUPLICATE = 2  # entry
    LOSE = 3  # entry
    TIMER = 4  # node, timer, crash_after
    CRASH = 5  # node
    RESTART = 6  # node (a participant), crash_after
    WRITE = 7  # node (a participant): the lazy records it holds become durable
    STRANGER = 8  # node (a participant), entry: a PREPARE from outside the cluster (see transitions)


class Step(NamedTuple):
    """One transition of the explored system."""

    kind: StepKind
    node: int = -1  # the node that steps (START, TIMER, CRASH, RESTART, WRITE)
    entry: int = -1  # the network entry (DELIVER, DUPLICATE, LOSE)
    timer: Any = None  # TIMER: a participant's txid or a coordinator's co.Timer
    crash_after: Cut | None = None  # the node crashes inside the step, there
    # DELIVER: what becomes of the reply a participant sends its client: None
    # (handled at once), a Fate, or the Cut where the client crashes while
    # handling it.
    fate: Fate | Cut | None = None


class Conn(enum.IntEnum):
    """A client's connection to one participant."""

    CLOSED = 0  # the next send connects (or is refused if the participant is down)
    OPEN = 1
    BROKEN = 2  # the participant crashed; the client has not noticed yet


class Entry(NamedTuple):
    """Something in flight: a message, or a connection event for a client."""

    wire: Wire
    src: int  # node index
    dst: int  # node index
    msg: Message | None  # None for REFUSED and LOST


class State(NamedTuple):
    """A global state."""

    nodes: tuple[int, ...]  # snapshot id of each node: participants, then clients
    conns: tuple[int, ...]  # a Conn per (client, participant), client-major
    net: int  # bit mask over the interned entries in flight
    crashes: int  # budgets left
    losses: int
    duplicates: int
    early: int


class Packer:
    """States as compact bytes, for the explorer's store: snapshot ids as
    32-bit words, connection states and budgets as bytes, then the network
    mask (little-endian, as long as it needs)."""

    def __init__(self, nodes: int, conns: int) -> None:
        self._nodes = nodes
        self._conn0 = 4 * nodes
        self._budget0 = self._conn0 + conns
        self._net0 = self._budget0 + 4
        self._head = struct.Struct(f"={nodes}I{conns + 4}B").pack

    @property
    def net_at(self) -> int:
        """Where the network starts in a packed state: what comes before is its head (see head)."""
        return self._net0

    def head(self, state: State) -> bytes:
        """``state`` packed without its network: pack(state) is head(state) and then the network."""
        nodes, conns, _, *budgets = state
        return self._head(*nodes, *conns, *budgets)

    def pack(self, state: State) -> bytes:
        nodes, conns, net, *budgets = state
        return self._head(*nodes, *conns, *budgets) + net.to_bytes((net.bit_length() + 7) >> 3, "little")

    def unpack(self, data: bytes) -> State:
        c0, b0, n0 = self._conn0, self._budget0, self._net0
        nodes = array("I")
        nodes.frombytes(data[:c0])
        crashes, losses, duplicates, early = data[b0:n0]
        net = int.from_bytes(data[n0:], "little")
        return tuple.__new__(State, (tuple(nodes), tuple(data[c0:b0]), net, crashes, losses, duplicates, early))


FrozenCore = tuple[type, tuple[tuple[str, object], ...]]


class PSnap(NamedTuple):
    """A participant, frozen."""

    up: bool
    core: FrozenCore | None  # None while down
    durable: tuple[TxRecord, ...]  # in txid order
    timers: frozenset[str]
    held: tuple[TxRecord, ...]  # lazy records not yet durable, in the order issued
    # Compaction (model.PNode): what was forgotten (for judging only), and the durable marks and summary.
    forgotten: tuple[TxRecord, ...] = ()
    marks: tuple[tuple[str, int], ...] = ()
    summary: Summary | None = None


@dataclass(frozen=True)
class History:
    """What happened before an explored run begins (compaction needs earlier
    transactions of the same clients): each participant's durable records,
    which participants start crashed (they restart from them, restore +
    recover), and late requests of the earlier transactions still in flight,
    as (client index, participant index, message)."""

    records: tuple[tuple[TxRecord, ...], ...]  # per participant
    down: frozenset[int] = frozenset()
    late: tuple[tuple[int, int, Message], ...] = ()


FINISHED = ("finished",)  # the one frozen form of every finished coordinator


class CSnap(NamedTuple):
    """A client, frozen."""

    alive: bool
    core: FrozenCore | tuple[str] | None  # None before its start or after its crash; FINISHED when done
    reported: co.Result | None
    timers: frozenset[co.Timer]


class FinishedCore:
    """Stands for a finished coordinator: CNode feeds it nothing."""

    phase = co.Phase.DONE


# ---------------------------------------------------------------- canonical frozen cores


class Tag(enum.Enum):
    DICT = "dict"
    SET = "set"
    LIST = "list"


def freeze_value(v: object) -> object:
    if isinstance(v, dict):
        return (Tag.DICT, tuple(sorted((k, freeze_value(x)) for k, x in v.items())))
    if isinstance(v, set):
        return (Tag.SET, frozenset(v))
    if isinstance(v, list):
        return (Tag.LIST, tuple(freeze_value(x) for x in v))
    return v  # str, int, None, enums, frozen dataclasses, tuples: immutable already


def thaw_value(v: object) -> object:
    if type(v) is tuple and len(v) == 2 and isinstance(v[0], Tag):
        tag, body = v
        if tag is Tag.DICT:
            return {k: thaw_value(x) for k, x in body}
        if tag is Tag.SET:
            return set(body)
        return [thaw_value(x) for x in body]
    return v


def freeze_core(core: object) -> FrozenCore:
    """A canonical, hashable copy of a core's fields (any class whose state is
    its instance ``__dict__`` of immutable values, dicts, sets and lists)."""
    return type(core), tuple((k, freeze_value(v)) for k, v in vars(core).items())


def thaw_core(frozen: FrozenCore) -> Any:
    cls: Any
    cls, items = frozen
    core = cls.__new__(cls)
    core.__dict__.update((k, thaw_value(v)) for k, v in items)
    return core


class Op(NamedTuple):
    """What a memoised node step leaves for the global level (network routing, judging)."""

    what: int  # one of the _OP_* codes below
    node: int = -1  # SEND: the destination; CSEND: the participant
    entry: int = -1  # SEND, CSEND: the entry to put in flight
    refused: int = -1  # CSEND: the entry for a refused connection
    record: TxRecord | None = None  # PERSIST
    result: co.Result | None = None  # REPORT
    problem: str = ""  # CODEC: the message did not survive the codec


OP_SEND, OP_CSEND, OP_PERSIST, OP_REPORT, OP_CRASH, OP_CODEC = range(6)


class Call(NamedTuple):
    """One node step, memoised: the node's new snapshot id, the routing
    operations, where a crash may cut the step (mid_step_cuts), the effects,
    and the entry of a participant's reply to a client (-1: none)."""

    sid: int
    ops: tuple[Op, ...]
    cuts: tuple[Cut, ...]
    effects: tuple[Effect, ...]
    reply: int
