"""A participant's per-connection reply queue, driven in-process with a fake transport."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness.events.log import EventLog
from harness.node.crash import CrashPlan, CrashPoint, ParticipantCrashPoint
from harness.node.participant_node import MAX_QUEUED, InboundConnection, ParticipantNode
from harness.node.storage import Storage


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
        conn, transport = InboundConnection(node), FakeTransport()
        conn.connection_made(transport)
        lines = "".join(f"PREPARE txid=t{i} value={i} participants={me}\n" for i in range(MAX_QUEUED + 5))
        conn.data_received(lines.encode())
        await asyncio.sleep(0)  # one loop pass: the group commit writes
        assert len(conn.queue) == MAX_QUEUED + 5 and not transport.reading
        node.delay = 0.0
        for out in conn.queue:
            out.paced = False
        assert conn.timer is not None
        conn.timer.cancel()
        node.release_paced(conn)  # the delay is over: everything leaves, reading resumes
        assert len(transport.written) == MAX_QUEUED + 5 and transport.reading
        await node.stop()
        storage.close()
        log.close()

    asyncio.run(scenario())


class _CountingCrash(CrashPlan):
    """A crash plan that counts the passages of its point instead of killing."""

    def reached(self, point: CrashPoint, log: EventLog) -> None:
        if point == self.point:
            self.seen += 1


class _BufferingTransport(FakeTransport):
    """The kernel takes nothing at first: what is written waits in our buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


def test_after_commit_reply_marks_a_reply_ahead_of_its_record_and_nothing_else(tmp_path: Path) -> None:
    async def scenario() -> None:
        # Durable: only writes that fsync wait for the end of a loop pass (harness.node.group_commit).
        storage = Storage(tmp_path / "s.sqlite3", "server1", durable=True)
        log = EventLog(tmp_path / "s.log", "server1", buffered=True)
        crash = _CountingCrash(ParticipantCrashPoint.AFTER_COMMIT_REPLY)
        node = ParticipantNode(storage, log, crash=crash)
        host, port = await node.start("127.0.0.1", 0)
        me = f"{host}:{port}"
        (a, ta), (b, tb) = [(InboundConnection(node), _BufferingTransport()) for _ in range(2)]
        a.connection_made(ta)
        b.connection_made(tb)

        async def passes() -> None:  # the group commit writes at the end of a loop pass
            for _ in range(3):
                await asyncio.sleep(0)

        def replies(t: _BufferingTransport) -> list[str]:
            return b"".join(t.written).decode().splitlines()

        # A COMMIT answered at once, its record still to be written: the point.
        a.data_received(f"PREPARE txid=t1 value=1 participants={me}\n".encode())
        await passes()
        a.data_received(b"COMMIT txid=t1\n")
        assert replies(ta)[-1] == "OUTCOME txid=t1 state=committed"
        assert crash.seen == 0  # not yet: the bytes are still in our buffer
        a.resume_writing()
        assert crash.seen == 1
        a.resume_writing()  # a later drain does not count it again
        assert crash.seen == 1

        # A duplicate COMMIT, answered while the same record is still held: the point again.
        a.data_received(b"COMMIT txid=t1\n")
        a.resume_writing()
        assert replies(ta)[-1] == "OUTCOME txid=t1 state=committed" and crash.seen == 2
        await passes()  # ... until the record is written (with the next write, or 20 ms later)

        # A NOK decided in the same pass as a COMMIT: the commit's reply waits
        # for that write, which carries its record too. Not the point.
        a.data_received(f"PREPARE txid=t2 value=2 participants={me}\n".encode())
        await passes()
        b.data_received(f"PREPARE txid=t3 value=3 participants={me}\n".encode())
        a.data_received(b"COMMIT txid=t2\n")
        assert replies(ta)[-1] == "VOTE txid=t2 vote=ok"  # held until the write
        await passes()
        assert replies(ta)[-1] == "OUTCOME txid=t2 state=committed"
        assert replies(tb)[-1].startswith("VOTE txid=t3 vote=NOK")
        a.resume_writing()
        b.resume_writing()
        assert crash.seen == 2

        # Once the record is durable, a duplicate COMMIT's reply is not the point either.
        a.data_received(b"COMMIT txid=t2\n")
        a.resume_writing()
        assert replies(ta)[-1] == "OUTCOME txid=t2 state=committed" and crash.seen == 2
        await node.stop()
        storage.close()
        log.close()

    asyncio.run(scenario())
