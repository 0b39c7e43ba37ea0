"""Exhaustive, breadth-first exploration of every reachable state of a small configuration.

Theory of operation. A global state is an immutable tuple of small integers:
one snapshot id per participant and per client, each client's connection
state to each participant, the network as a bit mask over interned entries,
and the fault budgets left. A snapshot is a canonical frozen copy of one node
(its core's fields, durable store, timers, up or down, and a participant's
held lazy records), interned, so states
hash and compare as tuples of ints. One node step, (snapshot, input) ->
(snapshot, effects), is deterministic, so it is computed once and memoised;
so is the judgement of a durable write. Every client runs one transaction
(client i writes t<i> = i).

The model, and why each choice:

* Steps: a client starts; a message is delivered; within the budgets a
  message is lost or duplicated (delivered with a copy left in flight); a
  timer fires; a node crashes, between steps or between two actions of one
  step; a crashed participant restarts from its durable records (restore +
  recover); a participant writes the commit records it holds (a lazy commit,
  see model.py): any time, between any other steps, while a crash is left in
  the budget to lose them, and at the end of the step once none is (apply).
  A crashed client never comes back.
* Messages to participants are delivered in any order (the network is a set:
  an identical message already in flight merges with it).
* A participant's reply is handled by its client in the same step, unless it
  is lost, duplicated, or the client crashes while handling it (each within
  the budgets). Letting replies wait in flight multiplies the states by every
  interleaving with the other nodes' steps (too many to explore in a minute);
  what this leaves out is a reply overtaken by other events, which the random
  simulator covers.
* Timers fire, and crashed participants restart, only when no deliverable
  message is in flight: timeouts are long next to message delays. ``early``
  budgets the exceptions (a message slower than a timeout). Which timer fires
  first is still free.
* A participant's crash breaks its clients' connections (they notice later,
  on_connection_lost); a send on a closed connection to a participant that is
  down is refused (on_unreachable), the only case where the message was
  certainly not delivered. A message already in flight to a participant that
  crashes stays in flight and may arrive after the restart: more than TCP
  allows, so a safe superset (it is how a duplicated PREPARE meets a
  participant that forgot its vote).
* A finished coordinator ignores every input (as nodes.py does), so all
  finished coordinators are one snapshot and messages to them are dropped.

Safety (invariants.check_persist / check_report) is judged on every
transition, so breadth-first order yields a shortest trace to the first
violation. Liveness: from every reachable state, a fixed fault-free healing
schedule (write held records, restart the crashed, deliver what is in flight,
start the clients, fire the timers) must reach a quiet state that passes
check_quiescent; each state records its healing successor, so this costs one
pass over the states.
"""

from __future__ import annotations

import enum
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from harness.protocol import coordinator as co
from harness.protocol.messages import Message, TxState
from harness.protocol.participant import ParticipantCore, TxRecord
from harness.sim.invariants import LIVENESS, check_persist, check_quiescent, check_report
from harness.sim.model import (
    CNode,
    CoordinatorFactory,
    Effect,
    Fx,
    ParticipantFactory,
    PNode,
    Topology,
    Violation,
    Wire,
    effect_text,
    message_text,
    real_coordinator,
    real_participant,
)


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


class Step(enum.Enum):
    """A kind of step; a step is a tuple whose first item is its kind (shapes below)."""

    START = "start"  # (START, client, crash_after)
    DELIVER = (
        "deliver"  # (DELIVER, entry id, crash_after, fate of the reply: None, a Fate, or its client's crash_after)
    )
    DUPLICATE = "duplicate"  # (DUPLICATE, entry id)
    LOSE = "lose"  # (LOSE, entry id)
    TIMER = "timer"  # (TIMER, node, key, crash_after)
    CRASH = "crash"  # (CRASH, node)
    RESTART = "restart"  # (RESTART, participant, crash_after)
    WRITE = "write"  # (WRITE, participant): the lazy records it holds become durable


class Conn(enum.IntEnum):
    """A client's connection to one participant."""

    CLOSED = 0  # the next send connects (or is refused if the participant is down)
    OPEN = 1
    BROKEN = 2  # the participant crashed; the client has not noticed yet


