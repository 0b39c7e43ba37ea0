"""Faults for the runner: crashes, pauses and partitions, on a seeded schedule.

Theory of operation. The nemesis lives in the runner's process and acts on
real processes: ``kill-participant`` is SIGKILL followed, after an outage, by a
restart from the participant's storage; ``kill-client`` is SIGKILL: the
transaction in flight is abandoned (its outcome unknown), and after an outage a
new client process takes over the operations the killed one had not finished;
``pause`` is SIGSTOP then SIGCONT of a participant or a client; ``partition``
severs links of the fault proxy (a participant isolated, a client cut from a
participant, or two participants cut from each other) or, one time in four,
degrades them (every message delayed, some dropped). One fault is active at
a time; the next one starts about ``--nemesis-interval`` seconds after the
previous one healed. Every choice comes from the run's seed.

Targeted crash points (``--crash``) make a node kill itself exactly at a
protocol point; the runner restarts a crashed participant after a short outage.
``partition:slow-vote`` slows client1's link to server2 past client1's
timeout, so that server2's vote comes after the deadline.
``partition:between-phases`` cuts client1 from server2 right after server2's
yes vote reaches client1, so the COMMIT cannot get through.

In ``--network netns`` runs, partitions are made by the kernel instead
(harness.hosts.kernel_faults: nftables drop rules, one-way and symmetric, a
node isolated, a majority/minority split, a ring), and two more kinds exist:
``loss`` (a node's frames dropped at random) and ``bandwidth`` (a token bucket
on a node's link). Kills and pauses go through the run's placement, which
signals a local process or a remote one over SSH.

Every fault and every heal is a line of ``nemesis.log`` with its time, which
the report turns into a table. Everything is healed before the final checks.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

from harness.events.log import EventLog
from harness.events.schema import FAULT, HEAL
from harness.experiment.children import ClientProcess, ParticipantProcess
from harness.experiment.config import RunConfig
from harness.experiment.faults import KERNEL_KINDS, SLOW_VOTE_DELAY, FaultKind, PartitionPoint
from harness.experiment.placement import Placement
from harness.experiment.processes import Processes, RunError
from harness.experiment.proxy import ProxyHandle
from harness.hosts import kernel_faults
from harness.hosts.netns import NetworkMode

# A participant that killed itself at a crash point stays down this long before
# the runner restarts it: long enough for its peers and clients to notice.
CRASH_OUTAGE = 0.3


class Cluster(Protocol):
    """What the nemesis acts on: the runner's processes (harness.experiment.runner.Run)."""

    started: float  # time.monotonic() at the start of the run: fault times count from it
    participants: list[ParticipantProcess]
    clients: list[ClientProcess]
    proxy: ProxyHandle | None
    crashes: dict[str, str]  # --crash: target -> POINT[:N]
    procs: Processes
    place: Placement  # where nodes live: how to signal them, the kernel's faults if any

    def restart_participant(self, p: ParticipantProcess) -> None:
        """Start ``p`` again on its port, from its storage."""

    def restart_client(self, c: ClientProcess) -> bool:
        """Start a killed client again; False if it had nothing left to do."""


@dataclass(frozen=True)
class Paused:
    node: str
    proc: BaseProcess


@dataclass(frozen=True)
class KernelMade:
    fid: int  # the fault's id in the run's KernelFaults


# What heal() needs to undo a fault: the participant to restart or the client
# to replace, the process to resume, the proxy links and how they were cut, or
# the kernel's rules.
Undo = ParticipantProcess | ClientProcess | Paused | KernelMade | tuple[str, list[str]] | None


@dataclass
class _Fault:
    id: int
    kind: FaultKind
    target: str
    heal_at: float | None
    undo: Undo = None


