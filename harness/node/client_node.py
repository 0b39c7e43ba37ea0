"""The client node: coordinates transactions over persistent TCP connections.

It runs one CoordinatorCore (harness.protocol.coordinator) per transaction and
performs its actions: sends (logged, then written), timers, the report. A
send is logged and the log flushed before the bytes leave (harness.events).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl as _ssl
import time
from dataclasses import dataclass, field
from typing import cast

from harness.events.log import EventLog
from harness.events.schema import BEGIN, CONNECTED, DECIDE, DISCONNECT, ERROR_REPLY, RECV, SEND, TIMEOUT, UNREACHABLE
from harness.node import event_loop
from harness.node.address import READ_CHUNK
from harness.node.crash import ClientCrashPoint, CrashPlan
from harness.node.deadlines import Deadlines
from harness.node.timing import CLIENT_TIMEOUT, CONNECT_TIMEOUT, RETRY_INTERVAL
from harness.node.tls import is_member
from harness.protocol import coordinator as co
from harness.protocol.messages import (
    DecodeError,
    Error,
    LineBuffer,
    Message,
    NokCode,
    State,
    Status,
    decode_line,
    encode_text,
)


class ConnectError(Exception):
    """A participant could not be reached at start-up (the environment's problem)."""


@dataclass
class TxResult:
    """What one transaction came to, as the client reports it."""

    txid: str
    value: int
    result: co.Result
    reason: str
    cause: co.Cause
    latency: float  # seconds from the first PREPARE to the last acknowledgement
    nok: NokCode | None = None  # with cause no-vote: the deciding NOK's code


@dataclass
class _Txn:
    core: co.CoordinatorCore
    done: asyncio.Future[None]
    report: co.Report | None = None
    sends: asyncio.Queue[co.Send] | None = None  # only with --delay: sends go one by one
    sent: dict[str, int] = field(default_factory=dict)  # messages written, by verb (crash points)


class _ToParticipant(asyncio.BufferedProtocol):
    """One connection of a client to a participant: replies are handled in the
    event loop's own callback as they arrive (no reader task).

    A buffered protocol: the loop reads into this connection's own buffer.
    A plain Protocol gets a new bytes object per read, which asyncio allocates
    at its full read size (256 KiB) and then shrinks: measured, an mmap, an
    mremap and a munmap per reply, a third of the client's system calls."""

    def __init__(self, link: _ServerLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.buffer = LineBuffer()
        self._read = memoryview(bytearray(READ_CHUNK))
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read[:nbytes])  # LineBuffer copies what it keeps

    def data_received(self, data: bytes | memoryview) -> None:
        link, client = self.link, self.link.client
        try:
            for line in self.buffer.feed(data):
                msg, text = decode_line(line)
                client.log.message(RECV, link.name, text)
                client.on_reply(link, msg)
            if self.buffer.error is not None:
                raise self.buffer.error
        except DecodeError as e:
            client.log.write(DISCONNECT, peer=link.name, error=str(e) or type(e).__name__)
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            error = str(exc) or type(exc).__name__
            self.link.client.log.write(DISCONNECT, peer=self.link.name, error=error)
        self.resume_writing()
        if not self.closed.done():
            self.closed.set_result(None)
        self.link.lost(self)

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Until what was written is in the kernel's hands (crash points only:
        they set the buffer limit to 0, so that pause/resume_writing track it)."""
        if self.transport is None or self.transport.is_closing() or not self.transport.get_write_buffer_size():
            return
        self._drained = asyncio.get_running_loop().create_future()
        await self._drained


class _ServerLink:
    """The client's connection to one participant, reused across transactions."""

    def __init__(self, client: ClientNode, host: str, port: int) -> None:
        self.client = client
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.name = self.address  # replaced by the participant's own name at handshake
        self.conn: _ToParticipant | None = None
        self.lock = asyncio.Lock()
        self.status: asyncio.Future[State] | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.transport is not None and not self.conn.transport.is_closing()

    async def ensure(self) -> bool:
        """Connected, or False if the connection could not be opened."""
        async with self.lock:
            if self.connected:
                return True
            loop = asyncio.get_running_loop()
            try:
                transport, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _ToParticipant(self), self.host, self.port, ssl=self.client.ssl),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError) as e:
                self.client.log.write(UNREACHABLE, peer=self.name, error=str(e) or type(e).__name__)
                return False
            ssl_object = transport.get_extra_info("ssl_object")
            if not is_member(transport, self.address):
                # a client certificate posing as a participant, or another member's: not one to ask a vote of
                self.client.log.write(
                    UNREACHABLE, peer=self.name, error=f"its certificate is not member {self.address}'s"
                )
                transport.abort()
                return False
            if self.client.crash is not None:
                # see _ToParticipant.drain; asyncio's TLS transport pauses at size >= high, plain TCP at >
                transport.set_write_buffer_limits(high=1 if ssl_object is not None else 0)
            self.conn = conn
            return True

    def send(self, msg: Message) -> None:
        """Log and send one message now."""
        text = encode_text(msg)
        self.client.log.message(SEND, self.name, text)
        self.client.log.flush()  # the log before the world: nothing leaves unlogged
        self.write(text)

    def write(self, text: str) -> None:
        """Send a wire line already logged (and flushed)."""
        assert self.conn is not None and self.conn.transport is not None
        self.conn.transport.write(f"{text}\n".encode())

    def lost(self, conn: _ToParticipant) -> None:
        if self.conn is conn:  # not a newer connection made meanwhile
            self.conn = None
        self.client.on_connection_lost(self)