Entry = tuple[Wire, int, int, Message | None]  # (what, from, to, message)
StepKey = tuple[Any, ...]
State = tuple[Any, ...]


@dataclass
class ExploreResult:
    """What an exploration found."""

    states: int
    transitions: int
    depth: int  # the longest shortest path from the initial state
    seconds: float
    complete: bool  # False when stopped by max_states
    violations: list[Violation] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)  # the counterexample, one line per step or effect

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float("inf")


# ---------------------------------------------------------------- canonical snapshots


class _Tag(enum.Enum):
    DICT = "dict"
    SET = "set"
    LIST = "list"


def _freeze_value(v: object) -> object:
    if isinstance(v, dict):
        return (_Tag.DICT, tuple(sorted((k, _freeze_value(x)) for k, x in v.items())))
    if isinstance(v, set):
        return (_Tag.SET, frozenset(v))
    if isinstance(v, list):
        return (_Tag.LIST, tuple(_freeze_value(x) for x in v))
    return v  # str, int, None, enums, frozen dataclasses, tuples: immutable already


def _thaw_value(v: object) -> object:
    if type(v) is tuple and len(v) == 2 and isinstance(v[0], _Tag):
        tag, body = v
        if tag is _Tag.DICT:
            return {k: _thaw_value(x) for k, x in body}
        if tag is _Tag.SET:
            return set(body)
        return [_thaw_value(x) for x in body]
    return v


def freeze_core(core: object) -> tuple[type, tuple[tuple[str, object], ...]]:
    """A canonical, hashable copy of a core's fields (any class whose state is
    its instance ``__dict__`` of immutable values, dicts, sets and lists)."""
    return type(core), tuple((k, _freeze_value(v)) for k, v in vars(core).items())


def thaw_core(frozen: tuple[type, tuple[tuple[str, object], ...]]) -> Any:
    cls: Any
    cls, items = frozen
    core = cls.__new__(cls)
    core.__dict__.update((k, _thaw_value(v)) for k, v in items)
    return core


# ---------------------------------------------------------------- the explorer

_FINISHED = ("finished",)  # the one frozen form of every finished coordinator


class _FinishedCore:
    """Stands for a finished coordinator: CNode feeds it nothing."""

    phase = co.Phase.DONE


_NO_RANK = 99

# Indices of the budgets after the network mask in a global state.
_CRASHES, _LOSSES, _DUPS, _EARLY = range(4)

# Operations a memoised node step leaves for the global level (network routing).
_OP_SEND, _OP_CSEND, _OP_PERSIST, _OP_REPORT, _OP_CRASH = range(5)


