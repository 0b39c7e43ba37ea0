"""A participant's durable state: one SQLite file per participant.

The only table holds one row per transaction (harness.protocol.participant's
TxRecord); the value, version and lock are derived from the rows when the
participant starts, so there is no second copy to fall out of step.

Durability: WAL journal with ``synchronous=FULL`` makes every committed SQLite
transaction durable (the WAL is fsync'd) before :meth:`Storage.write` returns.
``durable=False`` (synchronous=OFF) leaves the flush to the operating system:
it survives a killed process but not a power cut, and is for benchmarks.
Several records can be written in one call: one fsync then covers them all
(group commit), in one INSERT statement (its own transaction). SQLite's
normal locking is kept (``locking_mode=EXCLUSIVE`` would spare six fcntl calls
per transaction, but a person reading the file with ``sqlite3`` would then
stop a participant from starting, and be refused while it runs).

Storage that cannot lie (docs/security.md). The file carries its identity in
``meta``: a random store id, the participant (node) and its cluster. Every row
carries a checksum of its fields and the store id, verified on load, so a
flipped bit, a row edited by hand or a row copied from another store is found,
not believed; ``PRAGMA quick_check`` runs at every open. A store without an
identity is *empty*: ``create=False`` refuses it (StoreMissing) instead of
making a new one, so that the caller (harness.node.guard) decides whether an
empty store is a fresh participant or a lost one. Compaction
(harness.protocol.participant) deletes forgotten rows and stores its clients'
high-water marks (``marks``) and the summary of what was forgotten
(``summary``, one row) in the same SQLite transaction, checksummed like the
records, so a crash leaves either the rows or the marks and summary. While open, the data file
and its WAL are watched: every write checks that the paths still name the
files it has open, so a store deleted or replaced underneath a running
participant stops it (StorageError) before the write is acknowledged.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.events.log import path_problem
from harness.protocol.messages import TxState
from harness.protocol.participant import Forget, Summary, TxRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS txns (
    txid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    value INTEGER NOT NULL,
    participants TEXT NOT NULL,
    version INTEGER NOT NULL,
    crc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS marks (client TEXT PRIMARY KEY, seq INTEGER NOT NULL, crc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS summary (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    storage_server INTEGER NOT NULL,
    version INTEGER NOT NULL,
    committed INTEGER NOT NULL,
    aborted INTEGER NOT NULL,
    crc TEXT NOT NULL
);
"""


_UPSERT = "INSERT OR REPLACE INTO txns VALUES (?, ?, ?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 32  # a group commit of more rows goes through BEGIN, executemany, COMMIT


@functools.lru_cache(maxsize=_ROWS_PER_STATEMENT)
def _upsert_rows(n: int) -> str:
    """One INSERT of ``n`` rows (a later row replaces an earlier one of the same txid, as in executemany)."""
    return "INSERT OR REPLACE INTO txns VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * n)


_TABLES = frozenset({"meta", "txns", "marks", "summary"})


class StorageError(Exception):
    """The data file cannot be used (the operator's problem, not the peer's): a
    folder that cannot be made or written, a file of another participant."""


def _unusable(path: Path, e: sqlite3.Error) -> str:
    """Why SQLite cannot open or write ``path``, in the operator's words where we can tell."""
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path.parent} is read-only (SQLite needs to write the file and its journal beside it)"
    return str(e)


class StoreMissing(StorageError):
    """No store, or one without an identity (empty, emptied, never written)."""


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    """Who a store belongs to: written once, when it is made."""

    store: str  # random, per store: a record checksummed under another id is foreign
    node: str
    cluster: tuple[str, ...]  # sorted; empty when made without one


def checksum(store: str, txid: str, state: str, value: int, participants: str, version: int) -> str:
    """A row's checksum: its fields and its store's id (16 hex digits of BLAKE2b)."""
    text = f"{store}\x1f{txid}\x1f{state}\x1f{value}\x1f{participants}\x1f{version}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _mark_crc(store: str, client: str, seq: int) -> str:
    # "mark" is no record state, so no record row can pass for a mark, nor the reverse.
    return checksum(store, client, "mark", seq, "", 0)


