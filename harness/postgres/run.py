"""``harness.run --backend postgres``: the same experiment with PostgreSQL clusters as the participants.

Theory of operation. The runner (harness.experiment.runner.run) hands the
run here. It creates M clusters of the run's own under ``<run folder>/pg``
(harness.postgres.cluster), the harness's tables in each, and, when faults
need it, the byte relay that can cut a client from a cluster. It starts the
resolver (a child that finishes prepared transactions abandoned longer than
``--resolve-after``), then N client children that coordinate 2PC with
psycopg's tpc_* API, all released together by one Event. Progress, kills
and restarts follow harness.experiment.runner. At the end every fault is
healed, the clients and the resolver have stopped, and one last resolver
pass in the runner finishes what is left prepared (a client killed between
the phases); then each cluster's final state (value, version, committed
txids in order, ``pg_prepared_xacts``) goes to ``final_states.json``, and
every cluster is stopped and its data directory removed, on success,
failure and Ctrl-C alike.
"""

from __future__ import annotations

import json
import multiprocessing.connection
import time
from dataclasses import asdict
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psycopg

from harness.events.log import EventLog
from harness.experiment.children import ClientProcess, judge_client_exit, receive, restart
from harness.experiment.config import RunConfig, client_values, repeat_command
from harness.experiment.faults import FaultKind, parse_crashes
from harness.experiment.processes import MP, READY_TIMEOUT, Processes, RunError, await_ready
from harness.node import event_loop
from harness.postgres import schema
from harness.postgres.children import PgClientConfig, pg_client_child, resolver_child
from harness.postgres.cluster import PgCluster, PgError, make_clusters
from harness.postgres.nemesis import PgNemesis
from harness.postgres.relay import RelayHandle
from harness.postgres.resolver import Resolver


