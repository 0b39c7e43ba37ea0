"""Run a contention experiment: participants and clients as real processes.

Theory of operation. The runner forks M participant processes and waits for
each to report, over a pipe, the address it listens on (a readiness signal,
never a sleep). It then forks N client processes; each connects to every
participant, reports ready and waits on one shared Event, so that all of them
start their transactions together and really contend. While they run, the
runner shows progress from the outcomes they send back. When every client is
done it waits until no participant holds a lock (a client that timed out
leaves the decision to the participants), reads each participant's final state
through STATUS, stops them with SIGTERM (SIGKILL if they do not stop), reads
their storage files, and hands the run folder to the checker.

Every process it starts, it stops, by its own handle, on success, failure and
Ctrl-C alike; children also ask the kernel to send them SIGTERM should the
runner itself die (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing.connection
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from harness import __version__
from harness.experiment.children import (
    ClientProcess,
    ParticipantProcess,
    client_child,
    judge_client_exit,
    participant_child,
    receive,
    restart,
)
from harness.experiment.config import Backend, RunConfig, client_values, default_folder, repeat_command
from harness.experiment.faults import FaultKind, parse_crashes
from harness.experiment.nemesis import Nemesis
from harness.experiment.placement import for_run
from harness.experiment.processes import MP, READY_TIMEOUT, Processes, RunError, await_ready
from harness.experiment.progress import Progress, Watch
from harness.experiment.proxy import ProxyHandle
from harness.experiment.workload import ClientConfig
from harness.node import event_loop
from harness.node.query import query_all
from harness.node.serve import ParticipantConfig
from harness.node.storage import Storage, StorageError
from harness.node.tls import load as load_tls
from harness.protocol.messages import State, TxState

# run.json's shape. 1: the first; 2: version, schema_version and interrupted added.
RUN_JSON_SCHEMA = 2


@dataclass
class RunResult:
    """What the runner hands to the checker: the run folder and how to repeat the run."""

    folder: Path
    seed: int
    command: str
    elapsed: float
    final: dict[str, Any] = field(default_factory=dict)
    interrupted: str | None = None  # SIGINT or SIGTERM: the run was stopped before its end


# ---------------------------------------------------------------- the run


def run(config: RunConfig, progress_stream: Any = None, watch: bool = False) -> RunResult:
    """Carry out one experiment and write its run folder (not yet checked). ``watch``:
    stream the protocol's events to standard output as they happen (harness.experiment.progress).
    SIGINT or SIGTERM stops the clients; the run then ends early and says so (RunResult.interrupted)."""
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    folder = config.out or default_folder()
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise RunError(f"{folder} already exists: choose another --out") from None
    except OSError as e:
        raise RunError(f"cannot create {folder}: {e.strerror}") from None
    with interrupted_by_sigterm():
        if config.backend is Backend.POSTGRES:
            return _run_postgres(config, seed, folder, progress_stream)
        return Run(config, seed, folder, progress_stream, watch).execute()


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where the runner is, as SIGINT raises KeyboardInterrupt."""