class ClientNode:
    """A client: coordinates transactions over persistent connections."""

    def __init__(
        self,
        name: str,
        servers: list[tuple[str, int]],
        log: EventLog,
        *,
        timeout: float = CLIENT_TIMEOUT,
        delay: float = 0.0,
        crash: CrashPlan | None = None,
        retry_interval: float = RETRY_INTERVAL,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.ssl = ssl  # mutual TLS (harness.node.tls); None: plain TCP
        self.log = log
        self.timeout = timeout
        self.delay = delay
        self.crash = crash
        self.retry_interval = retry_interval
        self.links = [_ServerLink(self, h, p) for h, p in servers]
        self._by_name: dict[str, _ServerLink] = {}
        self._txns: dict[str, _Txn] = {}
        # Unique across clients and restarts: random per process, then a counter.
        self._txid_prefix = f"{name}-{secrets.token_hex(6)}"
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # The transactions' timers by txid, one Deadlines per kind (each kind has one delay).
        self._timers: dict[co.Timer, Deadlines[str]] = {}

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(link.name for link in self.links)

    async def connect(self) -> None:
        """Open every connection and learn each participant's name (STATUS).
        Raises ConnectError naming the first participant that cannot be reached."""

        async def hello(link: _ServerLink) -> None:
            if not await link.ensure():
                raise ConnectError(f"cannot connect to participant {link.address}")
            link.status = asyncio.get_running_loop().create_future()
            link.send(Status())
            try:
                state = await asyncio.wait_for(link.status, self.timeout)
            except TimeoutError:
                raise ConnectError(f"participant {link.address} did not answer STATUS in {self.timeout}s") from None
            link.name = state.node

        await asyncio.gather(*(hello(link) for link in self.links))
        self._by_name = {link.name: link for link in self.links}
        if len(self._by_name) != len(self.links):
            raise ConnectError("two --servers entries reach the same participant")
        self.log.write(
            CONNECTED, pid=os.getpid(), participants=",".join(self.participants), loop=event_loop.chosen().value
        )

    def new_txid(self) -> str:
        self._seq += 1
        return f"{self._txid_prefix}-{self._seq}"

    async def transact(self, value: int, ordered: bool = False, prio: int | None = None) -> TxResult:
        """Run one transaction writing ``value``; returns once it is finished.
        ``ordered``: prepare the first participant before the others; ``prio``:
        the operation's age, sent with PREPARE (harness.protocol.conflict)."""
        loop = asyncio.get_running_loop()
        txid = self.new_txid()
        core = co.CoordinatorCore(txid=txid, value=value, participants=self.participants, ordered=ordered, prio=prio)
        txn = _Txn(core=core, done=loop.create_future())
        self._txns[txid] = txn
        started = time.perf_counter()
        self.log.write(
            BEGIN,
            txid=txid,
            value=value,
            participants=",".join(self.participants),
            prepare="ordered" if ordered else "parallel",
        )

        if self.delay:
            txn.sends = asyncio.Queue()
            sender = loop.create_task(self._paced_sender(txn))
        try:
            self._feed(txn, txn.core.start())
            await txn.done
        finally:
            for deadlines in self._timers.values():
                deadlines.cancel(txid)
            self._txns.pop(txid, None)
            if self.delay:
                sender.cancel()
        latency = time.perf_counter() - started
        assert txn.report is not None
        return TxResult(
            txid=txid,
            value=value,
            result=txn.report.result,
            reason=txn.report.reason,
            cause=txn.report.cause,
            latency=latency,
            nok=txn.report.nok,
        )

    async def close(self) -> None:
        conns = [link.conn for link in self.links if link.conn is not None]
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.gather(*(conn.closed for conn in conns))
        self.log.flush()

    # ------------------------------------------------------------ core glue

    def _feed(self, txn: _Txn, actions: list[co.CoordinatorAction]) -> None:
        direct: list[tuple[_ServerLink, str]] = []
        encoded: Message | None = None  # a fan-out sends one message object to each: encode it once
        text = ""
        for action in actions:
            match action:
                case co.Send():
                    link = self._by_name[action.to]
                    if txn.sends is not None:
                        txn.sends.put_nowait(action)
                    elif self.crash is None and link.connected:
                        # The common case: no task per message (measured x1.4), and
                        # the fan-out logged in one write before it leaves.
                        if action.msg is not encoded:
                            encoded, text = action.msg, encode_text(action.msg)
                        self.log.message(SEND, link.name, text)
                        direct.append((link, text))
                    else:
                        task = asyncio.get_running_loop().create_task(self._send(txn, action))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                case co.SetTimer():
                    self._deadlines(action.timer).start(txn.core.txid)  # replaces its earlier one
                case co.Report():
                    txn.report = action
                    self.log.write(DECIDE, txid=txn.core.txid, result=action.result.value, reason=action.reason)
                case co.Finished():
                    if not txn.done.done():
                        txn.done.set_result(None)
        if direct:
            self.log.flush()
            for link, text in direct:
                link.write(text)

    async def _paced_sender(self, txn: _Txn) -> None:
        assert txn.sends is not None
        while True:
            action = await txn.sends.get()
            await asyncio.sleep(self.delay)  # the seed's 1 s between servers, for people watching
            await self._send(txn, action)

    async def _send(self, txn: _Txn, action: co.Send) -> None:
        link = self._by_name[action.to]
        if not await link.ensure():
            if txn.core.phase is not co.Phase.DONE:
                self._feed(txn, txn.core.on_unreachable(action.to))
            return
        link.send(action.msg)
        if self.crash is None:
            return
        kind = action.msg.kind.value
        txn.sent[kind] = txn.sent.get(kind, 0) + 1
        point = {
            ("PREPARE", len(self.links)): ClientCrashPoint.AFTER_PREPARE,
            ("COMMIT", 1): ClientCrashPoint.AFTER_FIRST_COMMIT,
        }.get((kind, txn.sent[kind]))
        if point is not None and link.conn is not None:
            await link.conn.drain()
            self.crash.reached(point, self.log)

    def _deadlines(self, timer: co.Timer) -> Deadlines[str]:
        deadlines = self._timers.get(timer)
        if deadlines is None:
            delay = self.timeout if timer is co.Timer.PHASE else self.retry_interval
            deadlines = self._timers[timer] = Deadlines(
                asyncio.get_running_loop(), delay, lambda txid: self._timeout(txid, timer)
            )
        return deadlines

    def _timeout(self, txid: str, timer: co.Timer) -> None:
        txn = self._txns.get(txid)
        if txn is None:
            return
        if txn.core.phase is not co.Phase.DONE:
            self.log.write(TIMEOUT, txid=txn.core.txid, timer=timer.value, phase=txn.core.phase.value)
            self._feed(txn, txn.core.on_timeout(timer))

    def on_reply(self, link: _ServerLink, msg: Message) -> None:
        if isinstance(msg, State):
            if link.status is not None and not link.status.done():
                link.status.set_result(msg)
            return
        txid = getattr(msg, "txid", None)
        txn = self._txns.get(txid) if txid else None
        if txn is None:
            if isinstance(msg, Error):
                self.log.write(ERROR_REPLY, peer=link.name, code=msg.code, detail=msg.detail)
            return  # a late reply to a finished transaction
        self._feed(txn, txn.core.on_reply(link.name, msg))

    def on_connection_lost(self, link: _ServerLink) -> None:
        for txn in list(self._txns.values()):
            if txn.core.phase is not co.Phase.DONE:
                self._feed(txn, txn.core.on_connection_lost(link.name))
