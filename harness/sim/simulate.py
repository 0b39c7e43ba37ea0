"""Seeded random simulation: the real cores on a simulated network and disk, with a virtual clock.

Theory of operation. One run is a discrete-event simulation driven by one
``random.Random(seed)``: the same seed and parameters give the same run, event
for event. Clients run a few transactions each, one after the other, against
every participant (so they contend for the participants' locks). During the
fault window the network loses, duplicates and delays messages (delays are
drawn per message, so messages overtake each other), and nodes crash: a
participant loses its memory, timers and held (lazy) commit records, keeps its
durable records, and restarts after a while from them (restore + recover); a
client never comes back. A crash may fall between two actions of one step.
When the window closes, faults stop, every crashed participant restarts, and
the run goes on until nothing is left to happen.

Connections follow nodes.py: a client's connections are open from the start;
a participant's crash breaks them (what is written on a broken connection is
lost) and the client notices later (on_connection_lost); a send on a closed
connection to a participant that is down is refused (on_unreachable), and only
then. A message in flight to a participant that crashed is lost if it arrives
while the participant is down, and delivered if it arrives after the restart
(a network that holds messages: more than TCP allows, so a safe superset).

Every message goes through the codec (model.WireCodec): what arrives is what
the wire line decodes to. Every durable write and every report is judged as it
happens (harness.sim.invariants), so a run stops at the first violation;
liveness and identical replicas are judged once the run is quiet.

AC4 (non-triviality) is judged on the transactions that met no fault and no
conflict: from the start of the transaction to its report, no crash, restart,
loss, duplicate, refused or broken connection anywhere; at its start no other
transaction running, every participant up and unlocked; while it runs, no
other transaction starts and no participant prepares another txid (a late
duplicate). Such a transaction must be reported COMMITTED. It is judged only
when the timers leave room for every message (4 x max_delay < resolve_after,
2 x max_delay < client_timeout): otherwise a slow message is a fault too. A failing run is
re-run with a trace (it is the same run) to print what happened.
"""

from __future__ import annotations

import enum
import functools
import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.protocol import coordinator as co
from harness.protocol.messages import Message, TxState
from harness.protocol.participant import TxRecord
from harness.sim.invariants import (
    CODEC,
    LIVENESS,
    check_forgotten,
    check_lock,
    check_nontrivial,
    check_persist,
    check_quiescent,
    check_report,
    check_waits,
    waits_of,
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
    effect_text,
    message_text,
    real_coordinator,
    real_participant,
    uses_ages,
)


@dataclass(frozen=True, kw_only=True)
class SimParams:
    """One run's configuration. Times are virtual milliseconds."""

    participants: int = 3
    clients: int = 3
    transactions: int = 3  # per client, one after the other
    loss: float = 0.05  # chance that a message is lost (fault window only)
    duplicate: float = 0.02  # chance that a message is delivered twice (fault window only)
    crashes: int = 2  # at most this many node crashes per run (drawn 0..crashes)
    mid_step: float = 0.5  # chance that a crash falls between two actions of a step
    min_delay: int = 1
    max_delay: int = 20  # message delays are uniform in [min_delay, max_delay]: messages overtake
    client_timeout: int = 100  # coordinator phase timer (nodes.py default 2 s vs ~1 ms loopback)
    retry: int = 10  # coordinator retry timer
    resolve_after: int = 150  # participant resolve timer (nodes.py default 5 s)
    lazy_write: int = 20  # a held commit record is written on its own within 1..lazy_write (nodes.py 20 ms)
    max_downtime: int = 300  # a crashed participant restarts after 1..max_downtime
    think: int = 30  # a client starts within 0..think, and waits 0..think between its transactions
    fault_window: int = 600  # faults happen in [0, fault_window); then they stop
    max_events: int = 100_000  # a run still busy after this many events is not live


