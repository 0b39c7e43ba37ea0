"""A participant's durable state: one SQLite file per participant.

The only table holds one row per transaction (harness.protocol.participant's
TxRecord); the value, version and lock are derived from the rows when the
participant starts, so there is no second copy to fall out of step.

Durability: WAL journal with ``synchronous=FULL`` makes every committed SQLite
transaction durable (the WAL is fsync'd) before :meth:`Storage.write` returns.
``durable=False`` (synchronous=OFF) leaves the flush to the operating system:
it survives a killed process but not a power cut, and is for benchmarks.
Several records can be written in one call: one fsync then covers them all
(group commit).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from harness.events.log import path_problem
from harness.protocol.messages import DecodeError, TxState, parse_participants
from harness.protocol.participant import TxRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS txns (
    txid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    value INTEGER NOT NULL,
    participants TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_UPSERT = "INSERT OR REPLACE INTO txns VALUES (?, ?, ?, ?, ?)"


class StorageError(Exception):
    """The data file cannot be used (the operator's problem, not the peer's): a
    folder that cannot be made or written, a file of another participant."""


class CorruptStorage(StorageError):
    """The data file holds what cannot be decoded: not a database, or a row that
    is not a record. Nothing in it can be trusted to vote or commit on."""


def _unusable(path: Path, e: sqlite3.Error) -> str:
    """Why SQLite cannot open or write ``path``, in the operator's words where we can tell."""
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path.parent} is read-only (SQLite needs to write the file and its journal beside it)"
    return str(e)


class Storage:
    """Reads and writes one participant's records."""

    def __init__(self, path: Path, node: str, *, durable: bool = True) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
        except OSError as e:
            raise StorageError(f"cannot make the data folder {path.parent}: {path_problem(e)}") from None
        except sqlite3.Error as e:
            raise StorageError(f"cannot open {path}: {_unusable(path, e)}") from None
        self.path = path
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.executescript(SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='node'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('node', ?)", (node,))
        except sqlite3.DatabaseError as e:
            self._db.close()
            # OperationalError: the file or its folder cannot be opened or written
            # (read-only, no space): the environment. Anything else: the content.
            if isinstance(e, sqlite3.OperationalError):
                raise StorageError(f"cannot use {path}: {_unusable(path, e)}") from None
            raise CorruptStorage(f"{path} cannot be read: {e}") from None
        if row is not None and row[0] != node:
            self._db.close()
            raise StorageError(f"{path} belongs to participant {row[0]}, not {node}: use another --data-dir")

    def load(self) -> list[TxRecord]:
        """Every stored record. CorruptStorage names a row that is not a record."""
        try:
            rows = self._db.execute("SELECT txid, state, value, participants, version FROM txns").fetchall()
        except sqlite3.DatabaseError as e:
            raise CorruptStorage(f"{self.path} cannot be read: {e}") from None
        records = []
        for t, s, v, p, ver in rows:
            try:
                if not (isinstance(t, str) and isinstance(v, int) and isinstance(p, str) and isinstance(ver, int)):
                    raise ValueError("a field of the wrong type")
                # the participant list as the wire would take it: a peer to resolve with must be an address
                participants = parse_participants(p) if p else ()
                records.append(TxRecord(txid=t, state=TxState(s), value=v, participants=participants, version=ver))
            except DecodeError as e:
                raise CorruptStorage(f"{self.path}: the record of {t!r} cannot be decoded ({e.detail})") from None
            except ValueError as e:
                raise CorruptStorage(f"{self.path}: the record of {t!r} cannot be decoded ({e})") from None
        return records

    def write(self, records: Sequence[TxRecord]) -> None:
        """Store ``records`` in one transaction; durable when this returns."""
        rows = [(r.txid, r.state.value, r.value, ",".join(r.participants), r.version) for r in records]
        if len(rows) == 1:  # one statement is its own transaction: spare the BEGIN and COMMIT calls
            self._db.execute(_UPSERT, rows[0])
            return
        self._db.execute("BEGIN")
        self._db.executemany(_UPSERT, rows)
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


def remove_storage(path: Path) -> list[Path]:
    """Delete a participant's data file and SQLite's files beside it (a fresh start);
    the paths removed. OSError if one exists and cannot be removed."""
    removed = []
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            p.unlink()
            removed.append(p)
    return removed
