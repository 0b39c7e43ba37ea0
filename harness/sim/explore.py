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
    seconds: float  # wall-clock
    complete: bool  # False when stopped by max_states
    violations: list[PropertyViolation] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)  # the counterexample, one line per step or effect
    symmetry: bool = False  # states counted are classes under renaming (harness.sim.symmetry)
    # The states without symmetry reduction: with it, the sum of the classes'
    # sizes (group size / stabiliser, see Transitions.canonical), counted
    # rather than explored; without it, ``states``.
    full_states: int = 0
    cpu_seconds: float = 0.0  # this process's CPU time (the machine may be shared)

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
        cpu0 = time.process_time()
        result = self._search()
        result.cpu_seconds = time.process_time() - cpu0
        return result

    def _search(self) -> ExploreResult:
        t0 = time.perf_counter()
        pack, unpack, canonical = self.packer.pack, self.packer.unpack, self.canonical
        init_state = canonical(self.initial_state())
        init = pack(init_state)
        group = self.group_size
        full = group // self.stabiliser
        # The store: each state once, packed (harness.sim.states.Packer), as the
        # representative of its class under symmetry (harness.sim.symmetry).
        index: dict[bytes, int] = {init: 0}
        order: list[bytes] = [init]
        parent = array("l", [-1])
        depth = array("H", [0])
        heal = array("l", [-1])
        transitions = 0
        complete = True
        i = 0
        next_report = 50_000
        steps, successor, heal_rank = self.steps, self.successor, self.heal_rank
        while i < len(order):
            state = unpack(order[i])
            best_rank, best = NO_RANK, -1
            for step in steps(state):
                nxt, violations = successor(state, step)
                transitions += 1
                if nxt is state and not violations:
                    continue  # a step that changed nothing (a stranger's PREPARE refused)
                key = pack(canonical(nxt))
                j = index.get(key)
                if j is None:
                    full += group // self.stabiliser
                    j = index[key] = len(order)
                    order.append(key)
                    parent.append(i)
                    depth.append(depth[i] + 1)
                    heal.append(-1)
                if violations:
                    path = self._path(parent, i)
                    trace, last = self._replay(order, path)
                    lines, violations = self._violating_step(last, key)
                    return ExploreResult(
                        states=len(order),
                        transitions=transitions,
                        depth=depth[i] + 1,
                        seconds=time.perf_counter() - t0,
                        complete=False,
                        violations=violations,
                        trace=trace + lines,
                        symmetry=self.sym is not None,
                        full_states=full,
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
            symmetry=self.sym is not None,
            full_states=full,
        )
        if complete and self.liveness:
            self._check_healing(order, parent, heal, result)
        result.seconds = time.perf_counter() - t0
        return result

    def _check_healing(self, order: list[bytes], parent: array[int], heal: array[int], result: ExploreResult) -> None:
        """From every state, follow the healing schedule to a quiet state, which
        must pass check_quiescent. Memoised: each state is followed once."""
        unpack = self.packer.unpack
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
                    verdict = 2 if self.quiescent_violations(unpack(order[j])) else 1
                    break
                j = heal[j]
            for x in path:
                status[x] = verdict
            if verdict == 2:
                break
        bad = status.find(2)
        if bad < 0:
            return
        path = self._path(parent, bad)
        seen = {bad}
        j = bad
        while heal[j] != -1 and heal[j] not in seen:
            j = heal[j]
            seen.add(j)
            path.append(j)
        fault_free = len(self._path(parent, bad))
        lines, last = self._replay(order, path, mark=fault_free)
        violations = (
            [PropertyViolation(rule=LIVENESS, detail="the healing schedule loops without reaching a quiet state")]
            if heal[j] != -1
            else self.quiescent_violations(last)
        )
        result.violations = violations
        result.trace = lines + [f"VIOLATION {v}" for v in violations]

    # ------------------------------------------------------------ words

    @staticmethod
    def _path(parent: array[int], last: int) -> list[int]:
        """The state indices from the initial state to ``last``."""
        chain = [last]
        while chain[-1] > 0:
            chain.append(parent[chain[-1]])
        return chain[::-1]

    def _replay(self, order: list[bytes], path: list[int], mark: int = 0) -> tuple[list[str], State]:
        """The steps along ``path`` (stored representatives), in words, from the
        initial state and in its names: at each point, the first step whose
        successor's class is the next on the path. Returns the lines and the
        state reached. ``mark``: the line "faults stop here" goes after that many states."""
        pack, canonical = self.packer.pack, self.canonical
        state = self.initial_state()
        lines: list[str] = []
        for n, j in enumerate(path[1:], start=1):
            step = next(st for st in self.steps(state) if pack(canonical(self.apply(state, st)[0])) == order[j])
            lines += self._lines(state, step)
            state = self.apply(state, step)[0]
            if n + 1 == mark:
                lines.append("-- faults stop here; the healing schedule follows --")
        if mark == 1:
            lines.insert(0, "-- faults stop here; the healing schedule follows --")
        return lines, state

    def _violating_step(self, state: State, key: bytes) -> tuple[list[str], list[PropertyViolation]]:
        """The first step from ``state`` that breaks a property and leads to the
        class ``key``: its lines and the violations, in ``state``'s names."""
        pack, canonical = self.packer.pack, self.canonical
        for step in self.steps(state):
            nxt, _, violations = self.apply(state, step)
            if violations and pack(canonical(nxt)) == key:
                return self._lines(state, step) + [f"VIOLATION {v}" for v in violations], violations
        raise AssertionError("the violating step was not found again")

    def _lines(self, state: State, step: Step) -> list[str]:
        _, effects, _ = self.apply(state, step)
        lines = [self.describe(state, step)]
        for node, effect in effects:
            text = effect_text(self.topo, node, effect)
            if text is not None:
                lines.append(f"    {text}")
        return lines
