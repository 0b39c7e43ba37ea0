"""Compaction in the participant's core: when a decided record is forgotten, and
what a forgotten txid is answered (harness.protocol.participant, "Compaction")."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from harness.events.log import EventLog
from harness.node import participant_node
from harness.node.guard import LoggedStore, last_store_in_log
from harness.node.storage import Storage, StorageError
from harness.protocol import coordinator as co
from harness.protocol.messages import (
    FORGOTTEN,
    MARKS_PAGE,
    MAX_LINE,
    Abort,
    Commit,
    Error,
    Marked,
    Marks,
    Message,
    NokCode,
    Outcome,
    Prepare,
    Resolve,
    TxState,
    Vote,
    encode,
)
from harness.protocol.participant import (
    Action,
    Forget,
    ParticipantCore,
    Persist,
    Reply,
    SendPeer,
    Summary,
    TxRecord,
    parse_txid,
)

ME, PEER = "p1:1", "p2:2"
MEMBERS = (ME, PEER)


def core() -> ParticipantCore:
    return ParticipantCore.restore(ME, [], compact=True)


def replies(actions: list[Action]) -> list[Message]:
    return [a.msg for a in actions if isinstance(a, Reply)]


def forgets(actions: list[Action]) -> list[Forget]:
    return [a for a in actions if isinstance(a, Forget)]


def commit(c: ParticipantCore, txid: str, value: int) -> list[Action]:
    actions = c.on_request(1, Prepare(txid=txid, value=value, participants=MEMBERS))
    return actions + c.on_request(1, Commit(txid=txid))


@pytest.mark.parametrize(
    ("txid", "parsed"),
    [
        ("client1-0a1b2c-7", ("client1-0a1b2c", 7)),
        ("t1-0", ("t1", 0)),
        ("t1", None),
        ("t1-07", None),  # not canonical: would name the same seq as t1-7
        ("t1-x", None),
        ("-5", None),
    ],
)
def test_parse_txid_reads_client_and_seq_at_the_last_dash(txid: str, parsed: tuple[str, int] | None) -> None:
    assert parse_txid(txid) == parsed


def test_committed_record_is_forgotten_after_a_later_commit_and_a_later_txid() -> None:
    c = core()
    commit(c, "a-1", 10)
    # a-2 names a later txid of a, but a-1 is the latest commit: kept (condition (b)).
    commit(c, "a-2", 20)
    assert "a-1" in c.records and "a-2" in c.records
    actions = c.on_request(1, Prepare(txid="a-3", value=30, participants=MEMBERS))
    (forget,) = forgets(actions)
    assert forget.txids == ("a-1",) and forget.marks == (("a", 1),)
    assert forget.summary == Summary(storage_server=20, version=2, committed=1, aborted=0)
    assert actions.index(forget) < next(i for i, a in enumerate(actions) if isinstance(a, Reply))
    assert "a-1" not in c.records and c.forgotten == {"a": 1}
    assert c.status().committed == 2 and c.version == 2


def test_aborted_record_needs_only_a_later_txid() -> None:
    c = core()
    c.on_request(1, Abort(txid="a-1"))
    assert c.records["a-1"].state is TxState.ABORTED
    (forget,) = forgets(c.on_request(1, Prepare(txid="a-2", value=1, participants=MEMBERS)))
    assert forget.txids == ("a-1",) and forget.summary.aborted == 1


def test_nothing_is_forgotten_without_compact_or_for_other_txids() -> None:
    plain = ParticipantCore.restore(ME, [])
    for t in ("a-1", "a-2", "a-3"):
        assert not forgets(commit(plain, t, 1))
    c = core()
    for t in ("x", "y", "z"):
        assert not forgets(commit(c, t, 1))
    assert set(c.records) == {"x", "y", "z"}


def test_other_clients_and_prepared_records_are_not_forgotten() -> None:
    c = core()
    commit(c, "b-1", 1)
    commit(c, "a-1", 2)
    actions = c.on_request(1, Prepare(txid="b-2", value=3, participants=MEMBERS))  # prepared, holds the lock
    assert [f.txids for f in forgets(actions)] == [("b-1",)]
    assert not forgets(c.on_request(1, Prepare(txid="b-3", value=4, participants=MEMBERS)))  # b-2: prepared
    assert "a-1" in c.records and c.records["b-2"].state is TxState.PREPARED  # a: no later txid of a


def test_commit_is_kept_when_the_later_commit_lacks_one_of_its_members() -> None:
    c = core()
    commit(c, "a-1", 1)
    c.on_request(1, Prepare(txid="a-2", value=2, participants=(ME,)))
    c.on_request(1, Commit(txid="a-2"))
    assert c.records["a-2"].state is TxState.COMMITTED
    assert not forgets(c.on_request(1, Prepare(txid="a-3", value=3, participants=MEMBERS)))
    assert "a-1" in c.records  # PEER never voted on a-2: it may still be prepared on a-1


def forgotten_core() -> ParticipantCore:
    c = core()
    commit(c, "a-1", 1)
    commit(c, "a-2", 2)
    c.on_request(1, Prepare(txid="a-3", value=3, participants=MEMBERS))
    assert c.is_forgotten("a-1") and not c.is_forgotten("a-2") and not c.is_forgotten("a-4")
    return c


def test_prepare_of_a_forgotten_txid_votes_nok_and_writes_nothing() -> None:
    c = forgotten_core()
    actions = c.on_request(1, Prepare(txid="a-1", value=1, participants=MEMBERS))
    assert replies(actions) == [Vote(txid="a-1", yes=False, code=NokCode.ABORTED, reason=FORGOTTEN)]
    assert not [a for a in actions if isinstance(a, Persist)] and c.lock == "a-3"


@pytest.mark.parametrize("request_kind", [Commit, Abort, Resolve])
def test_commit_abort_resolve_of_a_forgotten_txid_answer_error_forgotten(request_kind: type) -> None:
    c = forgotten_core()
    actions = c.on_request(1, request_kind(txid="a-1"))
    (msg,) = replies(actions)
    assert isinstance(msg, Error) and msg.code == FORGOTTEN and msg.txid == "a-1"
    assert not [a for a in actions if isinstance(a, Persist)] and "a-1" not in c.records


def test_never_seen_txid_below_the_mark_is_answered_forgotten() -> None:
    c = core()
    commit(c, "a-2", 2)
    commit(c, "a-4", 4)
    c.on_request(1, Prepare(txid="a-5", value=5, participants=MEMBERS))
    assert c.forgotten == {"a": 2}
    (msg,) = replies(c.on_request(1, Resolve(txid="a-1")))  # never seen, and never will vote yes
    assert isinstance(msg, Error) and msg.code == FORGOTTEN


def test_peer_answering_forgotten_makes_a_prepared_participant_abort() -> None:
    c = core()
    c.on_request(1, Prepare(txid="a-1", value=1, participants=MEMBERS))
    actions = c.on_timeout("a-1")
    assert SendPeer(peer=PEER, msg=Resolve(txid="a-1")) in actions
    decided = c.on_peer_reply(PEER, Error(code=FORGOTTEN, txid="a-1", detail=""))
    (persist,) = [a for a in decided if isinstance(a, Persist)]
    assert persist.record.state is TxState.ABORTED and c.lock is None


def test_other_errors_from_a_peer_change_nothing() -> None:
    c = core()
    c.on_request(1, Prepare(txid="a-1", value=1, participants=MEMBERS))
    assert c.on_peer_reply(PEER, Error(code="rejoining", txid="a-1", detail="")) == []
    assert c.on_peer_reply("p9:9", Error(code=FORGOTTEN, txid="a-1", detail="")) == []  # not a member of it
    assert c.records["a-1"].state is TxState.PREPARED


def test_restore_from_summary_marks_and_remaining_records_gives_the_same_state() -> None:
    c = forgotten_core()
    summary = c.summary()
    again = ParticipantCore.restore(ME, list(c.records.values()), compact=True, summary=summary, marks=c.forgotten)
    assert again.status() == c.status()
    assert again.is_forgotten("a-1") and again.forgotten == c.forgotten


def test_rejoined_participant_learns_the_peers_marks() -> None:
    c = ParticipantCore.restore(ME, [], cluster=MEMBERS, rejoining=True, compact=True)
    actions = c.rejoined(5, 3, marks={"a": 7})
    assert forgets(actions)[0].marks == (("a", 7),)
    (vote,) = replies(c.on_request(1, Prepare(txid="a-6", value=1, participants=MEMBERS)))
    assert vote == Vote(txid="a-6", yes=False, code=NokCode.ABORTED, reason=FORGOTTEN)


@pytest.mark.parametrize("phase_reply", ["voting", "finishing"])
def test_coordinator_counts_forgotten_as_acknowledgement_only_when_finishing(phase_reply: str) -> None:
    k = co.CoordinatorCore(txid="a-1", value=1, participants=MEMBERS)
    k.start()
    forgotten = Error(code=FORGOTTEN, txid="a-1", detail="")
    if phase_reply == "voting":
        assert k.on_reply(ME, forgotten) == [] and k.phase is co.Phase.VOTING
        return
    k.on_reply(ME, Vote(txid="a-1", yes=True))
    k.on_reply(PEER, Vote(txid="a-1", yes=True))
    assert k.phase is co.Phase.FINISHING
    k.on_reply(ME, Outcome(txid="a-1", state=TxState.COMMITTED))
    assert k.on_reply(PEER, forgotten) == [co.Finished()]


def test_record_shapes_are_unchanged() -> None:
    # The forget action names what it drops; a record stays a TxRecord.
    r = TxRecord(txid="a-1", state=TxState.ABORTED, value=0, participants=())
    assert Forget(txids=(r.txid,), marks=(("a", 1),), summary=Summary()).txids == ("a-1",)


# ---------------------------------------------------------------- storage (harness.node.storage)


def test_storage_round_trip_drops_forgotten_rows_and_keeps_marks_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "server1.sqlite3"
    c = core()
    s = Storage(path, "server1")
    try:
        for txid, value in (("a-1", 1), ("a-2", 2), ("b-1", 3), ("a-3", 4), ("b-2", 5)):
            actions = commit(c, txid, value)
            s.write(
                [a.record for a in actions if isinstance(a, Persist)],
                [a for a in actions if isinstance(a, Forget)],
            )
    finally:
        s.close()
    again = Storage(path, "server1")
    try:
        records = again.load()
        summary, marks = again.load_compacted()
    finally:
        again.close()
    assert {r.txid for r in records} == set(c.records) and len(records) < 5
    assert summary is not None and (summary.committed, summary.aborted) == (c.forgotten_committed, c.forgotten_aborted)
    assert marks == c.forgotten
    restored = ParticipantCore.restore(ME, records, compact=True, summary=summary, marks=marks)
    assert restored.status() == c.status() and restored.is_forgotten("a-1")


def test_a_forged_mark_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "server1.sqlite3"
    s = Storage(path, "server1")
    s.write([], [Forget(txids=(), marks=(("a", 3),), summary=Summary(version=1, committed=1))])
    s.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE marks SET seq = 1")
    again = Storage(path, "server1")
    try:
        with pytest.raises(StorageError, match="mark of 'a' fails its checksum"):
            again.load_compacted()
    finally:
        again.close()


def test_guard_finds_the_last_checkpoint_not_only_the_last_start(tmp_path: Path) -> None:
    log = tmp_path / "server1.log"
    listening = (
        "2026-01-01T00:00:00.000000Z server1 listening addr=127.0.0.1:1 pid=1 name=127.0.0.1:1 storage_server=0 "
        "version=3 lock=- records=3 data=x store=00aa"
    )
    checkpoint = "2026-01-01T00:00:01.000000Z server1 checkpoint writes=4096 version=9 records=2 store=00aa"
    log.write_text(f"{listening}\n{checkpoint}\n")
    assert last_store_in_log(log) == LoggedStore(store="00aa", version=9)


def test_marks_are_served_in_pages_that_cover_every_client() -> None:
    c = core()
    c.adopt(None, {f"c{i:03d}-x": i for i in range(MARKS_PAGE * 2 + 5)})
    seen: dict[str, int] = {}
    after, pages = "", 0
    while True:
        (page,) = replies(c.on_request(1, Marks(after=after)))
        assert isinstance(page, Marked) and len(page.marks) <= MARKS_PAGE
        assert len(encode(page)) < MAX_LINE
        seen.update(page.marks)
        pages += 1
        if not page.more:
            break
        after = page.marks[-1][0]
    assert seen == c.forgotten and pages == 3


def test_a_running_participant_logs_checkpoints_the_guard_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(participant_node, "CHECKPOINT_EVERY", 2)

    async def scenario() -> None:
        storage = Storage(tmp_path / "s.sqlite3", "server1", durable=False)
        log = EventLog(tmp_path / "s.log", "server1", buffered=True)
        node = participant_node.ParticipantNode(storage, log, compact=True)
        host, port = await node.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for seq in range(1, 6):
                for line in (f"PREPARE txid=a-{seq} value={seq} participants={host}:{port}", f"COMMIT txid=a-{seq}"):
                    writer.write(f"{line}\n".encode())
                    await writer.drain()
                    await reader.readline()
        finally:
            writer.close()
            await node.stop()
            storage.close()
            log.close()

    asyncio.run(scenario())
    text = (tmp_path / "s.log").read_text()
    assert " checkpoint " in text and " forgotten " in text
    found = last_store_in_log(tmp_path / "s.log")
    assert found is not None and found.version >= 3  # a checkpoint after the start's version 0


def test_marks_a_rejoining_peer_learns_cover_records_still_held() -> None:
    # A committed transaction still held (not forgotten) at the peer: the
    # rejoined participant must not vote yes on a duplicate PREPARE of it.
    peer = ParticipantCore.restore(PEER, [], cluster=MEMBERS, compact=True)
    peer.on_request(1, Prepare(txid="a-4", value=9, participants=MEMBERS))
    peer.on_peer_reply(ME, Outcome(txid="a-4", state=TxState.PREPARED))
    assert peer.records["a-4"].state is TxState.COMMITTED and not peer.forgotten
    (marked,) = replies(peer.on_request(2, Marks(after="")))
    assert isinstance(marked, Marked) and dict(marked.marks) == {"a": 4}
    lost = ParticipantCore.restore(ME, [], cluster=MEMBERS, rejoining=True)
    lost.rejoined(9, 1, marks=dict(marked.marks))
    (vote,) = replies(lost.on_request(3, Prepare(txid="a-4", value=9, participants=MEMBERS)))
    assert vote == Vote(txid="a-4", yes=False, code=NokCode.ABORTED, reason=FORGOTTEN)
