"""Run one participant until told to stop: its log, its storage, its node, its signals.

The by-hand command (harness.participant) and the runner's participant
processes (harness.experiment.children) both start a participant through
``serve``.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.events.log import EchoSink, EventLog, EventLogError
from harness.events.schema import ERROR
from harness.node.crash import CrashPlan, ParticipantCrashPoint
from harness.node.participant_node import ParticipantNode
from harness.node.storage import CorruptStorage, Storage, StorageError
from harness.node.timing import RESOLVE_AFTER


@dataclass
class ParticipantConfig:
    node: str  # the name in the event log, e.g. server1
    host: str
    port: int
    data: Path  # the SQLite file
    log: Path | None
    delay: float = 0.0
    resolve_after: float = RESOLVE_AFTER
    durable: bool = True
    crash: str | None = None
    advertise: str | None = None
    echo: EchoSink | None = None  # also print events here, for people watching (harness.node.watch)
    routes: dict[str, tuple[str, int]] | None = None  # peer name -> address to connect to
    sock: socket.socket | None = None  # a listening socket bound by the caller (the runner)


class StartError(Exception):
    """The participant could not start (port taken, a path it cannot use, bad data file).
    ``corrupt``: its storage holds what cannot be decoded (exit 3, not 2)."""

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


async def serve(
    config: ParticipantConfig, ready: Callable[[tuple[str, int]], None], stop: asyncio.Event | None = None
) -> None:
    """Run a participant until ``stop`` is set or SIGINT/SIGTERM arrives.
    ``ready`` is called with the bound address once it accepts connections."""
    crash = CrashPlan.parse(config.crash, ParticipantCrashPoint) if config.crash else None
    try:
        log = EventLog(config.log, config.node, echo=config.echo, buffered=True)
    except EventLogError as e:
        raise StartError(str(e)) from None
    try:
        storage = Storage(config.data, config.node, durable=config.durable)
    except StorageError as e:
        log.write(ERROR, error=str(e))
        log.close()
        raise StartError(str(e), corrupt=isinstance(e, CorruptStorage)) from None
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
        except CorruptStorage as e:
            log.write(ERROR, error=str(e))
            raise StartError(str(e), corrupt=True) from None
        except OSError as e:
            log.write(ERROR, error=f"cannot listen on {config.host}:{config.port}: {e.strerror or e}")
            raise StartError(
                f"cannot listen on {config.host}:{config.port}: {e.strerror or e}"
                + (" (is another participant running?)" if e.errno == errno.EADDRINUSE else "")
            ) from None
        ready(address)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await node.stop()
        storage.close()
        log.close()
