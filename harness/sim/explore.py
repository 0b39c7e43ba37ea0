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

Two cores (``workers=2``): the search goes level by level, and a forked worker
expands the tail of each large level while this process expands the head,
then merges the tail in order; the store, and so every figure and trace, is
the serial one (harness.sim.parallel says why).
"""

from __future__ import annotations

import gc
import os
import pickle
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from harness.sim.invariants import LIVENESS
from harness.sim.model import PropertyViolation, effect_text
from harness.sim.moves import Moves
from harness.sim.parallel import MIN_LEVEL, Expanded, Worker
from harness.sim.states import Bounds, State, Step, StepKind
from harness.sim.transitions import NO_RANK

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
    cpu_seconds: float = 0.0  # CPU time, this process's and its workers' (the machine may be shared)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else float("inf")


class Explorer(Moves):
    """Explores every state of the system of :class:`Transitions` (same
    arguments), by its memoised successors (harness.sim.moves); ``workers``:
    2 expands each level of at least ``split_at`` states on two cores
    (harness.sim.parallel), with the same result."""

    def __init__(self, *args: Any, workers: int = 1, split_at: int = MIN_LEVEL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workers = workers
        self.split_at = max(split_at, 2)

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
        # CPU time: this process's and its workers' (reaped children count in os.times).
        t = os.times()
        cpu0 = t.user + t.system + t.children_user + t.children_system
        result = self._search()
        t = os.times()
        result.cpu_seconds = t.user + t.system + t.children_user + t.children_system - cpu0
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
        steps, successor, heal_rank, successors = self.steps, self.successor, self.heal_rank, self.successors

        def expand(i: int) -> tuple[int, int, ExploreResult | None]:
            """Expand state ``i`` here, step by step (a step breaks a property:
            successors gives up): the transitions, the states without
            reduction added, and the result if a transition breaks a property."""
            state = unpack(order[i])
            best_rank, best = NO_RANK, -1
            transitions = added = 0
            for step in steps(state):
                nxt, violations = successor(state, step)
                transitions += 1
                if nxt is state and not violations:
                    continue  # a step that changed nothing (a stranger's PREPARE refused)
                key = pack(canonical(nxt))
                j = index.get(key)
                if j is None:
                    added += group // self.stabiliser
                    j = index[key] = len(order)
                    order.append(key)
                    parent.append(i)
                    depth.append(depth[i] + 1)
                    heal.append(-1)
                if violations:
                    path = self._path(parent, i)
                    trace, last = self._replay(order, path)
                    lines, violations = self._violating_step(last, key)
                    return (
                        transitions,
                        added,
                        ExploreResult(
                            states=len(order),
                            transitions=0,
                            depth=depth[i] + 1,
                            seconds=time.perf_counter() - t0,
                            complete=False,
                            violations=violations,
                            trace=trace + lines,
                            symmetry=self.sym is not None,
                        ),
                    )
                rank = heal_rank(step)
                if rank < best_rank and j != i:
                    best_rank, best = rank, j
            heal[i] = best
            return transitions, added, None

        def merge(i: int, expanded: tuple[int, list[tuple[bytes, int, int]]]) -> int:
            """Store the successors of state ``i`` (found by successors, here or
            in a worker: harness.sim.parallel); the states without reduction added."""
            best_rank, best = NO_RANK, -1
            added = 0
            for key, size, rank in expanded[1]:
                j = index.get(key)
                if j is None:
                    added += size
                    j = index[key] = len(order)
                    order.append(key)
                    parent.append(i)
                    depth.append(depth[i] + 1)
                    heal.append(-1)
                if rank < best_rank and j != i:
                    best_rank, best = rank, j
            heal[i] = best
            return added

        # Level by level: order[i:len(order)] is the next level whole. A large
        # one is split: a forked worker expands its tail while this process
        # expands its head, then merges the tail in order (harness.sim.parallel).
        i = 0
        next_report = 50_000
        worker: Worker | None = None
        head_share = 0.5  # of a split level, the part this process expands itself (it merges the rest)
        try:
            while i < len(order) and complete:
                end = split = len(order)
                if self.workers > 1 and end - i >= self.split_at:
                    worker = worker or Worker(self)
                    lo, split = i, i + round((end - i) * head_share)
                    head_start = time.perf_counter()
                    try:
                        worker.start(order, split, end)
                    except pickle.PicklingError:
                        # A core class made after the fork (see harness.sim.parallel): on alone.
                        worker.stop()
                        worker, split, self.workers = None, end, 1
                results: list[Expanded] = []
                while i < end:
                    if i == split:
                        assert worker is not None
                        head = (time.perf_counter() - head_start) / max(split - lo, 1)  # seconds per state
                        results, tail = worker.collect()
                        tail /= end - split
                        # The next level's split: both sides busy as long (the merge is cheap next to either).
                        head_share = min(max(tail / (head + tail), 0.2), 0.8) if head + tail > 0 else 0.5
                    hit = results[i - split] if i >= split else None
                    if hit is None:
                        hit = successors(order[i])
                    if hit is None:
                        n, added, found = expand(i)
                        if found is not None:
                            found.transitions = transitions + n
                            found.full_states = full + added
                            return found
                    else:
                        n, added = hit[0], merge(i, hit)
                    transitions += n
                    full += added
                    i += 1
                    if self.progress is not None and i >= next_report:
                        next_report += 50_000
                        self.progress(i, len(order), depth[i - 1], time.perf_counter() - t0)
                    if self.max_states and len(order) >= self.max_states:
                        complete = False
                        break
        finally:
            if worker is not None:
                worker.stop()
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
