"""The resolver: finishes prepared transactions whose client is gone, from what every cluster durably holds.

Theory of operation (the rule and its safety argument: docs/postgres.md).
A prepared transaction is committed exactly when every cluster prepared it
(the commit point our own participants use). The resolver lists the
prepared transactions of every cluster (``tpc_recover``) and takes up those
older than ``resolve_after`` seconds (by the cluster's clock), which their
client has most likely abandoned; for each it probes every cluster
(harness.postgres.schema.probe):

* committed somewhere, or prepared everywhere: the commit point was reached,
  so COMMIT PREPARED wherever it is still prepared;
* aborted (claimed) somewhere: it can never be prepared there, so it can
  never commit: ROLLBACK PREPARED wherever it is prepared;
* otherwise (a cluster down, or the transaction still running there):
  nothing is decided; it is tried again on the next pass.

Probing a cluster where the transaction is not prepared claims it there for
abort, and a claim is final, so deciding without the client is safe even if
the client is alive after all: either its PREPARE got there first (the claim
waits on its row and gives up) or the claim did (its PREPARE fails). The
resolver writes its steps to its own log (``resolved`` lines: the txid,
the decision, how long it had been prepared).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors

from harness.events.log import EventLog
from harness.events.schema import DB_ERROR, RESOLVED, TIMEOUT, UNREACHABLE
from harness.postgres import schema
from harness.postgres.schema import Held, first_line

PASS_INTERVAL = 0.1  # seconds between passes over the clusters' prepared transactions


@dataclass
class Resolution:
    txid: str
    decision: str  # committed | aborted | undecided
    held: dict[str, Held] = field(default_factory=dict)
    age_s: float = 0.0


class Resolver:
    """Resolves abandoned prepared transactions over ``clusters`` (name -> conninfo)."""

    def __init__(self, clusters: dict[str, str], log: EventLog, resolve_after: float) -> None:
        self.clusters = clusters
        self.log = log
        self.resolve_after = resolve_after
        self.down: set[str] = set()  # clusters found unreachable on the last pass
        # One session per cluster for the scans, kept: a new one every pass would
        # fork a backend per cluster ten times a second.
        self.scanning: dict[str, psycopg.AsyncConnection[Any]] = {}

    async def pending(self) -> dict[str, float]:
        """txid -> the longest it has been prepared at any reachable cluster (seconds)."""
        found: dict[str, float] = {}
        for name, conninfo in self.clusters.items():
            try:
                conn = self.scanning.get(name)
                if conn is None or conn.closed or conn.broken:
                    conn = self.scanning[name] = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                for x in await schema.prepared_xacts(conn):
                    found[x.gid] = max(found.get(x.gid, 0.0), x.age_s)
                self.down.discard(name)
            except psycopg.OperationalError as e:
                self.scanning.pop(name, None)
                if name not in self.down:  # once per outage, not once per pass
                    self.down.add(name)
                    self.log.write(UNREACHABLE, peer=name, error=first_line(e))
        return found

    async def resolve(self, txid: str, age_s: float = 0.0) -> Resolution:
        """Decide ``txid`` by the rule and carry the decision out where it is prepared."""
        held = {name: (await schema.probe(conninfo, txid))[0] for name, conninfo in self.clusters.items()}
        states = set(held.values())
        if Held.COMMITTED in states and Held.ABORTED in states:
            self.log.write(DB_ERROR, txid=txid, error="committed at one cluster, aborted at another")
            return Resolution(txid, "undecided", held, age_s)
        if Held.COMMITTED in states or states == {Held.PREPARED}:
            decision, commit = "committed", True
        elif Held.ABORTED in states:
            decision, commit = "aborted", False
        else:
            self.log.write(TIMEOUT, txid=txid, held=_show(held))
            return Resolution(txid, "undecided", held, age_s)
        finished = True
        for name, state in held.items():
            if state is Held.PREPARED:
                finished &= await self._finish(name, txid, commit)
        if finished:
            self.log.write(RESOLVED, txid=txid, decision=decision, held=_show(held), age_s=f"{age_s:.3f}")
        return Resolution(txid, decision if finished else "undecided", held, age_s)

    async def _finish(self, name: str, txid: str, commit: bool) -> bool:
        try:
            async with await psycopg.AsyncConnection.connect(self.clusters[name], autocommit=True) as conn:
                with contextlib.suppress(errors.UndefinedObject):  # finished meanwhile by its client
                    await (conn.tpc_commit(txid) if commit else conn.tpc_rollback(txid))
            return True
        except psycopg.Error as e:
            self.log.write(DB_ERROR, peer=name, txid=txid, error=first_line(e))
            return False

    async def sweep(self, older_than: float | None = None) -> list[Resolution]:
        """One pass: resolve every transaction prepared longer than ``older_than`` (default resolve_after)."""
        limit = self.resolve_after if older_than is None else older_than
        out = []
        for txid, age in sorted((await self.pending()).items()):
            if age >= limit:
                out.append(await self.resolve(txid, age))
        self.log.flush()
        return out

    async def close(self) -> None:
        for conn in self.scanning.values():
            await conn.close()
        self.scanning.clear()

    async def run_until(self, stop: Any) -> None:
        """Sweep every PASS_INTERVAL until ``stop()`` is true (the resolver process's loop)."""
        try:
            while not stop():
                await self.sweep()
                await asyncio.sleep(PASS_INTERVAL)  # a periodic scan, as a prepared-transaction monitor does
        finally:
            await self.close()

    async def settle(self, patience: float) -> list[Resolution]:
        """At the end of a run, no client left: resolve everything, until nothing
        is prepared or ``patience`` seconds have passed."""
        deadline = time.monotonic() + patience
        done: list[Resolution] = []
        try:
            while True:
                done += [r for r in await self.sweep(older_than=0.0) if r.decision != "undecided"]
                if not await self.pending() or time.monotonic() > deadline:
                    return done
                await asyncio.sleep(PASS_INTERVAL)  # a cluster restarting or a session ending: poll again
        finally:
            await self.close()


def _show(held: dict[str, Held]) -> str:
    return ",".join(f"{n}:{h.value}" for n, h in held.items())
