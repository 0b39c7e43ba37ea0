"""The tables the harness keeps in each cluster, and the one probe that decides a transaction's fate there.

Theory of operation. Each cluster holds three tables:

* ``harness_state``: one row, ``storage_server`` and its ``version`` (the
  seed's replicated variable). A transaction locks it with ``FOR UPDATE
  NOWAIT``: a lock held by another transaction, prepared or not, is the
  seed's NOK, at once and without waiting;
* ``harness_commits``: one row per committed transaction (version, txid,
  value), written in the transaction itself, so the committed txids in
  version order are read from the cluster after the run;
* ``harness_claims``: one row per txid, the durable marker of the
  termination rule (docs/postgres.md). The transaction inserts its own row
  (``by = 'transaction'``) before it prepares; a resolver deciding without the
  client inserts ``by = 'resolver'`` at a cluster where the transaction is not
  prepared. The primary key lets only one of them exist: once a resolver's
  row is committed, the transaction's insert fails there and it can never
  prepare; while the transaction's own row is uncommitted (it is running, or
  prepared), the resolver's insert waits on it and gives up (lock_timeout).

``probe`` is that arbitration, used by the client for a cluster whose vote
it lost and by the resolver for every cluster: it returns what the cluster
durably holds of a txid, claiming it for abort where it is not prepared.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from harness.postgres.cluster import DATABASE

SCHEMA = """
CREATE TABLE IF NOT EXISTS harness_state (
    id int PRIMARY KEY CHECK (id = 1),
    storage_server bigint NOT NULL,
    version bigint NOT NULL
);
INSERT INTO harness_state VALUES (1, 0, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS harness_commits (
    version bigint PRIMARY KEY,
    txid text UNIQUE NOT NULL,
    value bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS harness_claims (
    txid text PRIMARY KEY,
    by text NOT NULL CHECK (by IN ('transaction', 'resolver'))
);
-- A fault point: a transaction that sets harness.hold_prepare to N seconds
-- spends them inside its PREPARE TRANSACTION (deferred triggers run there),
-- so that its session can be terminated during the PREPARE.
CREATE FUNCTION harness_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(current_setting('harness.hold_prepare')::float8);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER harness_hold AFTER INSERT ON harness_commits
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (coalesce(current_setting('harness.hold_prepare', true), '') <> '')
    EXECUTE FUNCTION harness_hold();
"""

# Statements of one transaction at one cluster, before PREPARE TRANSACTION.
LOCK = "SELECT version FROM harness_state WHERE id = 1 FOR UPDATE NOWAIT"
CLAIM_AS_TRANSACTION = "INSERT INTO harness_claims VALUES (%s, 'transaction')"
WRITE = "UPDATE harness_state SET storage_server = %s, version = version + 1 WHERE id = 1 RETURNING version"
RECORD = "INSERT INTO harness_commits VALUES (%s, %s, %s)"
# How long a claim waits on a row lock before it gives up: a transaction
# that holds its claim row uncommitted is running or prepared.
CLAIM_LOCK_TIMEOUT = "200ms"
TRANSACTION_LOCK_TIMEOUT = "1s"  # a transaction's own claim, should a resolver be claiming it at that moment


class Held(enum.StrEnum):
    """What one cluster durably holds of a txid (the result of ``probe``)."""

    PREPARED = "prepared"  # in pg_prepared_xacts: it voted yes
    COMMITTED = "committed"  # its own claim row is committed: it committed here
    ABORTED = "aborted"  # a resolver's claim is committed: it can never prepare here
    BUSY = "busy"  # its own claim row is uncommitted and it is not prepared: still running
    DOWN = "down"  # the cluster could not be asked


async def create_schema(conninfo: str) -> None:
    """Create the tables in a new cluster (once: the trigger is not idempotent)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(SCHEMA)


async def is_prepared(conn: psycopg.AsyncConnection[Any], txid: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (txid,))
    return await cur.fetchone() is not None


async def probe(conninfo: str, txid: str) -> tuple[Held, str]:
    """What the cluster holds of ``txid``, claiming it for abort if it is
    neither prepared nor committed there (see the module's docstring), and a
    detail for the log. Prepared is checked before the claim; a transaction
    that prepares in between holds its claim row, so the claim times out
    and the second look finds it prepared."""
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            if await is_prepared(conn, txid):
                return Held.PREPARED, "in pg_prepared_xacts"
            await conn.execute(f"SET lock_timeout = '{CLAIM_LOCK_TIMEOUT}'")
            try:
                await conn.execute("INSERT INTO harness_claims VALUES (%s, 'resolver')", (txid,))
                return Held.ABORTED, "claimed for abort"
            except errors.UniqueViolation:
                cur = await conn.execute("SELECT by FROM harness_claims WHERE txid = %s", (txid,))
                row = await cur.fetchone()
                if row is None:  # a claim committed and gone cannot be: rows are never deleted
                    return Held.BUSY, "claim row vanished"
                return (Held.COMMITTED, "committed") if row[0] == "transaction" else (Held.ABORTED, "claimed before")
            except errors.LockNotAvailable:
                if await is_prepared(conn, txid):
                    return Held.PREPARED, "in pg_prepared_xacts"
                return Held.BUSY, "its transaction is still running"
    except psycopg.OperationalError as e:
        return Held.DOWN, first_line(e)


def first_line(e: BaseException) -> str:
    return (str(e).strip().split("\n", 1)[0] or type(e).__name__)[:200]


@dataclass
class PreparedXact:
    gid: str
    prepared: str  # when it was prepared (the cluster's clock, ISO)
    age_s: float  # seconds since, by the cluster's clock


async def prepared_xacts(conn: psycopg.AsyncConnection[Any]) -> list[PreparedXact]:
    """The harness's prepared transactions at a cluster (``tpc_recover``: pg_prepared_xacts),
    oldest first, with their age by the cluster's clock. ``conn`` is in autocommit."""
    xids = await conn.tpc_recover()
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    now = row[0]
    found = [
        PreparedXact(x.gtrid, x.prepared.isoformat(), (now - x.prepared).total_seconds())
        for x in xids
        if x.database == DATABASE and x.prepared is not None
    ]
    return sorted(found, key=lambda x: x.prepared)


async def final_state(conninfo: str) -> dict[str, Any]:
    """One cluster's final state as final_states.json holds it: a STATUS-like
    answer and the records read from its tables and pg_prepared_xacts."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cur = await conn.execute("SELECT storage_server, version FROM harness_state WHERE id = 1")
        row = await cur.fetchone()
        assert row is not None
        value, version = int(row[0]), int(row[1])
        cur = await conn.execute("SELECT txid, version, value FROM harness_commits ORDER BY version")
        committed = [[str(t), int(v), int(val)] for t, v, val in await cur.fetchall()]
        cur = await conn.execute("SELECT count(*) FROM harness_claims WHERE by = 'resolver'")
        claimed = await cur.fetchone()
        xacts = await prepared_xacts(conn)
    return {
        "status": {
            "storage_server": value,
            "version": version,
            "lock": xacts[0].gid if xacts else None,
            "committed": len(committed),
            "aborted": int(claimed[0]) if claimed else 0,
        },
        "storage": {
            "committed": committed,
            "prepared": [x.gid for x in xacts],
            "aborted": int(claimed[0]) if claimed else 0,
            "pg_prepared_xacts": [{"gid": x.gid, "prepared": x.prepared, "age_s": round(x.age_s, 3)} for x in xacts],
        },
    }