class Nemesis:
    """Schedules, applies and heals faults for one run."""

    def __init__(self, config: RunConfig, seed: int, log_path: Path, run: Cluster) -> None:
        self.kinds = tuple(config.nemesis)
        self.interval = config.nemesis_interval
        self.client_timeout = config.timeout
        self.rng = random.Random(f"nemesis-{seed}")
        self.log = EventLog(log_path, "nemesis")
        run.procs.held.append(self.log)  # the runner's file: no child keeps it open
        self.run = run
        self.next_at = float("inf")
        self.active: list[_Fault] = []  # at most one scheduled fault, plus crash-point outages
        self.count = 0
        partitions = FaultKind.PARTITION in self.kinds or FaultKind.DELAY in self.kinds or "partition" in run.crashes
        self.needs_proxy = partitions and config.network is NetworkMode.LOOPBACK

    def _t(self) -> str:
        return f"{time.monotonic() - self.run.started:.3f}"

    def record(self, kind: FaultKind, target: str, healed: bool = False, **fields: Any) -> _Fault:
        self.count += 1
        fault = _Fault(self.count, kind, target, None)
        self.log.write(FAULT, id=fault.id, kind=kind.value, target=target, t=self._t(), **fields)
        if healed:
            self.log.write(HEAL, id=fault.id, kind=kind.value, target=target, t=self._t(), how="abandoned")
        return fault

    def begin(self) -> None:
        """The clients are about to start: arm targeted partitions, schedule the first fault."""
        kernel = self.run.place.kernel
        if FaultKind.DELAY in self.kinds and kernel is not None and not kernel.netem:
            raise RunError(
                "--nemesis delay: this kernel has no netem; delay needs the fault proxy (--network loopback)"
            )
        if kernel is None and (made_by_kernel := [k for k in self.kinds if k in KERNEL_KINDS]):
            raise RunError(f"--nemesis {','.join(made_by_kernel)}: the kernel makes these, with --network netns only")
        point = self.run.crashes.get("partition")
        if point == PartitionPoint.SLOW_VOTE and kernel is not None:
            raise RunError("--crash partition:slow-vote needs the fault proxy (--network loopback): no netem here")
        if point is not None and kernel is not None:
            made = kernel_faults.between_phases("client1", "server2", kernel.net)
            fault = self.record(FaultKind.PARTITION, made.what, point=PartitionPoint.BETWEEN_PHASES.value)
            kernel.apply(fault.id, made)
            fault.undo = KernelMade(fault.id)
            self.active.append(fault)  # healed at the end of the run
        elif point is not None and self.run.proxy is not None:
            name = "client1->server2"
            if point == PartitionPoint.SLOW_VOTE:
                delay = round(SLOW_VOTE_DELAY * self.client_timeout, 3)
                self.run.proxy.call("set", name, delay, 0.0)
                fault = self.record(FaultKind.PARTITION, name, point=point, delay=delay)
                fault.undo = ("degraded", [name])
            else:
                self.run.proxy.call("cut-after", name, r"^VOTE .*vote=ok")
                fault = self.record(FaultKind.PARTITION, name, point=point)
                fault.undo = ("severed", [name])
            self.active.append(fault)  # healed at the end of the run
        if self.kinds:
            self.next_at = time.monotonic() + self.interval * self.rng.uniform(0.5, 1.5)

    def next_due(self) -> float:
        due = [self.next_at] + [f.heal_at for f in self.active if f.heal_at is not None]
        return max(0.0, min(due) - time.monotonic())

    def step(self) -> None:
        now = time.monotonic()
        for fault in [f for f in self.active if f.heal_at is not None and f.heal_at <= now]:
            self.heal(fault)
        if self.next_at <= now and not any(f.heal_at is not None and f.kind in self.kinds for f in self.active):
            self._inject()
            self.next_at = float("inf") if self.active else now + self.interval * self.rng.uniform(0.5, 1.5)

    def _inject(self) -> None:
        kind = self.rng.choice(self.kinds)
        duration = self.interval * self.rng.uniform(0.3, 1.0)
        run = self.run
        if kind is FaultKind.KILL_PARTICIPANT:
            p = self.rng.choice([p for p in run.participants if p.down_since is None])
            assert p.proc is not None
            fault = self.record(kind, p.node, pid=p.proc.pid)
            p.down_since = time.monotonic()
            run.place.signal(p.node, p.proc, signal.SIGKILL)
            p.proc.join()
            fault.undo = p
        elif kind is FaultKind.KILL_CLIENT:
            alive = [c for c in run.clients if c.running and not c.killed]
            if not alive:
                return
            c = self.rng.choice(alive)
            fault = self.record(kind, c.name, pid=c.proc.pid)
            c.killed = True
            run.place.signal(c.name, c.proc, signal.SIGKILL)
            fault.undo = c  # its last transaction is abandoned; a new process takes over later
        elif kind is FaultKind.PAUSE:
            targets = [(p.node, p.proc) for p in run.participants if p.proc is not None and p.down_since is None]
            targets += [(c.name, c.proc) for c in run.clients if c.running and c.proc.pid is not None]
            name, proc = self.rng.choice(targets)
            fault = self.record(kind, name, pid=proc.pid)
            run.place.signal(name, proc, signal.SIGSTOP)
            fault.undo = Paused(name, proc)
        elif run.place.kernel is not None:
            fault = self._kernel_fault(kind, run.place.kernel)
        elif kind is FaultKind.DELAY:
            assert run.proxy is not None
            node = self.rng.choice([p.node for p in run.participants])
            ms = self.rng.randint(5, 100)
            links = [n for n in run.proxy.links if node in n.split("->")]
            fault = self.record(kind, f"{node} delayed {ms} ms each way", links=",".join(links))
            for name in links:
                run.proxy.call("set", name, ms / 1000, 0.0)
            fault.undo = ("degraded", links)
        else:
            assert run.proxy is not None
            what, links = self._partition_links()
            if self.rng.random() < 0.25:
                # Not cut but degraded: each line delayed, some dropped (the proxy
                # drops whole messages; the protocol sees loss, never garbage).
                delay, drop = round(self.rng.uniform(0.01, 0.2), 3), round(self.rng.uniform(0.05, 0.3), 2)
                fault = self.record(kind, f"{what}, degraded", links=",".join(links), delay=delay, drop=drop)
                for name in links:
                    run.proxy.call("set", name, delay, drop)
                fault.undo = ("degraded", links)
            else:
                fault = self.record(kind, what, links=",".join(links))
                run.proxy.call("sever", links)
                fault.undo = ("severed", links)
        fault.heal_at = time.monotonic() + duration
        self.active.append(fault)

    def _kernel_fault(self, kind: FaultKind, kernel: kernel_faults.KernelFaults) -> _Fault:
        """A partition, loss or bandwidth limit made by the kernel (netns runs)."""
        servers = [p.node for p in self.run.participants]
        clients = [c.name for c in self.run.clients if c.running]
        if kind is FaultKind.LOSS:
            scheme, made = (
                "loss",
                kernel_faults.loss(self.rng.choice(servers + clients), self.rng.randint(5, 40), kernel.net),
            )
        elif kind is FaultKind.DELAY:
            scheme, made = "netem", kernel_faults.delay(self.rng.choice(servers), self.rng.randint(5, 100))
        elif kind is FaultKind.BANDWIDTH:
            scheme, made = (
                "tbf",
                kernel_faults.bandwidth(self.rng.choice(servers + clients), self.rng.choice((32, 128, 512))),
            )
        else:
            drawn, made = kernel_faults.draw_partition(self.rng, servers, clients, kernel.net)
            scheme = drawn.value
        fault = self.record(
            kind, made.what, scheme=scheme, rules=len(made.rules) + len(made.buckets) + len(made.delays)
        )
        kernel.apply(fault.id, made)
        fault.undo = KernelMade(fault.id)
        return fault

    def _partition_links(self) -> tuple[str, list[str]]:
        """A partition to make: its description and the links it cuts."""
        run = self.run
        servers = [p.node for p in run.participants]
        clients = [c.name for c in run.clients if c.running]
        schemes = ["isolate"] + (["client"] if clients else []) + (["peers"] if len(servers) > 1 else [])
        scheme = self.rng.choice(schemes)
        assert run.proxy is not None
        if scheme == "isolate":
            s = self.rng.choice(servers)
            return f"{s} isolated", [n for n in run.proxy.links if s in n.split("->")]
        if scheme == "client":
            c, s = self.rng.choice(clients), self.rng.choice(servers)
            return f"{c} cut from {s}", [f"{c}->{s}"]
        a, b = self.rng.sample(servers, 2)
        return f"{a} cut from {b}", [f"{a}->{b}", f"{b}->{a}"]

    def heal(self, fault: _Fault, final: bool = False) -> None:
        run = self.run
        how: str | None = None  # "abandoned": a killed client was not replaced
        undo = fault.undo
        if isinstance(undo, ParticipantProcess):  # killed, or crashed at its point
            run.restart_participant(undo)
        elif isinstance(undo, ClientProcess):
            if final or not run.restart_client(undo):
                how = "abandoned"
        elif isinstance(undo, Paused):
            run.place.signal(undo.node, undo.proc, signal.SIGCONT)  # a paused client may be gone: no matter
        elif isinstance(undo, KernelMade):
            assert run.place.kernel is not None
            run.place.kernel.heal(undo.fid)
        elif isinstance(undo, tuple):
            assert run.proxy is not None
            how_cut, links = undo
            if how_cut == "degraded":
                for name in links:
                    run.proxy.call("set", name, 0.0, 0.0)
            else:
                run.proxy.call("heal", links)
        self.log.write(HEAL, id=fault.id, kind=fault.kind.value, target=fault.target, t=self._t(), how=how)
        self.active.remove(fault)
        if fault.kind in self.kinds and self.next_at == float("inf") and fault.heal_at is not None:
            self.next_at = time.monotonic() + self.interval * self.rng.uniform(0.5, 1.5)

    def participant_crashed(self, p: ParticipantProcess) -> None:
        """``p`` killed itself at its crash point: restart it after an outage."""
        p.down_since = time.monotonic()
        fault = self.record(FaultKind.CRASH, p.node, point=self.run.crashes.get(p.node, "?"))
        fault.undo = p
        fault.heal_at = time.monotonic() + CRASH_OUTAGE
        self.active.append(fault)

    def restarts_pending(self) -> bool:
        """A killed client is waiting to be started again."""
        return any(f.kind is FaultKind.KILL_CLIENT for f in self.active)

    def expects_exit(self, p: ParticipantProcess) -> bool:
        return p.down_since is not None

    def heal_all(self) -> None:
        """Before the final checks: heal every fault, stop scheduling new ones."""
        self.next_at = float("inf")
        for fault in list(self.active):
            self.heal(fault, final=True)

    def close(self) -> None:
        self.log.close()
