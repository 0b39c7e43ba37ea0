"""A participant's per-connection reply queue, driven in-process with a fake transport."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness import nodes
from harness.eventlog import EventLog
from harness.nodes import ParticipantNode, _Inbound
from harness.storage import Storage


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_a_peer_with_too_many_replies_waiting_is_not_read_until_they_leave(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = Storage(tmp_path / "s.sqlite3", "server1", durable=False)
        log = EventLog(tmp_path / "s.log", "server1", buffered=True)
        node = ParticipantNode(storage, log, delay=3600.0)  # every vote held back by --delay
        host, port = await node.start("127.0.0.1", 0)
        me = f"{host}:{port}"
        conn, transport = _Inbound(node), FakeTransport()
        conn.connection_made(transport)
        lines = "".join(f"PREPARE txid=t{i} value={i} participants={me}\n" for i in range(nodes.MAX_QUEUED + 5))
        conn.data_received(lines.encode())
        await asyncio.sleep(0)  # one loop pass: the group commit writes
        assert len(conn.queue) == nodes.MAX_QUEUED + 5 and not transport.reading
        node.delay = 0.0
        for out in conn.queue:
            out.paced = False
        assert conn.timer is not None
        conn.timer.cancel()
        node._paced(conn)  # the delay is over: everything leaves, reading resumes
        assert len(transport.written) == nodes.MAX_QUEUED + 5 and transport.reading
        await node.stop()
        storage.close()
        log.close()

    asyncio.run(scenario())