class PostgresRun:
    """One experiment over PostgreSQL clusters."""

    def __init__(self, config: RunConfig, seed: int, folder: Path, progress: Any) -> None:
        self.config = config
        self.seed = seed
        self.folder = folder
        self.command = repeat_command(config, seed)
        self.progress = progress  # harness.experiment.runner.Progress
        self.procs = Processes()
        self.started = time.monotonic()
        self.clusters: list[PgCluster] = []
        self.clients: list[ClientProcess] = []
        self.relay: RelayHandle | None = None
        self.crashes = parse_crashes(config.crash, config.participants, config.clients, postgres=True)
        faulty = bool(config.nemesis or self.crashes)
        self.nemesis = (
            PgNemesis(config.nemesis, config.nemesis_interval, seed, folder / "nemesis.log", self) if faulty else None
        )
        self.go: Any = None
        self.clients_until = 0.0
        self.resolutions = 0

    def execute(self) -> dict[str, Any]:
        """Carry out the run; returns the final states (also in final_states.json)."""
        resolver_stop = MP.Event()
        try:
            c = self.config
            try:
                self.clusters = make_clusters(self.folder, c.participants, 2 * c.clients + 8, 3 * c.clients + 20)
            except PgError as e:
                raise RunError(str(e)) from None
            for cluster in self.clusters:
                event_loop.run(schema.create_schema(cluster.conninfo()))
            if self.nemesis is not None and self.nemesis.needs_relay:
                self.relay = RelayHandle.start(self.procs, self.folder)
            self._write_run_json()
            direct = {cl.name: cl.conninfo() for cl in self.clusters}
            resolver = self.procs.start(
                resolver_child, (direct, self.folder / "resolver.log", c.resolve_after, resolver_stop), "resolver"
            )
            self._run_clients()
            if self.nemesis is not None:
                self.nemesis.heal_all()
            resolver_stop.set()
            resolver.join(READY_TIMEOUT)  # it ends its pass and its log; stop() below if it does not
            self.procs.stop([resolver])
            final = self._settle(direct)
            _write_json(self.folder / "final_states.json", final)
            return final
        finally:
            resolver_stop.set()
            if self.nemesis is not None:
                self.nemesis.close()
            self.procs.stop()
            for cluster in self.clusters:
                cluster.remove()

    def _write_run_json(self) -> None:
        _write_json(
            self.folder / "run.json",
            {
                "seed": self.seed,
                "command": self.command,
                "backend": "postgres",
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()},
                "participants": [{"node": cl.name, "address": cl.address} for cl in self.clusters],
                "clients": [f"client{i}" for i in range(1, self.config.clients + 1)],
            },
        )

    # ------------------------------------------------------------ clients

    def _client_config(self, i: int) -> PgClientConfig:
        name = f"client{i}"
        links = []
        for cl in self.clusters:
            port = self.relay.link(name, cl.name, cl.port) if self.relay is not None else None
            links.append((cl.name, cl.conninfo(port), cl.conninfo()))
        c = self.config
        return PgClientConfig(
            name=name,
            clusters=links,
            log=self.folder / f"{name}.log",
            values=client_values(i, c.value),
            count=c.transactions,
            duration=c.duration,
            timeout=c.timeout,
            retry=c.retry,
            prepare=c.prepare,
            seed=self.seed * 1009 + i,
            crash=self.crashes.get(name),
        )

    def _fork_client(self, config: PgClientConfig) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        parent, child = MP.Pipe(duplex=False)
        proc = self.procs.start(pg_client_child, (config, child, self.go), config.name)
        child.close()
        self.procs.held.append(parent)
        return proc, parent

    def _run_clients(self) -> None:
        self.go = MP.Event()
        for i in range(1, self.config.clients + 1):
            ccfg = self._client_config(i)
            proc, parent = self._fork_client(ccfg)
            self.clients.append(ClientProcess(name=ccfg.name, config=ccfg, proc=proc, conn=parent))  # type: ignore[arg-type]
        deadline = time.monotonic() + READY_TIMEOUT
        for cp in self.clients:
            await_ready(cp.name, cp.proc, cp.conn, deadline)
        if self.nemesis is not None:
            self.nemesis.begin()
        self.clients_until = time.monotonic() + (self.config.duration or 0.0)
        self.go.set()
        while any(cp.running for cp in self.clients) or (self.nemesis is not None and self.nemesis.restarts_pending()):
            timeout = 0.25 if self.nemesis is None else max(0.0, min(0.25, self.nemesis.next_due()))
            for ready in multiprocessing.connection.wait([cp.conn for cp in self.clients if cp.running], timeout):
                client = next(cp for cp in self.clients if cp.conn is ready)
                receive(client, self.clients, self.config.retry, self.progress, self._client_exited)
            if self.nemesis is not None:
                self.nemesis.step()
            self.progress.show()
        self.progress.end()

    def restart_client(self, c: ClientProcess) -> bool:
        return restart(c, self._fork_client, self.config.duration, self.config.transactions, self.clients_until)

    def _client_exited(self, client: ClientProcess) -> None:
        nemesis = self.nemesis
        crashed = (
            None if nemesis is None else lambda name, point: nemesis.record(FaultKind.CRASH, name, True, point=point)
        )
        judge_client_exit(client, self.crashes, self.folder, crashed)

    # ------------------------------------------------------------ the end

    def _settle(self, clusters: dict[str, str]) -> dict[str, Any]:
        """No client is left: resolve whatever is still prepared, then read every cluster."""
        log = EventLog(self.folder / "resolver.log", "resolver")
        try:
            patience = 3 * self.config.resolve_after + 4 * self.config.timeout + 5.0
            done = event_loop.run(Resolver(clusters, log, 0.0).settle(patience))
            self.resolutions = len(done)
        finally:
            log.close()
        final: dict[str, Any] = {}
        for cl in self.clusters:
            entry: dict[str, Any] = {"address": cl.address, "backend": "postgres"}
            try:
                entry.update(event_loop.run(schema.final_state(cl.conninfo())))
            except (OSError, psycopg.Error) as e:  # recorded for the checker, which flags it
                entry["status"] = None
                entry["status_error"] = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            final[cl.name] = entry
        return final


def _write_json(path: Path, data: Any) -> None:
    """As harness.experiment.runner writes its JSON files (not imported: the runner imports this module)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
