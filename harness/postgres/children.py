"""The child processes of a ``--backend postgres`` run: clients and the resolver.

A client child speaks to the runner over a pipe exactly as our clients do
(harness.experiment.children): ("ready", None), ("result", (op, attempt,
result)) after every attempt, ("done", None); and runs the same workload
rules (harness.experiment.workload: retries with backoff, prepare modes).
The resolver child sweeps the clusters until the runner sets its stop Event.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from harness.events.log import EventLog
from harness.events.schema import STOPPED
from harness.experiment.workload import MAX_RETRIES, PrepareMode, RetryMode, drive
from harness.node import event_loop
from harness.postgres.client import PgClient
from harness.postgres.resolver import Resolver


@dataclass
class PgClientConfig:
    name: str
    clusters: list[tuple[str, str, str]]  # (name, conninfo, admin conninfo)
    log: Path
    values: Callable[[int], int]
    count: int = 1
    duration: float | None = None
    first_op: int = 1
    connect_patience: float = 0.0
    timeout: float = 2.0
    retry: RetryMode = RetryMode.NONE
    prepare: PrepareMode = PrepareMode.ADAPTIVE
    max_retries: int = MAX_RETRIES
    seed: int | None = None
    crash: str | None = None


async def run_client(
    config: PgClientConfig,
    on_result: Callable[[int, int, str], None],
    go: Any = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """The workload of harness.experiment.workload, on PostgreSQL clusters."""
    log = EventLog(config.log, config.name, buffered=True)
    client = PgClient(config.name, config.clusters, log, timeout=config.timeout, crash=config.crash)

    async def wait_go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)

    await drive(
        client,
        log,
        config,
        lambda op, attempt, result: on_result(op, attempt, result.result.value),
        go=wait_go if go is not None else None,
        connected=ready,
        unavailable=(psycopg.OperationalError,),
    )


def pg_client_child(config: PgClientConfig, conn: multiprocessing.connection.Connection, go: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us
    try:
        event_loop.run(
            run_client(
                config,
                lambda op, attempt, result: conn.send(("result", (op, attempt, result))),
                go=go,
                ready=lambda: conn.send(("ready", None)),
            )
        )
    except psycopg.OperationalError as e:
        conn.send(("error", f"cannot connect: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"))
        sys.exit(2)
    conn.send(("done", None))


def resolver_child(clusters: dict[str, str], log_path: Path, resolve_after: float, stop: Any) -> None:
    """Sweep for abandoned prepared transactions until ``stop`` (an Event) is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = EventLog(log_path, "resolver", buffered=True)
    try:
        event_loop.run(Resolver(clusters, log, resolve_after).run_until(stop.is_set))
    finally:
        log.write(STOPPED)
        log.close()
