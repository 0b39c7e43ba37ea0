"""What the explorer holds a step to, and how it tells a step: the judgements over its states.

Theory of operation. harness.sim.transitions applies a step and collects what
it did (persists, reports, waits); this base class judges those effects with
the properties of harness.sim.invariants, on the interned states of
harness.sim.interned, and says a step in the protocol's words for a trace:

* a durable write against the others' durable states (``check_persist``:
  agreement, validity, no double decision), memoised per (txid, view, node,
  new state, what its client reported): it is pure;
* a participant's records: at most one transaction prepared (lock exclusion);
* the waits of wait-die: no cycle (``check_waits``);
* a client's report against the participants' durable states, and AC4
  (non-triviality) when no fault has happened and no other client started;
* a quiet state, where the healing schedule has nothing left to do:
  every participant up, every prepared transaction decided, no client waiting
  (``check_quiescent``).
* a stranger's PREPARE: what it changed at the participant besides the
  answer (invariants.MEMBERSHIP wants nothing).

The tables it reads (bounds, ages, waits, verdicts) are set by Transitions.
"""

from __future__ import annotations

from typing import Any

from harness.protocol import coordinator as co
from harness.protocol.messages import TxState
from harness.protocol.participant import ParticipantCore, TxRecord
from harness.sim.interned import Interned
from harness.sim.invariants import (
    LIVENESS,
    Wait,
    check_lock,
    check_persist,
    check_quiescent,
    check_report,
    check_waits,
    waits_of,
)
from harness.sim.model import Cut, PropertyViolation, Wire, message_text
from harness.sim.states import OP_SEND, Bounds, Call, Fate, State, Step, StepKind


class Budget:
    """The fault budgets left, mutable while a step is applied."""

    __slots__ = ("crashes", "duplicates", "early", "losses")

    def __init__(self, state: State) -> None:
        self.crashes, self.losses, self.duplicates, self.early = (
            state.crashes,
            state.losses,
            state.duplicates,
            state.early,
        )


class Judgement(Interned):
    """The judgements and the words of harness.sim.transitions.Transitions (its base)."""

    bounds: Bounds
    ages: bool  # wait-die: clients send their age
    _waits: dict[int, list[Wait]]  # participant snapshot id -> its waits
    _verdicts: dict[tuple[Any, ...], list[PropertyViolation]]  # check_persist is pure: memoised
    _client_of_txid: dict[str, int]
    _history_conflicts: bool  # a history left a participant down or prepared

    def deliverable(self, state: State) -> int:
        """The entries in flight whose destination is up."""
        net = state.net
        for p in range(self.np):
            if not self._up[state.nodes[p]]:
                net &= ~self._to_node[p]
        return net

    def _view(self, s: tuple[int, ...] | list[int], txid: str) -> tuple[TxState | None, ...]:
        return tuple(self._durable_state[s[j]].get(txid) for j in range(self.np))

    def judge_persist(self, before_state: State, s: list[int], node: int, record: TxRecord) -> list[PropertyViolation]:
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

    def age(self, nodes: tuple[int, ...] | list[int]) -> int | None:
        """The age a client starting now gets (wait-die): 1 + how many clients started before it."""
        if not self.ages:
            return None
        return 1 + sum(not self._startable[nodes[n]] for n in range(self.np, self.np + self.nc))

    def judge_waits(self, s: list[int]) -> list[PropertyViolation]:
        waits: list[Wait] = []
        for j in range(self.np):
            sid = s[j]
            mine = self._waits.get(sid)
            if mine is None:
                p = self._pnode(j, sid)
                mine = self._waits[sid] = waits_of(self.topo.display[j], p.core) if p.core is not None else []
            waits += mine
        return check_waits(waits) if len(waits) > 1 else []

    def judge_lock(self, sid: int, node: int) -> list[PropertyViolation]:
        prepared = [t for t, st in self._durable_state[sid].items() if st is TxState.PREPARED]
        return check_lock(self.topo.display[node], prepared) if len(prepared) > 1 else []

    def no_fault_no_conflict(self, s: list[int], client: int, budget: Budget) -> bool:
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

    def judge_report(self, s: list[int], node: int, result: co.Result) -> list[PropertyViolation]:
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

        def crash_note(k: Cut | None, who: str = "and") -> str:
            if k is None:
                return ""
            unsent = [str(i + 1) for i in range(k.reached) if k.unsent >> i & 1]
            lost = f", its send(s) number {','.join(unsent)} never having left" if unsent else ""
            return f"  [{who} crashes after {k.reached} of its actions{lost}]"

        if kind is StepKind.START:
            i = step.node - self.np
            age = f", age={self.age(state.nodes)}" if self.ages else ""
            return f"{d[step.node]} begins {self.txids[i]} (value={i + 1}{age}){crash_note(step.crash_after)}"
        if kind is StepKind.STRANGER:
            msg = self._entries[step.entry].msg
            assert msg is not None
            return f"a stranger -> {d[step.node]}: {message_text(msg)}"
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
                text += crash_note(fate, "its client, handling the reply,")
            return text + crash_note(step.crash_after)
        early = "  [early: messages still in flight]" if self.deliverable(state) else ""
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

    def stranger_changes(self, before: int, call: Call) -> list[str]:
        """What a participant did on a stranger's PREPARE, besides answering it."""
        a, b = self.psnap(before), self.psnap(call.sid)
        changes = []
        if a.durable != b.durable or a.held != b.held:
            changes.append("its records changed")
        if a.core != b.core:
            changes.append("its state changed (lock, value, version or what it remembers)")
        if a.timers != b.timers:
            changes.append("its timers changed")
        for op in call.ops:
            if op.what == OP_SEND:
                msg = self._entries[op.entry].msg
                changes.append(f"it sent {self.topo.display[op.node]} {message_text(msg) if msg else '?'}")
        return changes
