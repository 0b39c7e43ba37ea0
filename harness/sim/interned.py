"""The explorer's store of node snapshots and network entries, and the canonical form of a state.

Theory of operation. Node snapshots (harness.sim.states.PSnap, CSnap) and
network entries are interned: each distinct one gets a small integer once,
and what the transitions need of it (up, finished, durable states) is derived
then, so a global state is a tuple of small ints. With symmetry
(harness.sim.symmetry), :meth:`Interned.canonical` maps a state to the
representative of its class: each snapshot and entry renamed once per
renaming and memoised, the candidate renamings narrowed by keys that blur
participant names, and the least renamed state kept. It also counts the
renamings that give the representative (its stabiliser), from which the
explorer counts the states without reduction.

The rule this module keeps: the store and renaming only; what steps exist and
what they do is harness.sim.transitions, which builds on this class.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

from harness.protocol import coordinator as co
from harness.protocol.messages import TxState
from harness.sim.model import CNode, PNode, Topology
from harness.sim.states import (
    FINISHED,
    CSnap,
    Entry,
    FinishedCore,
    PSnap,
    State,
    freeze_core,
    thaw_core,
)
from harness.sim.symmetry import Renaming, Symmetry

# What adopt needs: snapshots, entries and blurred keys, each in id order.
Since = tuple[list[PSnap | CSnap], list[Entry], list[PSnap | CSnap]]

# tuple.__new__ builds a NamedTuple from its fields at C speed (its own
# __new__ is a Python function).
_new: Any = tuple.__new__


class Interned:
    """Interned snapshots and entries of one topology, and (``symmetry``) the
    canonical form of its states; ``fixed_first``: ordered prepare, whose first
    participant is never renamed."""

    def __init__(self, topo: Topology, txids: tuple[str, ...], symmetry: bool, *, fixed_first: bool) -> None:
        participants, clients = topo.participants, topo.clients
        self.topo = topo
        self.np, self.nc = participants, clients
        self.txids = txids
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
        # Symmetry reduction (harness.sim.symmetry).
        self.sym = Symmetry(topo.participant_names, txids, fixed_first=fixed_first) if symmetry else None
        self._group_size = len(self.sym.group) if self.sym is not None else 1
        self.group_size = self._group_size  # renamings in the symmetry group (1 without symmetry)
        self.stabiliser = 1  # set by canonical
        self._ren: dict[int, int] = {}  # snapshot id * group size + renaming -> renamed snapshot id
        self._blur: dict[int, int] = {}  # snapshot id * client renamings + client renaming -> blurred key
        self._blur_ids: dict[PSnap | CSnap, int] = {}
        self._blur_rows: dict[int, tuple[int, ...]] = {}  # snapshot id -> _blurred under each client renaming
        self._pkeys: dict[tuple[int, ...], list[tuple[tuple[int, ...], list[tuple[int, int]]]]] = {}
        self._ckeys: dict[tuple[int, ...], list[tuple[int, ...]]] = {}  # see _participant_keys, _client_keys
        # Memoised canonicalisation: per node vector, the least renamed vector and the renamings that give it.
        self._canon_nodes: dict[tuple[int, ...], tuple[tuple[int, ...], list[int]]] = {}
        self._net_ren: dict[tuple[int, int], int] = {}
        self._eren: dict[int, list[int]] = {}  # entry id -> its id under each renaming
        self._tables_now: list[list[Any] | dict[Any, Any]] | None = None  # see checkpoint
        if self.sym is not None:
            self._cperms = len(self.sym.cperms)
            # Per client renaming, the old client that lands in each new position.
            self._client_from = [tuple(c.index(j) for j in range(clients)) for c in self.sym.cperms]

    # ------------------------------------------------------------ checkpoints

    def _tables(self) -> list[list[Any] | dict[Any, Any]]:
        """Every table that grows as states are explored: the interned ids
        and what is derived from each, and the memos (a subclass adds its own).
        Each grows only by appending (lists) or inserting a key on a miss
        (dicts), so its length marks a point in its history."""
        return [
            self._snaps,
            self._sid,
            self._durable_state,
            self._up,
            self._accepts,
            self._active,
            self._startable,
            self._holds,
            self._entries,
            self._eid,
            self._ren,
            self._blur,
            self._blur_ids,
            self._blur_rows,
            self._pkeys,
            self._ckeys,
            self._canon_nodes,
            self._net_ren,
            self._eren,
        ]

    def ids_given(self) -> tuple[int, int, int]:
        """How many snapshot, entry and blurred-key ids have been given: the
        only numbers that depend on the order of exploration (harness.sim.parallel)."""
        return len(self._snaps), len(self._entries), len(self._blur_ids)

    def ids_since(self, given: tuple[int, int, int]) -> Since:
        """The snapshots, entries and blurred keys given ids since ``given``
        (an ids_given), in id order: what adopt needs to catch up."""
        ns, ne, nb = given
        blurred = list(itertools.islice(self._blur_ids, nb, None))
        return self._snaps[ns:], self._entries[ne:], blurred

    def adopt(self, given: tuple[int, int, int], since: Since) -> None:
        """Give the ids another explorer gave since ``given`` (its ids_since,
        unpickled), in the same order, so that both number everything alike."""
        assert self.ids_given() == given, "adopt needs the same ids up to there"
        snaps, entries, blurred = since
        for snap in snaps:
            if isinstance(snap, CSnap) and snap.core == FINISHED:
                snap = snap._replace(core=FINISHED)  # the marker is told by identity; pickling made a copy
            self._intern(snap)
        for entry in entries:
            self._entry(entry)
        for key in blurred:
            self._blur_ids.setdefault(key, len(self._blur_ids))

    def core_classes(self) -> list[type]:
        """The classes of the cores in the snapshots interned so far."""
        out: dict[type, None] = {}
        for snap in self._snaps:
            core = snap.core
            if isinstance(core, tuple) and len(core) == 2 and isinstance(core[0], type):
                out[core[0]] = None
        return list(out)

    def checkpoint(self) -> list[int]:
        """A point to roll back to (see rollback)."""
        tables = self._tables_now
        if tables is None:
            tables = self._tables_now = self._tables()  # the same objects for good: listed once
        return [len(t) for t in tables]

    def rollback(self, point: list[int]) -> None:
        """Forget every id given and every memo made since ``point``. Dicts
        keep insertion order, so what came since is their tail."""
        tables = self._tables()
        entries = next(n for table, n in zip(tables, point, strict=True) if table is self._entries)
        for eid in range(entries, len(self._entries)):
            self._to_node[self._entries[eid].dst] &= ~(1 << eid)
        for table, n in zip(tables, point, strict=True):
            if isinstance(table, list):
                del table[n:]
            else:
                while len(table) > n:
                    table.popitem()

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
        marks = tuple(sorted(node.marks.items()))
        return self._intern(
            PSnap(node.up, core, durable, frozenset(node.timers), tuple(node.held), forgotten, marks, node.summary)
        )

    def _intern_client(self, node: CNode) -> int:
        core: Any
        if node.core is None:
            core = None
        elif node.core.phase is co.Phase.DONE or (
            node.core.phase is co.Phase.FINISHING and type(node.core) is co.CoordinatorCore
        ):
            # A finished coordinator ignores every input (nodes.py drops them),
            # so all finished cores are one state: only what was reported stays.
            # The protocol's own coordinator, once it has reported and sent its
            # decision (FINISHING), sends nothing more on any input: it only
            # counts acknowledgements until they are all in or its deadline
            # passes (tests/test_sim.py pins it). Nobody sees that,
            # so it is finished already, as far as anyone else can tell. A
            # subclass (a broken variant) keeps every step.
            core = FINISHED
            return self._intern(CSnap(node.alive, core, node.reported, frozenset()))
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

    # ------------------------------------------------------------ symmetry

    def _renamed_sid(self, sid: int, gi: int) -> int:
        key = sid * self._group_size + gi
        out = self._ren.get(key)
        if out is None:
            assert self.sym is not None
            out = self._ren[key] = self._intern(self.sym.snapshot(gi, self._snaps[sid])) if gi else sid
        return out

    def _blurred(self, sid: int, hi: int) -> int:
        """A key of snapshot ``sid`` under client renaming ``hi`` that is the
        same whichever participants it names (names blurred)."""
        key = sid * self._cperms + hi
        out = self._blur.get(key)
        if out is None:
            assert self.sym is not None
            snap = self.sym.snapshot(self.sym.blurred0 + hi, self._snaps[sid])
            out = self._blur[key] = self._blur_ids.setdefault(snap, len(self._blur_ids))
        return out

    def _participant_keys(self, sids: tuple[int, ...]) -> list[tuple[tuple[int, ...], list[tuple[int, int]]]]:
        """Per client renaming, the blurred keys of the participants ``sids``
        (those that may be renamed), sorted, alone and with each one's index (memoised)."""
        assert self.sym is not None
        rows = [self._blur_row(sid) for sid in sids]
        first = 1 if self.sym.fixed_first else 0
        out = []
        for hi in range(self._cperms):
            keys = sorted([(rows[i][hi], i) for i in range(first, len(sids))])
            out.append((tuple([k for k, _ in keys]), keys))
        self._pkeys[sids] = out
        return out

    def _client_keys(self, sids: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Per client renaming, the blurred keys of the clients ``sids`` in their new order (memoised)."""
        rows = [self._blur_row(sid) for sid in sids]
        out = [tuple([rows[o][hi] for o in from_old]) for hi, from_old in enumerate(self._client_from)]
        self._ckeys[sids] = out
        return out

    def _blur_row(self, sid: int) -> tuple[int, ...]:
        """Snapshot ``sid``'s blurred key under each client renaming (memoised)."""
        row = self._blur_rows.get(sid)
        if row is None:
            row = self._blur_rows[sid] = tuple([self._blurred(sid, hi) for hi in range(self._cperms)])
        return row

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
        renaming, each combined with the participant renamings that sort the
        participants by their blurred keys (all orders of equal keys). The set
        is the same for every state of a class, renamed, so the least candidate
        is a class invariant."""
        sym = self.sym
        assert sym is not None
        out: list[int] = []
        nodes, np = state.nodes, self.np
        first = 1 if sym.fixed_first else 0
        parts = self._pkeys.get(nodes[:np]) or self._participant_keys(nodes[:np])
        clients = self._ckeys.get(nodes[np:]) or self._client_keys(nodes[np:])
        # First the client renamings whose renamed state has the least blurred
        # keys (participants' sorted, then clients' in their new order): a
        # function of the renamed state, so the choice is a class invariant
        # too, and every renaming that gives the representative passes it.
        least: tuple[tuple[int, ...], ...] | None = None
        chosen: list[tuple[int, list[tuple[int, int]]]] = []
        for hi, (sorted_keys, keys) in enumerate(parts):
            key = (sorted_keys, clients[hi])
            if least is None or key < least:
                least, chosen = key, [(hi, keys)]
            elif key == least:
                chosen.append((hi, keys))
        for hi, keys in chosen:
            h = sym.cperms[hi]
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
        least renaming among the candidates. Without symmetry, ``state``.

        Sets ``self.stabiliser``: how many renamings map ``state`` to its
        representative, which is the number that leave it unchanged (a coset
        of its stabiliser; every such renaming is a candidate, since the
        representative's participants are in blurred-key order). Its class
        then holds group size / stabiliser states: how the explorer counts the
        states without symmetry reduction, without exploring them."""
        sym = self.sym
        if sym is None or self._group_size == 1:
            return state
        best, ties = self.least_nodes(state)
        if len(ties) == 1 and not ties[0]:
            self.stabiliser = 1
            return state
        best_rest: tuple[tuple[int, ...], int] | None = None
        count = 0
        conns = state.conns
        for gi in ties:
            if gi:
                rest = (tuple([conns[o] for o in sym.conn_from[gi]]), self._renamed_net(state.net, gi))
            else:
                rest = (conns, state.net)
            if best_rest is None or rest < best_rest:
                best_rest, count = rest, 1
            elif rest == best_rest:
                count += 1
        assert best_rest is not None
        self.stabiliser = count
        return cast(State, _new(State, (best, *best_rest, state.crashes, state.losses, state.duplicates, state.early)))

    def least_nodes(self, state: State) -> tuple[tuple[int, ...], list[int]]:
        """The least renaming of ``state.nodes`` among the candidates (with
        symmetry), and the renamings that give it (memoised per node vector:
        it reads nothing else of ``state``)."""
        sym = self.sym
        assert sym is not None
        nodes = state.nodes
        hit = self._canon_nodes.get(nodes)
        if hit is None:
            node_from = sym.node_from
            size, ren, get = self._group_size, self._renamed_sid, self._ren.get
            best: tuple[int, ...] | None = None
            ties: list[int] = []
            for gi in self._candidates(state):
                if gi:
                    renamed = []
                    for o in node_from[gi]:
                        sid = nodes[o]
                        r = get(sid * size + gi)
                        renamed.append(ren(sid, gi) if r is None else r)
                    cand = tuple(renamed)
                else:
                    cand = nodes
                if best is None or cand < best:
                    best, ties = cand, [gi]
                elif cand == best:
                    ties.append(gi)
            assert best is not None
            hit = self._canon_nodes[nodes] = (best, ties)
        return hit

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
