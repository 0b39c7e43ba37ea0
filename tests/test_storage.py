"""A participant's SQLite records: what is written is what a restart loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.node.storage import Storage, StorageError
from harness.protocol.messages import TxState
from harness.protocol.participant import TxRecord

ALL = ("127.0.0.1:8886", "127.0.0.1:8887", "127.0.0.1:8888")


def record(txid: str, state: TxState, version: int = 0) -> TxRecord:
    return TxRecord(txid=txid, state=state, value=7, participants=ALL, version=version)


@pytest.mark.parametrize("durable", [True, False])
def test_single_and_batched_writes_survive_a_reopen(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "server1.sqlite3"
    s = Storage(path, "server1", durable=durable)
    s.write([record("t1", TxState.PREPARED)])  # one record: a statement of its own
    s.write([record("t2", TxState.ABORTED), record("t1", TxState.COMMITTED, 1)])  # a batch: one transaction
    s.close()
    again = Storage(path, "server1", durable=durable)
    try:
        assert sorted(again.load(), key=lambda r: r.txid) == [
            record("t1", TxState.COMMITTED, 1),  # the later write of t1 replaced the earlier
            record("t2", TxState.ABORTED),
        ]
    finally:
        again.close()


def test_a_data_file_of_another_participant_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.sqlite3"
    Storage(path, "server1").close()
    with pytest.raises(StorageError, match="belongs to participant server1"):
        Storage(path, "server2")
