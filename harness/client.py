"""``python -m harness.client``: a client that coordinates transactions (the seed's cliente.py).

It connects to every participant, then for each transaction sends PREPARE to
all of them, and COMMIT everywhere if all voted ok, ABORT everywhere otherwise.
It prints one line per transaction and exits 0 if all committed, 1 if any
aborted or ended unknown, 2 on a usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from harness.eventlog import EventLog
from harness.nodes import (
    CLIENT_CRASH_POINTS,
    ClientNode,
    ConnectError,
    CrashPlan,
    TxResult,
    default_servers,
    parse_address,
)
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
PREPARE_MODES = ("adaptive", "parallel", "ordered")


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
    timeout: float = 2.0
    delay: float = 0.0
    retry: str = "none"  # none | backoff
    prepare: str = "adaptive"  # adaptive | parallel | ordered
    max_retries: int = 20
    seed: int | None = None
    crash: str | None = None


async def run(
    config: ClientConfig,
    on_result: Callable[[int, int, TxResult], None],
    go: Callable[[], Awaitable[None]] | None = None,
    connected: Callable[[], None] | None = None,
) -> list[TxResult]:
    """Connect, wait for ``go`` (if given), then run ``config.count`` operations.

    ``on_result(op, attempt, result)`` is called after every attempt; the
    list returned holds each operation's last attempt. Raises
    ConnectError if a participant cannot be reached at start-up."""
    crash = CrashPlan.parse(config.crash, CLIENT_CRASH_POINTS) if config.crash else None
    log = EventLog(config.log, config.name, buffered=True)
    client = ClientNode(config.name, config.servers, log, timeout=config.timeout, delay=config.delay, crash=crash)
    rng = random.Random(config.seed)
    results: list[TxResult] = []
    try:
        patience_until = time.monotonic() + config.connect_patience
        while True:
            try:
                await client.connect()
                break
            except ConnectError:
                if time.monotonic() >= patience_until:
                    raise
                await asyncio.sleep(0.05)  # a participant is being restarted: try again shortly
        if connected is not None:
            log.flush()  # what the runner hears is in the log already
            connected()
        if go is not None:
            await go()
        contended = 0  # transactions left to prepare in order (--prepare adaptive)
        until = None if config.duration is None else time.monotonic() + config.duration
        for op in range(config.first_op, config.count + 1) if until is None else itertools.count(config.first_op):
            if until is not None and time.monotonic() >= until:
                break
            value = config.values(op)
            attempt = 0
            while True:
                attempt += 1
                ordered = config.prepare == "ordered" or (config.prepare == "adaptive" and contended > 0)
                result = await client.transact(value, ordered=ordered)
                if result.cause is co.Cause.NO_VOTE:
                    contended = ORDERED_AFTER_CONTENTION
                elif contended:
                    contended -= 1
                log.event(
                    "outcome",
                    ("txid", result.txid),
                    ("result", result.result.value),
                    ("op", op),
                    ("attempt", attempt),
                    ("value", value),
                    ("latency_ms", f"{result.latency * 1000:.3f}"),
                    ("cause", result.cause.value),
                    ("reason", result.reason or None),
                )
                log.flush()  # what the runner hears is in the log already
                on_result(op, attempt, result)
                if result.result is not co.Result.ABORTED or config.retry != "backoff" or attempt > config.max_retries:
                    results.append(result)
                    break
                window = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
                await asyncio.sleep(rng.uniform(0, window))
    finally:
        await client.close()
        log.event("stopped")
        log.close()
    return results


def print_result(op: int, attempt: int, r: TxResult) -> None:
    """One line per transaction, as a person reads it."""
    line = f"{r.result.value} txid={r.txid} value={r.value} latency_ms={r.latency * 1000:.1f}"
    if attempt > 1:
        line += f" attempt={attempt}"
    if r.result is not co.Result.COMMITTED:
        line += f" reason={r.reason!r}"
    print(line, flush=True)


def servers_arg(text: str) -> list[tuple[str, int]]:
    try:
        servers = [parse_address(part) for part in text.split(",") if part.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not servers:
        raise argparse.ArgumentTypeError("give at least one host:port")
    return servers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.client",
        description="Coordinate 2PC transactions: PREPARE everywhere, then COMMIT everywhere or ABORT everywhere.",
    )
    p.add_argument(
        "--servers",
        type=servers_arg,
        default=default_servers(),
        help="participants as host:port,host:port,... (default the seed's 127.0.0.1:8886-8888)",
    )
    p.add_argument(
        "--value", type=int, default=1, help="the value to write into storage_server (default 1, as in the seed)"
    )
    p.add_argument("--count", type=int, default=1, help="transactions to run, one after the other (default 1)")
    p.add_argument("--name", default=None, help="this client's name in logs and txids (default client<pid>)")
    p.add_argument("--log", type=Path, default=None, help="event log file (default logs/<name>.log)")
    p.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds between messages, to watch the protocol by eye; the seed used 1 (default 0)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for votes, and then for a silent participant's state, before "
        "giving up (default 2 + 4 x delay)",
    )
    p.add_argument(
        "--retry",
        choices=("none", "backoff"),
        default="none",
        help="after an abort: give up, or retry with exponential backoff and jitter (default none)",
    )
    p.add_argument(
        "--prepare",
        choices=PREPARE_MODES,
        default="adaptive",
        help="PREPARE all participants at once (parallel), the first one before the others (ordered: one "
        "more round trip, but votes never split under contention), or parallel until a NOK vote, then "
        "ordered for a while (adaptive; the default)",
    )
    p.add_argument(
        "--max-retries", type=int, default=20, help="with --retry backoff: retries per transaction (default 20)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the backoff jitter")
    p.add_argument(
        "--crash",
        metavar="POINT[:N]",
        default=None,
        help=f"kill this process with SIGKILL at POINT on its Nth passage: {', '.join(CLIENT_CRASH_POINTS)}",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    if args.delay < 0 or (args.timeout is not None and args.timeout <= 0):
        parser.error("--delay must be >= 0 and --timeout > 0")
    if args.crash:
        try:
            CrashPlan.parse(args.crash, CLIENT_CRASH_POINTS)
        except ValueError as e:
            parser.error(str(e))
    name = args.name or f"client{os.getpid()}"
    value = args.value
    config = ClientConfig(
        name=name,
        servers=args.servers,
        log=args.log or Path("logs") / f"{name}.log",
        values=lambda op: value,
        count=args.count,
        timeout=args.timeout if args.timeout is not None else 2.0 + 4 * args.delay,
        delay=args.delay,
        retry=args.retry,
        prepare=args.prepare,
        max_retries=args.max_retries,
        seed=args.seed,
        crash=args.crash,
    )
    try:
        results = asyncio.run(run(config, print_result))
    except ConnectError as e:
        print(f"client: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if all(r.result is co.Result.COMMITTED for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
