"""asyncio TCP nodes that run the pure protocol core on real sockets.

Theory of operation. A node feeds each input (a decoded line, a timeout) to
its core and performs the returned actions in order. The one rule that makes
the participant crash-safe lives here: *a Persist is durable before any later
reply or send leaves the node* (but a lazy one: a commit, see
harness.protocol.participant). Persists go to a group-commit writer (one
SQLite transaction and one fsync for every record queued in one pass of the
event loop); every outgoing message is queued on its connection with the
number of persists issued before it, and leaves once that many are durable.
The core updates its memory at once, so a STATUS or RESOLVE answered
meanwhile may describe a record not yet on disk; a STATE reply waits for every
persist before it, lazy ones too (so that a version it reports never goes back
after a crash), a RESOLVE answer for those that are not lazy.

Lines are handled in the protocols' data_received callbacks, not in a task per
connection, and logged before anything they cause leaves (harness.eventlog).

Bad input from the network (their fault) is logged, answered with ERROR and
the connection closed; it never reaches the core, so it never changes state.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import random
import secrets
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from harness.eventlog import EventLog
from harness.protocol import coordinator as co
from harness.protocol.messages import (
    DecodeError,
    Error,
    LineBuffer,
    Message,
    Outcome,
    State,
    Status,
    TxState,
    Vote,
    decode,
    encode,
    encode_text,
)
from harness.protocol.participant import (
    Action,
    CancelTimer,
    Close,
    ParticipantCore,
    Persist,
    Reply,
    SendPeer,
    StartTimer,
    TxRecord,
)
from harness.storage import Storage

logger = logging.getLogger("harness.nodes")

DEFAULT_HOST = "127.0.0.1"
BASE_PORT = 8886  # the seed's first server; participant ID n listens on 8885 + n
READ_CHUNK = 65536

# How long a connect may take before the participant counts as unreachable.
# Loopback connects take microseconds; a full second only passes when the
# listener is stopped (SIGSTOP) and its backlog is full.
CONNECT_TIMEOUT = 1.0

# after-commit-reply: the OUTCOME of a COMMIT has left ahead of its record (a
# lazy commit), which is not yet durable; a reply that had to wait for another
# persist, written with the record, is not this point. after-commit: the record
# is durable.
PARTICIPANT_CRASH_POINTS = ("before-vote", "after-vote", "after-commit-reply", "after-commit")
CLIENT_CRASH_POINTS = ("after-prepare", "after-first-commit")


def default_address(participant_id: int) -> tuple[str, int]:
    """The seed's addresses: participant 1 on 127.0.0.1:8886, 2 on 8887, ..."""
    return DEFAULT_HOST, BASE_PORT - 1 + participant_id


def default_servers(count: int = 3) -> list[tuple[str, int]]:
    return [default_address(i) for i in range(1, count + 1)]


# Port 0 ("any free port") for a listener: one below the kernel's ephemeral
# range, where connect() takes its local ports. A participant killed and
# restarted on its port finds it free; in the ephemeral range a connection made
# meanwhile could hold it (the restart fails), or a client reconnecting to the
# dead port could be given that very port as its own and connect to itself.
LOCAL_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
STATIC_PORTS_FROM = 20000


