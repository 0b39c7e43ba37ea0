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
``partition:between-phases`` cuts client1 from server2 right after server2's
yes vote reaches client1, so the COMMIT cannot get through.

Every fault and every heal is a line of ``nemesis.log`` with its time, which
the report turns into a table. Everything is healed before the final checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import proxy as proxy_mod
from harness.eventlog import EventLog
from harness.nodes import CLIENT_CRASH_POINTS, PARTICIPANT_CRASH_POINTS
from harness.processes import MP, Processes, RunError

if TYPE_CHECKING:
    import multiprocessing.connection

    from harness.runner import RunConfig, _Participant, _Run

NEMESIS_KINDS = ("kill-participant", "kill-client", "pause", "partition")
PARTITION_POINTS = ("between-phases",)

# A participant that killed itself at a crash point stays down this long before
# the runner restarts it: long enough for its peers and clients to notice.
CRASH_OUTAGE = 0.3


def parse_crashes(specs: tuple[str, ...], participants: int, clients: int) -> dict[str, str]:
    """``--crash`` values to {target: point}. ``participant`` means server1 and
    ``client`` client1; ``serverN`` / ``clientN`` name one; ``:N`` after the
    point crashes at its Nth passage. Raises ValueError with a readable message."""
    out: dict[str, str] = {}
    for spec in specs:
        role, _, point = spec.partition(":")
        name = point.partition(":")[0]
        if role == "partition":
            if point not in PARTITION_POINTS:
                raise ValueError(f"--crash partition:POINT takes one of {', '.join(PARTITION_POINTS)}")
            if participants < 2:
                raise ValueError("--crash partition:between-phases needs at least 2 participants")
            out["partition"] = point
            continue
        target = {"participant": "server1", "client": "client1"}.get(role, role)
        allowed: tuple[str, ...]
        if target.startswith("server") and target[6:].isdigit() and 1 <= int(target[6:]) <= participants:
            allowed = PARTICIPANT_CRASH_POINTS
        elif target.startswith("client") and target[6:].isdigit() and 1 <= int(target[6:]) <= clients:
            allowed = CLIENT_CRASH_POINTS
        else:
            raise ValueError(
                f"--crash {spec!r}: the target must be participant, client, server1..server{participants}"
                f" or client1..client{clients}"
            )
        if name not in allowed:
            raise ValueError(f"--crash {spec!r}: {target} crash points are {', '.join(allowed)}")
        nth = point.partition(":")[2]
        if nth and (not nth.isdigit() or int(nth) < 1):
            raise ValueError(f"--crash {spec!r}: the count after the point must be a positive integer")
        if target in out:
            raise ValueError(f"--crash names {target} twice")
        out[target] = point
    return out


