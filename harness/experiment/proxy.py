"""A fault proxy on loopback: every link between two nodes passes through it.

Theory of operation. For each directed link (a client to a participant, or a
participant to a peer) the proxy listens on its own loopback port and
forwards to the real destination, line by line, so it can delay or drop
whole messages without breaking the framing. A link can be:

* up (the default), with an optional ``delay`` (seconds added to every
  line) and ``drop`` probability (each line lost with it);
* severed: its listener is closed (new connections are refused, as across a
  real partition where nothing gets through) and its open connections are
  cut; ``heal`` opens the listener again on the same port.

A link can also be armed to sever itself right after a line matching a
pattern passes, for faults at an exact protocol point ("cut this client from
that participant just after its yes vote").

The proxy runs in its own process with an asyncio loop; the runner drives it
over a pipe with small command tuples (see :func:`serve`). Randomness (drops)
comes from the seed it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.connection
import random
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.events.log import EventLog
from harness.events.schema import CUT, DROP
from harness.experiment.processes import MP, Processes, RunError
from harness.node import event_loop
from harness.protocol.messages import MAX_LINE

HOST = "127.0.0.1"


@dataclass
class Link:
    """One directed link ``src -> dst`` and its current fault settings."""

    src: str
    dst: str
    target: tuple[str, int]
    port: int = 0
    delay: float = 0.0
    drop: float = 0.0
    severed: bool = False
    cut_after: re.Pattern[str] | None = None  # sever right after a line matching this passes
    server: asyncio.Server | None = None
    pipes: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"


class FaultProxy:
    def __init__(self, log: EventLog, seed: int) -> None:
        self.log = log
        self.rng = random.Random(seed)
        self.links: dict[str, Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, src: str, dst: str, target: tuple[str, int]) -> int:
        link = Link(src=src, dst=dst, target=target)
        self.links[link.name] = link
        await self._listen(link)
        return link.port

    async def _listen(self, link: Link) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._pipe(link, reader, writer)

        link.server = await asyncio.start_server(accept, HOST, link.port, limit=MAX_LINE * 4)
        link.port = link.server.sockets[0].getsockname()[1]

    async def _pipe(self, link: Link, down_reader: asyncio.StreamReader, down_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*link.target, limit=MAX_LINE * 4)
        except OSError:
            down_writer.close()  # the destination is down: so is the link
            return
        link.pipes |= {down_writer, up_writer}
        forward = asyncio.ensure_future(self._copy(link, down_reader, up_writer, forward=True))
        backward = asyncio.ensure_future(self._copy(link, up_reader, down_writer, forward=False))
        try:
            await asyncio.wait([forward, backward], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, backward):
                task.cancel()
            await asyncio.gather(forward, backward, return_exceptions=True)
            for w in (down_writer, up_writer):
                link.pipes.discard(w)
                w.close()

    async def _copy(
        self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, forward: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.LimitOverrunError, ValueError):
            while line := await reader.readline():
                if link.severed:
                    return
                if link.drop and self.rng.random() < link.drop:
                    self.log.write(
                        DROP, link=link.name, forward=forward, line=line[:80].decode(errors="replace").rstrip()
                    )
                    continue
                if link.delay:
                    await asyncio.sleep(link.delay)
                writer.write(line)
                await writer.drain()
                if link.cut_after is not None and link.cut_after.search(line.decode(errors="replace")):
                    link.cut_after = None
                    self.log.write(CUT, link=link.name, after=line[:80].decode(errors="replace").rstrip())
                    self.sever(link.name)
                    return

    def sever(self, name: str) -> None:
        link = self.links[name]
        if link.severed:
            return
        link.severed = True
        if link.server is not None:
            link.server.close()
            link.server = None
        for w in list(link.pipes):
            w.close()
        link.pipes.clear()

    async def heal(self, name: str) -> None:
        link = self.links[name]
        if not link.severed:
            return
        link.severed = False
        await self._listen(link)

    async def command(self, cmd: tuple[Any, ...]) -> Any:
        """Carry out one command from the runner; return its answer."""
        match cmd:
            case ("add", src, dst, target):
                return await self.add(src, dst, tuple(target))
            case ("sever", names):
                for name in names:
                    self.sever(name)
                return None
            case ("heal", names):
                for name in names:
                    await self.heal(name)
                return None
            case ("set", name, delay, drop):
                link = self.links[name]
                link.delay, link.drop = float(delay), float(drop)
                return None
            case ("cut-after", name, pattern):
                self.links[name].cut_after = re.compile(pattern)
                return None
            case _:
                raise ValueError(f"unknown proxy command {cmd!r}")


async def serve(conn: multiprocessing.connection.Connection, log: EventLog, seed: int) -> None:
    """Answer commands from ``conn`` until it closes. Each answer is
    ("ok", value) or ("error", text)."""
    proxy = FaultProxy(log, seed)
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()

    def readable() -> None:
        try:
            ready.put_nowait(conn.recv())
        except EOFError:
            loop.remove_reader(conn.fileno())
            ready.put_nowait(None)

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ok", "ready"))
    while (cmd := await ready.get()) is not None:
        try:
            conn.send(("ok", await proxy.command(cmd)))
        except (ValueError, KeyError, OSError) as e:
            conn.send(("error", str(e)))
    for name in list(proxy.links):
        proxy.sever(name)


class ProxyHandle:
    """The fault proxy process, driven over a pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.links: dict[str, tuple[str, int]] = {}

    @classmethod
    def start(cls, procs: Processes, folder: Path, seed: int) -> ProxyHandle:
        parent, child = MP.Pipe(duplex=True)
        procs.start(proxy_child, (child, folder / "proxy.log", seed), "proxy")
        child.close()
        procs.held.append(parent)
        if not parent.poll(10) or parent.recv() != ("ok", "ready"):
            raise RunError("the fault proxy did not start")
        return cls(parent)

    def call(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        if not self.conn.poll(10):
            raise RunError(f"the fault proxy did not answer {cmd[0]!r}")
        kind, value = self.conn.recv()
        if kind != "ok":
            raise RunError(f"the fault proxy refused {cmd!r}: {value}")
        return value

    def link(self, src: str, dst: str, target: tuple[str, int]) -> tuple[str, int]:
        """The address ``src`` must connect to in order to reach ``dst``."""
        name = f"{src}->{dst}"
        if name not in self.links:
            self.links[name] = (HOST, self.call("add", src, dst, list(target)))
        return self.links[name]


def proxy_child(conn: Any, log_path: Path, seed: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = EventLog(log_path, "proxy")
    event_loop.run(serve(conn, log, seed))
    log.close()
