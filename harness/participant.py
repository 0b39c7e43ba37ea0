"""``python -m harness.participant ID``: one participant server (the seed's servidorN.py).

Participant ID n listens on 127.0.0.1:(8885 + n), keeps its data in
``data/server<n>.sqlite3`` and its event log in ``logs/server<n>.log``; every
flag below overrides one of those. Its cluster is the seed's three addresses
unless ``--cluster`` names it. It runs until SIGINT or SIGTERM, then finishes
its durable writes and exits 0; it refuses to start (one line, exit 2) on a
usage error, a port in use, a path it cannot use, a non-loopback address
without ``--tls``, or a store it cannot trust (docs/security.md); it stops
with exit 3 when its storage or its log cannot be written. It echoes its
events on standard output, one short line each (harness.node.watch); the log
file keeps every field.

A participant restarted with the same data folder goes on from its records;
``--fresh`` removes its data file and log first, to start from
storage_server=0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.console.cli import EXIT_OK, EXIT_USAGE, add_version, exit_with, fail, os_problem
from harness.events.schema import ERROR
from harness.node import event_loop
from harness.node.address import DEFAULT_HOST, default_address, default_servers, servers_arg
from harness.node.crash import CrashPlan, ParticipantCrashPoint
from harness.node.limits import IDLE_TIMEOUT, LINE_TIMEOUT, MAX_CONNECTIONS, Limits
from harness.node.serve import ParticipantConfig, StartError, serve
from harness.node.storage import remove_storage
from harness.node.timing import RESOLVE_AFTER, RESOLVE_AFTER_PER_DELAY, resolve_after
from harness.node.watch import Echo
from harness.protocol.conflict import DEFAULT_CONFLICT, ConflictPolicy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.participant",
        description="Run one 2PC participant: it holds storage_server, votes ok/NOK, and commits or aborts.",
    )
    add_version(p)
    p.add_argument("id", type=int, help="participant number n: default port 8885+n, files server<n>.*")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default 8885+ID; 0 = any free port)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="folder for server<n>.sqlite3 (default data)")
    p.add_argument("--log", type=Path, default=None, help="event log file (default logs/server<n>.log)")
    p.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds to wait before each reply (but STATUS), to watch contention by eye; the seed used 3 (default 0)",
    )
    p.add_argument(
        "--resolve-after",
        type=float,
        default=None,
        help="seconds a prepared transaction waits for its decision before asking the "
        f"other participants (default {RESOLVE_AFTER:g} + {RESOLVE_AFTER_PER_DELAY} x delay)",
    )
    p.add_argument(
        "--no-durable",
        "--no-fsync",
        dest="no_fsync",
        action="store_true",
        help="do not fsync votes and commits (survives kill -9, not a power cut; for benchmarks)",
    )
    p.add_argument(
        "--crash",
        metavar="POINT[:N]",
        default=None,
        help=f"kill this process with SIGKILL at POINT on its Nth passage: {', '.join(ParticipantCrashPoint)}",
    )
    p.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        default=None,
        help="the name clients and peers know this participant by (default HOST:PORT)",
    )
    p.add_argument(
        "--conflict",
        type=ConflictPolicy,
        choices=list(ConflictPolicy),
        default=DEFAULT_CONFLICT,
        help="a PREPARE that finds the lock held: an immediate NOK (nok), or, when its transaction is older "
        f"than the holder, a wait for the lock (wait-die; docs/protocol.md) (default {DEFAULT_CONFLICT})",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo events on standard output")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="remove this participant's data file and log first: start again from storage_server=0",
    )
    add_security_arguments(p)
    return p


def add_security_arguments(p: argparse.ArgumentParser) -> None:
    """Membership, TLS, the store's recovery and the resource bounds (docs/security.md)."""
    p.add_argument(
        "--cluster",
        type=servers_arg,
        default=None,
        metavar="HOST:PORT,...",
        help="every participant's name, this one's included; a PREPARE must name exactly these "
        "(default the seed's 127.0.0.1:8886-8888)",
    )
    p.add_argument(
        "--tls",
        type=Path,
        default=None,
        metavar="DIR",
        help="mutual TLS with this member's certificate in DIR, by its host:port (python -m harness.certs DIR); "
        "required off loopback",
    )
    p.add_argument(
        "--rejoin-empty",
        action="store_true",
        help="the store is lost: start with an empty one and learn the decided state from the peers before voting",
    )
    p.add_argument(
        "--compact",
        action="store_true",
        help="forget decided transactions once their client moved on (flat memory and storage; "
        "a late duplicate of one is answered 'forgotten'; see docs/protocol.md)",
    )
    p.add_argument(
        "--max-connections", type=int, default=MAX_CONNECTIONS, help=f"connections at once (default {MAX_CONNECTIONS})"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help=f"close a connection silent this many seconds (default {IDLE_TIMEOUT:g})",
    )
    p.add_argument(
        "--line-timeout",
        type=float,
        default=LINE_TIMEOUT,
        help=f"refuse a line that takes longer than this to arrive whole (default {LINE_TIMEOUT:g})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.id < 1:
        parser.error("id must be 1 or more")
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    if args.resolve_after is not None and args.resolve_after <= 0:
        parser.error("--resolve-after must be > 0")
    if args.crash:
        try:
            CrashPlan.parse(args.crash, ParticipantCrashPoint)
        except ValueError as e:
            parser.error(str(e))
    _host, default_port = default_address(args.id)
    port = default_port if args.port is None else args.port
    if not 0 <= port < 65536:
        parser.error("--port must be within 0-65535")
    if args.max_connections < 1 or args.idle_timeout <= 0 or args.line_timeout <= 0:
        parser.error("--max-connections must be 1 or more, --idle-timeout and --line-timeout > 0")
    cluster = args.cluster if args.cluster is not None else default_servers()
    data = args.data_dir / f"server{args.id}.sqlite3"
    log = args.log or Path("logs") / f"server{args.id}.log"
    prog = f"participant {args.id}"
    if args.fresh:
        try:
            removed = remove_storage(data) + ([log] if log.exists() else [])
            log.unlink(missing_ok=True)
        except OSError as e:
            return fail(prog, f"cannot start afresh: {os_problem(e)}")
        if removed:
            print(f"{prog}: removed {', '.join(map(str, removed))} (a fresh start)", flush=True)
    elif data.exists():
        print(f"{prog}: going on from {data}; --fresh starts from 0", flush=True)
    config = ParticipantConfig(
        node=f"server{args.id}",
        host=args.host,
        port=port,
        data=data,
        log=log,
        delay=args.delay,
        resolve_after=args.resolve_after if args.resolve_after is not None else resolve_after(args.delay),
        durable=not args.no_fsync,
        crash=args.crash,
        advertise=args.advertise,
        echo=None if args.quiet else Echo(sys.stdout, skip=frozenset({ERROR.name})),  # an error: one line on stderr
        cluster=tuple(f"{h}:{p}" for h, p in cluster),
        tls=args.tls,
        rejoin_empty=args.rejoin_empty,
        conflict=args.conflict,
        compact=args.compact,
        limits=Limits(
            max_connections=args.max_connections, idle_timeout=args.idle_timeout, line_timeout=args.line_timeout
        ),
    )
    try:
        event_loop.run(serve(config, ready=lambda addr: None))
    except StartError as e:
        return fail(prog, str(e), EXIT_USAGE)
    return EXIT_OK


if __name__ == "__main__":
    exit_with(main)
