"""A participant's SQLite records: what is written is what a restart loads."""

from __future__ import annotations

import sqlite3
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


# ---------------------------------------------------------------- storage that cannot lie (docs/security.md)


def _written(path: Path) -> list[TxRecord]:
    s = Storage(path, "server1", cluster=ALL)
    records = [record(f"t{i}", TxState.COMMITTED, i) for i in range(1, 21)] + [record("p", TxState.PREPARED)]
    s.write(records)
    s.close()
    return records


def test_every_single_bit_flip_is_refused_or_changes_nothing(tmp_path: Path) -> None:
    import random

    path = tmp_path / "s.sqlite3"
    records = sorted(_written(path), key=lambda r: r.txid)
    pristine = path.read_bytes()
    rng = random.Random(5)
    refused = same = 0
    for _ in range(300):
        data = bytearray(pristine)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        for leftover in tmp_path.glob("s.sqlite3-*"):
            leftover.unlink()
        try:
            s = Storage(path, "server1", cluster=ALL, create=False)
            try:
                loaded = sorted(s.load(), key=lambda r: r.txid)
            finally:
                s.close()
        except StorageError:
            refused += 1
            continue
        assert loaded == records, f"bit {bit} changed a record silently"
        same += 1
    assert refused > 0 and refused + same == 300


def test_a_row_edited_or_copied_from_another_store_fails_its_checksum(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "s.sqlite3"
    _written(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE txns SET value = 999 WHERE txid = 't3'")
    db.commit()
    db.close()
    s = Storage(path, "server1", cluster=ALL, create=False)
    with pytest.raises(StorageError, match="'t3' fails its checksum"):
        s.load()
    s.close()
    # a row copied, checksum and all, from another store of the same node is foreign
    other = tmp_path / "other.sqlite3"
    _written(other)
    db = sqlite3.connect(path)
    db.execute("ATTACH ? AS o", (str(other),))
    db.execute("DELETE FROM txns")
    db.execute("INSERT INTO txns SELECT * FROM o.txns")
    db.commit()
    db.close()
    s = Storage(path, "server1", cluster=ALL, create=False)
    with pytest.raises(StorageError, match="fails its checksum"):
        s.load()
    s.close()


def test_a_store_of_another_cluster_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    _written(path)
    with pytest.raises(StorageError, match="belongs to cluster"):
        Storage(path, "server1", cluster=(*ALL[:2], "127.0.0.1:9"))


@pytest.mark.parametrize("how", ["missing", "zero-length"])
def test_without_create_an_empty_store_is_missing_not_fresh(tmp_path: Path, how: str) -> None:
    from harness.node.storage import StoreMissing

    path = tmp_path / "s.sqlite3"
    if how == "zero-length":
        path.write_bytes(b"")
    with pytest.raises(StoreMissing):
        Storage(path, "server1", cluster=ALL, create=False)
    assert how == "zero-length" or not path.exists()  # nothing was made


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_data_file_deleted_or_replaced_under_an_open_store_fails_the_next_write(tmp_path: Path, how: str) -> None:
    path = tmp_path / "s.sqlite3"
    s = Storage(path, "server1", cluster=ALL)
    s.write([record("t1", TxState.PREPARED)])
    for f in tmp_path.glob("s.sqlite3*"):
        f.unlink()
    if how == "replaced":
        Storage(path, "server1", cluster=ALL).close()
    with pytest.raises(StorageError, match="deleted or replaced"):
        s.write([record("t1", TxState.COMMITTED, 1)])
    s.close()


@pytest.mark.parametrize("seed", range(6))
def test_damaged_files_are_refused_in_one_line_or_read_back_intact(tmp_path: Path, seed: int) -> None:
    """Truncations, garbage, zeroed pages and header damage: never a traceback, never a silent change."""
    import os
    import random

    path = tmp_path / "s.sqlite3"
    records = sorted(_written(path), key=lambda r: r.txid)
    pristine = path.read_bytes()
    rng = random.Random(seed)
    for _ in range(40):
        data = bytearray(pristine)
        how = rng.randrange(4)
        if how == 0:
            data = data[: rng.randrange(len(data))]
        elif how == 1:
            i = rng.randrange(len(data))
            data[i : i + 64] = rng.randbytes(64)
        elif how == 2:
            page = rng.randrange(len(data) // 4096)
            data[page * 4096 : (page + 1) * 4096] = bytes(4096)
        else:
            data[rng.randrange(100)] ^= 0xFF  # the 100-byte SQLite header
        for leftover in tmp_path.glob("s.sqlite3-*"):
            os.unlink(leftover)
        path.write_bytes(bytes(data))
        try:
            s = Storage(path, "server1", cluster=ALL, create=False)
            try:
                loaded = sorted(s.load(), key=lambda r: r.txid)
            finally:
                s.close()
        except StorageError as e:
            assert "\n" not in str(e)
            continue
        assert loaded == records


def test_a_batch_applies_its_rows_in_order_and_the_store_can_be_read_while_open(tmp_path: Path) -> None:
    """A batch is one INSERT of many rows (a later row of a txid wins, as written), or BEGIN,
    executemany, COMMIT past 32 rows; a person's sqlite3 may read the store meanwhile."""
    path = tmp_path / "server1.sqlite3"
    s = Storage(path, "server1", durable=False)
    try:
        s.write([record("t1", TxState.PREPARED), record("t1", TxState.COMMITTED, 1), record("t2", TxState.PREPARED)])
        s.write([record(f"m{i}", TxState.ABORTED) for i in range(40)] + [record("t2", TxState.ABORTED)])
        other = sqlite3.connect(path, timeout=0)
        try:
            assert other.execute("SELECT count(*) FROM txns").fetchone() == (42,)
        finally:
            other.close()
        s.write([record("t3", TxState.PREPARED)])  # and written after it
    finally:
        s.close()
    again = Storage(path, "server1", create=False)
    try:
        loaded = {r.txid: r for r in again.load()}
    finally:
        again.close()
    assert loaded["t1"] == record("t1", TxState.COMMITTED, 1) and loaded["t2"] == record("t2", TxState.ABORTED)
    assert len(loaded) == 43