@dataclass
class SimRun:
    """What one run did and found."""

    seed: int
    violations: list[PropertyViolation] = field(default_factory=list)
    transactions: int = 0  # started
    results: dict[co.Result, int] = field(default_factory=lambda: dict.fromkeys(co.Result, 0))
    events: int = 0
    crashes: int = 0
    lost: int = 0
    duplicated: int = 0
    trace: list[str] = field(default_factory=list)  # filled when the run is traced
    txid: str | None = None  # the transaction a violation is about, when it is about one

    @property
    def ok(self) -> bool:
        return not self.violations


class _Ev(enum.IntEnum):
    START = 0  # (client,)
    DELIVER = 1  # (tag, src, dst, msg)
    PTIMER = 2  # (participant, txid, generation)
    CTIMER = 3  # (client, timer, generation)
    CRASH = 4  # (node, between two actions?)
    RESTART = 5  # (participant,)
    HEAL = 6  # ()
    WRITE = 7  # (participant,): its held lazy records are written


@functools.lru_cache(maxsize=1 << 16)
def _persist_verdict(
    txid: str,
    names: tuple[str, ...],
    before: tuple[TxState | None, ...],
    i: int,
    new: TxState,
    reported: co.Result | None,
) -> tuple[PropertyViolation, ...]:
    """check_persist, memoised: it is pure, and the same txids, views and
    writes recur from run to run."""
    return tuple(check_persist(txid, names, before, i, new, reported))


class _Stop(Exception):
    """A violation: the run ends here."""


