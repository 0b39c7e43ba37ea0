"""Exhaustive, breadth-first exploration of every reachable state of a small configuration.

Theory of operation. The system explored (the model: which steps exist and
what each does) is :class:`harness.sim.transitions.Transitions`; its states
and steps are the named types of :mod:`harness.sim.states`. This module
searches it.

Safety (invariants.check_persist / check_report) is judged on every
transition, so breadth-first order yields a shortest trace to the first
violation. Liveness: from every reachable state, a fixed fault-free healing
schedule (write held records, restart the crashed, deliver what is in flight,
start the clients, fire the timers) must reach a quiet state that passes
check_quiescent; each state records its healing successor, so this costs one
pass over the states.
"""

from __future__ import annotations

import gc
import time
from array import array
from dataclasses import dataclass, field

from harness.sim.invariants import LIVENESS
from harness.sim.model import PropertyViolation, effect_text
from harness.sim.states import Bounds, State, Step, StepKind
from harness.sim.transitions import NO_RANK, Transitions

__all__ = ["Bounds", "ExploreResult", "Explorer", "State", "Step", "StepKind"]


@dataclass
class ExploreResult:
    """What an exploration found."""

    states: int
    transitions: int
    depth: int  # the longest shortest path from the initial state
    seconds: float
    complete: bool  # False when stopped by max_states
    violations: list[PropertyViolation] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)  # the counterexample, one line per step or effect

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float("inf")


class Explorer(Transitions):
    """Explores every state of the system of :class:`Transitions` (same arguments)."""

    # ------------------------------------------------------------ search

    def run(self) -> ExploreResult:
        """Explore breadth-first; stop at the first safety violation.

        The cyclic garbage collector is paused meanwhile: the search makes
        millions of long-lived tuples and no cycles, so its passes over them
        would cost time and free nothing."""
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_enabled:
                gc.enable()

    def _run(self) -> ExploreResult:
        t0 = time.perf_counter()
        init = self.initial_state()
        index: dict[State, int] = {init: 0}
        order: list[State] = [init]
        parent = array("l", [-1])
        via: list[Step | None] = [None]
        depth = array("H", [0])
        heal = array("l", [-1])
        transitions = 0
        complete = True
        i = 0
        next_report = 50_000
        steps, apply, heal_rank = self.steps, self.apply, self.heal_rank
        while i < len(order):
            state = order[i]
            best_rank, best = NO_RANK, -1
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
        self, order: list[State], parent: array[int], via: list[Step | None], heal: array[int], result: ExploreResult
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
            [PropertyViolation(rule=LIVENESS, detail="the healing schedule loops without reaching a quiet state")]
            if heal[j] != -1
            else self.quiescent_violations(order[j])
        )
        result.violations = violations
        result.trace = lines + [f"VIOLATION {v}" for v in violations]

    # ------------------------------------------------------------ words

    def _trace(self, order: list[State], parent: array[int], via: list[Step | None], last: int) -> list[str]:
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

    def _lines(self, state: State, step: Step) -> list[str]:
        _, effects, _ = self.apply(state, step)
        lines = [self.describe(state, step)]
        for node, effect in effects:
            text = effect_text(self.topo, node, effect)
            if text is not None:
                lines.append(f"    {text}")
        return lines
