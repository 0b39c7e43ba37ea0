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

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from harness.protocol.messages import TxState
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
    """The data file cannot be used (the operator's problem, not the peer's)."""


class Storage:
    """Reads and writes one participant's records."""

    def __init__(self, path: Path, node: str, *, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.executescript(SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='node'").fetchone()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StorageError(f"{path}: {e}") from None
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('node', ?)", (node,))
        elif row[0] != node:
            self._db.close()
            raise StorageError(f"{path} belongs to participant {row[0]}, not {node}: use another --data-dir")

    def load(self) -> list[TxRecord]:
        """Every stored record."""
        rows = self._db.execute("SELECT txid, state, value, participants, version FROM txns").fetchall()
        return [
            TxRecord(txid=t, state=TxState(s), value=v, participants=tuple(p.split(",")) if p else (), version=ver)
            for t, s, v, p, ver in rows
        ]

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