class Explorer:
    """Explores every state of ``participants`` participants and ``clients``
    clients (one transaction each) within ``bounds``.

    ``participant_factory`` and ``coordinator_factory`` build the cores, so a
    broken variant can be explored as well as the real protocol."""

    def __init__(
        self,
        participants: int = 3,
        clients: int = 2,
        bounds: Bounds | None = None,
        *,
        participant_factory: ParticipantFactory = real_participant,
        coordinator_factory: CoordinatorFactory = real_coordinator,
        max_states: int = 0,
        liveness: bool = True,
        progress: Callable[[int, int, int, float], None] | None = None,
    ) -> None:
        self.topo = Topology(participants, clients)
        self.bounds = bounds or Bounds()
        self.pfactory = participant_factory
        self.cfactory = coordinator_factory
        self.max_states = max_states
        self.liveness = liveness
        self.progress = progress
        self.np, self.nc = participants, clients
        self._conn0 = participants + clients  # offset of the connection states in a global state
        self._net = self._conn0 + participants * clients  # offset of the network bit mask
        self.txids = tuple(f"t{i}" for i in range(1, clients + 1))
        self._client_of_txid = {t: participants + i for i, t in enumerate(self.txids)}
        # Interned node snapshots, and what is derived from each.
        self._snaps: list[tuple[Any, ...]] = []
        self._sid: dict[tuple[Any, ...], int] = {}
        self._durable_state: list[dict[str, TxState]] = []  # participants: txid -> durable state
        self._up: list[bool] = []  # participant up, client alive
        self._accepts: list[bool] = []  # up, or alive and not finished: a message to it can matter
        self._active: list[bool] = []  # clients: coordinating an unfinished transaction
        self._startable: list[bool] = []  # clients: alive and not started
        # Interned network entries: the network is a bit mask over their ids.
        self._entries: list[Entry] = []
        self._eid: dict[Entry, int] = {}
        self._to_node = [0] * (participants + clients)  # mask of the entries addressed to each node
        self._verdicts: dict[tuple[Any, ...], list[Violation]] = {}  # check_persist is pure: memoised
        self._calls: dict[tuple[Any, ...], tuple[int, tuple[tuple[Any, ...], ...], int, tuple[Effect, ...]]] = {}

    # ------------------------------------------------------------ interning

    def _intern(self, snap: tuple[Any, ...], node: int, live: PNode | CNode | None = None) -> int:
        sid = self._sid.get(snap)
        if sid is None:
            sid = self._sid[snap] = len(self._snaps)
            self._snaps.append(snap)
            if node < self.np:
                self._durable_state.append({r.txid: r.state for r in snap[2]})
                self._active.append(False)
                self._startable.append(False)
            else:
                self._durable_state.append({})
                self._active.append(isinstance(live, CNode) and live.active)
                self._startable.append(bool(snap[0]) and snap[1] is None)
            self._up.append(bool(snap[0]))
            self._accepts.append(bool(snap[0]) and (node < self.np or snap[1] is not _FINISHED))
        return sid

    def _intern_participant(self, node: PNode) -> int:
        durable = tuple(node.durable[t] for t in sorted(node.durable))
        core = freeze_core(node.core) if node.core is not None else None
        return self._intern((node.up, core, durable, frozenset(node.timers), tuple(node.held)), node.index)

    def _intern_client(self, node: CNode) -> int:
        core: object
        if node.core is None:
            core = None
        elif node.core.phase is co.Phase.DONE:
            # A finished coordinator ignores every input (nodes.py drops them),
            # so all finished cores are one state: only what was reported stays.
            core = _FINISHED
        else:
            core = freeze_core(node.core)
        return self._intern((node.alive, core, node.reported, frozenset(node.timers)), node.index, node)

    def _entry(self, e: Entry) -> int:
        eid = self._eid.get(e)
        if eid is None:
            eid = self._eid[e] = len(self._entries)
            self._entries.append(e)
            self._to_node[e[2]] |= 1 << eid
        return eid

    def _pnode(self, index: int, sid: int) -> PNode:
        up, core, durable, timers, held = self._snaps[sid]
        return PNode(
            self.topo,
            index,
            thaw_core(core) if core is not None else None,
            {r.txid: r for r in durable},
            set(timers),
            up,
            held,
        )

    def _cnode(self, index: int, sid: int) -> CNode:
        alive, core, reported, timers = self._snaps[sid]
        if core is _FINISHED:
            live: co.CoordinatorCore | None = cast(co.CoordinatorCore, _FinishedCore())
        else:
            live = thaw_core(core) if core is not None else None
        return CNode(self.topo, index, live, reported, set(timers), alive)

    def initial_state(self) -> State:
        parts = [
            self._intern_participant(PNode(self.topo, i, self.pfactory(name, []), {}, set(), True))
            for i, name in enumerate(self.topo.participant_names)
        ]
        clients = [self._intern_client(CNode(self.topo, self.np + i, None, None, set(), True)) for i in range(self.nc)]
        conns = [int(Conn.OPEN)] * (self.np * self.nc)  # nodes.py connects every link before the first transaction
        b = self.bounds
        return (*parts, *clients, *conns, 0, b.crashes, b.losses, b.duplicates, b.early)

    # ------------------------------------------------------------ one node, memoised

    def _call(
        self, node: int, sid: int, kind: Step, arg: Any, k: int | None
    ) -> tuple[int, tuple[tuple[Any, ...], ...], int, tuple[Effect, ...]]:
        """Feed one input to one node: (new snapshot id, routing operations,
        actions the core returned, effects). ``arg`` is an entry id or a timer key."""
        key = (node, sid, kind, arg, k)
        hit = self._calls.get(key)
        if hit is not None:
            return hit
        names = self.topo.names
        effects: list[Effect]
        if node < self.np:
            p = self._pnode(node, sid)
            if kind is Step.DELIVER:
                tag, src, _, msg = self._entries[arg]
                assert msg is not None
                effects = p.request(src, msg, k) if tag is Wire.REQUEST else p.peer_reply(names[src], msg, k)
            elif kind is Step.TIMER:
                effects = p.timeout(arg, k)
            elif kind is Step.WRITE:
                effects = p.write_held()
            else:
                effects = p.restart(self.pfactory, k)
            new, steps = self._intern_participant(p), p.steps
        else:
            c = self._cnode(node, sid)
            if kind is Step.DELIVER:
                tag, src, _, msg = self._entries[arg]
                if tag is Wire.REPLY:
                    assert msg is not None
                    effects = c.reply(names[src], msg, k)
                elif tag is Wire.REFUSED:
                    effects = c.unreachable(names[src], k)
                else:
                    effects = c.connection_lost(names[src], k)
            elif kind is Step.TIMER:
                effects = c.timeout(arg, k)
            else:
                i = node - self.np
                effects = c.start(self.cfactory, self.txids[i], i + 1, k)
            new, steps = self._intern_client(c), c.steps
        ops: list[tuple[Any, ...]] = []
        for effect in effects:
            what = effect[0]
            if what is Fx.SEND:
                dst = cast(int, effect[1])
                if 0 <= dst < self.np + self.nc:
                    ops.append(
                        (_OP_SEND, dst, self._entry((cast(Wire, effect[2]), node, dst, cast(Message, effect[3]))))
                    )
            elif what is Fx.CSEND:
                p_ = cast(int, effect[1])
                if 0 <= p_ < self.np:
                    request = self._entry((Wire.REQUEST, node, p_, cast(Message, effect[2])))
                    ops.append((_OP_CSEND, p_, request, self._entry((Wire.REFUSED, p_, node, None))))
            elif what is Fx.PERSIST:
                ops.append((_OP_PERSIST, effect[1]))
            elif what is Fx.REPORT:
                ops.append((_OP_REPORT, effect[1]))
            elif what is Fx.CRASH:
                ops.append((_OP_CRASH,))
        result = (new, tuple(ops), steps, tuple(effects))
        self._calls[key] = result
        return result

    # ------------------------------------------------------------ steps

    def steps(self, state: State) -> list[StepKey]:
        """Every step enabled in ``state``, in a fixed order."""
        np, nc, netx = self.np, self.nc, self._net
        net: int = state[netx]
        crashes, losses, dups, early = state[netx + 1 :]
        snaps, up, call = self._snaps, self._up, self._call
        deliverable = self._deliverable(state)
        quiet = deliverable == 0
        out: list[StepKey] = []
        for node in range(np, np + nc):
            if self._startable[state[node]]:
                out.append((Step.START, node, None))
                if crashes:
                    n = call(node, state[node], Step.START, None, None)[2]
                    out.extend((Step.START, node, k) for k in range(1, n))
        m = net
        while m:
            low = m & -m
            m ^= low
            eid = low.bit_length() - 1
            tag, _, dst, _ = self._entries[eid]
            if not low & deliverable:
                if losses and tag <= Wire.REPLY:
                    out.append((Step.LOSE, eid))
                continue
            for k in [None, *range(1, call(dst, state[dst], Step.DELIVER, eid, None)[2])] if crashes else [None]:
                out.append((Step.DELIVER, eid, k, None))
                client = self._reply_to(dst, state[dst], eid, k)
                if client >= 0 and self._accepts[state[client]]:
                    # The reply's fates other than arriving: lost, duplicated, or its client crashes handling it.
                    if losses:
                        out.append((Step.DELIVER, eid, k, Fate.LOST))
                    if dups:
                        out.append((Step.DELIVER, eid, k, Fate.DUPLICATED))
                    if crashes > (k is not None):
                        reply = self._reply_entry(dst, state[dst], eid, k)
                        n = call(client, state[client], Step.DELIVER, reply, None)[2]
                        out.extend((Step.DELIVER, eid, k, j) for j in range(1, n))
            if dups:
                out.append((Step.DUPLICATE, eid))
            if losses and tag <= Wire.REPLY:
                out.append((Step.LOSE, eid))
        if quiet or early:
            for node in range(np + nc):
                timers = snaps[state[node]][3]
                for t in sorted(timers, key=str) if timers else ():
                    out.append((Step.TIMER, node, t, None))
                    if crashes:
                        n = call(node, state[node], Step.TIMER, t, None)[2]
                        out.extend((Step.TIMER, node, t, k) for k in range(1, n))
            for node in range(np):
                if not up[state[node]]:
                    out.append((Step.RESTART, node, None))
                    if crashes:
                        n = call(node, state[node], Step.RESTART, None, None)[2]
                        out.extend((Step.RESTART, node, k) for k in range(1, n))
        if crashes:  # with no crash left, held records are written at once (see apply)
            for node in range(np):
                if snaps[state[node]][4]:
                    out.append((Step.WRITE, node))
            for node in range(np):
                if up[state[node]]:
                    out.append((Step.CRASH, node))
            for node in range(np, np + nc):
                if self._active[state[node]]:
                    out.append((Step.CRASH, node))
        return out

    def _reply_entry(self, node: int, sid: int, eid: int, k: int | None) -> int:
        """The entry id of the reply to a client that delivering ``eid`` makes ``node`` send, or -1."""
        if node >= self.np:
            return -1
        for op in self._call(node, sid, Step.DELIVER, eid, k)[1]:
            if op[0] == _OP_SEND and op[1] >= self.np:
                return cast(int, op[2])
        return -1

    def _reply_to(self, node: int, sid: int, eid: int, k: int | None) -> int:
        reply = self._reply_entry(node, sid, eid, k)
        return self._entries[reply][2] if reply >= 0 else -1

    def heal_rank(self, step: StepKey) -> int:
        """The healing schedule's preference among fault-free steps (lower first)."""
        kind = step[0]
        if kind is Step.DELIVER:
            return 1 if step[2] is None and step[3] is None else _NO_RANK
        if kind is Step.TIMER:
            return _NO_RANK if step[3] is not None else (3 if step[1] >= self.np else 4)
        if kind is Step.RESTART:
            return 0 if step[2] is None else _NO_RANK
        if kind is Step.START:
            return 2 if step[2] is None else _NO_RANK
        if kind is Step.WRITE:
            return 0
        return _NO_RANK

    def apply(self, state: State, step: StepKey) -> tuple[State, list[tuple[int, Effect]], list[Violation]]:
        """The state after ``step``, its effects (with the node that had each),
        and the properties the transition breaks."""
        s = list(state)
        netx = self._net
        net: int = state[netx]
        budget = list(state[netx + 1 :])  # crashes, losses, duplicates, early
        kind = step[0]
        effects: list[tuple[int, Effect]] = []
        violations: list[Violation] = []
        replies: list[int] = []
        if kind is Step.DELIVER or kind is Step.DUPLICATE:
            eid = step[1]
            tag, src, node, _ = self._entries[eid]
            if kind is Step.DELIVER:
                net &= ~(1 << eid)
                k = step[2]
            else:
                budget[_DUPS] -= 1
                k = None
            if tag is Wire.LOST:
                s[self._conn0 + (node - self.np) * self.np + src] = Conn.CLOSED
            net = self._node_step(state, s, node, Step.DELIVER, eid, k, net, budget, effects, violations, replies)
        elif kind is Step.LOSE:
            net &= ~(1 << step[1])
            budget[_LOSSES] -= 1
        elif kind is Step.TIMER or kind is Step.RESTART:
            if self._deliverable(state):
                budget[_EARLY] -= 1
            if kind is Step.TIMER:
                node, arg, k = step[1], step[2], step[3]
            else:
                node, arg, k = step[1], None, step[2]
            net = self._node_step(state, s, node, kind, arg, k, net, budget, effects, violations, replies)
        elif kind is Step.START:
            net = self._node_step(state, s, step[1], kind, None, step[2], net, budget, effects, violations, replies)
        elif kind is Step.WRITE:
            net = self._node_step(state, s, step[1], kind, None, None, net, budget, effects, violations, replies)
        else:  # CRASH: memory, timers and held records lost
            node = step[1]
            budget[_CRASHES] -= 1
            snap = self._snaps[state[node]]
            down: tuple[Any, ...] = (False, None, snap[2], frozenset())
            if node < self.np:
                down += ((),)  # no held records
            s[node] = self._intern(down, node)
            net = self._crash_links(node, s, net)
        for reply in replies:
            # A reply to a client is handled there at once (see the module docstring), unless its fate says otherwise.
            fate = step[3] if kind is Step.DELIVER else None
            client = self._entries[reply][2]
            if fate is Fate.LOST:
                budget[_LOSSES] -= 1
                continue
            times, j = 1, None
            if fate is Fate.DUPLICATED:
                budget[_DUPS] -= 1
                times = 2
            elif fate is not None:
                j = fate
            for _ in range(times):
                if self._accepts[s[client]]:
                    net = self._node_step(
                        state, s, client, Step.DELIVER, reply, j, net, budget, effects, violations, []
                    )
        if not budget[_CRASHES]:
            # With no crash left to lose them, held records are as good as
            # written: writing them now, rather than at every later point,
            # leaves out only states that differ in when an inevitable write
            # happens. That hides no violation because only committed records
            # are lazy: a rule judged against a node that already shows its
            # commit flags at least what it flags against its yes vote (a
            # core that made other records lazy would need every point).
            for j in range(self.np):
                if self._snaps[s[j]][4]:
                    net = self._node_step(state, s, j, Step.WRITE, None, None, net, budget, effects, violations, [])
        s[netx] = net
        s[netx + 1 :] = budget
        return tuple(s), effects, violations

    def _node_step(
        self,
        before: State,
        s: list[Any],
        node: int,
        kind: Step,
        arg: Any,
        k: int | None,
        net: int,
        budget: list[int],
        effects: list[tuple[int, Effect]],
        violations: list[Violation],
        replies: list[int],
    ) -> int:
        """Run one node step inside a global step and route what it did."""
        s[node], ops, _, node_effects = self._call(node, s[node], kind, arg, k)
        effects.extend((node, e) for e in node_effects)
        for op in ops:
            what = op[0]
            if what == _OP_SEND:
                dst = op[1]
                if self._accepts[s[dst]]:
                    if dst >= self.np:
                        replies.append(op[2])
                    else:
                        net |= 1 << op[2]
            elif what == _OP_CSEND:
                p = op[1]
                ci = self._conn0 + (node - self.np) * self.np + p
                conn = s[ci]
                if conn == Conn.OPEN:
                    net |= 1 << op[2]
                elif conn == Conn.CLOSED:
                    if self._up[s[p]]:
                        s[ci] = Conn.OPEN
                        net |= 1 << op[2]
                    else:
                        net |= 1 << op[3]
                # BROKEN: written into a dead connection; the LOST entry is on its way
            elif what == _OP_PERSIST:
                violations += self._judge_persist(before, s, node, op[1])
            elif what == _OP_REPORT:
                violations += self._judge_report(s, node, op[1])
            else:  # _OP_CRASH: the node crashed between two of its actions
                budget[_CRASHES] -= 1
                net = self._crash_links(node, s, net)
        if node >= self.np and not self._accepts[s[node]]:
            net &= ~self._to_node[node]  # nothing in flight can matter to a finished client
        return net

    def _crash_links(self, node: int, s: list[Any], net: int) -> int:
        """What a crash does outside the node. A crashed participant's client
        connections break (the clients notice later). What is in flight to a
        participant stays in flight and may arrive after it restarts (a network
        that holds messages: more than TCP allows, so a safe superset); what is
        in flight to a client is lost with it (clients never come back)."""
        if node >= self.np:
            return net & ~self._to_node[node]
        for i in range(self.nc):
            ci = self._conn0 + i * self.np + node
            client = self.np + i
            if s[ci] == Conn.OPEN:
                s[ci] = Conn.BROKEN
                if self._up[s[client]]:
                    net |= 1 << self._entry((Wire.LOST, node, client, None))
        return net

    def _deliverable(self, state: State) -> int:
        """The entries in flight whose destination is up."""
        net: int = state[self._net]
        for p in range(self.np):
            if not self._up[state[p]]:
                net &= ~self._to_node[p]
        return net

    def _view(self, s: State | list[Any], txid: str) -> tuple[TxState | None, ...]:
        return tuple(self._durable_state[s[j]].get(txid) for j in range(self.np))

    def _judge_persist(self, before_state: State, s: list[Any], node: int, record: TxRecord) -> list[Violation]:
        # The others' durable states as they are now; this node's as it was before the step.
        txid = record.txid
        view = [self._durable_state[s[j]].get(txid) for j in range(self.np)]
        view[node] = self._durable_state[before_state[node]].get(txid)
        before = tuple(view)
        client = self._client_of_txid.get(txid)
        reported = self._snaps[s[client]][2] if client is not None else None
        key = (txid, before, node, record.state, reported)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = check_persist(
                txid, self.topo.display[: self.np], before, node, record.state, reported
            )
        return verdict

    def _judge_report(self, s: list[Any], node: int, result: co.Result) -> list[Violation]:
        txid = self.txids[node - self.np]
        return check_report(txid, self.topo.display[: self.np], self._view(s, txid), result, self.topo.display[node])

    # ------------------------------------------------------------ quiet states

    def quiescent_violations(self, state: State) -> list[Violation]:
        """check_quiescent on a state where the healing schedule has nothing left to do."""
        cores: list[ParticipantCore] = []
        stores: list[dict[str, TxRecord]] = []
        for j in range(self.np):
            p = self._pnode(j, state[j])
            if p.core is None:
                return [Violation(rule=LIVENESS, detail=f"{self.topo.display[j]} is down")]
            cores.append(p.core)
            stores.append(p.durable)
        reports: dict[str, co.Result] = {}
        waiting: list[str] = []
        for i in range(self.nc):
            node = self.np + i
            reported = self._snaps[state[node]][2]
            if reported is not None:
                reports[self.txids[i]] = reported
            if self._active[state[node]]:
                waiting.append(self.topo.display[node])
        return check_quiescent(self.topo.display[: self.np], cores, stores, reports, waiting)

    # ------------------------------------------------------------ search

    def run(self) -> ExploreResult:
        """Explore breadth-first; stop at the first safety violation."""
        t0 = time.perf_counter()
        init = self.initial_state()
        index: dict[State, int] = {init: 0}
        order: list[State] = [init]
        parent = array("l", [-1])
        via: list[StepKey | None] = [None]
        depth = array("H", [0])
        heal = array("l", [-1])
        transitions = 0
        complete = True
        i = 0
        next_report = 50_000
        steps, apply, heal_rank = self.steps, self.apply, self.heal_rank
        while i < len(order):
            state = order[i]
            best_rank, best = _NO_RANK, -1
            for step in steps(state):
                nxt, _, violations = apply(state, step)
                transitions += 1
                j = index.get(nxt)
                if j is None:
                    j = index[nxt] = len(order)
                    order.append(nxt)
                    parent.append(i)
                    via.append(step)
                    depth.append(depth[i] + 1)
                    heal.append(-1)
                if violations:
                    trace = self._trace(order, parent, via, i) + self._lines(state, step)
                    trace += [f"VIOLATION {v}" for v in violations]
                    return ExploreResult(
                        states=len(order),
                        transitions=transitions,
                        depth=depth[i] + 1,
                        seconds=time.perf_counter() - t0,
                        complete=False,
                        violations=violations,
                        trace=trace,
                    )
                rank = heal_rank(step)
                if rank < best_rank and j != i:
                    best_rank, best = rank, j
            heal[i] = best
            i += 1
            if self.progress is not None and i >= next_report:
                next_report += 50_000
                self.progress(i, len(order), depth[i - 1], time.perf_counter() - t0)
            if self.max_states and len(order) >= self.max_states:
                complete = False
                break
        result = ExploreResult(
            states=len(order),
            transitions=transitions,
            depth=max(depth),
            seconds=0.0,
            complete=complete,
        )
        if complete and self.liveness:
            self._check_healing(order, parent, via, heal, result)
        result.seconds = time.perf_counter() - t0
        return result

    def _check_healing(
        self, order: list[State], parent: array[int], via: list[StepKey | None], heal: array[int], result: ExploreResult
    ) -> None:
        """From every state, follow the healing schedule to a quiet state, which
        must pass check_quiescent. Memoised: each state is followed once."""
        status = bytearray(len(order))  # 0 unknown, 1 heals, 2 does not, 3 on the current path
        for start in range(len(order)):
            if status[start]:
                continue
            path = []
            j = start
            verdict = 0
            while True:
                if status[j] in (1, 2):
                    verdict = status[j]
                    break
                if status[j] == 3:
                    verdict = 2  # the healing schedule goes round in circles
                    break
                status[j] = 3
                path.append(j)
                if heal[j] == -1:
                    verdict = 2 if self.quiescent_violations(order[j]) else 1
                    break
                j = heal[j]
            for x in path:
                status[x] = verdict
            if verdict == 2:
                break
        bad = status.find(2)
        if bad < 0:
            return
        lines = self._trace(order, parent, via, bad)
        lines.append("-- faults stop here; the healing schedule follows --")
        seen = set()
        j = bad
        while heal[j] != -1 and j not in seen:
            seen.add(j)
            nxt = heal[j]
            step = next(st for st in self.steps(order[j]) if self.apply(order[j], st)[0] == order[nxt])
            lines += self._lines(order[j], step)
            j = nxt
        violations = (
            [Violation(rule=LIVENESS, detail="the healing schedule loops without reaching a quiet state")]
            if heal[j] != -1
            else self.quiescent_violations(order[j])
        )
        result.violations = violations
        result.trace = lines + [f"VIOLATION {v}" for v in violations]

    # ------------------------------------------------------------ words

    def _trace(self, order: list[State], parent: array[int], via: list[StepKey | None], last: int) -> list[str]:
        """The steps from the initial state to ``order[last]``, in words."""
        chain = []
        j = last
        while j > 0:
            chain.append(j)
            j = parent[j]
        lines: list[str] = []
        for j in reversed(chain):
            step = via[j]
            assert step is not None
            lines += self._lines(order[parent[j]], step)
        return lines

    def _lines(self, state: State, step: StepKey) -> list[str]:
        _, effects, _ = self.apply(state, step)
        lines = [self.describe(state, step)]
        for node, effect in effects:
            text = effect_text(self.topo, node, effect)
            if text is not None:
                lines.append(f"    {text}")
        return lines

    def describe(self, state: State, step: StepKey) -> str:
        """One step in the protocol's words."""
        d = self.topo.display
        kind = step[0]

        def crash_note(k: int | None) -> str:
            return "" if k is None else f"  [and crashes after {k} of its actions]"

        if kind is Step.START:
            i = step[1] - self.np
            return f"{d[step[1]]} begins {self.txids[i]} (value={i + 1}){crash_note(step[2])}"
        if kind in (Step.DELIVER, Step.DUPLICATE, Step.LOSE):
            tag, src, dst, msg = self._entries[step[1]]
            if tag is Wire.REFUSED:
                text = f"{d[dst]} cannot connect to {d[src]}: connection refused"
            elif tag is Wire.LOST:
                text = f"{d[dst]} sees its connection to {d[src]} closed"
            else:
                assert msg is not None
                text = f"{d[src]} -> {d[dst]}: {message_text(msg)}"
            if kind is Step.LOSE:
                return f"the network loses {text}"
            if kind is Step.DUPLICATE:
                return f"{text}  [duplicated: a copy stays in flight]"
            fate = step[3]
            if fate is Fate.LOST:
                text += "  [its reply is lost]"
            elif fate is Fate.DUPLICATED:
                text += "  [its reply arrives twice]"
            elif fate is not None:
                text += f"  [its client crashes after {fate} of its actions handling the reply]"
            return text + crash_note(step[2])
        early = "  [early: messages still in flight]" if self._deliverable(state) else ""
        if kind is Step.TIMER:
            node, key = step[1], step[2]
            what = f"{key.value} timer" if isinstance(key, co.Timer) else f"timer for {key}"
            return f"{d[node]} {what} fires{crash_note(step[3])}{early}"
        if kind is Step.CRASH:
            return f"{d[step[1]]} crashes"
        if kind is Step.WRITE:
            return f"{d[step[1]]} writes the commit record(s) it held"
        records = len(self._snaps[state[step[1]]][2])
        return f"{d[step[1]]} restarts from {records} durable record(s){crash_note(step[2])}{early}"
