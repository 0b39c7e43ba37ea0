"""The explorer's successors, memoised per state without its network.

Theory of operation. A global state (harness.sim.states.State) is its node
snapshots, its connection states and its budgets (its *head*, as
Packer.head packs them) and its network, a bit mask of entries in flight.
What a step does reads the network in one way only: the entries in flight
decide which steps exist (each entry has steps of its own, entry_steps), and
whether a deliverable one is in flight decides whether timers may fire and
whether firing one spends ``early`` (other_steps, Transitions.successor's
``crowded``). Everything else a step does to the network is bitwise: it takes
the entry it delivers or loses out of flight, puts the entries it sends in
flight, and drops what is in flight to a client that finishes or crashes in
the step (Transitions._forget_client: nothing is ever sent to such a client
again). So, with ``x`` the network before the step, the network after it is

    ((x & ~clear) | add) & ~(entries to the forgotten clients)

where ``clear`` is the entry delivered or lost, ``add`` the network after the
same step from the same head with nothing in flight, and the forgotten
clients those that heeded messages before the step and do not after it (one
that heeded none before has nothing in flight to it: what was, went when it
stopped, and nothing is sent to it since; the entries to a client are looked
up when the move is used, so entries interned later count too). The head
after the step, the properties the step breaks (they read nodes and budgets),
its healing rank and the node-and-connection part of its successor's
canonical form (Interned.least_nodes, then the least renamed connections)
depend on the head alone.

So a step's :class:`Move` is computed once per (head, entry in flight), or
per (head, quiet or not) for the steps that do not name an entry, by
stepping the head with an empty network, and reused for every state with
that head: most heads recur with many networks (in 3 x 3 x 1, about five
states per head and entry). A reused move costs a few integer operations,
the renaming of the network (memoised in Interned) and the packing of its
bytes, instead of the step, the canonical form and the packing.

The rule this module keeps: the moves are an exact memo of
Transitions.steps and successor plus Interned.canonical and Packer.pack,
in steps() order (tests/test_explore_moves.py compares them state by state);
a step that breaks a property is left to the explorer's own path, which
rebuilds the counterexample from the steps themselves. Its tables are
listed in _tables, so a worker (harness.sim.parallel) rolls them back with
the ids they name.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from harness.sim.states import State, Step, StepKind
from harness.sim.transitions import Transitions

# tuple.__new__ builds a NamedTuple from its fields at C speed.
_new: Any = tuple.__new__


def _empty(state: State) -> State:
    """``state`` with nothing in flight."""
    return cast(State, _new(State, (state.nodes, state.conns, 0, *state[3:])))


# Keys of the moves that name no entry, beside entry ids (which are >= 0):
# the steps after the entries', with nothing deliverable in flight or not.
_QUIET, _BUSY = -2, -3

# Per step, in steps() order: its successor's class, packed; the class's
# size (states without reduction); the step's healing rank.
Successors = tuple[int, list[tuple[bytes, int, int]]]


class Move(NamedTuple):
    """One step from one head, whatever the network (see the module docstring)."""

    head: bytes  # the successor's class representative, packed without its network
    clear: int  # the entry the step takes out of flight, as a bit (0: none)
    add: int  # the entries the step puts in flight
    forget: tuple[int, ...]  # clients that finish or crash in the step: what is in flight to them goes
    renamings: tuple[int, ...]  # the renamings that give ``head``; the least renamed network decides
    rank: int  # the healing rank (Transitions.heal_rank)
    bad: bool  # the step breaks a property


class Moves(Transitions):
    """:class:`Transitions` with :meth:`successors`, memoised per head (same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starts: dict[bytes, tuple[tuple[int, ...], tuple[Move, ...]]] = {}  # head -> down participants, starts
        self._moves: dict[tuple[bytes, int], tuple[Move, ...]] = {}  # (head, entry id or _QUIET/_BUSY) -> moves
        self._net_at = self.packer.net_at

    def _tables(self) -> list[list[Any] | dict[Any, Any]]:
        return [*super()._tables(), self._starts, self._moves]

    def successors(self, data: bytes) -> Successors | None:
        """Every step of the packed state ``data``, in steps() order: how many,
        and per step its successor's class packed (canonical, then pack), the
        class's size and the step's healing rank. None if a step breaks a
        property (the caller follows the steps themselves to say which)."""
        at = self._net_at
        head = data[:at]
        net = int.from_bytes(data[at:], "little")
        state: State | None = None  # unpacked at the first miss
        first = self._starts.get(head)
        if first is None:
            state = self.packer.unpack(data)
            first = self._plan_starts(state, head)
        down, starts = first
        moves = self._moves
        to_node = self._to_node
        groups = [starts]
        m = net
        while m:
            low = m & -m
            m ^= low
            key = (head, low.bit_length() - 1)
            ms = moves.get(key)
            if ms is None:
                state = state or self.packer.unpack(data)
                ms = self._plan(state, key)
            groups.append(ms)
        deliverable = net
        for p in down:
            deliverable &= ~to_node[p]
        key = (head, _BUSY if deliverable else _QUIET)
        ms = moves.get(key)
        if ms is None:
            ms = self._plan(state or self.packer.unpack(data), key)
        groups.append(ms)
        group = self.group_size
        renamed = self._renamed_net
        out: list[tuple[bytes, int, int]] = []
        for ms in groups:
            for mv in ms:
                if mv.bad:
                    return None
                n = (net & ~mv.clear) | mv.add
                for c in mv.forget:
                    n &= ~to_node[c]
                gis = mv.renamings
                size = group
                if len(gis) == 1:
                    if gis[0]:
                        n = renamed(n, gis[0])
                else:
                    least, count = -1, 0
                    for g in gis:
                        r = renamed(n, g) if g else n
                        if least < 0 or r < least:
                            least, count = r, 1
                        elif r == least:
                            count += 1
                    n, size = least, group // count
                out.append((mv.head + n.to_bytes((n.bit_length() + 7) >> 3, "little"), size, mv.rank))
        return len(out), out

    # ------------------------------------------------------------ misses

    def _plan_starts(self, state: State, head: bytes) -> tuple[tuple[int, ...], tuple[Move, ...]]:
        down = tuple(p for p in range(self.np) if not self._up[state.nodes[p]])
        empty = _empty(state)
        hit = self._starts[head] = (down, tuple(self._move(empty, st, None) for st in self.start_steps(state)))
        return hit

    def _plan(self, state: State, key: tuple[bytes, int]) -> tuple[Move, ...]:
        code = key[1]
        if code >= 0:
            dst = self._entries[code].dst
            steps = self.entry_steps(state, code, dst >= self.np or self._up[state.nodes[dst]])
            crowded = None
        else:
            steps = self.other_steps(state, code == _QUIET)
            crowded = code == _BUSY
        empty = _empty(state)
        hit = self._moves[key] = tuple(self._move(empty, st, crowded) for st in steps)
        return hit

    def _move(self, empty: State, step: Step, crowded: bool | None) -> Move:
        """``step`` from ``empty`` (a head with nothing in flight), as a Move."""
        nxt, violations = self.successor(empty, step, crowded)
        np = self.np
        accepts = self._accepts
        forget = tuple(c for c in range(np, np + self.nc) if accepts[empty.nodes[c]] and not accepts[nxt.nodes[c]])
        clear = 1 << step.entry if step.kind is StepKind.DELIVER or step.kind is StepKind.LOSE else 0
        gis: tuple[int, ...] = (0,)
        least = nxt
        if self.sym is not None and self.group_size > 1:
            best, ties = self.least_nodes(nxt)
            conn_from = self.sym.conn_from
            rows = [(tuple([nxt.conns[o] for o in conn_from[g]]) if g else nxt.conns, g) for g in ties]
            conns = min(r for r, _ in rows) if len(rows) > 1 else rows[0][0]
            gis = tuple([g for r, g in rows if r == conns])
            least = _new(State, (best, conns, 0, *nxt[3:]))
        return Move(self.packer.head(least), clear, nxt.net, forget, gis, self.heal_rank(step), bool(violations))