class Simulation:
    """One seeded run. ``run()`` returns its SimRun."""

    def __init__(
        self,
        seed: int,
        params: SimParams | None = None,
        *,
        participant_factory: ParticipantFactory = real_participant,
        coordinator_factory: CoordinatorFactory = real_coordinator,
        trace: bool = False,
        codec: WireCodec | None = None,
    ) -> None:
        self.params = p = params or SimParams()
        self.codec = codec or WireCodec()
        self.rng = random.Random(seed)
        self.topo = topo = Topology(p.participants, p.clients)
        self.pfactory = participant_factory
        self.cfactory = coordinator_factory
        self.ages = uses_ages(participant_factory)  # wait-die: a transaction's age is its start time
        self.tracing = trace
        self.result = SimRun(seed=seed)
        self.np, self.nc = p.participants, p.clients
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, _Ev, tuple[object, ...]]] = []
        self.pnodes = [
            PNode(topo, i, participant_factory(name, [], topo.participant_names), {}, set(), True)
            for i, name in enumerate(topo.participant_names)
        ]
        self.cnodes = [CNode(topo, p.participants + i, None, None, set(), True) for i in range(p.clients)]
        self.conns = [[True] * p.participants for _ in range(p.clients)]  # open?
        self.broken = [[False] * p.participants for _ in range(p.clients)]
        self.left = [p.transactions] * p.clients
        self.current = [""] * p.clients  # each client's transaction (what a report is about)
        self.faults = True
        self.armed: set[int] = set()  # nodes whose next multi-action step crashes midway
        self._gen = 0
        self.ptimers: dict[tuple[int, str], int] = {}
        self.ctimers: dict[tuple[int, co.Timer], int] = {}
        self.views: dict[str, list[TxState | None]] = {}
        self.reports: dict[str, co.Result] = {}
        # AC4 bookkeeping (the module docstring): faults so far, and per client
        # whether its transaction is still clean and the fault count at its start.
        self.fault_count = 0
        self.clean = [False] * p.clients
        self.faults_at_start = [0] * p.clients
        self.timely = 4 * p.max_delay < p.resolve_after and 2 * p.max_delay < p.client_timeout

    # ------------------------------------------------------------ scheduling

    def _at(self, t: int, ev: _Ev, data: tuple[object, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, ev, data))

    def _say(self, line: str) -> None:
        self.result.trace.append(f"{self.now:>7} {line}")

    def run(self) -> SimRun:
        p, rng = self.params, self.rng
        for c in range(self.nc):
            self._at(rng.randint(0, p.think), _Ev.START, (c,))
        for _ in range(rng.randint(0, p.crashes)):
            node = rng.randrange(self.np + self.nc)
            self._at(rng.randrange(p.fault_window), _Ev.CRASH, (node, rng.random() < p.mid_step))
        self._at(p.fault_window, _Ev.HEAL, ())
        try:
            while self._heap:
                self.now, _, ev, data = heapq.heappop(self._heap)
                self.result.events += 1
                if self.result.events > p.max_events:
                    self._violate(PropertyViolation(rule=LIVENESS, detail=f"still busy after {p.max_events} events"))
                self._event(ev, data)
            self._final()
        except _Stop:
            pass
        return self.result

    def _violate(self, *violations: PropertyViolation, txid: str | None = None) -> None:
        self.result.violations = list(violations)
        self.result.txid = txid
        if self.tracing:
            self.result.trace += [f"VIOLATION {v}" for v in violations]
        raise _Stop

    # ------------------------------------------------------------ events

    def _event(self, ev: _Ev, data: tuple[object, ...]) -> None:
        d = self.topo.display
        if ev is _Ev.DELIVER:
            tag, src, dst, msg = data
            assert isinstance(tag, Wire) and isinstance(src, int) and isinstance(dst, int)
            self._deliver(tag, src, dst, msg)  # type: ignore[arg-type]
        elif ev is _Ev.PTIMER:
            node, txid, gen = data
            assert isinstance(node, int) and isinstance(txid, str)
            pn = self.pnodes[node]
            if pn.up and self.ptimers.get((node, txid)) == gen and txid in pn.timers:
                if self.tracing:
                    self._say(f"{d[node]} timer for {txid} fires")
                self._effects(node, pn.timeout(txid, self._crash_point(node)))
        elif ev is _Ev.CTIMER:
            c, timer, gen = data
            assert isinstance(c, int) and isinstance(timer, co.Timer)
            cn = self.cnodes[c]
            node = self.np + c
            if cn.active and self.ctimers.get((c, timer)) == gen and timer in cn.timers:
                if self.tracing:
                    self._say(f"{d[node]} {timer.value} timer fires")
                self._effects(node, cn.timeout(timer, self._crash_point(node)))
        elif ev is _Ev.START:
            (c,) = data
            assert isinstance(c, int)
            self._start(c)
        elif ev is _Ev.CRASH:
            node, midway = data
            assert isinstance(node, int)
            if not self.faults:
                return
            if midway:
                self.armed.add(node)
            else:
                self._crash(node)
        elif ev is _Ev.RESTART:
            (node,) = data
            assert isinstance(node, int)
            self._restart(node)
        elif ev is _Ev.WRITE:
            (node,) = data
            assert isinstance(node, int)
            pn = self.pnodes[node]
            if pn.up and pn.held:  # else written with a later persist, or lost in a crash
                if self.tracing:
                    self._say(f"{d[node]} writes its held record(s)")
                self._effects(node, pn.write_held())
        else:  # HEAL
            self.faults = False
            self.armed.clear()
            if self.tracing:
                self._say("faults stop")
            for node, pn in enumerate(self.pnodes):
                if not pn.up:
                    self._restart(node)

    def _crash_point(self, node: int) -> Callable[[int], int | None] | None:
        if node not in self.armed:
            return None

        def choose(n: int) -> int | None:
            if n < 2:
                return None
            self.armed.discard(node)
            self.result.crashes += 1
            return self.rng.randint(1, n - 1)

        return choose

    def _start(self, c: int) -> None:
        cn = self.cnodes[c]
        if not cn.alive or self.left[c] <= 0:
            return
        self.left[c] -= 1
        n = self.params.transactions - self.left[c]
        txid = f"t{c + 1}-{n}"
        value = (c + 1) * 1000 + n
        self.result.transactions += 1
        self.current[c] = txid
        others = [d for d, other in enumerate(self.cnodes) if d != c and other.active]
        for d in others:
            self.clean[d] = False
        self.clean[c] = not others and all(pn.up and pn.core is not None and pn.core.lock is None for pn in self.pnodes)
        self.faults_at_start[c] = self.fault_count
        node = self.np + c
        if self.tracing:
            self._say(f"{self.topo.display[node]} begins {txid} (value={value})")
        prio = self.now if self.ages else None  # ties broken by txid, as on real clocks
        self._effects(node, cn.start(self.cfactory, txid, value, self._crash_point(node), prio=prio))

    def _deliver(self, tag: Wire, src: int, dst: int, msg: Message | None) -> None:
        d, names = self.topo.display, self.topo.names
        if dst < self.np:
            pn = self.pnodes[dst]
            if not pn.up:
                return  # nobody listens: lost
            if self.tracing:
                assert msg is not None
                self._say(f"{d[src]} -> {d[dst]}: {message_text(msg)}")
            assert msg is not None
            crash = self._crash_point(dst)
            effects = pn.request(src, msg, crash) if tag is Wire.REQUEST else pn.peer_reply(names[src], msg, crash)
            self._effects(dst, effects)
            if self.ages:
                self._judge_waits()
            return
        c = dst - self.np
        cn = self.cnodes[c]
        if not cn.alive:
            return
        if tag is Wire.LOST:
            self.conns[c][src] = False
            self.broken[c][src] = False
            if self.tracing:
                self._say(f"{d[dst]} sees its connection to {d[src]} closed")
            self._effects(dst, cn.connection_lost(names[src], self._crash_point(dst)))
        elif tag is Wire.REFUSED:
            if self.tracing:
                self._say(f"{d[dst]} cannot connect to {d[src]}: connection refused")
            self._effects(dst, cn.unreachable(names[src], self._crash_point(dst)))
        else:
            assert msg is not None
            if self.tracing and cn.active:
                self._say(f"{d[src]} -> {d[dst]}: {message_text(msg)}")
            self._effects(dst, cn.reply(names[src], msg, self._crash_point(dst)))

    def _send(self, tag: Wire, src: int, dst: int, msg: Message) -> None:
        p, rng = self.params, self.rng
        arrived, problem = self.codec.carry(msg)
        if arrived is None or problem:
            self._violate(PropertyViolation(rule=CODEC, detail=problem), txid=getattr(msg, "txid", None))
        assert arrived is not None
        msg = arrived
        if self.faults and rng.random() < p.loss:
            self.result.lost += 1
            self.fault_count += 1
            if self.tracing:
                self._say(
                    f"    (the network loses {self.topo.display[src]} -> {self.topo.display[dst]}: {message_text(msg)})"
                )
            return
        self._at(self.now + rng.randint(p.min_delay, p.max_delay), _Ev.DELIVER, (tag, src, dst, msg))
        if self.faults and rng.random() < p.duplicate:
            self.result.duplicated += 1
            self.fault_count += 1
            self._at(self.now + rng.randint(p.min_delay, p.max_delay), _Ev.DELIVER, (tag, src, dst, msg))

    def _effects(self, node: int, effects: list[Effect]) -> None:
        p = self.params
        for effect in effects:
            if self.tracing:
                text = effect_text(self.topo, node, effect)
                if text is not None:
                    self._say(f"    {text}")
            what = effect[0]
            if what is Fx.SEND:
                dst = effect[1]
                assert isinstance(dst, int)
                if dst < 0:
                    continue
                if dst < self.np:
                    if self.pnodes[dst].up:
                        self._send(effect[2], node, dst, effect[3])  # type: ignore[arg-type]
                elif self.cnodes[dst - self.np].alive:
                    self._send(effect[2], node, dst, effect[3])  # type: ignore[arg-type]
            elif what is Fx.CSEND:
                dst = effect[1]
                assert isinstance(dst, int)
                if not 0 <= dst < self.np:
                    continue
                c = node - self.np
                if self.conns[c][dst]:
                    if not self.broken[c][dst]:
                        self._send(Wire.REQUEST, node, dst, effect[2])  # type: ignore[arg-type]
                    # broken: written into a dead connection; LOST is on its way
                elif self.pnodes[dst].up:
                    self.conns[c][dst] = True
                    self._send(Wire.REQUEST, node, dst, effect[2])  # type: ignore[arg-type]
                else:
                    self.fault_count += 1
                    self._at(self.now + p.min_delay, _Ev.DELIVER, (Wire.REFUSED, dst, node, None))
            elif what is Fx.PERSIST:
                record = effect[1]
                assert isinstance(record, TxRecord)
                self._judge_persist(node, record)
            elif what is Fx.FORGET:
                pn = self.pnodes[node]
                verdict = check_forgotten(self.topo.display[node], pn.durable, pn.forgotten, pn.marks, pn.summary)
                if verdict:
                    self._violate(*verdict)
            elif what is Fx.HOLD:
                self._at(self.now + self.rng.randint(1, p.lazy_write), _Ev.WRITE, (node,))
            elif what is Fx.REPORT:
                result = effect[1]
                assert isinstance(result, co.Result)
                self._judge_report(node, result)
            elif what is Fx.TIMER_SET:
                key = effect[1]
                self._gen += 1
                if node < self.np:
                    assert isinstance(key, str)
                    self.ptimers[(node, key)] = self._gen
                    self._at(self.now + p.resolve_after, _Ev.PTIMER, (node, key, self._gen))
                else:
                    assert isinstance(key, co.Timer)
                    c = node - self.np
                    self.ctimers[(c, key)] = self._gen
                    delay = p.client_timeout if key is co.Timer.PHASE else p.retry
                    self._at(self.now + delay, _Ev.CTIMER, (c, key, self._gen))
            elif what is Fx.FINISHED:
                c = node - self.np
                if self.left[c] > 0:
                    self._at(self.now + self.rng.randint(0, p.think), _Ev.START, (c,))
            elif what is Fx.CRASH:
                self._crashed(node)

    # ------------------------------------------------------------ faults

    def _crash(self, node: int) -> None:
        if node < self.np:
            pn = self.pnodes[node]
            if not pn.up:
                return
            pn.crash()
        else:
            cn = self.cnodes[node - self.np]
            if not cn.alive:
                return
            cn.crash()
        self.result.crashes += 1
        if self.tracing:
            self._say(f"{self.topo.display[node]} crashes")
        self._crashed(node)

    def _crashed(self, node: int) -> None:
        """What a crash does outside the node."""
        self.armed.discard(node)
        self.fault_count += 1
        if node >= self.np:
            self.left[node - self.np] = 0
            return
        for c in range(self.nc):
            if self.conns[c][node] and not self.broken[c][node]:
                self.broken[c][node] = True
                if self.cnodes[c].alive:
                    self._at(self.now + self.params.min_delay, _Ev.DELIVER, (Wire.LOST, node, self.np + c, None))
        if self.faults:
            self._at(self.now + self.rng.randint(1, self.params.max_downtime), _Ev.RESTART, (node,))

    def _restart(self, node: int) -> None:
        pn = self.pnodes[node]
        if pn.up:
            return
        self.fault_count += 1
        if self.tracing:
            self._say(f"{self.topo.display[node]} restarts from {len(pn.durable)} durable record(s)")
        self._effects(node, pn.restart(self.pfactory, self._crash_point(node)))

    # ------------------------------------------------------------ judging

    def _view(self, txid: str) -> list[TxState | None]:
        view = self.views.get(txid)
        if view is None:
            view = self.views[txid] = [None] * self.np
        return view

    def _judge_persist(self, node: int, record: TxRecord) -> None:
        view = self._view(record.txid)
        names = self.topo.display[: self.np]
        violations = list(
            _persist_verdict(record.txid, names, tuple(view), node, record.state, self.reports.get(record.txid))
        )
        view[node] = record.state
        if record.state is TxState.PREPARED:
            durable = self.pnodes[node].durable
            violations += check_lock(names[node], [t for t, r in durable.items() if r.state is TxState.PREPARED])
            for c, cn in enumerate(self.cnodes):
                if cn.active and self.current[c] != record.txid:
                    self.clean[c] = False  # another transaction holds a lock meanwhile
        if violations:
            self._violate(*violations, txid=record.txid)

    def _judge_waits(self) -> None:
        names = self.topo.display
        waits = [w for i, pn in enumerate(self.pnodes) if pn.core is not None for w in waits_of(names[i], pn.core)]
        if violations := check_waits(waits):
            self._violate(*violations, txid=waits[0][1])

    def _judge_report(self, node: int, result: co.Result) -> None:
        txid = self.current[node - self.np]
        self.result.results[result] += 1
        if result is not co.Result.UNKNOWN:
            self.reports[txid] = result
        violations = check_report(
            txid, self.topo.display[: self.np], tuple(self._view(txid)), result, self.topo.display[node]
        )
        c = node - self.np
        if self.timely and self.clean[c] and self.fault_count == self.faults_at_start[c]:
            violations += check_nontrivial(txid, result, self.topo.display[node])
        if violations:
            self._violate(*violations, txid=txid)

    def _final(self) -> None:
        cores = []
        for pn in self.pnodes:
            assert pn.core is not None  # every participant restarted when faults stopped
            cores.append(pn.core)
        waiting = [self.topo.display[self.np + c] for c, cn in enumerate(self.cnodes) if cn.active]
        waiting += [
            f"{self.topo.display[self.np + c]} (never started {n} transaction(s))"
            for c, n in enumerate(self.left)
            if n > 0 and self.cnodes[c].alive
        ]
        violations = check_quiescent(
            self.topo.display[: self.np], cores, [pn.history for pn in self.pnodes], self.reports, waiting
        )
        if violations:
            self._violate(*violations)