def _static_ports() -> list[int]:
    """Up to 50 random candidate ports below the ephemeral range (none where
    the range cannot be read or leaves no room)."""
    try:
        with open(LOCAL_PORT_RANGE, encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    if low - STATIC_PORTS_FROM < 1000:
        return []
    return random.SystemRandom().sample(range(STATIC_PORTS_FROM, low), 50)


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    (family, kind, proto, _, address), *_ = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_socket(host: str, port: int, backlog: int = 256) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError if it cannot be had.
    Port 0: a free port below the ephemeral range if there is one, else any."""
    if port == 0:
        for candidate in _static_ports():
            try:
                return _listen(host, candidate, backlog)
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
    return _listen(host, port, backlog)


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ValueError with a readable message otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


@dataclass
class CrashPlan:
    """Kill this process with SIGKILL at a protocol point, on its nth passage.

    Used by tests and the nemesis to crash a node exactly where it hurts."""

    point: str
    nth: int = 1
    seen: int = 0

    @classmethod
    def parse(cls, text: str, allowed: tuple[str, ...]) -> CrashPlan:
        point, _, nth = text.partition(":")
        if point not in allowed:
            raise ValueError(f"crash point must be one of {', '.join(allowed)}, got {point!r}")
        if nth and (not nth.isdigit() or int(nth) < 1):
            raise ValueError(f"crash count must be a positive integer, got {nth!r}")
        return cls(point=point, nth=int(nth or 1))

    def reached(self, point: str, log: EventLog) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.nth:
            log.event("crash", ("point", point), ("signal", "SIGKILL"))
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def _peername(transport: asyncio.BaseTransport) -> str:
    info = transport.get_extra_info("peername")
    return f"{info[0]}:{info[1]}" if info else "?"


# ====================================================================== participant


def log_record(log: EventLog, event: str, r: TxRecord, why: str | None = None) -> None:
    """A durable record as the checker reads it (events durable and restored)."""
    log.event(
        event,
        ("txid", r.txid),
        ("state", r.state.value),
        ("value", r.value),
        ("version", r.version),
        ("participants", ",".join(r.participants)),
        ("why", why),
    )


# Replies queued on one connection before we stop reading it: a peer that
# pipelines requests (or reads nothing) cannot make us hold unbounded output.
MAX_QUEUED = 64

# A lazy persist (a committed record, acknowledged already) is written with the
# next persist that something waits for, or this long after it at the latest:
# one client's next PREPARE comes within a few milliseconds, so its yes vote and
# the previous commit share one fsync.
LAZY_WRITE_AFTER = 0.02


class GroupCommit:
    """Makes Persist actions durable in order, batching those that queue up.

    ``submit`` returns a sequence number and schedules one write for the end of
    this pass of the event loop: every persist submitted meanwhile (by every
    message that arrived in the same poll) goes into that one SQLite transaction,
    one fsync. A lazy persist waits for the next write, or LAZY_WRITE_AFTER.
    ``durable`` counts the persists on disk; ``wait(n)`` returns once the first
    n are, and ``on_durable`` hears of every batch."""

    def __init__(self, storage: Storage, log: EventLog, on_durable: Callable[[list[Persist]], None]) -> None:
        self._storage = storage
        self._log = log
        self._on_durable = on_durable
        self._pending: list[Persist] = []
        self.issued = 0
        self.durable = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._scheduled = False
        self._lazy_timer: asyncio.TimerHandle | None = None

    def submit(self, persist: Persist) -> int:
        self._pending.append(persist)
        self.issued += 1
        if persist.lazy:
            if not self._scheduled and self._lazy_timer is None:
                self._lazy_timer = asyncio.get_running_loop().call_later(LAZY_WRITE_AFTER, self._write)
        else:
            self.write_soon()
        return self.issued

    async def wait(self, seq: int) -> None:
        if self.durable >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    def _write(self) -> None:
        self._scheduled = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            # In the loop's own thread: handing each write to a worker thread
            # cost more than the write (measured: x1.4-1.6 transactions per
            # second without the hop). The fsync blocks the loop; what arrives
            # meanwhile waits in the kernel, and the persists it causes are
            # batched into the next write.
            self._storage.write([p.record for p in batch])
        except (sqlite3.Error, OSError) as e:
            # Nothing more can be promised: stop at once, as a crash would. The
            # batch is one SQLite transaction, so a restart finds all of it or none.
            self._log.event("fatal", ("error", f"storage write failed: {e}"))
            self._log.flush()
            print(f"participant: storage write failed: {e}; stopping", file=sys.stderr, flush=True)
            os._exit(3)
        for p in batch:
            log_record(self._log, "durable", p.record, p.why)
        self.durable += len(batch)
        if self._waiters:
            still = []
            for seq, future in self._waiters:
                if seq > self.durable:
                    still.append((seq, future))
                elif not future.done():
                    future.set_result(None)
            self._waiters = still
        self._on_durable(batch)

    def write_soon(self) -> None:
        """Write what is queued, lazy persists included, at the end of this loop pass."""
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._write)

    def close(self) -> None:
        """Write what is queued now."""
        self._write()


@dataclass(eq=False)
class _Output:
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


class _Inbound(asyncio.Protocol):
    """One connection to the participant: a client or a peer asking RESOLVE.

    Lines are handled as they arrive, in the event loop's own callback (no
    task per connection: measured, a participant spent most of its time
    switching between the stream reader, its task and the writer's)."""

    def __init__(self, node: ParticipantNode) -> None:
        self.node = node
        self.id = 0
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self.buffer = LineBuffer()
        self.queue: collections.deque[_Output] = collections.deque()
        self.refused = False  # a Close is queued: read nothing more
        self.timer: asyncio.TimerHandle | None = None  # --delay
        self.write_blocked = False  # the peer is not reading what we write
        self.queue_full = False  # MAX_QUEUED replies wait to leave
        self.crash_on_drain: list[_Output] = []  # their crash points are reached once the kernel has our bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _peername(transport)
        self.node._accepted(self)

    def data_received(self, data: bytes) -> None:
        self.node._on_data(self, data)

    def eof_received(self) -> bool:
        # The peer is done sending (nc -N, shutdown(SHUT_WR)): answer what it
        # sent, then close. True keeps our side open meanwhile.
        self.node._on_eof(self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.node._closed(self, exc)

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
                self.node._sent(out)

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.write_blocked or self.queue_full:
            transport.pause_reading()
        else:
            transport.resume_reading()


class ParticipantNode:
    """A participant: a TCP server around a ParticipantCore and its Storage."""

    def __init__(
        self,
        storage: Storage,
        log: EventLog,
        *,
        resolve_after: float = 5.0,
        delay: float = 0.0,
        crash: CrashPlan | None = None,
        routes: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.storage = storage
        self.log = log
        self.resolve_after = resolve_after
        self.delay = delay
        self.crash = crash
        # Where to connect to reach a peer, by its name; the name itself by
        # default. The runner routes peers through its fault proxy this way.
        self.routes = routes or {}
        self.core: ParticipantCore | None = None
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._gc: GroupCommit | None = None
        self._conns: dict[int, _Inbound] = {}
        self._blocked: set[_Inbound] = set()  # connections whose next output waits for a persist
        self._barrier = 0  # persists issued up to the last one that is not lazy: outputs wait for these
        # With a crash point: txid -> the persist of its committed record, while
        # not durable (an OUTCOME committed sent meanwhile is ahead of it).
        self._lazy: dict[str, int] = {}
        self._next_conn = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._peers: dict[str, _PeerLink] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def name(self) -> str:
        assert self.address is not None
        return f"{self.address[0]}:{self.address[1]}"

    async def start(
        self, host: str, port: int, advertise: str | None = None, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        """Bind (or take the already bound ``sock``), recover from storage, then
        accept connections. Returns the bound address (useful with port 0).
        OSError if the port is taken."""
        loop = asyncio.get_running_loop()
        if sock is None and port == 0:
            sock = listen_socket(host, 0)  # not in the ephemeral range: see listen_socket
        if sock is not None:
            server = loop.create_server(lambda: _Inbound(self), sock=sock, start_serving=False)
        else:
            server = loop.create_server(lambda: _Inbound(self), host, port, start_serving=False)
        self._server = await server
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        name = advertise or self.name
        records = self.storage.load()
        self.core = ParticipantCore.restore(name, records)
        self._gc = GroupCommit(self.storage, self.log, self._durable)
        c = self.core
        if records:
            # Every durable record, once per restart: a record made durable just
            # before a SIGKILL may have missed its "durable" line, and the
            # checker must see every record the participant ever acted on.
            for r in sorted(records, key=lambda r: (r.version, r.txid)):
                log_record(self.log, "restored", r)
            prepared = [r.txid for r in records if r.state is TxState.PREPARED]
            self.log.event(
                "recovered",
                ("records", len(records)),
                ("prepared", ",".join(prepared) or "-"),
                ("storage_server", c.storage_server),
                ("version", c.version),
            )
        self._perform(self.core.recover(), conn=None)
        await self._server.start_serving()
        # Only now: a reader of this line may connect at once (readiness signal).
        self.log.event(
            "listening",
            ("addr", self.name),
            ("pid", os.getpid()),
            ("name", name),
            ("storage_server", c.storage_server),
            ("version", c.version),
            ("lock", c.lock or "-"),
            ("records", len(records)),
            ("data", self.storage.path),
        )
        self.log.flush()
        return self.address

    async def stop(self) -> None:
        """Stop accepting, finish durable writes, close everything."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for handle in self._timers.values():
            handle.cancel()
        for conn in list(self._conns.values()):
            if conn.timer is not None:
                conn.timer.cancel()
            if conn.transport is not None:
                conn.transport.close()
        for link in self._peers.values():
            link.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._gc is not None:
            self._gc.close()
        self.log.event("stopped")
        self.log.flush()

    # ------------------------------------------------------------ inputs

    def _accepted(self, conn: _Inbound) -> None:
        assert conn.transport is not None
        if self._closing:
            conn.transport.close()
            return
        conn.id = self._next_conn = self._next_conn + 1
        self._conns[conn.id] = conn
        if self.crash is not None:
            # A crash point after a send must know the bytes are the kernel's:
            # with no buffer allowed, resume_writing says when (see _pump_queue).
            conn.transport.set_write_buffer_limits(high=0)

    def _on_eof(self, conn: _Inbound) -> None:
        if not conn.refused:
            conn.refused = True
            conn.queue.append(_Output(self._barrier, None))
            self._pump(conn)

    def _closed(self, conn: _Inbound, exc: Exception | None) -> None:
        self._conns.pop(conn.id, None)
        self._blocked.discard(conn)
        conn.queue.clear()
        if conn.timer is not None:
            conn.timer.cancel()
        if exc is not None and not self._closing:
            self.log.event("disconnect", ("peer", conn.peer), ("error", type(exc).__name__))

    def _on_data(self, conn: _Inbound, data: bytes) -> None:
        if conn.refused or self._closing:
            return
        try:
            lines = conn.buffer.feed(data)
        except DecodeError as e:
            self._refuse(conn, e)
            return
        assert self.core is not None
        for line in lines:
            try:
                msg = decode(line)
            except DecodeError as e:
                self._refuse(conn, e)
                return
            # Logged as it came (decode accepted it, so it is one clean line).
            self.log.message("recv", conn.peer, line.decode().strip(" \t\r"))
            self._perform(self.core.on_request(conn.id, msg), conn=conn)
            if conn.refused:  # the core closed it: read no further
                return
        if conn.buffer.error is not None:  # the lines before it were answered
            self._refuse(conn, conn.buffer.error)

    def _refuse(self, conn: _Inbound, e: DecodeError) -> None:
        """Their fault: say why (after the replies before it), close, change nothing."""
        self.log.event("bad-input", ("peer", conn.peer), ("code", e.code), ("detail", e.detail))
        conn.queue.append(_Output(self._barrier, encode_text(Error(code=e.code, detail=e.detail))))
        conn.queue.append(_Output(self._barrier, None))
        conn.refused = True
        self._pump(conn)

    def _timeout(self, txid: str) -> None:
        self._timers.pop(txid, None)
        if self._closing or self.core is None:
            return
        self.log.event("timeout", ("txid", txid), ("after_s", self.resolve_after))
        self._perform(self.core.on_timeout(txid), conn=None)

    def _peer_reply(self, peer: str, msg: Message) -> None:
        if self._closing or self.core is None:
            return
        self._perform(self.core.on_peer_reply(peer, msg), conn=None)

    # ------------------------------------------------------------ actions

    def _perform(self, actions: list[Action], conn: _Inbound | None) -> None:
        """Run the core's actions. A reply or close is queued on ``conn`` behind
        the persists issued before it (its barrier), so it leaves only once
        they are durable; a message to a peer likewise. Lazy persists (a commit)
        hold nothing back."""
        gc = self._gc
        assert gc is not None
        for action in actions:
            match action:
                case Persist():
                    seq = gc.submit(action)
                    if action.lazy:
                        if self.crash:
                            self._lazy[action.record.txid] = seq
                    else:
                        self._barrier = seq
                case Reply() | Close():
                    if conn is None or action.conn != conn.id:
                        raise AssertionError(f"core replied on connection {action.conn}, input came on {conn}")
                    if isinstance(action, Close):
                        conn.queue.append(_Output(self._barrier, None))
                        conn.refused = True
                    else:
                        msg = action.msg
                        conn.queue.append(
                            _Output(
                                # STATE reports the version: never one a crash could take back.
                                gc.issued if isinstance(msg, State) else self._barrier,
                                encode_text(msg),
                                yes_vote=isinstance(msg, Vote) and msg.yes,
                                ahead_of=self._lazy.get(msg.txid, 0)
                                if isinstance(msg, Outcome) and msg.state is TxState.COMMITTED
                                else 0,
                                # The seed's slow pace, for people watching; STATUS stays prompt
                                # so that harness.status and the runner see the participant alive.
                                paced=bool(self.delay) and not isinstance(msg, State),
                            )
                        )
                case SendPeer():
                    link = self._peers.get(action.peer)
                    if link is None:
                        link = self._peers[action.peer] = _PeerLink(self, action.peer)
                    self._spawn(link.send(action.msg, self._barrier))
                case StartTimer():
                    if (old := self._timers.pop(action.txid, None)) is not None:
                        old.cancel()
                    loop = asyncio.get_running_loop()
                    self._timers[action.txid] = loop.call_later(self.resolve_after, self._timeout, action.txid)
                case CancelTimer():
                    if (old := self._timers.pop(action.txid, None)) is not None:
                        old.cancel()
        if conn is not None:
            if conn.queue and conn.queue[-1].barrier > self._barrier:
                gc.write_soon()  # a STATE waits for a lazy record: do not let it wait 20 ms
            self._pump(conn)

    def _pump(self, conn: _Inbound) -> None:
        """Send the outputs at the head of ``conn``'s queue whose persists are durable."""
        gc = self._gc
        transport = conn.transport
        assert gc is not None and transport is not None
        if conn.timer is not None:  # held by --delay: _paced pumps it
            return
        self._pump_queue(conn, gc, transport)
        if conn.queue_full != (len(conn.queue) >= MAX_QUEUED):
            conn.queue_full = not conn.queue_full
            conn.update_reading()

    def _pump_queue(self, conn: _Inbound, gc: GroupCommit, transport: asyncio.Transport) -> None:
        while conn.queue:
            out = conn.queue[0]
            if out.barrier > gc.durable:
                self._blocked.add(conn)  # _durable pumps it again
                return
            if out.paced:
                now = asyncio.get_running_loop().time()
                if out.due is None:
                    out.due = now + self.delay
                if now < out.due:
                    conn.timer = asyncio.get_running_loop().call_at(out.due, self._paced, conn)
                    return
            conn.queue.popleft()
            if transport.is_closing():
                conn.queue.clear()
                return
            if out.text is None:
                self.log.flush()
                transport.close()
                conn.queue.clear()
                return
            if out.yes_vote and self.crash:
                self.crash.reached("before-vote", self.log)
            self.log.message("send", conn.peer, out.text)
            self.log.flush()  # the log before the world: nothing leaves unlogged
            transport.write(f"{out.text}\n".encode())
            if self.crash and (out.yes_vote or out.ahead_of):
                if transport.get_write_buffer_size():
                    conn.crash_on_drain.append(out)  # once the bytes are out (resume_writing)
                else:
                    self._sent(out)

    def _sent(self, out: _Output) -> None:
        """``out`` has reached the kernel: the crash point it marks, if any."""
        assert self.crash is not None and self._gc is not None
        if out.yes_vote:
            self.crash.reached("after-vote", self.log)
        elif out.ahead_of > self._gc.durable:  # still ahead of its record
            self.crash.reached("after-commit-reply", self.log)

    def _paced(self, conn: _Inbound) -> None:
        conn.timer = None
        self._pump(conn)

    def _durable(self, batch: list[Persist]) -> None:
        if self.crash and any(p.record.state is TxState.COMMITTED for p in batch):
            for p in batch:
                self._lazy.pop(p.record.txid, None)
            self.crash.reached("after-commit", self.log)
        if self._blocked:
            blocked, self._blocked = self._blocked, set()
            for conn in blocked:
                self._pump(conn)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _PeerLink:
    """An outgoing connection to a peer participant, for RESOLVE and its replies.

    Any failure just drops the message: the resolve timer asks again."""

    def __init__(self, node: ParticipantNode, peer: str) -> None:
        self.node = node
        self.peer = peer
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None

    async def send(self, msg: Message, barrier: int) -> None:
        node = self.node
        assert node._gc is not None
        await node._gc.wait(barrier)
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                try:
                    host, port = self.node.routes.get(self.peer) or parse_address(self.peer)
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port, limit=READ_CHUNK), CONNECT_TIMEOUT
                    )
                except (OSError, TimeoutError, ValueError) as e:
                    node.log.event("unreachable", ("peer", self.peer), ("error", str(e) or type(e).__name__))
                    return
                self._writer = writer
                self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))
            node.log.message("send", self.peer, msg)
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
                    self.node.log.message("recv", self.peer, msg)
                    self.node._peer_reply(self.peer, msg)
                if buffer.error is not None:
                    raise buffer.error
        except (ConnectionError, DecodeError) as e:
            self.node.log.event("disconnect", ("peer", self.peer), ("error", str(e) or type(e).__name__))
        finally:
            writer.close()
            if self._writer is writer:  # not a newer connection made meanwhile
                self._writer = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


