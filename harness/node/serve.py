"""Run one participant until told to stop: its log, its storage, its node, its signals.

The by-hand command (harness.participant) and the runner's participant
processes (harness.experiment.children) both start a participant through
``serve``. Before it serves anyone it checks what it may trust
(docs/security.md): the address it binds (no TLS off loopback), its TLS
folder, and its store (harness.node.guard); any refusal is one line and exit 2.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.events.log import EchoSink, EventLog, EventLogError
from harness.events.schema import ERROR
from harness.node.crash import CrashPlan, ParticipantCrashPoint
from harness.node.guard import StoreRefused, open_store
from harness.node.limits import Limits, quiet_accept_errors
from harness.node.participant_node import NotAMember, ParticipantNode
from harness.node.storage import StorageError
from harness.node.timing import RESOLVE_AFTER
from harness.node.tls import TlsError, check_bind
from harness.node.tls import load as load_tls
from harness.protocol.conflict import DEFAULT_CONFLICT, ConflictPolicy


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
    cluster: tuple[str, ...] | None = None  # every member's name; None: this participant alone
    tls: Path | None = None  # the certificates folder (harness.certs); None: plain TCP, loopback only
    rejoin_empty: bool = False  # a lost store: start empty and learn the decided state from the peers
    compact: bool = False  # forget decided records behind per-client marks (harness.protocol.participant)
    ask_peers: bool = True  # an empty store: ask the peers whether it should have had state
    limits: Limits = field(default_factory=Limits)
    conflict: ConflictPolicy = DEFAULT_CONFLICT  # a PREPARE that finds the lock held: NOK, or wait-die
    # The address is on a network only the run's own nodes reach (its namespaces,
    # or hosts an inventory declares private): listening there needs no TLS.
    private_network: bool = False


class StartError(Exception):
    """The participant could not start (a port taken, a path it cannot use, a
    store it cannot trust): one line, exit 2."""


async def serve(
    config: ParticipantConfig, ready: Callable[[tuple[str, int]], None], stop: asyncio.Event | None = None
) -> None:
    """Run a participant until ``stop`` is set or SIGINT/SIGTERM arrives.
    ``ready`` is called with the bound address once it accepts connections."""
    crash = CrashPlan.parse(config.crash, ParticipantCrashPoint) if config.crash else None
    if (refusal := check_bind(config.host, config.tls, config.private_network)) is not None:
        raise StartError(refusal)
    if config.sock is not None:
        bound = config.sock.getsockname()
        me = config.advertise or f"{bound[0]}:{bound[1]}"
    else:
        me = config.advertise or f"{config.host}:{config.port}"
    try:  # its own certificate, by its name (harness.node.tls)
        tls = load_tls(config.tls, member=True, name=me) if config.tls is not None else None
    except TlsError as e:
        raise StartError(str(e)) from None
    if config.cluster is not None and not me.endswith(":0") and me not in config.cluster:
        raise StartError(
            f"this participant is {me}, not a member of its cluster {','.join(config.cluster)}: "
            "give --cluster with every member's name, this one's included"
        )
    try:
        storage, rejoining = await open_store(
            config.data,
            config.node,
            config.cluster,
            me,
            durable=config.durable,
            log=config.log,
            rejoin_empty=config.rejoin_empty,
            ask_peers=config.ask_peers,
            ssl_context=tls.client if tls else None,
        )
    except StoreRefused as e:
        raise StartError(str(e)) from None
    quiet_accept_errors()
    try:
        log = EventLog(config.log, config.node, echo=config.echo, buffered=True)
    except EventLogError as e:
        storage.close()
        raise StartError(str(e)) from None
    node = ParticipantNode(
        storage,
        log,
        resolve_after=config.resolve_after,
        delay=config.delay,
        crash=crash,
        routes=config.routes,
        cluster=config.cluster,
        tls=tls,
        limits=config.limits,
        rejoining=rejoining,
        conflict=config.conflict,
        compact=config.compact,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            address = await node.start(config.host, config.port, config.advertise, config.sock)
        except (NotAMember, StorageError) as e:
            log.write(ERROR, error=str(e))
            raise StartError(str(e)) from None
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
