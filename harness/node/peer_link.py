"""A participant's outgoing connection to a peer, for RESOLVE and its replies.

Theory of operation: one connection per peer, opened on the first RESOLVE and
kept; over TLS the peer must present a *member* certificate
(harness.node.tls). A message leaves only once the persists issued before it
are durable (the node's barrier). Any failure just drops the message: the
resolve timer asks again.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from harness.events.log import EventLog
from harness.events.schema import DISCONNECT, RECV, SEND, UNREACHABLE
from harness.node.address import READ_CHUNK, parse_address
from harness.node.timing import CONNECT_TIMEOUT
from harness.node.tls import Tls, is_member
from harness.protocol.messages import DecodeError, LineBuffer, Message, decode, encode


class PeerLinkOwner(Protocol):
    """What a peer link needs of its node (harness.node.participant_node.ParticipantNode)."""

    log: EventLog
    routes: dict[str, tuple[str, int]]
    tls: Tls | None

    async def wait_durable(self, seq: int) -> None: ...

    def on_peer_reply(self, peer: str, msg: Message) -> None: ...


class PeerLink:
    """An outgoing connection to a peer participant, for RESOLVE and its replies.

    Any failure just drops the message: the resolve timer asks again."""

    def __init__(self, node: PeerLinkOwner, peer: str) -> None:
        self.node = node
        self.peer = peer
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None

    async def send(self, msg: Message, barrier: int) -> None:
        node = self.node
        await node.wait_durable(barrier)
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                try:
                    host, port = self.node.routes.get(self.peer) or parse_address(self.peer)
                    ssl_context = node.tls.client if node.tls else None
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, limit=READ_CHUNK, ssl=ssl_context), CONNECT_TIMEOUT
                    )
                except (OSError, TimeoutError, ValueError) as e:
                    node.log.write(UNREACHABLE, peer=self.peer, error=str(e) or type(e).__name__)
                    return
                if not is_member(writer, self.peer):
                    node.log.write(UNREACHABLE, peer=self.peer, error=f"its certificate is not member {self.peer}'s")
                    writer.close()
                    return
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))
            node.log.message(SEND, self.peer, msg)
            node.log.flush()
            self._writer.write(encode(msg))
            try:
                await self._writer.drain()
            except ConnectionError:
                self._writer.close()

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = LineBuffer()
        try:
            while data := await reader.read(READ_CHUNK):
                for line in buffer.feed(data):
                    msg = decode(line)
                    self.node.log.message(RECV, self.peer, msg)
                    self.node.on_peer_reply(self.peer, msg)
                if buffer.error is not None:
                    raise buffer.error
        except (ConnectionError, DecodeError) as e:
            self.node.log.write(DISCONNECT, peer=self.peer, error=str(e) or type(e).__name__)
        finally:
            writer.close()
            if self._writer is writer:  # not a newer connection made meanwhile
                self._writer = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