# ====================================================================== client


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


@dataclass
class _Txn:
    core: co.CoordinatorCore
    done: asyncio.Future[None]
    timers: dict[co.Timer, asyncio.TimerHandle] = field(default_factory=dict)
    report: co.Report | None = None
    sends: asyncio.Queue[co.Send] | None = None  # only with --delay: sends go one by one
    sent: dict[str, int] = field(default_factory=dict)  # messages written, by verb (crash points)


class _ToParticipant(asyncio.Protocol):
    """One connection of a client to a participant: replies are handled in the
    event loop's own callback as they arrive (no reader task)."""

    def __init__(self, link: _ServerLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.buffer = LineBuffer()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        link, client = self.link, self.link.client
        try:
            for line in self.buffer.feed(data):
                msg = decode(line)
                client.log.message("recv", link.name, line.decode().strip(" \t\r"))
                client._received(link, msg)
            if self.buffer.error is not None:
                raise self.buffer.error
        except DecodeError as e:
            client.log.event("disconnect", ("peer", link.name), ("error", str(e) or type(e).__name__))
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            error = str(exc) or type(exc).__name__
            self.link.client.log.event("disconnect", ("peer", self.link.name), ("error", error))
        self.resume_writing()
        if not self.closed.done():
            self.closed.set_result(None)
        self.link._lost(self)

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
                    loop.create_connection(lambda: _ToParticipant(self), self.host, self.port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as e:
                self.client.log.event("unreachable", ("peer", self.name), ("error", str(e) or type(e).__name__))
                return False
            if self.client.crash is not None:
                transport.set_write_buffer_limits(high=0)  # see _ToParticipant.drain
            self.conn = conn
            return True

    def send(self, msg: Message) -> None:
        """Log and send one message now."""
        text = encode_text(msg)
        self.client.log.message("send", self.name, text)
        self.client.log.flush()  # the log before the world: nothing leaves unlogged
        self.write(text)

    def write(self, text: str) -> None:
        """Send a wire line already logged (and flushed)."""
        assert self.conn is not None and self.conn.transport is not None
        self.conn.transport.write(f"{text}\n".encode())

    def _lost(self, conn: _ToParticipant) -> None:
        if self.conn is conn:  # not a newer connection made meanwhile
            self.conn = None
        self.client._lost(self)


class ClientNode:
    """A client: coordinates transactions over persistent connections."""

    def __init__(
        self,
        name: str,
        servers: list[tuple[str, int]],
        log: EventLog,
        *,
        timeout: float = 2.0,
        delay: float = 0.0,
        crash: CrashPlan | None = None,
        retry_interval: float = 0.05,
    ) -> None:
        self.name = name
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
        self.log.event("connected", ("pid", os.getpid()), ("participants", ",".join(self.participants)))

    def new_txid(self) -> str:
        self._seq += 1
        return f"{self._txid_prefix}-{self._seq}"

    async def transact(self, value: int, ordered: bool = False) -> TxResult:
        """Run one transaction writing ``value``; returns once it is finished.
        ``ordered``: prepare the first participant before the others."""
        loop = asyncio.get_running_loop()
        txid = self.new_txid()
        core = co.CoordinatorCore(txid=txid, value=value, participants=self.participants, ordered=ordered)
        txn = _Txn(core=core, done=loop.create_future())
        self._txns[txid] = txn
        started = time.perf_counter()
        self.log.event(
            "begin",
            ("txid", txid),
            ("value", value),
            ("participants", ",".join(self.participants)),
            ("prepare", "ordered" if ordered else "parallel"),
        )

        if self.delay:
            txn.sends = asyncio.Queue()
            sender = loop.create_task(self._paced_sender(txn))
        try:
            self._feed(txn, txn.core.start())
            await txn.done
        finally:
            for handle in txn.timers.values():
                handle.cancel()
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
        loop = asyncio.get_running_loop()
        direct: list[tuple[_ServerLink, str]] = []
        for action in actions:
            match action:
                case co.Send():
                    link = self._by_name[action.to]
                    if txn.sends is not None:
                        txn.sends.put_nowait(action)
                    elif self.crash is None and link.connected:
                        # The common case: no task per message (measured x1.4), and
                        # the fan-out logged in one write before it leaves.
                        text = encode_text(action.msg)
                        self.log.message("send", link.name, text)
                        direct.append((link, text))
                    else:
                        task = loop.create_task(self._send(txn, action))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                case co.SetTimer():
                    if (old := txn.timers.pop(action.timer, None)) is not None:
                        old.cancel()
                    delay = self.timeout if action.timer is co.Timer.PHASE else self.retry_interval
                    txn.timers[action.timer] = loop.call_later(delay, self._timeout, txn, action.timer)
                case co.Report():
                    txn.report = action
                    self.log.event(
                        "decide", ("txid", txn.core.txid), ("result", action.result.value), ("reason", action.reason)
                    )
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
        point = {("PREPARE", len(self.links)): "after-prepare", ("COMMIT", 1): "after-first-commit"}.get(
            (kind, txn.sent[kind])
        )
        if point is not None and link.conn is not None:
            await link.conn.drain()
            self.crash.reached(point, self.log)

    def _timeout(self, txn: _Txn, timer: co.Timer) -> None:
        txn.timers.pop(timer, None)
        if txn.core.phase is not co.Phase.DONE:
            self.log.event("timeout", ("txid", txn.core.txid), ("timer", timer.value), ("phase", txn.core.phase.value))
            self._feed(txn, txn.core.on_timeout(timer))

    def _received(self, link: _ServerLink, msg: Message) -> None:
        if isinstance(msg, State):
            if link.status is not None and not link.status.done():
                link.status.set_result(msg)
            return
        txid = getattr(msg, "txid", None)
        txn = self._txns.get(txid) if txid else None
        if txn is None:
            if isinstance(msg, Error):
                self.log.event("error-reply", ("peer", link.name), ("code", msg.code), ("detail", msg.detail))
            return  # a late reply to a finished transaction
        self._feed(txn, txn.core.on_reply(link.name, msg))

    def _lost(self, link: _ServerLink) -> None:
        for txn in list(self._txns.values()):
            if txn.core.phase is not co.Phase.DONE:
                self._feed(txn, txn.core.on_connection_lost(link.name))


# ====================================================================== status


async def query_status(address: tuple[str, int], timeout: float = 2.0) -> State:
    """Ask one participant for its STATE. Raises OSError or TimeoutError if it
    cannot be reached or does not answer, ValueError if it answers nonsense."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(*address, limit=READ_CHUNK)
        try:
            writer.write(encode(Status()))
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    if not line:
        raise ConnectionError("closed the connection without answering")
    try:
        msg = decode(line)
    except DecodeError as e:
        raise ValueError(f"bad STATE reply: {e}") from None
    if not isinstance(msg, State):
        raise ValueError(f"answered {msg.kind.value} to STATUS")
    return msg


async def query_all(addresses: list[tuple[str, int]], timeout: float = 2.0) -> list[State | str]:
    """STATE of every participant, or the error (as text) for those that failed."""

    async def one(address: tuple[str, int]) -> State | str:
        try:
            return await query_status(address, timeout)
        except TimeoutError:
            return f"no answer in {timeout}s"
        except (OSError, ValueError) as e:
            return str(e) or type(e).__name__

    return list(await asyncio.gather(*(one(a) for a in addresses)))
