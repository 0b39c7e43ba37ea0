"""``python -m harness.client``: a client that coordinates transactions (the seed's cliente.py).

It connects to every participant, then for each transaction sends PREPARE to
all of them, and COMMIT everywhere if all voted ok, ABORT everywhere otherwise.
It prints one line per transaction and exits 0 if all committed, 1 if any
aborted or ended unknown, 2 on a usage or connection error. ``-v`` also
prints every message it sends and every reply, as they happen, as the seed's
client did (harness.node.watch makes them short).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.console.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, add_version, exit_with, fail
from harness.events.log import EventLogError
from harness.events.schema import OUTCOME
from harness.experiment.workload import MAX_RETRIES, ClientConfig, PrepareMode, RetryMode, run
from harness.node import event_loop
from harness.node.address import default_servers, servers_arg
from harness.node.client_node import ConnectError, TxResult
from harness.node.crash import ClientCrashPoint, CrashPlan
from harness.node.timing import CLIENT_TIMEOUT, CLIENT_TIMEOUT_PER_DELAY, client_timeout
from harness.node.tls import TlsError, default_client
from harness.node.watch import Echo
from harness.protocol import coordinator as co
from harness.protocol.messages import VALUE_MAX, VALUE_MIN

PROG = "harness.client"


def print_result(op: int, attempt: int, r: TxResult) -> None:
    """One line per transaction, as a person reads it."""
    line = f"{r.result.value} txid={r.txid} value={r.value} latency_ms={r.latency * 1000:.1f}"
    if attempt > 1:
        line += f" attempt={attempt}"
    if r.result is not co.Result.COMMITTED:
        line += f" reason={r.reason!r}"
    print(line, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.client",
        description="Coordinate 2PC transactions: PREPARE everywhere, then COMMIT everywhere or ABORT everywhere.",
    )
    add_version(p)
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every message sent and every reply as it happens, as the seed did",
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
    p.add_argument(
        "--name",
        default=None,
        help="this client's name in logs and txids (default client<pid>; with --tls, its certificate's)",
    )
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
        f"giving up (default {CLIENT_TIMEOUT:g} + {CLIENT_TIMEOUT_PER_DELAY} x delay)",
    )
    p.add_argument(
        "--retry",
        type=RetryMode,
        choices=list(RetryMode),
        default=RetryMode.NONE,
        help="after an abort: give up, or retry with exponential backoff and jitter (default none)",
    )
    p.add_argument(
        "--prepare",
        type=PrepareMode,
        choices=list(PrepareMode),
        default=PrepareMode.ADAPTIVE,
        help="PREPARE all participants at once (parallel), the first one before the others (ordered: one "
        "more round trip, but votes never split under contention), or parallel until a NOK vote, then "
        "ordered for a while (adaptive; the default)",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=MAX_RETRIES,
        help=f"with --retry backoff: retries per transaction (default {MAX_RETRIES})",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the backoff jitter")
    p.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="DIR",
        help="mutual TLS with this client's certificate in DIR, by --name (python -m harness.certs DIR)",
    )
    p.add_argument(
        "--crash",
        metavar="POINT[:N]",
        default=None,
        help=f"kill this process with SIGKILL at POINT on its Nth passage: {', '.join(ClientCrashPoint)}",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be 1 or more")
    if args.delay < 0 or (args.timeout is not None and args.timeout <= 0):
        parser.error("--delay must be >= 0 and --timeout > 0")
    if not VALUE_MIN <= args.value <= VALUE_MAX:
        parser.error(f"--value must be within [{VALUE_MIN}, {VALUE_MAX}] (a signed 64-bit integer)")
    if args.max_retries < 0:
        parser.error("--max-retries must be 0 or more")
    if args.crash:
        try:
            CrashPlan.parse(args.crash, ClientCrashPoint)
        except ValueError as e:
            parser.error(str(e))
    if args.delay > 0 and not args.verbose and sys.stderr.isatty():  # or the wait looks like a hang
        print(f"{PROG}: --delay {args.delay:g}: slow on purpose; -v prints each message as it goes", file=sys.stderr)
    try:  # with --tls, its name is its certificate's: the folder's only client one, unless told
        name = args.name or (default_client(args.tls) if args.tls is not None else f"client{os.getpid()}")
    except TlsError as e:
        return fail(PROG, str(e), EXIT_USAGE)
    value = args.value
    config = ClientConfig(
        name=name,
        servers=args.servers,
        log=args.log or Path("logs") / f"{name}.log",
        values=lambda op: value,
        count=args.count,
        timeout=args.timeout if args.timeout is not None else client_timeout(args.delay),
        delay=args.delay,
        retry=args.retry,
        prepare=args.prepare,
        max_retries=args.max_retries,
        seed=args.seed,
        crash=args.crash,
        echo=Echo(sys.stdout, skip=frozenset({OUTCOME.name})) if args.verbose else None,
        tls=args.tls,
    )
    try:
        results = event_loop.run(run(config, print_result))
    except (ConnectError, EventLogError) as e:
        return fail(PROG, str(e), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK if results.all_committed else EXIT_FAILED


if __name__ == "__main__":
    exit_with(main)
