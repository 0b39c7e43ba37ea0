"""A byte relay on loopback between clients and clusters: cuts a client off a cluster.

Theory of operation. harness.experiment.proxy forwards our protocol line by
line; PostgreSQL speaks a binary protocol, so this relay forwards bytes. One
listener per link (clientN -> pgK) on a loopback port, forwarding to the
cluster's port. A link can be severed (its connections cut, new ones
refused: the listener is closed) and healed (listening again on the same
port), or armed to sever itself once the cluster's reply to PREPARE
TRANSACTION (the CommandComplete tag ``PREPARE TRANSACTION``) has passed to
the client: the client is cut right after its PREPARE, as the issue asks.

It runs in its own process with an asyncio loop, driven by the runner over a
pipe: ("add", src, dst, port) -> listening port; ("sever", [names]);
("heal", [names]); ("arm", name).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.connection
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.events.log import EventLog
from harness.events.schema import CUT
from harness.experiment.processes import MP, Processes, RunError
from harness.node import event_loop

HOST = "127.0.0.1"
PREPARED_TAG = b"PREPARE TRANSACTION\x00"  # the CommandComplete of PREPARE TRANSACTION


@dataclass
class RelayLink:
    src: str
    dst: str
    target: int
    port: int = 0
    armed: bool = False
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"


class Relay:
    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.links: dict[str, RelayLink] = {}

    async def listen(self, link: RelayLink) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, link.target)
            except OSError:
                writer.close()
                return
            link.writers |= {writer, up_writer}
            await asyncio.gather(
                self._copy(link, reader, up_writer, watch=False),
                self._copy(link, up_reader, writer, watch=True),
                return_exceptions=True,
            )
            link.writers -= {writer, up_writer}

        link.server = await asyncio.start_server(accept, HOST, link.port)
        link.port = link.server.sockets[0].getsockname()[1]

    async def _copy(
        self, link: RelayLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: bool
    ) -> None:
        tail = b""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                if watch and link.armed:
                    seen = tail + data
                    tail = seen[-len(PREPARED_TAG) :]
                    if PREPARED_TAG in seen:
                        link.armed = False
                        self.log.write(CUT, link=link.name, after="PREPARE TRANSACTION")
                        self.sever(link)
                        return
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()

    def sever(self, link: RelayLink) -> None:
        if link.server is not None:
            link.server.close()
            link.server = None
        for w in list(link.writers):
            w.transport.abort()
        link.writers.clear()

    async def command(self, cmd: tuple[Any, ...]) -> Any:
        match cmd:
            case ("add", src, dst, target):
                link = RelayLink(src, dst, target)
                self.links[link.name] = link
                await self.listen(link)
                return link.port
            case ("sever", names):
                for n in names:
                    self.sever(self.links[n])
                return None
            case ("heal", names):
                for n in names:
                    if self.links[n].server is None:
                        await self.listen(self.links[n])
                return None
            case ("arm", name):
                self.links[name].armed = True
                return None
        raise ValueError(f"unknown relay command {cmd!r}")


async def serve(conn: multiprocessing.connection.Connection, log: EventLog) -> None:
    relay = Relay(log)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            queue.put_nowait(conn.recv())
        except EOFError:  # the runner is gone: stop
            loop.remove_reader(conn.fileno())
            queue.put_nowait(None)

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ready", None))
    while (cmd := await queue.get()) is not None:
        try:
            conn.send(("ok", await relay.command(cmd)))
        except (ValueError, KeyError, OSError) as e:
            conn.send(("error", str(e)))
        log.flush()


def relay_child(conn: Any, log_path: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = EventLog(log_path, "relay", buffered=True)
    with contextlib.suppress(EOFError):
        event_loop.run(serve(conn, log))
    log.close()


class RelayHandle:
    """The runner's end of the relay process."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.ports: dict[str, int] = {}

    @classmethod
    def start(cls, procs: Processes, folder: Path) -> RelayHandle:
        parent, child = MP.Pipe()
        proc = procs.start(relay_child, (child, folder / "relay.log"), "relay")
        child.close()
        procs.held.append(parent)
        if not parent.poll(10) or parent.recv()[0] != "ready" or not proc.is_alive():
            raise RunError("the relay did not start")
        return cls(parent)

    def call(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        if not self.conn.poll(10):
            raise RunError(f"the relay did not answer {cmd[0]}")
        kind, payload = self.conn.recv()
        if kind == "error":
            raise RunError(f"relay: {payload}")
        return payload

    def link(self, src: str, dst: str, target: int) -> int:
        port = int(self.call("add", src, dst, target))
        self.ports[f"{src}->{dst}"] = port
        return port