def _summary_crc(store: str, value: int, version: int, committed: int, aborted: int) -> str:
    return checksum(store, "", "summary", value, f"{committed},{aborted}", version)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class Storage:
    """Reads and writes one participant's records."""

    def __init__(
        self,
        path: Path,
        node: str,
        *,
        durable: bool = True,
        cluster: Sequence[str] | None = None,
        create: bool = True,
    ) -> None:
        """Open ``path``. ``create``: make a new store (and file) if it has no
        identity; otherwise StoreMissing. ``cluster``: the store must belong to
        it (None: any). StorageError for a store that cannot be used (a folder
        that cannot be made or written), a corrupt one or a foreign one."""
        if not create and not path.exists():
            raise StoreMissing(f"{path} does not exist")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
        except OSError as e:
            raise StorageError(f"cannot make the data folder {path.parent}: {path_problem(e)}") from None
        except sqlite3.Error as e:
            raise StorageError(f"cannot open {path}: {_unusable(path, e)}") from None
        self.path = path
        self.durable = durable  # False: no fsync, a write costs no more alone than batched (harness.node.group_commit)
        self.created = False  # True: this open made the store
        self.preloaded: list[TxRecord] | None = None  # records already loaded and verified (harness.node.guard)
        try:
            self.identity = self._open(
                path, node, durable, tuple(sorted(cluster)) if cluster is not None else None, create
            )
        except sqlite3.OperationalError as e:  # the file or its folder cannot be written (read-only, no space)
            self._db.close()
            raise StorageError(f"cannot use {path}: {_unusable(path, e)}") from None
        except (sqlite3.DatabaseError, UnicodeDecodeError, ValueError) as e:  # a damaged file, whatever SQLite raises
            self._db.close()
            raise StorageError(f"{path} is corrupt: {' '.join(str(e).split())[:200]}") from None
        except StorageError:
            self._db.close()
            raise
        self._wal = path.with_name(path.name + "-wal")
        self._files = (_file_id(path), _file_id(self._wal))

    def _open(
        self, path: Path, node: str, durable: bool, cluster: tuple[str, ...] | None, create: bool
    ) -> StoreIdentity:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            # One line for the operator: SQLite's report may run to many.
            report = str(check[0] if check else "no answer")
            found = [line for line in report.splitlines() if not line.startswith("***")]
            more = f" and {len(found) - 1} more problems" if len(found) > 1 else ""
            raise StorageError(f"{path} is corrupt: {(found or ['?'])[0]}{more} (PRAGMA quick_check)")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta: dict[str, str] = {}
        if "meta" in tables:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "store" not in meta:
            if tables - _TABLES or ("txns" in tables and db.execute("SELECT 1 FROM txns LIMIT 1").fetchone()):
                raise StorageError(f"{path} holds records but no store identity: not a store of this harness")
            if not create:
                raise StoreMissing(f"{path} is empty")
            identity = StoreIdentity(store=secrets.token_hex(8), node=node, cluster=cluster or ())
            db.execute("BEGIN")
            db.execute("DROP TABLE IF EXISTS txns")  # an empty table of an older layout
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("store", identity.store), ("node", node), ("cluster", ",".join(identity.cluster))],
            )
            db.execute("COMMIT")
            self.created = True
            return identity
        if not {"marks", "summary"} <= tables:  # a store made before compaction: add its tables
            for statement in SCHEMA.split(";")[2:]:
                if statement.strip():
                    db.execute(statement)
        columns = [r[1] for r in db.execute("PRAGMA table_info(txns)")]
        if columns != ["txid", "state", "value", "participants", "version", "crc"]:
            raise StorageError(f"{path}: its records table is not this harness's layout ({','.join(columns)})")
        identity = StoreIdentity(
            store=meta["store"],
            node=meta.get("node", ""),
            cluster=tuple(c for c in meta.get("cluster", "").split(",") if c),
        )
        if identity.node != node:
            raise StorageError(f"{path} belongs to participant {identity.node}, not {node}: use another --data-dir")
        if cluster is not None and identity.cluster != cluster:
            raise StorageError(
                f"{path} belongs to cluster {','.join(identity.cluster) or '(none)'}, not {','.join(cluster)}"
            )
        return identity

    def load(self) -> list[TxRecord]:
        """Every stored record; StorageError names the first whose checksum is wrong."""
        try:
            rows = self._db.execute("SELECT txid, state, value, participants, version, crc FROM txns").fetchall()
        except (sqlite3.Error, UnicodeDecodeError, ValueError) as e:  # undecodable text, a damaged page
            raise StorageError(f"{self.path} is corrupt: {' '.join(str(e).split())[:200]}") from None
        store = self.identity.store
        records = []
        for t, s, v, p, ver, crc in rows:
            if (
                not isinstance(t, str)
                or not isinstance(s, str)
                or not isinstance(v, int)
                or not isinstance(p, str)
                or not isinstance(ver, int)
                or crc != checksum(store, t, s, v, p, ver)
            ):
                raise StorageError(f"{self.path} is corrupt: record {str(t)[:64]!r} fails its checksum")
            try:
                state = TxState(s)
            except ValueError:
                raise StorageError(f"{self.path} is corrupt: record {t[:64]!r} has state {s[:20]!r}") from None
            records.append(
                TxRecord(txid=t, state=state, value=v, participants=tuple(p.split(",")) if p else (), version=ver)
            )
        return records

    def load_compacted(self) -> tuple[Summary | None, dict[str, int]]:
        """What compaction left: the summary (None if nothing was ever forgotten)
        and the marks; StorageError names the first row whose checksum is wrong."""
        store = self.identity.store
        try:
            row = self._db.execute("SELECT storage_server, version, committed, aborted, crc FROM summary").fetchone()
            marks = self._db.execute("SELECT client, seq, crc FROM marks").fetchall()
        except (sqlite3.Error, UnicodeDecodeError, ValueError) as e:
            raise StorageError(f"{self.path} is corrupt: {' '.join(str(e).split())[:200]}") from None
        summary = None
        if row is not None:
            value, version, committed, aborted, crc = row
            if crc != _summary_crc(store, value, version, committed, aborted):
                raise StorageError(f"{self.path} is corrupt: its compaction summary fails its checksum")
            summary = Summary(storage_server=value, version=version, committed=committed, aborted=aborted)
        out: dict[str, int] = {}
        for client, seq, crc in marks:
            if not isinstance(client, str) or not isinstance(seq, int) or crc != _mark_crc(store, client, seq):
                raise StorageError(f"{self.path} is corrupt: the mark of {str(client)[:64]!r} fails its checksum")
            out[client] = seq
        return summary, out

    def write(self, records: Sequence[TxRecord], forgets: Sequence[Forget] = ()) -> None:
        """Store ``records``, then apply ``forgets`` (delete their rows, store
        their marks and summary), in one transaction; durable when this
        returns. StorageError if the data file was deleted or replaced meanwhile."""
        if forgets:
            self._write_forgetting(records, forgets)
            return
        rows = self._rows(records)
        if len(rows) == 1:  # one statement is its own transaction: spare the BEGIN and COMMIT calls
            self._db.execute(_UPSERT, rows[0])
        elif len(rows) <= _ROWS_PER_STATEMENT:  # likewise: one statement, rows applied in order
            self._db.execute(_upsert_rows(len(rows)), [v for row in rows for v in row])
        else:
            self._db.execute("BEGIN")
            self._db.executemany(_UPSERT, rows)
            self._db.execute("COMMIT")
        self.check_files()

    def _rows(self, records: Sequence[TxRecord]) -> list[tuple[str, str, int, str, int, str]]:
        """The table's rows for ``records``, each with its checksum."""
        store = self.identity.store
        rows = []
        for r in records:
            participants = ",".join(r.participants)
            crc = checksum(store, r.txid, r.state.value, r.value, participants, r.version)
            rows.append((r.txid, r.state.value, r.value, participants, r.version, crc))
        return rows

    def _write_forgetting(self, records: Sequence[TxRecord], forgets: Sequence[Forget]) -> None:
        store = self.identity.store
        rows = self._rows(records)
        marks = {client: seq for f in forgets for client, seq in f.marks}
        s = forgets[-1].summary
        db = self._db
        db.execute("BEGIN")
        db.executemany(_UPSERT, rows)
        db.executemany("DELETE FROM txns WHERE txid = ?", [(t,) for f in forgets for t in f.txids])
        db.executemany(
            "INSERT OR REPLACE INTO marks VALUES (?, ?, ?)",
            [(c, q, _mark_crc(store, c, q)) for c, q in marks.items()],
        )
        db.execute(
            "INSERT OR REPLACE INTO summary VALUES (1, ?, ?, ?, ?, ?)",
            (
                s.storage_server,
                s.version,
                s.committed,
                s.aborted,
                _summary_crc(store, s.storage_server, s.version, s.committed, s.aborted),
            ),
        )
        db.execute("COMMIT")
        self.check_files()

    def check_files(self) -> None:
        """StorageError if the data file or its WAL is no longer the file we have open."""
        now = (_file_id(self.path), _file_id(self._wal))
        if self._files[1] is None and now[0] == self._files[0]:
            self._files = now  # the WAL appeared with the first write: adopt it
        if now != self._files:
            raise StorageError(f"{self.path} was deleted or replaced while in use")

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