class ProxyHandle:
    """The fault proxy process, driven over a pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.links: dict[str, tuple[str, int]] = {}

    @classmethod
    def start(cls, procs: Processes, folder: Path, seed: int) -> ProxyHandle:
        parent, child = MP.Pipe(duplex=True)
        procs.start(_proxy_child, (child, folder / "proxy.log", seed), "proxy")
        child.close()
        procs.held.append(parent)
        if not parent.poll(10) or parent.recv() != ("ok", "ready"):
            raise RunError("the fault proxy did not start")
        return cls(parent)

    def call(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        if not self.conn.poll(10):
            raise RunError(f"the fault proxy did not answer {cmd[0]!r}")
        kind, value = self.conn.recv()
        if kind != "ok":
            raise RunError(f"the fault proxy refused {cmd!r}: {value}")
        return value

    def link(self, src: str, dst: str, target: tuple[str, int]) -> tuple[str, int]:
        """The address ``src`` must connect to in order to reach ``dst``."""
        name = f"{src}->{dst}"
        if name not in self.links:
            self.links[name] = (proxy_mod.HOST, self.call("add", src, dst, list(target)))
        return self.links[name]


def _proxy_child(conn: Any, log_path: Path, seed: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = EventLog(log_path, "proxy")
    asyncio.run(proxy_mod.serve(conn, log, seed))
    log.close()


@dataclass
class _Fault:
    id: int
    kind: str
    target: str
    heal_at: float | None
    undo: Any = None  # what heal() needs


class Nemesis:
    """Schedules, applies and heals faults for one run."""

    def __init__(self, config: RunConfig, seed: int, log_path: Path, run: _Run) -> None:
        self.kinds = tuple(config.nemesis)
        self.interval = config.nemesis_interval
        self.rng = random.Random(f"nemesis-{seed}")
        self.log = EventLog(log_path, "nemesis")
        run.procs.held.append(self.log)  # the runner's file: no child keeps it open
        self.run = run
        self.next_at = float("inf")
        self.active: list[_Fault] = []  # at most one scheduled fault, plus crash-point outages
        self.count = 0
        self.needs_proxy = "partition" in self.kinds or "partition" in run.crashes

    def _t(self) -> str:
        return f"{time.monotonic() - self.run.started:.3f}"

    def record(self, kind: str, target: str, healed: bool = False, **fields: Any) -> _Fault:
        self.count += 1
        fault = _Fault(self.count, kind, target, None)
        self.log.event("fault", ("id", fault.id), ("kind", kind), ("target", target), ("t", self._t()), *fields.items())
        if healed:
            self.log.event(
                "heal", ("id", fault.id), ("kind", kind), ("target", target), ("t", self._t()), ("how", "abandoned")
            )
        return fault

    def begin(self) -> None:
        """The clients are about to start: arm targeted partitions, schedule the first fault."""
        if "partition" in self.run.crashes and self.run.proxy is not None:
            name = "client1->server2"
            self.run.proxy.call("cut-after", name, r"^VOTE .*vote=ok")
            fault = self.record("partition", name, point="between-phases")
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
        if kind == "kill-participant":
            p = self.rng.choice([p for p in run.participants if p.down_since is None])
            assert p.proc is not None
            fault = self.record(kind, p.node, pid=p.proc.pid)
            p.down_since = time.monotonic()
            p.proc.kill()
            p.proc.join()
            fault.undo = p
        elif kind == "kill-client":
            alive = [c for c in run.clients if c.running and not c.killed]
            if not alive:
                return
            c = self.rng.choice(alive)
            fault = self.record(kind, c.name, pid=c.proc.pid)
            c.killed = True
            c.proc.kill()
            fault.undo = c  # its last transaction is abandoned; a new process takes over later
        elif kind == "pause":
            targets = [(p.node, p.proc.pid) for p in run.participants if p.proc is not None and p.down_since is None]
            targets += [(c.name, c.proc.pid) for c in run.clients if c.running and c.proc.pid is not None]
            name, pid = self.rng.choice(targets)
            assert pid is not None
            fault = self.record(kind, name, pid=pid)
            os.kill(pid, signal.SIGSTOP)
            fault.undo = pid
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
        how: tuple[tuple[str, str], ...] = ()
        if fault.kind in ("kill-participant", "crash"):
            run.restart_participant(fault.undo)
        elif fault.kind == "kill-client":
            if final or not run.restart_client(fault.undo):
                how = (("how", "abandoned"),)
        elif fault.kind == "pause":
            with contextlib.suppress(ProcessLookupError):  # a paused client may be gone
                os.kill(fault.undo, signal.SIGCONT)
        elif fault.kind == "partition":
            assert run.proxy is not None
            how_cut, links = fault.undo
            if how_cut == "degraded":
                for name in links:
                    run.proxy.call("set", name, 0.0, 0.0)
            else:
                run.proxy.call("heal", links)
        self.log.event("heal", ("id", fault.id), ("kind", fault.kind), ("target", fault.target), ("t", self._t()), *how)
        self.active.remove(fault)
        if fault.kind in self.kinds and self.next_at == float("inf") and fault.heal_at is not None:
            self.next_at = time.monotonic() + self.interval * self.rng.uniform(0.5, 1.5)

    def participant_crashed(self, p: _Participant) -> None:
        """``p`` killed itself at its crash point: restart it after an outage."""
        p.down_since = time.monotonic()
        fault = self.record("crash", p.node, point=self.run.crashes.get(p.node, "?"))
        fault.undo = p
        fault.heal_at = time.monotonic() + CRASH_OUTAGE
        self.active.append(fault)

    def restarts_pending(self) -> bool:
        """A killed client is waiting to be started again."""
        return any(f.kind == "kill-client" for f in self.active)

    def expects_exit(self, p: _Participant) -> bool:
        return p.down_since is not None

    def heal_all(self) -> None:
        """Before the final checks: heal every fault, stop scheduling new ones."""
        self.next_at = float("inf")
        for fault in list(self.active):
            self.heal(fault, final=True)

    def close(self) -> None:
        self.log.close()
