"""One inbound connection of a participant: its protocol callbacks and its queue of replies.

Theory of operation: lines are handled as they arrive, in the event loop's own
callback (no task per connection); every reply waits in the connection's
queue until the persists issued before it are durable (harness.node.participant_node).
A peer that pipelines requests or reads nothing is paced: reading pauses while
MAX_QUEUED replies wait or the peer does not take what is written.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Protocol, cast

from harness.node.tls import Identity
from harness.protocol.messages import LineBuffer


class ConnectionOwner(Protocol):
    """What an inbound connection tells its node (harness.node.participant_node.ParticipantNode)."""

    def on_accept(self, conn: InboundConnection) -> None: ...

    def on_data(self, conn: InboundConnection, data: bytes) -> None: ...

    def on_eof(self, conn: InboundConnection) -> None: ...

    def on_close(self, conn: InboundConnection, exc: Exception | None) -> None: ...

    def on_sent(self, out: QueuedReply) -> None: ...


def peername(transport: asyncio.BaseTransport) -> str:
    info = transport.get_extra_info("peername")
    return f"{info[0]}:{info[1]}" if info else "?"


# Replies queued on one connection before we stop reading it: a peer that
# pipelines requests (or reads nothing) cannot make us hold unbounded output.
MAX_QUEUED = 64


@dataclass(eq=False)
class QueuedReply:
    """A reply (its wire line) or a close, queued on an inbound connection until
    the persists issued before it (``barrier``) are durable."""

    barrier: int
    text: str | None  # None: close the connection
    yes_vote: bool = False
    # An OUTCOME committed sent ahead of its record: the record's persist
    # number (0: none). While it is not durable, a crash point follows the send.
    ahead_of: int = 0
    paced: bool = False  # held back by --delay
    due: float | None = None  # with --delay: when it may leave


class InboundConnection(asyncio.Protocol):
    """One connection to the participant: a client or a peer asking RESOLVE.

    Lines are handled as they arrive, in the event loop's own callback (no
    task per connection: measured, a participant spent most of its time
    switching between the stream reader, its task and the writer's)."""

    def __init__(self, node: ConnectionOwner) -> None:
        self.node = node
        self.id = 0
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.buffer = LineBuffer()
        self.queue: collections.deque[QueuedReply] = collections.deque()
        self.refused = False  # a Close is queued: read nothing more
        self.timer: asyncio.TimerHandle | None = None  # --delay
        self.write_blocked = False  # the peer is not reading what we write
        self.queue_full = False  # MAX_QUEUED replies wait to leave
        self.crash_on_drain: list[QueuedReply] = []  # their crash points are reached once the kernel has our bytes
        # Who the peer proved to be (harness.node.tls: a role and a name); None: handshake under way.
        self.identity: Identity | None = None
        # Lines that arrived with the handshake's last flight, before _handshake
        # resumed and set the identity: replayed then.
        self.early: list[bytes] = []
        self.last_rx = 0.0  # loop time of the last bytes received
        self.partial_since: float | None = None  # loop time a partial line began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)
        self.peer = peername(transport)
        self.node.on_accept(self)

    def data_received(self, data: bytes) -> None:
        self.node.on_data(self, data)

    def eof_received(self) -> bool:
        # The peer is done sending (nc -N, shutdown(SHUT_WR)): answer what it
        # sent, then close. True keeps our side open meanwhile.
        self.node.on_eof(self)
        # Over TLS a half-closed connection cannot stay open (asyncio closes it): say so, not True.
        return self.transport is None or self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.node.on_close(self, exc)

    # A peer that sends but does not read fills our buffer: stop reading it
    # until it has taken what we wrote (or while MAX_QUEUED replies wait).
    def pause_writing(self) -> None:
        self.write_blocked = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self.update_reading()
        if self.crash_on_drain:
            sent, self.crash_on_drain = self.crash_on_drain, []
            for out in sent:
                self.node.on_sent(out)

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.write_blocked or self.queue_full:
            transport.pause_reading()
        else:
            transport.resume_reading()
