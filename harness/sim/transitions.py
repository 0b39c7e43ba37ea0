"""The explored system: its initial state, the steps enabled in a state, and what a step does.

Theory of operation. A global state (harness.sim.states.State) is made of
small integers: interned node snapshots, connection states, the network as a
bit mask over interned entries, and the fault budgets left. One node step,
(snapshot, input) -> (snapshot, effects), is deterministic, so it is computed
once and memoised; so is the judgement of a durable write. Every client runs one transaction
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
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from harness.protocol import coordinator as co
from harness.protocol.messages import Message, TxState
from harness.protocol.participant import ParticipantCore, TxRecord
from harness.sim.invariants import (
    CODEC,
    LIVENESS,
    check_lock,
    check_nontrivial,
    check_persist,
    check_quiescent,
    check_report,
)
from harness.sim.model import (
    CNode,
    CoordinatorFactory,
    Effect,
    Fx,
    ParticipantFactory,
    PNode,
    PropertyViolation,
    Topology,
    Wire,
    WireCodec,
    message_text,
    real_coordinator,
    real_participant,
)
from harness.sim.states import (
    FINISHED,
    Bounds,
    Conn,
    CSnap,
    Entry,
    Fate,
    FinishedCore,
    History,
    Packer,
    PSnap,
    State,
    Step,
    StepKind,
    freeze_core,
    thaw_core,
)
from harness.sim.symmetry import Renaming, Symmetry

NO_RANK = 99

# tuple.__new__ builds a NamedTuple from its fields at C speed (its own
# __new__ is a Python function); used for the Steps and States built per transition.
_new: Any = tuple.__new__


class _Op(NamedTuple):
    """What a memoised node step leaves for the global level (network routing, judging)."""

    what: int  # one of the _OP_* codes below
    node: int = -1  # SEND: the destination; CSEND: the participant
    entry: int = -1  # SEND, CSEND: the entry to put in flight
    refused: int = -1  # CSEND: the entry for a refused connection
    record: TxRecord | None = None  # PERSIST
    result: co.Result | None = None  # REPORT
    problem: str = ""  # CODEC: the message did not survive the codec


_OP_SEND, _OP_CSEND, _OP_PERSIST, _OP_REPORT, _OP_CRASH, _OP_CODEC = range(6)


class _Call(NamedTuple):
    """One node step, memoised: the node's new snapshot id, the routing
    operations, how many actions the core returned, and the effects."""

    sid: int
    ops: tuple[_Op, ...]
    actions: int
    effects: tuple[Effect, ...]


class _Budget:
    """The fault budgets left, mutable while a step is applied."""

    __slots__ = ("crashes", "duplicates", "early", "losses")

    def __init__(self, state: State) -> None:
        self.crashes, self.losses, self.duplicates, self.early = (
            state.crashes,
            state.losses,
            state.duplicates,
            state.early,
        )


class Transitions:
    """The system of ``participants`` participants and ``clients`` clients
    (one transaction each) within ``bounds``.

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
        codec: WireCodec | None = None,
        max_states: int = 0,
        liveness: bool = True,
        symmetry: bool = True,
        progress: Callable[[int, int, int, float], None] | None = None,
        txids: tuple[str, ...] | None = None,
        history: History | None = None,
    ) -> None:
        """``txids``: each client's txid (default t1, t2, ...); ``history``:
        what happened before (states.History). Either turns symmetry off: the
        renamings know only the default txids and an empty start."""
        self.topo = Topology(participants, clients)
        self.bounds = bounds or Bounds()
        self.pfactory = participant_factory
        self.cfactory = coordinator_factory
        self.max_states = max_states
        self.liveness = liveness
        self.progress = progress
        self.np, self.nc = participants, clients
        self.txids = txids or tuple(f"t{i}" for i in range(1, clients + 1))
        self.history = history
        self._history_conflicts = history is not None and (
            bool(history.down) or any(r.state is TxState.PREPARED for rs in history.records for r in rs)
        )
        symmetry = symmetry and txids is None and history is None
        self._client_of_txid = {t: participants + i for i, t in enumerate(self.txids)}
        # Interned node snapshots, and what is derived from each.
        self._snaps: list[PSnap | CSnap] = []
        self._sid: dict[PSnap | CSnap, int] = {}
        self._durable_state: list[dict[str, TxState]] = []  # participants: txid -> durable state
        self._up: list[bool] = []  # participant up, client alive
        self._accepts: list[bool] = []  # up, or alive and not finished: a message to it can matter
        self._active: list[bool] = []  # clients: coordinating an unfinished transaction
        self._startable: list[bool] = []  # clients: alive and not started
        self._holds: list[bool] = []  # participants: holding lazy records
        # Interned network entries: the network is a bit mask over their ids.
        self._entries: list[Entry] = []
        self._eid: dict[Entry, int] = {}
        self._to_node = [0] * (participants + clients)  # mask of the entries addressed to each node
        self._verdicts: dict[tuple[Any, ...], list[PropertyViolation]] = {}  # check_persist is pure: memoised
        self._calls: dict[tuple[Any, ...], _Call] = {}
        self.codec = codec or WireCodec()
        self.packer = Packer(participants + clients, participants * clients)
        # Symmetry reduction (harness.sim.symmetry): ordered prepare keeps its first participant.
        probe = coordinator_factory("t0", 0, self.topo.participant_names)
        self.sym = (
            Symmetry(self.topo.participant_names, self.txids, fixed_first=bool(getattr(probe, "ordered", False)))
            if symmetry
            else None
        )
        self._group_size = len(self.sym.group) if self.sym is not None else 1
        self._ren: dict[int, int] = {}  # snapshot id * group size + renaming -> renamed snapshot id
        self._blur: dict[int, int] = {}  # snapshot id * 8 + client renaming -> blurred key
        self._blur_ids: dict[PSnap | CSnap, int] = {}
        # Memoised canonicalisation: per node vector, the least renamed vector and the renamings that give it.
        self._canon_nodes: dict[tuple[tuple[int, ...], bool], tuple[tuple[int, ...], list[int]]] = {}
        self._net_ren: dict[tuple[int, int], int] = {}
        self._eren: dict[int, list[int]] = {}  # entry id -> its id under each renaming

    # ------------------------------------------------------------ interning

    def _intern(self, snap: PSnap | CSnap) -> int:
        sid = self._sid.get(snap)
        if sid is None:
            sid = self._sid[snap] = len(self._snaps)
            self._snaps.append(snap)
            if isinstance(snap, PSnap):
                # Forgotten records still count: judging is by what was ever durable (model.PNode.history).
                self._durable_state.append({r.txid: r.state for r in (*snap.forgotten, *snap.durable)})
                self._active.append(False)
                self._startable.append(False)
                self._up.append(snap.up)
                self._accepts.append(snap.up)
                self._holds.append(bool(snap.held))
            else:
                self._durable_state.append({})
                self._active.append(snap.alive and snap.core is not None and snap.core is not FINISHED)
                self._startable.append(snap.alive and snap.core is None)
                self._up.append(snap.alive)
                self._accepts.append(snap.alive and snap.core is not FINISHED)
                self._holds.append(False)
        return sid

    def _intern_participant(self, node: PNode) -> int:
        durable = tuple(node.durable[t] for t in sorted(node.durable))
        core = freeze_core(node.core) if node.core is not None else None
        forgotten = tuple(node.forgotten[t] for t in sorted(node.forgotten))
        return self._intern(
            PSnap(
                node.up,
                core,
                durable,
                frozenset(node.timers),
                tuple(node.held),
                forgotten,
                tuple(sorted(node.marks.items())),
                node.summary,
            )
        )

    def _intern_client(self, node: CNode) -> int:
        core: Any
        if node.core is None:
            core = None
        elif node.core.phase is co.Phase.DONE:
            # A finished coordinator ignores every input (nodes.py drops them),
            # so all finished cores are one state: only what was reported stays.
            core = FINISHED
        else:
            core = freeze_core(node.core)
        return self._intern(CSnap(node.alive, core, node.reported, frozenset(node.timers)))

    def _entry(self, e: Entry) -> int:
        eid = self._eid.get(e)
        if eid is None:
            eid = self._eid[e] = len(self._entries)
            self._entries.append(e)
            self._to_node[e.dst] |= 1 << eid
        return eid

    def psnap(self, sid: int) -> PSnap:
        snap = self._snaps[sid]
        assert isinstance(snap, PSnap)
        return snap

    def csnap(self, sid: int) -> CSnap:
        snap = self._snaps[sid]
        assert isinstance(snap, CSnap)
        return snap

    def _pnode(self, index: int, sid: int) -> PNode:
        snap = self.psnap(sid)
        core = thaw_core(snap.core) if snap.core is not None else None
        durable = {r.txid: r for r in snap.durable}
        node = PNode(self.topo, index, core, durable, set(snap.timers), snap.up, snap.held)
        if snap.forgotten or snap.marks or snap.summary is not None:
            node.forgotten = {r.txid: r for r in snap.forgotten}
            node.marks = dict(snap.marks)
            node.summary = snap.summary
        return node

    def _cnode(self, index: int, sid: int) -> CNode:
        snap = self.csnap(sid)
        live: co.CoordinatorCore | None
        if snap.core is FINISHED:
            live = cast(co.CoordinatorCore, FinishedCore())
        else:
            live = thaw_core(cast(Any, snap.core)) if snap.core is not None else None
        return CNode(self.topo, index, live, snap.reported, set(snap.timers), snap.alive)

    def initial_state(self) -> State:
        h = self.history
        parts = []
        for i, name in enumerate(self.topo.participant_names):
            records = h.records[i] if h is not None else ()
            down = h is not None and i in h.down
            core = None if down else self.pfactory(name, records)
            parts.append(
                self._intern_participant(PNode(self.topo, i, core, {r.txid: r for r in records}, set(), not down))
            )
        clients = [self._intern_client(CNode(self.topo, self.np + i, None, None, set(), True)) for i in range(self.nc)]
        conns = (int(Conn.OPEN),) * (self.np * self.nc)  # nodes.py connects every link before the first transaction
        net = 0
        for c, p, msg in h.late if h is not None else ():
            net |= 1 << self._entry(Entry(Wire.REQUEST, self.np + c, p, msg))
        b = self.bounds
        return State(tuple(parts + clients), conns, net, b.crashes, b.losses, b.duplicates, b.early)

    # ------------------------------------------------------------ symmetry

    def _renamed_sid(self, sid: int, gi: int) -> int:
        key = sid * self._group_size + gi
        out = self._ren.get(key)
        if out is None:
            assert self.sym is not None
            out = self._ren[key] = self._intern(self.sym.snapshot(gi, self._snaps[sid])) if gi else sid
        return out

    def _blurred(self, sid: int, hi: int) -> int:
        """A key of participant snapshot ``sid`` under client renaming ``hi``
        that is the same whichever participant it is (names blurred)."""
        key = sid * 8 + hi
        out = self._blur.get(key)
        if out is None:
            assert self.sym is not None
            snap = self.sym.snapshot(self.sym.blurred0 + hi, self._snaps[sid])
            out = self._blur[key] = self._blur_ids.setdefault(snap, len(self._blur_ids))
        return out

    def _renamed_entries(self, eid: int) -> list[int]:
        ren = self._eren.get(eid)
        if ren is None:
            sym = self.sym
            assert sym is not None
            e = self._entries[eid]
            ren = self._eren[eid] = [eid] + [
                self._entry(Entry(e.wire, sym.node_of(gi, e.src), sym.node_of(gi, e.dst), sym.value(gi, e.msg)))
                for gi in range(1, len(sym.group))
            ]
        return ren

    def _candidates(self, state: State) -> list[int]:
        """The renamings among which the representative is chosen: every client
        renaming; once no crash is left, each combined with the participant
        renamings that sort the participants by their blurred keys (all orders
        of equal keys). The set is the same for every state of a class, renamed,
        so the least candidate is a class invariant."""
        sym = self.sym
        assert sym is not None
        if state.crashes:
            return list(range(sym.client_only))
        out: list[int] = []
        nodes, np = state.nodes, self.np
        first = 1 if sym.fixed_first else 0
        for hi, h in enumerate(sym.cperms):
            keys = sorted((self._blurred(nodes[i], hi), i) for i in range(first, np))
            groups: list[list[int]] = []
            last = None
            for k, i in keys:
                if k != last:
                    groups.append([])
                    last = k
                groups[-1].append(i)
            for combo in itertools.product(*(itertools.permutations(gr) for gr in groups)):
                pperm = [0] * np
                slot = first
                for gr in combo:
                    for i in gr:
                        pperm[i] = slot
                        slot += 1
                out.append(sym.index[Renaming(tuple(pperm), h)])
        return out

    def canonical(self, state: State) -> State:
        """The representative of ``state``'s class (harness.sim.symmetry): the
        least renaming among the candidates. Without symmetry, ``state``."""
        sym = self.sym
        if sym is None or self._group_size == 1:
            return state
        nodes = state.nodes
        memo_key = (nodes, state.crashes == 0)
        hit = self._canon_nodes.get(memo_key)
        if hit is None:
            node_from = sym.node_from
            ren = self._renamed_sid
            best: tuple[int, ...] | None = None
            ties: list[int] = []
            for gi in self._candidates(state):
                cand = tuple([ren(nodes[o], gi) for o in node_from[gi]])
                if best is None or cand < best:
                    best, ties = cand, [gi]
                elif cand == best:
                    ties.append(gi)
            assert best is not None
            hit = self._canon_nodes[memo_key] = (best, ties)
        best, ties = hit
        if ties == [0]:
            return state._replace(nodes=best)
        best_rest: tuple[tuple[int, ...], int] | None = None
        for gi in ties:
            conns = state.conns
            if gi:
                rest = (tuple([conns[o] for o in sym.conn_from[gi]]), self._renamed_net(state.net, gi))
            else:
                rest = (conns, state.net)
            if best_rest is None or rest < best_rest:
                best_rest = rest
        assert best_rest is not None
        return cast(State, _new(State, (best, *best_rest, state.crashes, state.losses, state.duplicates, state.early)))

    def _renamed_net(self, net: int, gi: int) -> int:
        key = (net, gi)
        out = self._net_ren.get(key)
        if out is None:
            out = 0
            while net:
                low = net & -net
                net ^= low
                out |= 1 << self._renamed_entries(low.bit_length() - 1)[gi]
            self._net_ren[key] = out
        return out

    # ------------------------------------------------------------ one node, memoised

    def _call(self, node: int, sid: int, kind: StepKind, arg: Any, k: int | None) -> _Call:
        """Feed one input to one node. ``arg`` is an entry id or a timer key."""
        key = (node, sid, kind, arg, k)
        hit = self._calls.get(key)
        if hit is not None:
            return hit
        names = self.topo.names
        effects: list[Effect]
        if node < self.np:
            p = self._pnode(node, sid)
            if kind is StepKind.DELIVER:
                e = self._entries[arg]
                assert e.msg is not None
                effects = p.request(e.src, e.msg, k) if e.wire is Wire.REQUEST else p.peer_reply(names[e.src], e.msg, k)
            elif kind is StepKind.TIMER:
                effects = p.timeout(arg, k)
            elif kind is StepKind.WRITE:
                effects = p.write_held()
            else:
                effects = p.restart(self.pfactory, k)
            new, steps = self._intern_participant(p), p.steps
        else:
            c = self._cnode(node, sid)
            if kind is StepKind.DELIVER:
                e = self._entries[arg]
                if e.wire is Wire.REPLY:
                    assert e.msg is not None
                    effects = c.reply(names[e.src], e.msg, k)
                elif e.wire is Wire.REFUSED:
                    effects = c.unreachable(names[e.src], k)
                else:
                    effects = c.connection_lost(names[e.src], k)
            elif kind is StepKind.TIMER:
                effects = c.timeout(arg, k)
            else:
                i = node - self.np
                effects = c.start(self.cfactory, self.txids[i], i + 1, k)
            new, steps = self._intern_client(c), c.steps
        ops: list[_Op] = []
        for effect in effects:
            what = effect[0]
            if what is Fx.SEND or what is Fx.CSEND:
                # What goes on the wire arrives as the codec decodes it (model.WireCodec).
                arrived, problem = self.codec.carry(cast(Message, effect[-1]))
                if arrived is None or problem:
                    ops.append(_Op(_OP_CODEC, problem=problem))
                    continue
            if what is Fx.SEND:
                dst = cast(int, effect[1])
                if 0 <= dst < self.np + self.nc:
                    entry = self._entry(Entry(cast(Wire, effect[2]), node, dst, arrived))
                    ops.append(_Op(_OP_SEND, node=dst, entry=entry))
            elif what is Fx.CSEND:
                p_ = cast(int, effect[1])
                if 0 <= p_ < self.np:
                    request = self._entry(Entry(Wire.REQUEST, node, p_, arrived))
                    refused = self._entry(Entry(Wire.REFUSED, p_, node, None))
                    ops.append(_Op(_OP_CSEND, node=p_, entry=request, refused=refused))
            elif what is Fx.PERSIST:
                ops.append(_Op(_OP_PERSIST, record=cast(TxRecord, effect[1])))
            elif what is Fx.REPORT:
                ops.append(_Op(_OP_REPORT, result=cast(co.Result, effect[1])))
            elif what is Fx.CRASH:
                ops.append(_Op(_OP_CRASH))
        result = _Call(new, tuple(ops), steps, tuple(effects))
        self._calls[key] = result
        return result

    # ------------------------------------------------------------ steps

    def steps(self, state: State) -> list[Step]:
        """Every step enabled in ``state``, in a fixed order."""
        np, nc = self.np, self.nc
        nodes = state.nodes
        crashes, losses, dups = state.crashes, state.losses, state.duplicates
        snaps, up, call = self._snaps, self._up, self._call
        deliverable = self._deliverable(state)
        quiet = deliverable == 0
        out: list[Step] = []
        START, DELIVER, LOSE = StepKind.START, StepKind.DELIVER, StepKind.LOSE
        for node in range(np, np + nc):
            if self._startable[nodes[node]]:
                out.append(_new(Step, (START, node, -1, None, None, None)))
                if crashes:
                    n = call(node, nodes[node], START, None, None).actions
                    out.extend(_new(Step, (START, node, -1, None, k, None)) for k in range(1, n))
        m = state.net
        while m:
            low = m & -m
            m ^= low
            eid = low.bit_length() - 1
            entry = self._entries[eid]
            dst = entry.dst
            if not low & deliverable:
                if losses and entry.wire <= Wire.REPLY:
                    out.append(_new(Step, (LOSE, -1, eid, None, None, None)))
                continue
            for k in [None, *range(1, call(dst, nodes[dst], DELIVER, eid, None).actions)] if crashes else [None]:
                out.append(_new(Step, (DELIVER, -1, eid, None, k, None)))
                reply = self._reply_entry(dst, nodes[dst], eid, k)
                client = self._entries[reply].dst if reply >= 0 else -1
                if client >= 0 and self._accepts[nodes[client]]:
                    # The reply's fates other than arriving: lost, duplicated, or its client crashes handling it.
                    if losses:
                        out.append(_new(Step, (DELIVER, -1, eid, None, k, Fate.LOST)))
                    if dups:
                        out.append(_new(Step, (DELIVER, -1, eid, None, k, Fate.DUPLICATED)))
                    if crashes > (k is not None):
                        n = call(client, nodes[client], DELIVER, reply, None).actions
                        out.extend(_new(Step, (DELIVER, -1, eid, None, k, j)) for j in range(1, n))
            if dups:
                out.append(_new(Step, (StepKind.DUPLICATE, -1, eid, None, None, None)))
            if losses and entry.wire <= Wire.REPLY:
                out.append(_new(Step, (LOSE, -1, eid, None, None, None)))
        if quiet or state.early:
            for node in range(np + nc):
                timers = snaps[nodes[node]].timers
                for t in sorted(timers, key=str) if timers else ():
                    out.append(_new(Step, (StepKind.TIMER, node, -1, t, None, None)))
                    if crashes:
                        n = call(node, nodes[node], StepKind.TIMER, t, None).actions
                        out.extend(_new(Step, (StepKind.TIMER, node, -1, t, k, None)) for k in range(1, n))
            for node in range(np):
                if not up[nodes[node]]:
                    out.append(_new(Step, (StepKind.RESTART, node, -1, None, None, None)))
                    if crashes:
                        n = call(node, nodes[node], StepKind.RESTART, None, None).actions
                        out.extend(_new(Step, (StepKind.RESTART, node, -1, None, k, None)) for k in range(1, n))
        if crashes:  # with no crash left, held records are written at once (see apply)
            for node in range(np):
                if self._holds[nodes[node]]:
                    out.append(_new(Step, (StepKind.WRITE, node, -1, None, None, None)))
            for node in range(np):
                if up[nodes[node]]:
                    out.append(_new(Step, (StepKind.CRASH, node, -1, None, None, None)))
            for node in range(np, np + nc):
                if self._active[nodes[node]]:
                    out.append(_new(Step, (StepKind.CRASH, node, -1, None, None, None)))
        return out

    def _reply_entry(self, node: int, sid: int, eid: int, k: int | None) -> int:
        """The entry id of the reply to a client that delivering ``eid`` makes ``node`` send, or -1."""
        if node >= self.np:
            return -1
        for op in self._call(node, sid, StepKind.DELIVER, eid, k).ops:
            if op.what == _OP_SEND and op.node >= self.np:
                return op.entry
        return -1

    def heal_rank(self, step: Step) -> int:
        """The healing schedule's preference among fault-free steps (lower first)."""
        kind = step.kind
        if kind is StepKind.DELIVER:
            return 1 if step.crash_after is None and step.fate is None else NO_RANK
        if kind is StepKind.TIMER:
            return NO_RANK if step.crash_after is not None else (3 if step.node >= self.np else 4)
        if kind is StepKind.RESTART:
            return 0 if step.crash_after is None else NO_RANK
        if kind is StepKind.START:
            return 2 if step.crash_after is None else NO_RANK
        if kind is StepKind.WRITE:
            return 0
        return NO_RANK

    def apply(self, state: State, step: Step) -> tuple[State, list[tuple[int, Effect]], list[PropertyViolation]]:
        """The state after ``step``, its effects (with the node that had each),
        and the properties the transition breaks."""
        s = list(state.nodes)
        conns = list(state.conns)
        net = state.net
        budget = _Budget(state)
        kind = step.kind
        effects: list[tuple[int, Effect]] = []
        violations: list[PropertyViolation] = []
        replies: list[int] = []
        if kind is StepKind.DELIVER or kind is StepKind.DUPLICATE:
            eid = step.entry
            entry = self._entries[eid]
            node = entry.dst
            if kind is StepKind.DELIVER:
                net &= ~(1 << eid)
                k = step.crash_after
            else:
                budget.duplicates -= 1
                k = None
            if entry.wire is Wire.LOST:
                conns[(node - self.np) * self.np + entry.src] = Conn.CLOSED
            net = self._node_step(
                state, s, conns, node, StepKind.DELIVER, eid, k, net, budget, effects, violations, replies
            )
        elif kind is StepKind.LOSE:
            net &= ~(1 << step.entry)
            budget.losses -= 1
        elif kind is StepKind.TIMER or kind is StepKind.RESTART:
            if self._deliverable(state):
                budget.early -= 1
            net = self._node_step(
                state,
                s,
                conns,
                step.node,
                kind,
                step.timer,
                step.crash_after,
                net,
                budget,
                effects,
                violations,
                replies,
            )
        elif kind is StepKind.START or kind is StepKind.WRITE:
            net = self._node_step(
                state, s, conns, step.node, kind, None, step.crash_after, net, budget, effects, violations, replies
            )
        else:  # CRASH: memory, timers and held records lost
            node = step.node
            budget.crashes -= 1
            snap = self._snaps[s[node]]
            down: PSnap | CSnap
            if isinstance(snap, PSnap):
                down = PSnap(False, None, snap.durable, frozenset(), (), snap.forgotten, snap.marks, snap.summary)
            else:
                down = CSnap(False, None, snap.reported, frozenset())
            s[node] = self._intern(down)
            net = self._crash_links(node, s, conns, net)
        for reply in replies:
            # A reply to a client is handled there at once (see the module docstring), unless its fate says otherwise.
            fate = step.fate if kind is StepKind.DELIVER else None
            client = self._entries[reply].dst
            if fate is Fate.LOST:
                budget.losses -= 1
                continue
            times, j = 1, None
            if fate is Fate.DUPLICATED:
                budget.duplicates -= 1
                times = 2
            elif fate is not None:
                j = fate
            for _ in range(times):
                if self._accepts[s[client]]:
                    net = self._node_step(
                        state, s, conns, client, StepKind.DELIVER, reply, j, net, budget, effects, violations, []
                    )
        if not budget.crashes:
            # With no crash left to lose them, held records are as good as
            # written: writing them now, rather than at every later point,
            # leaves out only states that differ in when an inevitable write
            # happens. That hides no violation because only committed records
            # are lazy: a rule judged against a node that already shows its
            # commit flags at least what it flags against its yes vote (a
            # core that made other records lazy would need every point).
            holds = self._holds
            for j in range(self.np):
                if holds[s[j]]:
                    net = self._node_step(
                        state, s, conns, j, StepKind.WRITE, None, None, net, budget, effects, violations, []
                    )
        new = _new(State, (tuple(s), tuple(conns), net, budget.crashes, budget.losses, budget.duplicates, budget.early))
        return new, effects, violations

    def _node_step(
        self,
        before: State,
        s: list[int],
        conns: list[int],
        node: int,
        kind: StepKind,
        arg: Any,
        k: int | None,
        net: int,
        budget: _Budget,
        effects: list[tuple[int, Effect]],
        violations: list[PropertyViolation],
        replies: list[int],
    ) -> int:
        """Run one node step inside a global step and route what it did."""
        call = self._call(node, s[node], kind, arg, k)
        s[node] = call.sid
        effects.extend((node, e) for e in call.effects)
        for op in call.ops:
            what = op.what
            if what == _OP_SEND:
                dst = op.node
                if self._accepts[s[dst]]:
                    if dst >= self.np:
                        replies.append(op.entry)
                    else:
                        net |= 1 << op.entry
            elif what == _OP_CSEND:
                p = op.node
                ci = (node - self.np) * self.np + p
                conn = conns[ci]
                if conn == Conn.OPEN:
                    net |= 1 << op.entry
                elif conn == Conn.CLOSED:
                    if self._up[s[p]]:
                        conns[ci] = Conn.OPEN
                        net |= 1 << op.entry
                    else:
                        net |= 1 << op.refused
                # BROKEN: written into a dead connection; the LOST entry is on its way
            elif what == _OP_PERSIST:
                assert op.record is not None
                violations += self._judge_persist(before, s, node, op.record)
                if op.record.state is TxState.PREPARED:
                    violations += self._judge_lock(s[node], node)
            elif what == _OP_REPORT:
                assert op.result is not None
                violations += self._judge_report(s, node, op.result)
                if self._no_fault_no_conflict(s, node, budget):
                    violations += check_nontrivial(self.txids[node - self.np], op.result, self.topo.display[node])
            elif what == _OP_CODEC:
                violations.append(PropertyViolation(rule=CODEC, detail=op.problem))
            else:  # _OP_CRASH: the node crashed between two of its actions
                budget.crashes -= 1
                net = self._crash_links(node, s, conns, net)
        if node >= self.np and not self._accepts[s[node]]:
            net &= ~self._to_node[node]  # nothing in flight can matter to a finished client
        return net

    def _crash_links(self, node: int, s: list[int], conns: list[int], net: int) -> int:
        """What a crash does outside the node. A crashed participant's client
        connections break (the clients notice later). What is in flight to a
        participant stays in flight and may arrive after it restarts (a network
        that holds messages: more than TCP allows, so a safe superset); what is
        in flight to a client is lost with it (clients never come back)."""
        if node >= self.np:
            return net & ~self._to_node[node]
        for i in range(self.nc):
            ci = i * self.np + node
            client = self.np + i
            if conns[ci] == Conn.OPEN:
                conns[ci] = Conn.BROKEN
                if self._up[s[client]]:
                    net |= 1 << self._entry(Entry(Wire.LOST, node, client, None))
        return net

    def _deliverable(self, state: State) -> int:
        """The entries in flight whose destination is up."""
        net = state.net
        for p in range(self.np):
            if not self._up[state.nodes[p]]:
                net &= ~self._to_node[p]
        return net

    def _view(self, s: tuple[int, ...] | list[int], txid: str) -> tuple[TxState | None, ...]:
        return tuple(self._durable_state[s[j]].get(txid) for j in range(self.np))

    def _judge_persist(self, before_state: State, s: list[int], node: int, record: TxRecord) -> list[PropertyViolation]:
        # The others' durable states as they are now; this node's as it was before the step.
        txid = record.txid
        view = [self._durable_state[s[j]].get(txid) for j in range(self.np)]
        view[node] = self._durable_state[before_state.nodes[node]].get(txid)
        before = tuple(view)
        client = self._client_of_txid.get(txid)
        reported = self.csnap(s[client]).reported if client is not None else None
        key = (txid, before, node, record.state, reported)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = check_persist(
                txid, self.topo.display[: self.np], before, node, record.state, reported
            )
        return verdict

    def _judge_lock(self, sid: int, node: int) -> list[PropertyViolation]:
        prepared = [t for t, st in self._durable_state[sid].items() if st is TxState.PREPARED]
        return check_lock(self.topo.display[node], prepared) if len(prepared) > 1 else []

    def _no_fault_no_conflict(self, s: list[int], client: int, budget: _Budget) -> bool:
        """AC4 applies to a client's report when no fault happened yet in the
        whole run (every budget untouched) and no other client has started;
        and not after a history that left a participant down or prepared (a
        conflict from before the run)."""
        if self._history_conflicts:
            return False
        b = self.bounds
        if (budget.crashes, budget.losses, budget.duplicates, budget.early) != (
            b.crashes,
            b.losses,
            b.duplicates,
            b.early,
        ):
            return False
        return all(self._startable[s[n]] for n in range(self.np, self.np + self.nc) if n != client)

    def _judge_report(self, s: list[int], node: int, result: co.Result) -> list[PropertyViolation]:
        txid = self.txids[node - self.np]
        return check_report(txid, self.topo.display[: self.np], self._view(s, txid), result, self.topo.display[node])

    # ------------------------------------------------------------ quiet states

    def quiescent_violations(self, state: State) -> list[PropertyViolation]:
        """check_quiescent on a state where the healing schedule has nothing left to do."""
        cores: list[ParticipantCore] = []
        stores: list[dict[str, TxRecord]] = []
        for j in range(self.np):
            p = self._pnode(j, state.nodes[j])
            if p.core is None:
                return [PropertyViolation(rule=LIVENESS, detail=f"{self.topo.display[j]} is down")]
            cores.append(p.core)
            stores.append(p.history)
        reports: dict[str, co.Result] = {}
        waiting: list[str] = []
        for i in range(self.nc):
            node = self.np + i
            reported = self.csnap(state.nodes[node]).reported
            if reported is not None:
                reports[self.txids[i]] = reported
            if self._active[state.nodes[node]]:
                waiting.append(self.topo.display[node])
        return check_quiescent(self.topo.display[: self.np], cores, stores, reports, waiting)

    def describe(self, state: State, step: Step) -> str:
        """One step in the protocol's words."""
        d = self.topo.display
        kind = step.kind

        def crash_note(k: int | None) -> str:
            return "" if k is None else f"  [and crashes after {k} of its actions]"

        if kind is StepKind.START:
            i = step.node - self.np
            return f"{d[step.node]} begins {self.txids[i]} (value={i + 1}){crash_note(step.crash_after)}"
        if kind in (StepKind.DELIVER, StepKind.DUPLICATE, StepKind.LOSE):
            wire, src, dst, msg = self._entries[step.entry]
            if wire is Wire.REFUSED:
                text = f"{d[dst]} cannot connect to {d[src]}: connection refused"
            elif wire is Wire.LOST:
                text = f"{d[dst]} sees its connection to {d[src]} closed"
            else:
                assert msg is not None
                text = f"{d[src]} -> {d[dst]}: {message_text(msg)}"
            if kind is StepKind.LOSE:
                return f"the network loses {text}"
            if kind is StepKind.DUPLICATE:
                return f"{text}  [duplicated: a copy stays in flight]"
            fate = step.fate
            if fate is Fate.LOST:
                text += "  [its reply is lost]"
            elif fate is Fate.DUPLICATED:
                text += "  [its reply arrives twice]"
            elif fate is not None:
                text += f"  [its client crashes after {fate} of its actions handling the reply]"
            return text + crash_note(step.crash_after)
        early = "  [early: messages still in flight]" if self._deliverable(state) else ""
        if kind is StepKind.TIMER:
            key = step.timer
            what = f"{key.value} timer" if isinstance(key, co.Timer) else f"timer for {key}"
            return f"{d[step.node]} {what} fires{crash_note(step.crash_after)}{early}"
        if kind is StepKind.CRASH:
            return f"{d[step.node]} crashes"
        if kind is StepKind.WRITE:
            return f"{d[step.node]} writes the commit record(s) it held"
        records = len(self.psnap(state.nodes[step.node]).durable)
        return f"{d[step.node]} restarts from {records} durable record(s){crash_note(step.crash_after)}{early}"
