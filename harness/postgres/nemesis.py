"""Faults on real databases, on the run's seeded schedule (``--nemesis`` under ``--backend postgres``).

Theory of operation. As harness.experiment.nemesis does for our
participants, one fault at a time, the next about ``--nemesis-interval``
seconds after the previous one healed, every choice from the seed, every
fault and heal a line of ``nemesis.log`` in the same shape:

* ``kill-postmaster``: SIGKILL of a cluster's postmaster (its backends
  notice and exit), then, after an outage, a restart: crash recovery must
  bring back every prepared transaction;
* ``terminate-backend``: ``pg_terminate_backend`` of a client's session at
  a cluster (found by its application_name), whatever it was doing: before,
  during or after its PREPARE or COMMIT PREPARED;
* ``cut``: a client cut from a cluster through the byte relay
  (harness.postgres.relay), healed after a while;
* ``kill-client``: SIGKILL of a client, which abandons its transaction in
  flight (maybe between the phases); a new client process takes over.

``--crash partition:between-phases`` arms the relay to cut client1 from pg2
right after pg2 acknowledges PREPARE TRANSACTION.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from harness.events.log import EventLog
from harness.events.schema import FAULT, HEAL
from harness.experiment.children import ClientProcess
from harness.experiment.faults import FaultKind, PartitionPoint
from harness.experiment.processes import Processes
from harness.postgres.cluster import PgCluster, PgError
from harness.postgres.relay import RelayHandle


class PgRun(Protocol):
    started: float
    clusters: list[PgCluster]
    clients: list[ClientProcess]
    relay: RelayHandle | None
    crashes: dict[str, str]
    procs: Processes

    def restart_client(self, c: ClientProcess) -> bool: ...


@dataclass
class _Fault:
    id: int
    kind: FaultKind
    target: str
    heal_at: float | None
    undo: Any = None


class PgNemesis:
    def __init__(self, kinds: tuple[FaultKind, ...], interval: float, seed: int, log_path: Path, run: PgRun) -> None:
        self.kinds = kinds
        self.interval = interval
        self.rng = random.Random(f"pg-nemesis-{seed}")
        self.log = EventLog(log_path, "nemesis")
        run.procs.held.append(self.log)
        self.run = run
        self.next_at = float("inf")
        self.active: list[_Fault] = []
        self.count = 0
        self.needs_relay = FaultKind.CUT in kinds or "partition" in run.crashes

    def _t(self) -> str:
        return f"{time.monotonic() - self.run.started:.3f}"

    def record(self, kind: FaultKind, target: str, healed: bool = False, **fields: Any) -> _Fault:
        self.count += 1
        fault = _Fault(self.count, kind, target, None)
        self.log.write(FAULT, id=fault.id, kind=kind.value, target=target, t=self._t(), **fields)
        if healed:
            self.log.write(HEAL, id=fault.id, kind=kind.value, target=target, t=self._t())
        return fault

    def begin(self) -> None:
        if "partition" in self.run.crashes and self.run.relay is not None and len(self.run.clusters) > 1:
            name = "client1->pg2"
            self.run.relay.call("arm", name)
            fault = self.record(FaultKind.CUT, name, point=PartitionPoint.BETWEEN_PHASES.value)
            fault.undo = ("cut", [name])
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
        if self.next_at <= now and not any(f.heal_at is not None for f in self.active):
            self._inject()
            pending = any(f.heal_at is not None for f in self.active)
            self.next_at = float("inf") if pending else now + self.interval * self.rng.uniform(0.5, 1.5)

    def _inject(self) -> None:
        kind = self.rng.choice(self.kinds)
        duration = self.interval * self.rng.uniform(0.3, 1.0)
        run = self.run
        alive = [c for c in run.clients if c.running and not c.killed]
        if kind is FaultKind.KILL_POSTMASTER:
            cluster = self.rng.choice(run.clusters)
            fault = self.record(kind, cluster.name, pid=cluster.postmaster_pid())
            cluster.kill9()
            fault.undo = cluster
        elif kind is FaultKind.TERMINATE_BACKEND:
            if not alive:
                return
            c, cluster = self.rng.choice(alive), self.rng.choice(run.clusters)
            pids = self._terminate(cluster, c.name)
            self.record(kind, f"{c.name} at {cluster.name}", healed=True, pids=",".join(map(str, pids)) or None)
            return
        elif kind is FaultKind.CUT:
            if not alive or run.relay is None:
                return
            c, cluster = self.rng.choice(alive), self.rng.choice(run.clusters)
            name = f"{c.name}->{cluster.name}"
            fault = self.record(kind, name)
            run.relay.call("sever", [name])
            fault.undo = ("cut", [name])
        else:  # KILL_CLIENT
            if not alive:
                return
            c = self.rng.choice(alive)
            fault = self.record(kind, c.name, pid=c.proc.pid)
            c.killed = True
            c.proc.kill()
            fault.undo = c
        fault.heal_at = time.monotonic() + duration
        self.active.append(fault)

    def _terminate(self, cluster: PgCluster, client: str) -> list[int]:
        """pg_terminate_backend of every session of ``client`` at ``cluster``."""
        try:
            with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (client,),
                ).fetchall()
            return [int(pid) for pid, done in rows if done]
        except psycopg.OperationalError:  # the cluster is down: nothing to terminate
            return []

    def heal(self, fault: _Fault, final: bool = False) -> None:
        how: tuple[tuple[str, str], ...] = ()
        undo = fault.undo
        if isinstance(undo, PgCluster):
            try:
                undo.start()
            except PgError as e:
                how = (("how", f"restart failed: {e}"),)
        elif isinstance(undo, ClientProcess):
            if final or not self.run.restart_client(undo):
                how = (("how", "abandoned"),)
        elif isinstance(undo, tuple) and self.run.relay is not None:
            self.run.relay.call("heal", undo[1])
        self.log.write(HEAL, id=fault.id, kind=fault.kind.value, target=fault.target, t=self._t(), **dict(how))
        self.active.remove(fault)
        if fault.kind in self.kinds and self.next_at == float("inf") and fault.heal_at is not None:
            self.next_at = time.monotonic() + self.interval * self.rng.uniform(0.5, 1.5)

    def restarts_pending(self) -> bool:
        return any(f.kind is FaultKind.KILL_CLIENT for f in self.active)

    def heal_all(self) -> None:
        self.next_at = float("inf")
        for fault in list(self.active):
            self.heal(fault, final=True)

    def close(self) -> None:
        self.log.close()
