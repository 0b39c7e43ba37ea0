"""The event log's buffering: fewer writes, and never behind what a node does."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from harness.events import log as eventlog
from harness.events.log import EventLog, read_log
from harness.events.schema import BEGIN, DURABLE, RECV, SEND, STOPPED, TIMEOUT
from harness.protocol.messages import TxState, Vote
from harness.protocol.participant import TxRecord


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    writes: list[bytes] = []
    real = os.write

    def write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(eventlog.os, "write", write)
    return writes


def test_unbuffered_log_writes_each_line_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _count_writes(monkeypatch)
    log = EventLog(tmp_path / "n.log", "n1")
    log.write(BEGIN, txid="t1", value=7, participants="p1,p2")
    assert len(writes) == 1
    assert writes[0].endswith(b" n1 begin txid=t1 value=7 participants=p1,p2\n")
    log.close()


def test_buffered_lines_go_out_in_one_write_on_flush_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _count_writes(monkeypatch)
    path = tmp_path / "n.log"

    async def scenario() -> None:
        log = EventLog(path, "n1", buffered=True)
        log.write(BEGIN, txid="t1", value=7, participants="p1,p2")
        log.message(SEND, "127.0.0.1:8886", Vote(txid="t1", yes=False, reason="locked by t0"))
        assert writes == [] and path.read_text() == ""
        log.flush()
        assert len(writes) == 1
        log.close()

    asyncio.run(scenario())
    lines = list(read_log(path))
    assert [line.event for line in lines] == ["begin", "send"]
    assert lines[1].fields == {
        "peer": "127.0.0.1:8886",
        "msg": "VOTE",
        "txid": "t1",
        "vote": "NOK",
        "reason": "locked by t0",
    }


def test_buffered_lines_flush_by_themselves_on_the_running_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = _count_writes(monkeypatch)
    monkeypatch.setattr(eventlog, "FLUSH_AFTER", 0.0)  # the next pass of the loop
    path = tmp_path / "n.log"

    async def scenario() -> None:
        log = EventLog(path, "n1", buffered=True)
        log.write(TIMEOUT, txid="t1")
        log.write(TIMEOUT, txid="t2")
        assert writes == []
        for _ in range(3):  # yield to the loop: no sleeping for time
            await asyncio.sleep(0)
        assert len(writes) == 1
        assert [line.fields["txid"] for line in read_log(path)] == ["t1", "t2"]
        log.close()

    asyncio.run(scenario())


def test_buffered_log_without_a_running_loop_writes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "n.log"
    log = EventLog(path, "n1", buffered=True)
    log.write(STOPPED)
    assert path.read_text().endswith(" n1 stopped\n")
    log.close()


def test_message_line_is_the_wire_line_after_msg(tmp_path: Path) -> None:
    """A message is logged as peer=... msg=<its wire line>, from the message or
    from its wire text alike."""
    path = tmp_path / "n.log"
    log = EventLog(path, "n1")
    vote = Vote(txid="t1", yes=False, reason='say "no"')
    log.message(RECV, "h:1", vote)
    log.message(RECV, "h:1", 'VOTE txid=t1 vote=NOK reason="say \\"no\\""')
    log.close()
    first, second = path.read_text().splitlines()
    expected = 'n1 recv peer=h:1 msg=VOTE txid=t1 vote=NOK reason="say \\"no\\""'
    assert first.split(" ", 1)[1] == second.split(" ", 1)[1] == expected


def test_lines_after_the_loop_ended_are_not_stuck_behind_its_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "n.log"
    log = EventLog(path, "n1", buffered=True)

    async def write(txid: str) -> None:
        log.write(TIMEOUT, txid=txid)

    asyncio.run(write("t1"))  # the loop ends before its flush timer fires
    log.write(TIMEOUT, txid="t2")  # no loop now: written at once, t1 first
    assert [line.fields["txid"] for line in read_log(path)] == ["t1", "t2"]

    monkeypatch.setattr(eventlog, "FLUSH_AFTER", 0.0)  # the next pass of the loop

    async def write_and_yield(txid: str) -> None:
        log.write(TIMEOUT, txid=txid)
        for _ in range(3):  # yield to the loop: its own timer flushes, no sleeping for time
            await asyncio.sleep(0)
        assert [line.fields["txid"] for line in read_log(path)][-1] == txid

    asyncio.run(write("t3"))  # the first loop's timer is gone with it ...
    asyncio.run(write_and_yield("t4"))  # ... and a new loop gets a timer of its own
    assert [line.fields["txid"] for line in read_log(path)] == ["t1", "t2", "t3", "t4"]
    log.close()


@pytest.mark.parametrize("why", [None, "vote yes", "vote no: locked by c2-1", 'odd "reason"\n', ""])
@pytest.mark.parametrize("participants", [("127.0.0.1:1", "127.0.0.1:2"), (), ("h:1",)])
def test_log_record_writes_what_the_schema_writes(
    tmp_path: Path, why: str | None, participants: tuple[str, ...]
) -> None:
    """log_record formats a record's line by hand (and remembers quoted lists and reasons):
    the same text as EventLog.write through the schema, twice in a row."""
    fast, general = EventLog(tmp_path / "a.log", "server1"), EventLog(tmp_path / "b.log", "server1")
    for state, version in ((TxState.PREPARED, 0), (TxState.COMMITTED, 7)):
        record = TxRecord(txid="c1-x.y:z", state=state, value=-3, participants=participants, version=version)
        for _ in range(2):
            eventlog.log_record(fast, DURABLE, record, why)
            general.write(
                DURABLE,
                txid=record.txid,
                state=state.value,
                value=record.value,
                version=version,
                participants=",".join(participants),
                why=why,
            )
    fast.close()
    general.close()
    strip = [[line.text.split(" ", 1)[1] for line in read_log(tmp_path / name)] for name in ("a.log", "b.log")]
    assert len(strip[0]) == 4 and strip[0] == strip[1]