@contextlib.contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """Within: SIGTERM interrupts the runner as Ctrl-C does (children reset it: processes._child)."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_postgres(config: RunConfig, seed: int, folder: Path, progress_stream: Any) -> RunResult:
    """--backend postgres: harness.postgres.run (imported here: it needs the postgres extra)."""
    try:
        from harness.postgres.run import PostgresRun
    except ImportError as e:
        raise RunError(f"--backend postgres needs psycopg: pip install '.[postgres]' ({e})") from None
    total = None if config.duration else config.clients * config.transactions
    pg = PostgresRun(config, seed, folder, Progress(total, config.duration, progress_stream))
    final = pg.execute()
    return RunResult(folder=folder, seed=seed, command=pg.command, elapsed=time.monotonic() - pg.started, final=final)


class Run:
    """One experiment: its processes, its proxy, its nemesis."""

    def __init__(self, config: RunConfig, seed: int, folder: Path, progress_stream: Any, watch: bool = False) -> None:
        self.config = config
        self.seed = seed
        self.folder = folder
        self.command = repeat_command(config, seed)
        self.progress_stream = progress_stream
        self.procs = Processes()
        self.place = for_run(config, folder)  # where the nodes live: loopback, namespaces, remote hosts
        self.started = time.monotonic()
        self.participants: list[ParticipantProcess] = []
        self.clients: list[ClientProcess] = []
        self.crashes = parse_crashes(config.crash, config.participants, config.clients)
        faulty = bool(config.nemesis or self.crashes)
        self.nemesis = Nemesis(config, seed, folder / "nemesis.log", self) if faulty else None
        self.proxy: ProxyHandle | None = None
        self.go: Any = None  # the Event every client waits on before its first transaction
        self.clients_until = 0.0  # with --duration: when clients stop starting transactions
        self.watch = Watch(folder) if watch else None
        self.interrupted: str | None = None  # the signal that stopped the run
        self.tls = config.tls  # the nodes' --tls folder: made for this run if config.tls has its CA's key

    def execute(self) -> RunResult:
        final: dict[str, Any] = {}
        try:
            self.place.open(
                [f"server{i}" for i in range(1, self.config.participants + 1)],
                [f"client{i}" for i in range(1, self.config.clients + 1)],
            )
            sockets = self._bind_participants()
            if self.nemesis is not None and self.nemesis.needs_proxy:
                self.proxy = ProxyHandle.start(self.procs, self.folder, self.seed)
            self._start_participants(sockets)
            self._write_run_json()
            try:
                self._run_clients()
                if self.nemesis is not None:
                    self.nemesis.heal_all()
                self.place.check_healed()
                final = self._settle()
            except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (Interrupted)
                final = self._interrupt("SIGTERM" if isinstance(e, Interrupted) else "SIGINT")
            self.procs.stop([p.proc for p in self.participants if p.proc is not None])
            self.place.collect(self.folder)
            for p in self.participants:
                entry = final.setdefault(p.node, {"address": f"{p.address[0]}:{p.address[1]}", "status": None})
                entry["storage"] = read_storage(self.place.local(p.config.data), p.node)
            write_json(self.folder / "final_states.json", final)
        finally:
            if self.nemesis is not None:
                self.nemesis.close()
            try:
                self.procs.stop()
            finally:
                self.place.close()
        return RunResult(
            folder=self.folder,
            seed=self.seed,
            command=self.command,
            elapsed=time.monotonic() - self.started,
            final=final,
            interrupted=self.interrupted,
        )

    def _interrupt(self, signal_name: str) -> dict[str, Any]:
        """Stop the clients, heal the faults, give the participants a moment to finish
        what the clients left, and say so in run.json; the final STATUS answers, or
        none if interrupted again."""
        self.interrupted = signal_name
        self._write_run_json()
        patience = self.config.resolve_after + self.config.timeout + 1.0
        print(
            f"\nharness.run: {signal_name}: stopping the clients, then letting the participants finish what they "
            f"left (up to {patience:.0f}s; Ctrl-C again to stop at once), then checking what was done",
            file=sys.stderr,
            flush=True,
        )
        try:
            self.procs.stop([c.proc for c in self.clients])
            if self.nemesis is not None:
                self.nemesis.heal_all()
            return self._settle(patience)
        except KeyboardInterrupt:
            return {}

    # ------------------------------------------------------------ participants

    def _bind_participants(self) -> list[tuple[tuple[str, int], socket.socket | None]]:
        """Bind every participant's listening socket here, so that every address
        is known before anything starts (the proxy and the peers need them);
        a remote participant binds its own (its address is known: --base-port)."""
        bound: list[tuple[tuple[str, int], socket.socket | None]] = []
        for i in range(1, self.config.participants + 1):
            port = self.config.base_port + i - 1 if self.config.base_port else 0
            host = self.place.address(f"server{i}")
            try:
                sock = self.place.listen(f"server{i}", port)
            except OSError as e:
                for _, s in bound:
                    if s is not None:
                        s.close()
                hint = " (is another participant or run using it?)" if e.errno == errno.EADDRINUSE else ""
                raise RunError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None
            bound.append(((host, port) if sock is None else sock.getsockname()[:2], sock))
            if sock is not None:
                self.procs.held.append(sock)
        return bound

    def _start_participants(self, bound: list[tuple[tuple[str, int], socket.socket | None]]) -> None:
        addresses = [address for address, _ in bound]
        names = [f"{h}:{p}" for h, p in addresses]
        if self.config.tls is not None:
            self.tls = self._certificates(names)
        for i, address in enumerate(addresses, 1):
            node = f"server{i}"
            routes = None
            if self.proxy is not None:
                routes = {
                    names[j]: self.proxy.link(node, f"server{j + 1}", addresses[j])
                    for j in range(len(names))
                    if j != i - 1
                }
            pcfg = ParticipantConfig(
                cluster=tuple(names),
                tls=self.tls,
                ask_peers=False,  # a new run folder: every store is new, no peer can have state yet
                private_network=self.place.private_network,
                node=node,
                host=address[0],
                port=address[1],
                data=self.folder / "data" / f"{node}.sqlite3",
                log=self.folder / f"{node}.log",
                delay=self.config.delay,
                resolve_after=self.config.resolve_after,
                durable=self.config.durable,
                routes=routes,
                conflict=self.config.conflict,
                compact=self.config.compact,
            )
            self.participants.append(ParticipantProcess(node=node, config=pcfg, address=(address[0], address[1])))
        deadline = time.monotonic() + READY_TIMEOUT
        waits = []
        for p, (_, sock) in zip(self.participants, bound, strict=True):
            first = replace(p.config, sock=sock, crash=self.crashes.get(p.node))
            waits.append(self._fork_participant(p, first, keep=sock))
            if sock is not None:
                # Only the participant holds its port now: once it dies, connections are refused.
                self.procs.held.remove(sock)
                sock.close()
        for p, conn in zip(self.participants, waits, strict=True):
            assert p.proc is not None
            await_ready(p.node, p.proc, conn, deadline)
            conn.close()

    def _certificates(self, members: list[str]) -> Path:
        """The --tls folder of this run's nodes: with the CA's key in config.tls, a
        certificate for each by its name in this run (ports bound only now), in the
        run folder; else config.tls itself, which must name them (remote hosts:
        the certificates are where the inventory's hosts find them)."""
        assert self.config.tls is not None
        if self.config.hosts is not None:
            return self.config.tls
        try:  # the cryptography package is needed only with --tls
            from harness.node.certificates import CertError, for_run
        except ImportError:
            raise RunError("--tls needs the cryptography package: pip install '.[tls]'") from None
        clients = [f"client{i}" for i in range(1, self.config.clients + 1)]
        try:
            return for_run(self.config.tls, self.folder / "tls", members, clients)
        except (CertError, OSError) as e:
            raise RunError(f"--tls {self.config.tls}: {e}") from None

    def _fork_participant(
        self, p: ParticipantProcess, config: ParticipantConfig, keep: socket.socket | None = None
    ) -> multiprocessing.connection.Connection:
        parent, child = MP.Pipe(duplex=False)
        p.proc = self.place.start(self.procs, p.node, participant_child, (config, child), keep=keep)
        child.close()
        return parent

    def restart_participant(self, p: ParticipantProcess) -> None:
        """Start a participant again on its port, from its storage."""
        conn = self._fork_participant(p, p.config)
        assert p.proc is not None
        await_ready(p.node, p.proc, conn, time.monotonic() + READY_TIMEOUT)
        conn.close()
        p.down_since = None

    def _write_run_json(self) -> None:
        write_json(
            self.folder / "run.json",
            {
                "version": __version__,
                "schema_version": RUN_JSON_SCHEMA,
                "seed": self.seed,
                "command": self.command,
                "interrupted": self.interrupted,
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()},
                "participants": [
                    {"node": p.node, "address": f"{p.address[0]}:{p.address[1]}"} for p in self.participants
                ],
                "clients": [f"client{i}" for i in range(1, self.config.clients + 1)],
                # Whether every log was stamped by one clock (the checker orders by
                # timestamps across nodes only then; docs/hosts.md).
                "clock": "shared" if self.place.shared_clock else "per-host",
            },
        )

    # ------------------------------------------------------------ clients

    def _run_clients(self) -> None:
        self.go = go = MP.Event()
        for i in range(1, self.config.clients + 1):
            name = f"client{i}"
            servers = [p.address for p in self.participants]
            if self.proxy is not None:
                servers = [self.proxy.link(name, p.node, p.address) for p in self.participants]
            ccfg = ClientConfig(
                name=name,
                servers=servers,
                log=self.folder / f"{name}.log",
                values=client_values(i, self.config.value),
                count=self.config.transactions,
                duration=self.config.duration,
                timeout=self.config.timeout,
                delay=self.config.delay,
                retry=self.config.retry,
                prepare=self.config.prepare,
                seed=self.seed * 1009 + i,
                crash=self.crashes.get(name),
                tls=self.tls,
            )
            proc, parent = self._fork_client(ccfg)
            self.clients.append(ClientProcess(name=name, config=ccfg, proc=proc, conn=parent))
        deadline = time.monotonic() + READY_TIMEOUT
        for c in self.clients:
            await_ready(c.name, c.proc, c.conn, deadline)
        if self.nemesis is not None:
            self.nemesis.begin()
        self.clients_until = time.monotonic() + (self.config.duration or 0.0)
        go.set()

        total = None if self.config.duration else self.config.clients * self.config.transactions
        progress = Progress(total, self.config.duration, self.progress_stream)
        while any(c.running for c in self.clients) or (self.nemesis is not None and self.nemesis.restarts_pending()):
            timeout = 0.25 if self.nemesis is None else max(0.0, min(0.25, self.nemesis.next_due()))
            waitables: list[Any] = [c.conn for c in self.clients if c.running]
            waitables += [p.proc.sentinel for p in self.participants if p.proc is not None and p.down_since is None]
            for ready in multiprocessing.connection.wait(waitables, timeout=timeout):
                if isinstance(ready, int):
                    self._participant_exited(ready)
                    continue
                client = next(c for c in self.clients if c.conn is ready)
                receive(client, self.clients, self.config.retry, progress, self._client_exited)
            if self.nemesis is not None:
                self.nemesis.step()
            if self.watch is not None:
                self.watch.poll(progress)
            progress.show()
        if self.watch is not None:
            self.watch.poll(progress)
        progress.end()

    def _fork_client(self, config: ClientConfig) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        parent, child = MP.Pipe(duplex=False)
        proc = self.place.start(self.procs, config.name, client_child, (config, child, self.go))
        child.close()
        self.procs.held.append(parent)  # later children must not keep the runner's end
        return proc, parent

    def restart_client(self, c: ClientProcess) -> bool:
        """Start a killed client again as a new process (new txids), going on
        with the operations it had not finished. False if nothing is left to do."""
        return restart(c, self._fork_client, self.config.duration, self.config.transactions, self.clients_until)

    def _client_exited(self, client: ClientProcess) -> None:
        nemesis = self.nemesis
        crashed = (
            None if nemesis is None else lambda name, point: nemesis.record(FaultKind.CRASH, name, True, point=point)
        )
        judge_client_exit(client, self.crashes, self.folder, crashed)

    def _participant_exited(self, sentinel: int) -> None:
        p = next(p for p in self.participants if p.proc is not None and p.proc.sentinel == sentinel)
        assert p.proc is not None
        p.proc.join()
        if p.proc.exitcode == -signal.SIGKILL and self.nemesis is not None and p.node in self.crashes:
            # it killed itself at its crash point: restart it after a short outage
            self.nemesis.participant_crashed(p)
            return
        if self.nemesis is not None and self.nemesis.expects_exit(p):
            return
        raise RunError(f"{p.node} exited with code {p.proc.exitcode}; see {self.folder / (p.node + '.log')}")

    # ------------------------------------------------------------ the end

    def _settle(self, patience: float | None = None) -> dict[str, Any]:
        """Poll STATUS until no participant holds a lock, or until the time a
        silent client's transactions need to be resolved by the participants
        has passed (or ``patience`` seconds); return the final STATUS answers."""
        addresses = [p.address for p in self.participants if p.proc is not None and p.proc.is_alive()]
        participants = [p for p in self.participants if p.proc is not None and p.proc.is_alive()]
        c = self.config
        if patience is None:
            patience = 3 * c.resolve_after + 4 * c.timeout + 5.0
        deadline = time.monotonic() + patience
        tls = load_tls(self.tls, member=False).client if self.tls is not None else None
        while True:
            states = event_loop.run(query_all(addresses, timeout=2.0, ssl=tls))
            locked = [s for s in states if not isinstance(s, State) or s.lock is not None]
            if not locked or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # polling a live system for quiescence, not waiting for a guess
        final: dict[str, Any] = {}
        for p, s in zip(participants, states, strict=True):
            entry: dict[str, Any] = {"address": f"{p.address[0]}:{p.address[1]}"}
            if isinstance(s, State):
                entry["status"] = {
                    "storage_server": s.storage_server,
                    "version": s.version,
                    "lock": s.lock,
                    "committed": s.committed,
                    "aborted": s.aborted,
                }
            else:
                entry["status"] = None
                entry["status_error"] = s
            final[p.node] = entry
        return final


def read_storage(path: Path, node: str) -> dict[str, Any]:
    """The participant's records, read from its file after it stopped."""
    try:
        storage = Storage(path, node, create=False)
    except StorageError as e:
        return {"error": str(e)}
    try:
        records = storage.load()
        summary, marks = storage.load_compacted()
    except StorageError as e:
        return {"error": str(e)}
    finally:
        storage.close()
    committed = sorted((r for r in records if r.state is TxState.COMMITTED), key=lambda r: r.version)
    out: dict[str, Any] = {
        "committed": [[r.txid, r.version, r.value] for r in committed],
        "prepared": sorted(r.txid for r in records if r.state is TxState.PREPARED),
        "aborted": len([r for r in records if r.state is TxState.ABORTED]),
    }
    if summary is not None:
        # Compaction (--compact) forgot the older records: what they summed to.
        out["forgotten"] = {
            "storage_server": summary.storage_server,
            "version": summary.version,
            "committed": summary.committed,
            "aborted": summary.aborted,
            "marks": len(marks),
        }
    return out


def write_json(path: Path, data: Any) -> None:
    """Write whole or not at all (a temporary file renamed over it): a runner killed while
    writing leaves the file it had, never half of one the checker cannot read."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
