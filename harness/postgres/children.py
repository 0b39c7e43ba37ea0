"""The child processes of a ``--backend postgres`` run: clients and the resolver.

A client child speaks to the runner over a pipe exactly as our clients do
(harness.experiment.children): ("ready", None), ("result", (op, attempt,
result)) after every attempt, ("done", None); and runs the same workload
rules (harness.experiment.workload: retries with backoff, prepare modes).
The resolver child sweeps the clusters until the runner sets its stop Event.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing.connection
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from harness.events.log import EventLog
from harness.events.schema import STOPPED
from harness.experiment.workload import MAX_RETRIES, PrepareChooser, PrepareMode, RetryMode, backoff
from harness.node import event_loop
from harness.postgres.client import PgClient
from harness.postgres.resolver import Resolver
from harness.protocol import coordinator as co


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
    seed: int | None = None
    crash: str | None = None


async def run_client(
    config: PgClientConfig, on_result: Callable[[int, int, str], None], go: Any = None, ready: Any = None
) -> None:
    log = EventLog(config.log, config.name, buffered=True)
    client = PgClient(config.name, config.clusters, log, timeout=config.timeout, crash=config.crash)
    rng = random.Random(config.seed)
    try:
        patience_until = time.monotonic() + config.connect_patience
        while True:
            try:
                await client.connect()
                break
            except psycopg.OperationalError:
                if time.monotonic() >= patience_until:
                    raise
                await asyncio.sleep(0.05)  # a cluster is restarting: try again shortly
        log.flush()
        if ready is not None:
            ready()
        if go is not None:
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
        prepare = PrepareChooser(config.prepare)
        until = None if config.duration is None else time.monotonic() + config.duration
        ops = range(config.first_op, config.count + 1) if until is None else itertools.count(config.first_op)
        for op in ops:
            if until is not None and time.monotonic() >= until:
                break
            value = config.values(op)
            attempt = 0
            while True:
                attempt += 1
                result = await client.transact(value, ordered=prepare.ordered())
                prepare.finished(result.cause)
                client.log.outcome(result, op, attempt)
                log.flush()  # what the runner hears is in the log already
                on_result(op, attempt, result.result.value)
                if result.result is not co.Result.ABORTED or config.retry is not RetryMode.BACKOFF:
                    break
                if attempt > MAX_RETRIES:
                    break
                await asyncio.sleep(backoff(rng, attempt))
    finally:
        await client.close()
        log.write(STOPPED)
        log.close()


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
