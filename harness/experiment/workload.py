"""The workload a client runs: operations one after another, retries, backoff, and how to prepare.

One home for it: the by-hand client (harness.client), the runner's client
processes and the benchmark's synthetic runs follow the same rules.

* ``--retry backoff``: after an abort, retry the same operation after a random
  wait drawn from an exponential window (full jitter);
* ``--prepare adaptive``: PREPARE in parallel, until a NOK vote; then prepare
  in order (harness.protocol.coordinator) for ORDERED_AFTER_CONTENTION
  transactions. PrepareMode.choose keeps that count.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.events.log import EchoSink, EventLog
from harness.events.schema import OUTCOME, STOPPED
from harness.node.client_node import ClientNode, ConnectError, TxResult
from harness.node.crash import ClientCrashPoint, CrashPlan
from harness.node.timing import CLIENT_TIMEOUT
from harness.node.tls import TlsError
from harness.node.tls import load as load_tls
from harness.protocol import coordinator as co

# Backoff after an abort (--retry backoff): full jitter over an exponential
# window (AWS architecture blog, "Exponential Backoff and Jitter"). 2 ms is a
# few transaction times on loopback; the window must grow to about clients x
# transaction time for every client to get its turn: with a 0.2 s cap, 10-19 of
# 100 clients committed nothing in 10 s; with 1 s, 0-1 (harness.bench).
BACKOFF_BASE = 0.002
BACKOFF_CAP = 1.0

# --prepare adaptive: after a NOK vote, this many transactions use ordered
# prepare (harness.protocol.coordinator) before going back to parallel. Enough
# to ride out a burst of contention; a client alone pays nothing.
ORDERED_AFTER_CONTENTION = 20
MAX_RETRIES = 20  # with --retry backoff: retries of one operation before it is reported aborted


class RetryMode(enum.StrEnum):
    """What a client does after an abort (``--retry``)."""

    NONE = "none"  # report it and go on to the next operation
    BACKOFF = "backoff"  # retry the operation after a random wait (BACKOFF_BASE, BACKOFF_CAP)


class PrepareMode(enum.StrEnum):
    """How a client sends PREPARE (``--prepare``)."""

    ADAPTIVE = "adaptive"  # parallel until a NOK vote, then ordered for ORDERED_AFTER_CONTENTION transactions
    PARALLEL = "parallel"  # to every participant at once
    ORDERED = "ordered"  # the first participant before the others: a round trip more, votes never split


class PrepareChooser:
    """Whether the next transaction prepares in order, under a PrepareMode."""

    def __init__(self, mode: PrepareMode) -> None:
        self.mode = mode
        self.contended = 0  # transactions left to prepare in order (adaptive)

    def ordered(self) -> bool:
        """Prepare the next transaction in order?"""
        return self.mode is PrepareMode.ORDERED or (self.mode is PrepareMode.ADAPTIVE and self.contended > 0)

    def finished(self, cause: co.Cause) -> None:
        """A transaction ended with ``cause``: a NOK vote starts a run of ordered prepares."""
        if cause is co.Cause.NO_VOTE:
            self.contended = ORDERED_AFTER_CONTENTION
        elif self.contended:
            self.contended -= 1


def backoff(rng: random.Random, attempt: int) -> float:
    """Seconds to wait before retrying after the ``attempt``-th attempt aborted (full jitter)."""
    return rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))


@dataclass
class ClientConfig:
    name: str
    servers: list[tuple[str, int]]
    log: Path | None
    values: Callable[[int], int]  # operation number (1-based) -> value to write
    count: int = 1
    duration: float | None = None  # if set: run transactions for this many seconds instead of ``count``
    first_op: int = 1  # a client started again by the runner goes on from where it was killed
    connect_patience: float = 0.0  # seconds to keep trying to connect at start-up (a restarted client)
    timeout: float = CLIENT_TIMEOUT
    delay: float = 0.0
    retry: RetryMode = RetryMode.NONE
    prepare: PrepareMode = PrepareMode.ADAPTIVE
    max_retries: int = MAX_RETRIES
    seed: int | None = None
    crash: str | None = None
    tls: Path | None = None  # mutual TLS with the client certificate in this folder (harness.certs)
    echo: EchoSink | None = None  # also print the client's events here (harness.client -v)


@dataclass
class Tally:
    """How a client's operations ended (each one's last attempt), counted. A
    client keeps counts, not a list of results, so that its memory stays flat
    however many transactions it runs; every result is in its log."""

    counts: dict[co.Result, int] = field(default_factory=lambda: dict.fromkeys(co.Result, 0))

    def add(self, result: TxResult) -> None:
        self.counts[result.result] += 1

    @property
    def operations(self) -> int:
        return sum(self.counts.values())

    @property
    def all_committed(self) -> bool:
        return self.counts[co.Result.COMMITTED] == self.operations


class Workload(Protocol):
    """What a client does, whatever it coordinates: its operations, retries and prepare mode
    (ClientConfig here; harness.postgres's client configuration too)."""

    count: int
    duration: float | None
    first_op: int
    connect_patience: float
    retry: RetryMode
    prepare: PrepareMode
    max_retries: int
    seed: int | None

    @property
    def values(self) -> Callable[[int], int]:
        """Operation number (1-based) -> the value it writes."""
        ...


class Transactor(Protocol):
    """A client that coordinates one transaction at a time: our ClientNode, or a
    PostgreSQL client (harness.postgres.client.PgClient)."""

    async def connect(self) -> None: ...

    async def transact(self, value: int, ordered: bool = False, prio: int | None = None) -> TxResult: ...

    async def close(self) -> None: ...


async def run(
    config: ClientConfig,
    on_result: Callable[[int, int, TxResult], None],
    go: Callable[[], Awaitable[None]] | None = None,
    connected: Callable[[], None] | None = None,
) -> Tally:
    """Connect to our participants, wait for ``go`` (if given), then run the
    workload (``drive``). Raises ConnectError if a participant cannot be
    reached at start-up."""
    crash = CrashPlan.parse(config.crash, ClientCrashPoint) if config.crash else None
    log = EventLog(config.log, config.name, echo=config.echo, buffered=True)
    try:
        ssl_context = load_tls(config.tls, member=False, name=config.name).client if config.tls is not None else None
    except TlsError as e:
        raise ConnectError(str(e)) from None
    client = ClientNode(
        config.name, config.servers, log, timeout=config.timeout, delay=config.delay, crash=crash, ssl=ssl_context
    )
    return await drive(client, log, config, on_result, go=go, connected=connected, unavailable=(ConnectError,))


async def drive(
    client: Transactor,
    log: EventLog,
    work: Workload,
    on_result: Callable[[int, int, TxResult], None],
    *,
    go: Callable[[], Awaitable[None]] | None = None,
    connected: Callable[[], None] | None = None,
    unavailable: tuple[type[BaseException], ...],
) -> Tally:
    """Connect ``client`` (retrying ``unavailable`` for ``work.connect_patience``
    seconds), wait for ``go``, then run ``work``'s operations one after the
    other, logging each attempt's outcome. ``on_result(op, attempt, result)``
    is called after every attempt; the Tally returned counts each operation's
    last attempt. Closes the client and ``log`` at the end."""
    rng = random.Random(work.seed)
    results = Tally()
    try:
        patience_until = time.monotonic() + work.connect_patience
        while True:
            try:
                await client.connect()
                break
            except unavailable:
                if time.monotonic() >= patience_until:
                    raise
                await asyncio.sleep(0.05)  # a participant is being restarted: try again shortly
        if connected is not None:
            log.flush()  # what the runner hears is in the log already
            connected()
        if go is not None:
            await go()
        prepare = PrepareChooser(work.prepare)
        until = None if work.duration is None else time.monotonic() + work.duration
        for op in range(work.first_op, work.count + 1) if until is None else itertools.count(work.first_op):
            if until is not None and time.monotonic() >= until:
                break
            value = work.values(op)
            # The operation's age for wait-die (harness.protocol.conflict): wall-clock
            # microseconds at its first attempt, kept by every retry, so that a retried
            # operation grows older than the others and ends up first.
            prio = time.time_ns() // 1000
            attempt = 0
            while True:
                attempt += 1
                result = await client.transact(value, ordered=prepare.ordered(), prio=prio)
                prepare.finished(result.cause)
                log.write(
                    OUTCOME,
                    txid=result.txid,
                    result=result.result.value,
                    op=op,
                    attempt=attempt,
                    value=value,
                    latency_ms=f"{result.latency * 1000:.3f}",
                    cause=result.cause.value,
                    nok=result.nok.value if result.nok else None,
                    reason=result.reason or None,
                )
                log.flush()  # what the runner hears is in the log already
                on_result(op, attempt, result)
                if (
                    result.result is not co.Result.ABORTED
                    or work.retry is not RetryMode.BACKOFF
                    or attempt > work.max_retries
                ):
                    results.add(result)
                    break
                await asyncio.sleep(backoff(rng, attempt))
    finally:
        await client.close()
        log.write(STOPPED)
        log.close()
    return results
