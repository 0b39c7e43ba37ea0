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
  timer fires; a node crashes, between steps or inside one (mid_step_cuts:
  between two actions, and any of the sends of the run just before the
  crash may not have left, since the driver writes them to different
  connections); a crashed participant restarts from its durable records (restore +
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
  finished coordinators are one snapshot and messages to them are dropped;
  so are a finished or crashed client's connection states. The protocol's
  own coordinator counts as finished once FINISHING (it sends and reports
  nothing more; see _intern_client).
* A stranger (a node outside the cluster) may send any participant that is
  up a PREPARE whose list is not the cluster (stranger_entries); it must
  change nothing there (invariants.MEMBERSHIP). The participants' cores are
  built with the cluster, as the nodes are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from harness.protocol import coordinator as co
from harness.protocol.messages import Message, Prepare, TxState
from harness.protocol.participant import TxRecord
from harness.sim.cuts import mid_step_cuts
from harness.sim.invariants import (
    CODEC,
    Wait,
    check_nontrivial,
    check_stranger,
)
from harness.sim.judgement import Budget, Judgement
from harness.sim.model import (
    CNode,
    CoordinatorFactory,
    Cut,
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
    uses_ages,
)
from harness.sim.states import (
    OP_CODEC,
    OP_CRASH,
    OP_CSEND,
    OP_PERSIST,
    OP_REPORT,
    OP_SEND,
    Bounds,
    Call,
    Conn,
    CSnap,
    Entry,
    Fate,
    History,
    Op,
    Packer,
    PSnap,
    State,
    Step,
    StepKind,
)

NO_RANK = 99

# tuple.__new__ builds a NamedTuple from its fields at C speed (its own
# __new__ is a Python function); used for the Steps and States built per transition.
_new: Any = tuple.__new__


class Transitions(Judgement):
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
        strangers: bool = True,
        txids: tuple[str, ...] | None = None,
        history: History | None = None,
    ) -> None:
        """``txids``: each client's txid (default t1, t2, ...); ``history``:
        what happened before (states.History). Either turns symmetry off: the
        renamings know only the default txids and an empty start."""
        topo = Topology(participants, clients)
        # Ordered prepare keeps its first participant (harness.sim.symmetry).
        probe = coordinator_factory("t0", 0, topo.participant_names)
        symmetry = symmetry and txids is None and history is None
        txids = txids or tuple(f"t{i}" for i in range(1, clients + 1))
        super().__init__(topo, txids, symmetry, fixed_first=bool(getattr(probe, "ordered", False)))
        self.bounds = bounds or Bounds()
        self.pfactory = participant_factory
        self.cfactory = coordinator_factory
        # Wait-die: clients send their age (their start order: the same whatever
        # their names, so symmetry keeps it), and waits are checked for cycles.
        self.ages = uses_ages(participant_factory)
        self._waits: dict[int, list[Wait]] = {}  # participant snapshot id -> its waits
        self.max_states = max_states
        self.liveness = liveness
        self.progress = progress
        self.strangers = strangers
        self.history = history
        self._history_conflicts = history is not None and (
            bool(history.down) or any(r.state is TxState.PREPARED for rs in history.records for r in rs)
        )
        self._client_of_txid = {t: participants + i for i, t in enumerate(self.txids)}
        self._verdicts: dict[tuple[Any, ...], list[PropertyViolation]] = {}  # check_persist is pure: memoised
        self._calls: dict[tuple[Any, ...], Call] = {}
        self.codec = codec or WireCodec()
        self.packer = Packer(participants + clients, participants * clients)
        # A stranger's PREPAREs, per participant (see stranger_entries), and
        # per participant snapshot those it would act on (memoised).
        self.stranger = participants + clients  # the stranger's node index: past every node
        self._stranger_entries = [self.stranger_entries(i) for i in range(participants)] if strangers else []
        self._heeds: dict[tuple[int, int], tuple[int, ...]] = {}
        self._all_open = [int(Conn.OPEN)] * participants

    def _tables(self) -> list[list[Any] | dict[Any, Any]]:
        return [*super()._tables(), self._waits, self._verdicts, self._calls, self._heeds]

    def initial_state(self) -> State:
        h = self.history
        parts = []
        for i, name in enumerate(self.topo.participant_names):
            records = h.records[i] if h is not None else ()
            down = h is not None and i in h.down
            core = None if down else self.pfactory(name, records, self.topo.participant_names)
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

    # ------------------------------------------------------------ one node, memoised

    def _call(self, node: int, sid: int, kind: StepKind, arg: Any, k: Cut | None) -> Call:
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
            new, actions = self._intern_participant(p), p.actions
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
                effects = c.start(self.cfactory, self.txids[i], i + 1, k, prio=arg)
            new, actions = self._intern_client(c), c.actions
        ops: list[Op] = []
        for effect in effects:
            what = effect[0]
            if what is Fx.SEND or what is Fx.CSEND:
                # What goes on the wire arrives as the codec decodes it (model.WireCodec).
                arrived, problem = self.codec.carry(cast(Message, effect[-1]))
                if arrived is None or problem:
                    ops.append(Op(OP_CODEC, problem=problem))
                    continue
            if what is Fx.SEND:
                dst = cast(int, effect[1])
                if 0 <= dst < self.np + self.nc:
                    entry = self._entry(Entry(cast(Wire, effect[2]), node, dst, arrived))
                    ops.append(Op(OP_SEND, node=dst, entry=entry))
            elif what is Fx.CSEND:
                p_ = cast(int, effect[1])
                if 0 <= p_ < self.np:
                    request = self._entry(Entry(Wire.REQUEST, node, p_, arrived))
                    refused = self._entry(Entry(Wire.REFUSED, p_, node, None))
                    ops.append(Op(OP_CSEND, node=p_, entry=request, refused=refused))
            elif what is Fx.PERSIST:
                ops.append(Op(OP_PERSIST, record=cast(TxRecord, effect[1])))
            elif what is Fx.REPORT:
                ops.append(Op(OP_REPORT, result=cast(co.Result, effect[1])))
            elif what is Fx.CRASH:
                ops.append(Op(OP_CRASH))
        reply = -1
        if node < self.np:
            reply = next((op.entry for op in ops if op.what == OP_SEND and op.node >= self.np), -1)
        result = Call(new, tuple(ops), mid_step_cuts(actions) if k is None else (), tuple(effects), reply)
        self._calls[key] = result
        return result

    # ------------------------------------------------------------ strangers

    def stranger_entries(self, node: int) -> list[int]:
        """The PREPAREs someone outside the cluster may send participant
        ``node`` (issue 13): with a participant list that is a subset of the
        cluster (``node`` alone; the cluster less one other member), or the
        cluster and an outsider. Each is a step of its own in every state where
        ``node`` is up. A participant that keeps the membership rule answers
        ERROR and changes nothing, so the step leads back to the same state,
        and the explorer leaves it out: a run may meet any number of such
        PREPAREs with the effect of none. One that changes anything breaks
        invariants.MEMBERSHIP at once, which ends the search. The set is
        closed under renaming participants (symmetry)."""
        names = self.topo.participant_names
        me = names[node]
        lists: list[tuple[str, ...]] = [(me,)] if len(names) > 1 else []  # a proper subset
        lists += [tuple(n for n in names if n != other) for other in names if other != me and len(names) > 2]
        lists.append((*names, "stranger:1"))
        out = []
        for participants in lists:
            msg = Prepare(txid="x1", value=99, participants=participants)
            arrived, problem = self.codec.carry(msg)
            if arrived is not None and not problem:
                out.append(self._entry(Entry(Wire.REQUEST, self.stranger, node, arrived)))
        return out

    def _heeded(self, node: int, sid: int) -> tuple[int, ...]:
        """The stranger's entries that participant snapshot ``sid`` acts on."""
        key = (node, sid)
        hit = self._heeds.get(key)
        if hit is None:
            hit = self._heeds[key] = tuple(
                eid
                for eid in self._stranger_entries[node]
                if (call := self._call(node, sid, StepKind.DELIVER, eid, None)).sid != sid or call.ops
            )
        return hit

    # ------------------------------------------------------------ steps

    def steps(self, state: State) -> list[Step]:
        """Every step enabled in ``state``, in a fixed order: the clients'
        starts, then each entry in flight's steps (in id order), then the rest."""
        deliverable = self.deliverable(state)
        out = self.start_steps(state)
        m = state.net
        while m:
            low = m & -m
            m ^= low
            out += self.entry_steps(state, low.bit_length() - 1, bool(low & deliverable))
        return out + self.other_steps(state, deliverable == 0)

    def start_steps(self, state: State) -> list[Step]:
        """The clients' starts enabled in ``state`` (the first of steps())."""
        np, nc = self.np, self.nc
        nodes = state.nodes
        out: list[Step] = []
        START = StepKind.START
        for node in range(np, np + nc):
            if self._startable[nodes[node]]:
                out.append(_new(Step, (START, node, -1, None, None, None)))
                if state.crashes:
                    cuts = self._call(node, nodes[node], START, self.age(nodes), None).cuts
                    out.extend(_new(Step, (START, node, -1, None, k, None)) for k in cuts)
        return out

    def entry_steps(self, state: State, eid: int, deliverable: bool) -> list[Step]:
        """The steps of entry ``eid``, in flight in ``state`` (its destination
        up: ``deliverable``): read nothing else of the network."""
        nodes = state.nodes
        crashes, losses, dups = state.crashes, state.losses, state.duplicates
        call = self._call
        out: list[Step] = []
        DELIVER, LOSE = StepKind.DELIVER, StepKind.LOSE
        entry = self._entries[eid]
        dst = entry.dst
        if not deliverable:
            if losses and entry.wire <= Wire.REPLY:
                out.append(_new(Step, (LOSE, -1, eid, None, None, None)))
            return out
        for k in (None, *call(dst, nodes[dst], DELIVER, eid, None).cuts) if crashes else (None,):
            out.append(_new(Step, (DELIVER, -1, eid, None, k, None)))
            reply = call(dst, nodes[dst], DELIVER, eid, k).reply
            client = self._entries[reply].dst if reply >= 0 else -1
            if client >= 0 and self._accepts[nodes[client]]:
                # The reply's fates other than arriving: lost, duplicated, or its client crashes handling it.
                if losses:
                    out.append(_new(Step, (DELIVER, -1, eid, None, k, Fate.LOST)))
                if dups:
                    out.append(_new(Step, (DELIVER, -1, eid, None, k, Fate.DUPLICATED)))
                if crashes > (k is not None):
                    cuts = call(client, nodes[client], DELIVER, reply, None).cuts
                    out.extend(_new(Step, (DELIVER, -1, eid, None, k, j)) for j in cuts)
        if dups:
            out.append(_new(Step, (StepKind.DUPLICATE, -1, eid, None, None, None)))
        if losses and entry.wire <= Wire.REPLY:
            out.append(_new(Step, (LOSE, -1, eid, None, None, None)))
        return out

    def other_steps(self, state: State, quiet: bool) -> list[Step]:
        """The steps of ``state`` after its entries': timers and restarts
        (when ``quiet``: nothing deliverable in flight; or early), strangers,
        writes, crashes. Reads nothing of the network but ``quiet``."""
        np, nc = self.np, self.nc
        nodes = state.nodes
        crashes = state.crashes
        snaps, up, call = self._snaps, self._up, self._call
        out: list[Step] = []
        if quiet or state.early:
            for node in range(np + nc):
                timers = snaps[nodes[node]].timers
                for t in sorted(timers, key=str) if timers else ():
                    out.append(_new(Step, (StepKind.TIMER, node, -1, t, None, None)))
                    if crashes:
                        cuts = call(node, nodes[node], StepKind.TIMER, t, None).cuts
                        out.extend(_new(Step, (StepKind.TIMER, node, -1, t, k, None)) for k in cuts)
            for node in range(np):
                if not up[nodes[node]]:
                    out.append(_new(Step, (StepKind.RESTART, node, -1, None, None, None)))
                    if crashes:
                        cuts = call(node, nodes[node], StepKind.RESTART, None, None).cuts
                        out.extend(_new(Step, (StepKind.RESTART, node, -1, None, k, None)) for k in cuts)
        if self.strangers:
            for node in range(np):
                if up[nodes[node]]:
                    for eid in self._heeded(node, nodes[node]):
                        out.append(_new(Step, (StepKind.STRANGER, node, eid, None, None, None)))
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
        effects: list[tuple[int, Effect]] = []
        new, violations = self._apply(state, step, effects)
        return new, effects, violations

    def successor(self, state: State, step: Step, crowded: bool | None = None) -> tuple[State, list[PropertyViolation]]:
        """The state after ``step`` and the properties it breaks (apply without
        the effects: the search's path). ``crowded``: whether a deliverable
        message is in flight (a timer or restart then spends ``early``), if not
        to be read from ``state.net`` (harness.sim.moves steps a state with an
        empty network)."""
        return self._apply(state, step, None, crowded)

    def _apply(
        self, state: State, step: Step, effects: list[tuple[int, Effect]] | None, crowded: bool | None = None
    ) -> tuple[State, list[PropertyViolation]]:
        s = list(state.nodes)
        conns = list(state.conns)
        net = state.net
        budget = Budget(state)
        kind = step.kind
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
            if self.deliverable(state) if crowded is None else crowded:
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
        elif kind is StepKind.STRANGER:
            node = step.node
            call = self._call(node, s[node], StepKind.DELIVER, step.entry, None)
            if effects is not None:
                effects.extend((node, e) for e in call.effects)
            msg = self._entries[step.entry].msg
            assert msg is not None
            violations += check_stranger(
                self.topo.display[node], message_text(msg), self.stranger_changes(s[node], call)
            )
            s[node] = call.sid
        elif kind is StepKind.START or kind is StepKind.WRITE:
            arg = self.age(state.nodes) if kind is StepKind.START else None
            net = self._node_step(
                state, s, conns, step.node, kind, arg, step.crash_after, net, budget, effects, violations, replies
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
        for n, reply in enumerate(replies):
            # A reply to a client is handled there at once (see the module docstring), unless its fate says
            # otherwise. The fate is the first reply's: others (a waiter granted the lock) just arrive.
            fate = step.fate if kind is StepKind.DELIVER and n == 0 else None
            client = self._entries[reply].dst
            if fate is Fate.LOST:
                budget.losses -= 1
                continue
            times, j = 1, cast(Cut | None, None)
            if fate is Fate.DUPLICATED:
                budget.duplicates -= 1
                times = 2
            elif isinstance(fate, Cut):
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
            for p in range(self.np):
                if holds[s[p]]:
                    net = self._node_step(
                        state, s, conns, p, StepKind.WRITE, None, None, net, budget, effects, violations, []
                    )
        if self.ages:
            violations += self.judge_waits(s)
        new = _new(State, (tuple(s), tuple(conns), net, budget.crashes, budget.losses, budget.duplicates, budget.early))
        return new, violations

    def _node_step(
        self,
        before: State,
        s: list[int],
        conns: list[int],
        node: int,
        kind: StepKind,
        arg: Any,
        k: Cut | None,
        net: int,
        budget: Budget,
        effects: list[tuple[int, Effect]] | None,
        violations: list[PropertyViolation],
        replies: list[int],
    ) -> int:
        """Run one node step inside a global step and route what it did."""
        call = self._call(node, s[node], kind, arg, k)
        s[node] = call.sid
        if effects is not None:
            effects.extend((node, e) for e in call.effects)
        for op in call.ops:
            what = op.what
            if what == OP_SEND:
                dst = op.node
                if self._accepts[s[dst]]:
                    if dst >= self.np:
                        replies.append(op.entry)
                    else:
                        net |= 1 << op.entry
            elif what == OP_CSEND:
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
            elif what == OP_PERSIST:
                assert op.record is not None
                violations += self.judge_persist(before, s, node, op.record)
                if op.record.state is TxState.PREPARED:
                    violations += self.judge_lock(s[node], node)
            elif what == OP_REPORT:
                assert op.result is not None
                violations += self.judge_report(s, node, op.result)
                if self.no_fault_no_conflict(s, node, budget):
                    violations += check_nontrivial(self.txids[node - self.np], op.result, self.topo.display[node])
            elif what == OP_CODEC:
                violations.append(PropertyViolation(rule=CODEC, detail=op.problem))
            else:  # OP_CRASH: the node crashed between two of its actions
                budget.crashes -= 1
                net = self._crash_links(node, s, conns, net)
        if node >= self.np and not self._accepts[s[node]]:
            net = self._forget_client(node, conns, net)
        return net

    def _forget_client(self, node: int, conns: list[int], net: int) -> int:
        """A client that finished or crashed sends nothing again and heeds
        nothing: what is in flight to it and its connections' states cannot
        matter, so they are dropped (the connections shown OPEN): states that
        differ only there are one."""
        row = (node - self.np) * self.np
        conns[row : row + self.np] = self._all_open
        return net & ~self._to_node[node]

    def _crash_links(self, node: int, s: list[int], conns: list[int], net: int) -> int:
        """What a crash does outside the node. A crashed participant's client
        connections break (the clients notice later). What is in flight to a
        participant stays in flight and may arrive after it restarts (a network
        that holds messages: more than TCP allows, so a safe superset); what is
        in flight to a client is lost with it (clients never come back)."""
        if node >= self.np:
            return self._forget_client(node, conns, net)
        accepts = self._accepts
        for i in range(self.nc):
            ci = i * self.np + node
            client = self.np + i
            if conns[ci] == Conn.OPEN and accepts[s[client]]:
                conns[ci] = Conn.BROKEN
                net |= 1 << self._entry(Entry(Wire.LOST, node, client, None))
        return net
