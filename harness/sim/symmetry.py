"""Symmetry reduction for the explorer: interchangeable clients and participants.

Theory of operation. Two global states that differ only in which client is
called which, or (under conditions below) which participant is called which,
have the same futures up to that renaming, and every property the explorer
checks is blind to names. So the explorer stores one representative per
class: the *canonical* state, the least of the state's renamings in a fixed
order (the snapshot and entry ids, which never change once given). A renaming
``g`` is one permutation of the participants and one of the clients, applied
consistently to everything in the state:

* node positions (snapshot ids per node, and the client x participant
  connection matrix), and network entries (sender, receiver, message);
* participant names (``p1:1``) wherever they appear: a participant core's own
  name, peers in its volatile sets, a coordinator's vote and acknowledgement
  sets, participant lists in records, cores and PREPAREs;
* txids (client i runs ``t<i>``) and values (client i writes ``i``): record
  and message txids, lock holders, timer keys, store keys, a participant's
  storage_server and a coordinator's value;
* names and txids inside reason strings (they change no behaviour; renaming
  them keeps renamed states equal to the states a renamed run would reach).

Why it is sound. Reduction may only merge states whose successors are again
renamings of each other (g(s) -> g(t) whenever s -> t). The cores treat
names, txids and values as opaque tokens (they only compare them for
equality; the broken variants in the tests keep to that), with two
exceptions, both about *order*, and the group is restricted to match:

1. Order of actions inside one step. The cores send in name order (sorted
   peers, sorted silent participants) and in participant-list order (PREPARE).
   Order is invisible in a complete step (the network is a set), and a crash
   inside a step (harness.sim.cuts.mid_step_cuts) may leave any subset
   of a run of consecutive sends unsent, not a prefix of the list: the cuts
   of a step are the same set whatever the names, so renaming commutes with
   them, crash left or not. (With prefixes only, it did not: participants
   could then be renamed only once the crash budget was spent.) Client
   renamings change no order of sends either (coordinators send to
   participants, participants sort peers, not txids); a participant iterates
   its records in txid order only on restart, and only a participant holding
   two prepared records would send for two txids there, which the
   lock-exclusion check stops at first.
2. The participant list's order. Every client uses the same list, in index
   order; a renaming would reorder it in cores and records but not in the
   clients yet to start, which take it from the topology. So after renaming,
   every participant list is sorted again (and so is every comma-separated
   list of names in a reason). That changes nothing a core does (a run of
   sends is cut in any order), except ordered prepare's first participant
   (``participants[0]``): with ordered prepare, only renamings that fix the
   first participant are used.

Checked by counting: the explorer sums its classes' sizes (group size over
the number of renamings that fix the representative, see
Transitions.canonical), and the tests compare the sum with the states that
``symmetry=False`` explores: equal, crash left or not.

The explorer's healing schedule (liveness) is followed from representatives:
a healing run from g(s) is the renaming of a fault-free run from s, so "some
fault-free schedule heals" holds for s exactly when it does for g(s).
Breadth-first depth is preserved (a class is first reached at the depth of
its closest member), so counterexamples stay shortest; their traces are
rebuilt in the original names by following, from the initial state, a
successor whose class is the next one on the path.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from harness.protocol.conflict import Waiter
from harness.protocol.messages import Abort, Commit, Error, Outcome, Prepare, Resolve, Status, Vote
from harness.protocol.participant import TxRecord
from harness.sim.states import CSnap, PSnap, Tag

__all__ = ["Renaming", "Symmetry"]

_VALUE_FIELDS = frozenset({"value", "storage_server"})  # core fields holding a client's value
_TOKEN = r"(?:p\d+:\d+|t\d+)"
# A name, or a comma-separated list of names (the cores write lists sorted:
# renamed, a list is sorted again, as a renamed run would have written it).
_TOKENS_RE = re.compile(rf"(?<![\w:.]){_TOKEN}(?:,{_TOKEN})*(?![\w:])")


class Renaming(NamedTuple):
    """One element of the group: where each participant and client goes."""

    participants: tuple[int, ...]  # old participant index -> new
    clients: tuple[int, ...]  # old client index -> new


class Symmetry:
    """The renamings of one topology, and how each renames a snapshot or an entry.

    ``participant_names`` and ``txids`` are in index order; client i writes
    value i + 1. ``fixed_first``: the first participant is never renamed
    (ordered prepare)."""

    def __init__(self, participant_names: Sequence[str], txids: Sequence[str], *, fixed_first: bool) -> None:
        np, nc = len(participant_names), len(txids)
        self.np, self.nc = np, nc
        movable = range(1, np) if fixed_first else range(np)
        pperms = []
        for perm in itertools.permutations(movable):
            pperm = (0, *perm) if fixed_first else perm
            pperms.append(tuple(pperm))
        cperms = list(itertools.permutations(range(nc)))
        identity_p = tuple(range(np))
        # The identity first; then the client renamings; then the rest.
        self.group: list[Renaming] = [Renaming(identity_p, c) for c in cperms]
        self.group += [Renaming(p, c) for p in pperms if p != identity_p for c in cperms]
        self.client_only = len(cperms)  # group[:client_only] keep every participant's name
        self.index = {g: gi for gi, g in enumerate(self.group)}
        self.cperms = cperms
        self.fixed_first = fixed_first
        self._maps: list[tuple[dict[str, str], dict[int, int]]] = []
        for g in self.group:
            names = {participant_names[i]: participant_names[g.participants[i]] for i in range(np)}
            names.update({txids[i]: txids[g.clients[i]] for i in range(nc)})
            values = {i + 1: g.clients[i] + 1 for i in range(nc)}
            self._maps.append((names, values))
        # Then one map per client renaming that also blurs every participant
        # name into one: renaming a participant's snapshot with it gives a key
        # that does not depend on which participant is which (see canonical
        # in harness.sim.transitions).
        self.blurred0 = len(self.group)
        for c in cperms:
            names = dict.fromkeys(participant_names, "p0:0")
            names.update({txids[i]: txids[c[i]] for i in range(nc)})
            self._maps.append((names, {i + 1: c[i] + 1 for i in range(nc)}))
        self._pnames = frozenset(participant_names) | {"p0:0"}
        self._strings: list[dict[str, str]] = [{} for _ in self._maps]
        # For each renaming, the old position of the node that lands in each new position.
        self.node_from: list[tuple[int, ...]] = []
        self.conn_from: list[tuple[int, ...]] = []
        for g in self.group:
            new_of = [*g.participants, *(np + c for c in g.clients)]
            inv = [0] * (np + nc)
            for old, new in enumerate(new_of):
                inv[new] = old
            self.node_from.append(tuple(inv))
            cinv = [0] * (np * nc)
            for j in range(nc):
                for i in range(np):
                    cinv[g.clients[j] * np + g.participants[i]] = j * np + i
            self.conn_from.append(tuple(cinv))

    def node_of(self, gi: int, node: int) -> int:
        """Where ``node`` goes under renaming ``gi``."""
        g = self.group[gi]
        return g.participants[node] if node < self.np else self.np + g.clients[node - self.np]

    # ------------------------------------------------------------ renaming values

    def _string(self, gi: int, s: str) -> str:
        cache = self._strings[gi]
        out = cache.get(s)
        if out is None:
            names = self._maps[gi][0]
            out = names.get(s)
            if out is None:
                out = _TOKENS_RE.sub(lambda m: ",".join(sorted(names.get(n, n) for n in m.group(0).split(","))), s)
            cache[s] = out
        return out

    def _conn(self, gi: int, conn: int) -> int:
        """A participant's inbound connection in the models is its sender's node index: renamed as the node."""
        if gi < len(self.group):
            return self.node_of(gi, conn)
        if conn < self.np:  # a blurring renaming: every participant is one
            return conn
        return self.np + self.cperms[gi - self.blurred0][conn - self.np]

    def _names(self, gi: int, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(self._string(gi, n) for n in names))

    def value(self, gi: int, v: Any, field: str = "") -> Any:
        """``v`` renamed by renaming ``gi`` (frozen snapshots, records, messages)."""
        if isinstance(v, enum.Enum):
            return v  # a StrEnum (a core's conflict policy) is a str too, and no name
        if isinstance(v, str):
            return self._string(gi, v)
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            return self._maps[gi][1].get(v, v) if field in _VALUE_FIELDS else v
        if isinstance(v, tuple):
            if v and all(isinstance(x, str) and x in self._pnames for x in v):
                return self._names(gi, v)  # a participant list: sorted again (see the module docstring)
            if len(v) == 2 and isinstance(v[0], Tag):
                tag, body = v
                if tag is Tag.SET:
                    return (tag, frozenset(self.value(gi, x) for x in body))
                if tag is Tag.DICT:
                    return (tag, tuple(sorted((self.value(gi, k), self.value(gi, x)) for k, x in body)))
                return (tag, tuple(self.value(gi, x) for x in body))
            return tuple(self.value(gi, x) for x in v)
        if isinstance(v, frozenset):
            return frozenset(self.value(gi, x) for x in v)
        if isinstance(v, TxRecord):
            return dataclasses.replace(
                v,
                txid=self._string(gi, v.txid),
                value=self.value(gi, v.value, "value"),
                participants=self._names(gi, v.participants),
            )
        if isinstance(v, Prepare):
            # Its age (wait-die) is the clients' start order, the same whatever their names: kept.
            return dataclasses.replace(
                v,
                txid=self._string(gi, v.txid),
                value=self.value(gi, v.value, "value"),
                participants=self._names(gi, v.participants),
            )
        if isinstance(v, Waiter):
            return Waiter(prepare=self.value(gi, v.prepare), conns=tuple(self._conn(gi, c) for c in v.conns))
        if isinstance(v, Vote):
            # Its code too: a renamed NOK that lost it would be another message (the coordinator reports the code).
            return dataclasses.replace(v, txid=self._string(gi, v.txid), reason=self._string(gi, v.reason))
        if isinstance(v, Commit | Abort | Resolve):
            return type(v)(txid=self._string(gi, v.txid))
        if isinstance(v, Outcome):
            return Outcome(txid=self._string(gi, v.txid), state=v.state)
        if isinstance(v, Error):
            txid = self._string(gi, v.txid) if v.txid is not None else None
            return Error(code=v.code, detail=self._string(gi, v.detail), txid=txid)
        if isinstance(v, Status):
            return v
        return v  # enums, types, and other immutable atoms

    def core(self, gi: int, frozen: Any) -> Any:
        if frozen is None or not (isinstance(frozen, tuple) and len(frozen) == 2 and isinstance(frozen[0], type)):
            return frozen  # None, or the FINISHED marker
        cls, items = frozen
        return (cls, tuple((k, self.value(gi, v, k)) for k, v in items))

    def snapshot(self, gi: int, snap: PSnap | CSnap) -> PSnap | CSnap:
        if isinstance(snap, PSnap):
            # Compaction's state comes only with txids or a history, which turn symmetry off (Transitions).
            assert not (snap.forgotten or snap.marks or snap.summary), "symmetry does not rename compaction's state"
            durable = tuple(sorted((self.value(gi, r) for r in snap.durable), key=lambda r: r.txid))
            return PSnap(
                snap.up,
                self.core(gi, snap.core),
                durable,
                frozenset(self._string(gi, t) for t in snap.timers),
                tuple(self.value(gi, r) for r in snap.held),
            )
        return CSnap(snap.alive, self.core(gi, snap.core), snap.reported, snap.timers)