def simulate(
    seed: int,
    params: SimParams | None = None,
    *,
    participant_factory: ParticipantFactory = real_participant,
    coordinator_factory: CoordinatorFactory = real_coordinator,
    trace: bool = False,
    codec: WireCodec | None = None,
) -> SimRun:
    """One run; a failing run is re-run with its trace when ``trace`` is False."""
    kwargs: dict[str, Any] = {
        "participant_factory": participant_factory,
        "coordinator_factory": coordinator_factory,
        "codec": codec,
    }
    result = Simulation(seed, params, trace=trace, **kwargs).run()
    if not result.ok and not trace:
        result = Simulation(seed, params, trace=True, **kwargs).run()
    return result


@dataclass
class Summary:
    """What a batch of runs did."""

    runs: int = 0
    transactions: int = 0
    results: dict[co.Result, int] = field(default_factory=lambda: dict.fromkeys(co.Result, 0))
    events: int = 0
    crashes: int = 0
    lost: int = 0
    duplicated: int = 0
    cpu_seconds: float = 0.0
    failure: SimRun | None = None

    @property
    def transactions_per_cpu_second(self) -> float:
        return self.transactions / self.cpu_seconds if self.cpu_seconds > 0 else float("inf")


def random_runs(
    runs: int,
    seed: int,
    params: SimParams | None = None,
    *,
    participant_factory: ParticipantFactory = real_participant,
    coordinator_factory: CoordinatorFactory = real_coordinator,
    progress: Callable[[int, Summary], None] | None = None,
    codec: WireCodec | None = None,
) -> Summary:
    """Runs with seeds seed, seed+1, ...; stops at the first failing run."""
    summary = Summary()
    codec = codec or WireCodec()  # shared: each distinct message is encoded and decoded once
    t0 = time.process_time()
    for i in range(runs):
        result = Simulation(
            seed + i,
            params,
            participant_factory=participant_factory,
            coordinator_factory=coordinator_factory,
            codec=codec,
        ).run()
        summary.runs += 1
        summary.transactions += result.transactions
        for k, v in result.results.items():
            summary.results[k] += v
        summary.events += result.events
        summary.crashes += result.crashes
        summary.lost += result.lost
        summary.duplicated += result.duplicated
        if not result.ok:
            summary.cpu_seconds = time.process_time() - t0
            summary.failure = simulate(
                seed + i,
                params,
                participant_factory=participant_factory,
                coordinator_factory=coordinator_factory,
                trace=True,
                codec=codec,
            )
            return summary
        if progress is not None:
            progress(i + 1, summary)
    summary.cpu_seconds = time.process_time() - t0
    return summary
