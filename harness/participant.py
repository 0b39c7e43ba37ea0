"""``python -m harness.participant ID``: one participant server (the seed's servidorN.py).

Participant ID n listens on 127.0.0.1:(8885 + n), keeps its data in
``data/server<n>.sqlite3`` and its event log in ``logs/server<n>.log``; every
flag below overrides one of those. It runs until SIGINT or SIGTERM, then
finishes its durable writes and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.eventlog import EventLog
from harness.nodes import PARTICIPANT_CRASH_POINTS, CrashPlan, ParticipantNode, default_address
from harness.storage import Storage, StorageError


@dataclass
class ParticipantConfig:
    node: str  # the name in the event log, e.g. server1
    host: str
    port: int
    data: Path  # the SQLite file
    log: Path | None
    delay: float = 0.0
    resolve_after: float = 5.0
    durable: bool = True
    crash: str | None = None
    advertise: str | None = None
    echo: bool = False  # also print events on stdout, for people watching
    routes: dict[str, tuple[str, int]] | None = None  # peer name -> address to connect to
    sock: socket.socket | None = None  # a listening socket bound by the caller (the runner)


class StartError(Exception):
    """The participant could not start (port taken, bad data file)."""


async def serve(
    config: ParticipantConfig, ready: Callable[[tuple[str, int]], None], stop: asyncio.Event | None = None
) -> None:
    """Run a participant until ``stop`` is set or SIGINT/SIGTERM arrives.
    ``ready`` is called with the bound address once it accepts connections."""
    crash = CrashPlan.parse(config.crash, PARTICIPANT_CRASH_POINTS) if config.crash else None
    log = EventLog(config.log, config.node, echo=sys.stdout if config.echo else None, buffered=True)
    try:
        storage = Storage(config.data, config.node, durable=config.durable)
    except StorageError as e:
        log.close()
        raise StartError(str(e)) from None
    node = ParticipantNode(
        storage, log, resolve_after=config.resolve_after, delay=config.delay, crash=crash, routes=config.routes
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            address = await node.start(config.host, config.port, config.advertise, config.sock)
        except OSError as e:
            log.event("error", ("error", f"cannot listen on {config.host}:{config.port}: {e.strerror or e}"))
            raise StartError(
                f"cannot listen on {config.host}:{config.port}: {e.strerror or e}"
                + (" (is another participant running?)" if e.errno == 98 else "")
            ) from None
        ready(address)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await node.stop()
        storage.close()
        log.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.participant",
        description="Run one 2PC participant: it holds storage_server, votes ok/NOK, and commits or aborts.",
    )
    p.add_argument("id", type=int, help="participant number n: default port 8885+n, files server<n>.*")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
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
        "other participants (default 5 + 10 x delay)",
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
        help=f"kill this process with SIGKILL at POINT on its Nth passage: {', '.join(PARTICIPANT_CRASH_POINTS)}",
    )
    p.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        default=None,
        help="the name clients and peers know this participant by (default HOST:PORT)",
    )
    p.add_argument("--quiet", action="store_true", help="do not echo events on standard output")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.id < 1:
        parser.error("id must be 1 or more")
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    if args.crash:
        try:
            CrashPlan.parse(args.crash, PARTICIPANT_CRASH_POINTS)
        except ValueError as e:
            parser.error(str(e))
    _host, default_port = default_address(args.id)
    port = default_port if args.port is None else args.port
    if not 0 <= port < 65536:
        parser.error("--port must be within 0-65535")
    config = ParticipantConfig(
        node=f"server{args.id}",
        host=args.host,
        port=port,
        data=args.data_dir / f"server{args.id}.sqlite3",
        log=args.log or Path("logs") / f"server{args.id}.log",
        delay=args.delay,
        resolve_after=args.resolve_after if args.resolve_after is not None else 5.0 + 10 * args.delay,
        durable=not args.no_fsync,
        crash=args.crash,
        advertise=args.advertise,
        echo=not args.quiet,
    )
    try:
        asyncio.run(serve(config, ready=lambda addr: None))
    except StartError as e:
        print(f"participant {args.id}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
