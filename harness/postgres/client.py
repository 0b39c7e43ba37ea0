"""A client that coordinates real 2PC over PostgreSQL clusters with psycopg 3's two-phase API.

Theory of operation. One transaction writes ``value`` at every cluster. At
each cluster (in parallel, or the first before the others when prepares are
ordered) it runs, on its own session: ``tpc_begin(txid)``, the row lock
taken without waiting (``FOR UPDATE NOWAIT``: a lock held by another
transaction is the seed's NOK), its claim row, the write and its commit
record (harness.postgres.schema), then ``tpc_prepare()``. That is its vote:

* yes: PREPARE TRANSACTION acknowledged (durable: fsync is on);
* no, for certain: an error before PREPARE was sent (a lock conflict, a
  resolver's claim, a connection that died: the session can never prepare
  it now), or the cluster could not be reached at all;
* unknown: PREPARE was sent and its answer lost. The client then probes the
  cluster as the resolver does (schema.probe): prepared is a yes; otherwise
  the probe claims the txid there, which makes it a no for good.

The decision follows the commit point (docs/postgres.md): committed exactly
when every cluster prepared it. So the client commits (``tpc_commit``) when
every vote is yes, rolls back when one is a certain no, and otherwise tells
its user UNKNOWN and leaves what it prepared to the resolver. A COMMIT or
ROLLBACK PREPARED that fails is retried on a new session (the recovery form
``tpc_commit(xid)``) until the timeout, then left to the resolver; the
client's report does not change, as the decision is already made.

Every vote, decision and error is an event in the client's log, in our
schema: PREPARE, VOTE, COMMIT, ABORT, RESOLVE and OUTCOME as the messages our
protocol uses, with the cluster as the peer (``PgLog`` writes them all).
"""

from __future__ import annotations

import asyncio
import enum
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from harness.events.log import EventLog
from harness.events.schema import BEGIN, CONNECTED, CRASH, DB_ERROR, DECIDE, RECV, SEND, UNREACHABLE, EventKind
from harness.node import event_loop
from harness.node.client_node import TxResult
from harness.node.crash import ClientCrashPoint, CrashPlan
from harness.postgres import schema
from harness.postgres.points import TerminatePoint, parse_terminate_point
from harness.postgres.schema import Held, first_line
from harness.protocol import coordinator as co
from harness.protocol.messages import Abort, Commit, Message, NokCode, Outcome, Prepare, Resolve, TxState, Vote

HOLD_PREPARE = 0.5  # seconds a PREPARE is held open for terminate-during-prepare
PROBE_RETRY = 0.05  # seconds between probes of a cluster whose transaction is still running


class PgLog:
    """The client's events, written in one place, through harness.events.schema."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def message(self, kind: EventKind, cluster: str, msg: Message) -> None:
        self.log.message(kind, cluster, msg)
        if kind is SEND:
            # The log before the world, as our clients do: a client killed after
            # this cannot have begun a transaction its log does not show.
            self.log.flush()

    def begin(self, txid: str, value: int, clusters: tuple[str, ...], ordered: bool) -> None:
        self.log.write(
            BEGIN, txid=txid, value=value, participants=",".join(clusters), prepare="ordered" if ordered else "parallel"
        )

    def decide(self, txid: str, result: co.Result, reason: str) -> None:
        self.log.write(DECIDE, txid=txid, result=result.value, reason=reason)

    def error(self, cluster: str, txid: str | None, step: str, e: BaseException) -> None:
        sqlstate = getattr(e, "sqlstate", None)
        self.log.write(DB_ERROR, peer=cluster, txid=txid, step=step, sqlstate=sqlstate, error=first_line(e))

    def unreachable(self, cluster: str, e: BaseException) -> None:
        self.log.write(UNREACHABLE, peer=cluster, error=first_line(e))

    def fault(self, point: str, cluster: str, detail: str) -> None:
        self.log.write(CRASH, point=point, peer=cluster, signal="pg_terminate_backend", how=detail)


class VoteKind(enum.Enum):
    YES = "yes"
    NO = "no"  # certain: it can never prepare there
    UNKNOWN = "unknown"


@dataclass
class Ballot:
    cluster: str
    kind: VoteKind
    reason: str = ""
    cause: co.Cause = co.Cause.ALL_YES
    code: NokCode | None = None  # a certain no: why, for programs (the vote's code on the wire)


@dataclass
class ClusterLink:
    """The client's session at one cluster, reopened when it dies."""

    name: str
    conninfo: str  # how the client reaches it (maybe through the fault relay)
    admin_conninfo: str  # directly, for terminate points
    conn: psycopg.AsyncConnection[Any] | None = None

    async def ensure(self, app: str) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                await self.conn.close()
            self.conn = await psycopg.AsyncConnection.connect(self.conninfo, application_name=app)
        return self.conn

    async def drop(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


class PgClient:
    """Coordinates transactions over a list of clusters."""

    def __init__(
        self,
        name: str,
        clusters: list[tuple[str, str, str]],  # (name, conninfo, admin conninfo)
        log: EventLog,
        *,
        timeout: float,
        crash: str | None = None,
    ) -> None:
        self.name = name
        self.log = PgLog(log)
        self.timeout = timeout
        self.links = [ClusterLink(n, c, a) for n, c, a in clusters]
        self._txid_prefix = f"{name}-{secrets.token_hex(6)}"
        self._seq = 0
        self.kill: CrashPlan | None = None
        self.terminate: tuple[TerminatePoint, int] | None = None
        self._terminate_seen = 0
        if crash:
            self.terminate = parse_terminate_point(crash)
            if self.terminate is None:
                self.kill = CrashPlan.parse(crash, ClientCrashPoint)

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(link.name for link in self.links)

    async def connect(self) -> None:
        """Open a session at every cluster; psycopg.OperationalError if one cannot be reached."""
        for link in self.links:
            await link.ensure(self.name)
        self.log.log.write(
            CONNECTED, pid=os.getpid(), participants=",".join(self.clusters), loop=event_loop.chosen().value
        )

    async def close(self) -> None:
        for link in self.links:
            await link.drop()

    # ------------------------------------------------------------ fault points

    def _crash(self, point: ClientCrashPoint) -> None:
        if self.kill is not None:
            self.log.log.flush()
            self.kill.reached(point, self.log.log)

    def _terminate_due(self, point: TerminatePoint, link: ClusterLink) -> bool:
        if self.terminate is None or self.terminate[0] is not point or link is not self.links[0]:
            return False
        self._terminate_seen += 1
        return self._terminate_seen == self.terminate[1]

    async def _terminate(self, point: TerminatePoint, link: ClusterLink, wait: bool = True) -> None:
        """pg_terminate_backend of our own session at ``link``, from a second session."""
        assert link.conn is not None
        pid = link.conn.info.backend_pid
        self.log.fault(point.value, link.name, f"backend pid {pid}")
        self.log.log.flush()
        async with await psycopg.AsyncConnection.connect(link.admin_conninfo, autocommit=True) as admin:
            # wait (up to 5 s) until the backend is gone, so that the fault has happened before we go on
            await admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, 5000 if wait else 0))

    # ------------------------------------------------------------ one transaction

    def new_txid(self) -> str:
        self._seq += 1
        return f"{self._txid_prefix}-{self._seq}"

    async def transact(self, value: int, ordered: bool = False, prio: int | None = None) -> TxResult:
        # ``prio`` (wait-die's age) means nothing to PostgreSQL, which has its own lock waits.
        txid = self.new_txid()
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        self.log.begin(txid, value, self.clusters, ordered)
        if ordered and len(self.links) > 1:
            first = await self._vote(self.links[0], txid, value, deadline)
            ballots = [first]
            if first.kind is VoteKind.YES:
                ballots += await asyncio.gather(*(self._vote(link, txid, value, deadline) for link in self.links[1:]))
        else:
            ballots = list(await asyncio.gather(*(self._vote(link, txid, value, deadline) for link in self.links)))
        self._crash(ClientCrashPoint.AFTER_PREPARE)
        prepared = {b.cluster for b in ballots if b.kind is VoteKind.YES}
        no = [b for b in ballots if b.kind is VoteKind.NO]
        nok = no[0].code if no else None
        yes = [b for b in ballots if b.kind is VoteKind.YES]
        if len(yes) == len(self.links):
            result, cause, reason = co.Result.COMMITTED, co.Cause.ALL_YES, "every cluster prepared it"
        elif no:
            result, cause, reason = co.Result.ABORTED, no[0].cause, f"{no[0].cluster}: {no[0].reason}"
        else:
            silent = [b.cluster for b in ballots if b.kind is VoteKind.UNKNOWN]
            result, cause = co.Result.UNKNOWN, co.Cause.NO_ANSWER
            reason = f"no answer from {', '.join(silent)}: left to the resolver"
        self.log.decide(txid, result, reason)
        if result is co.Result.COMMITTED:
            for link in self.links:
                await self._finish(link, txid, commit=True, deadline=deadline)
                self._crash(ClientCrashPoint.AFTER_FIRST_COMMIT)
        elif result is co.Result.ABORTED:
            # Roll back where it prepared; a no vote ended its session's transaction
            # already, and a cluster whose vote stayed unknown is the resolver's.
            await asyncio.gather(
                *(
                    self._finish(link, txid, commit=False, deadline=deadline)
                    for link in self.links
                    if link.name in prepared
                )
            )
        else:
            for link in self.links:
                await link.drop()  # sessions in a transaction of unknown fate: the resolver has it
        return TxResult(txid, value, result, reason, cause, time.perf_counter() - started, nok)

    async def _vote(self, link: ClusterLink, txid: str, value: int, deadline: float) -> Ballot:
        self.log.message(SEND, link.name, Prepare(txid=txid, value=value, participants=self.clusters))
        try:
            conn = await link.ensure(self.name)
        except psycopg.OperationalError as e:
            self.log.unreachable(link.name, e)
            return self._ballot(link, txid, VoteKind.NO, "unreachable", co.Cause.UNREACHABLE)
        during_prepare = self._terminate_due(TerminatePoint.DURING_PREPARE, link)
        try:
            await conn.tpc_begin(txid)
            await conn.execute(f"SET LOCAL lock_timeout = '{schema.TRANSACTION_LOCK_TIMEOUT}'")
            if during_prepare:  # before the insert: the hold trigger's WHEN is evaluated there
                await conn.execute(f"SET LOCAL harness.hold_prepare = '{HOLD_PREPARE}'")
            await conn.execute(schema.LOCK)
            await conn.execute(schema.CLAIM_AS_TRANSACTION, (txid,))
            cur = await conn.execute(schema.WRITE, (value,))
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(schema.RECORD, (row[0], txid, value))
        except errors.LockNotAvailable as e:
            await self._rollback_open(link)
            reason = "locked by another transaction" if "harness_state" in str(e) or "lock" in str(e) else first_line(e)
            return self._ballot(link, txid, VoteKind.NO, reason, co.Cause.NO_VOTE, NokCode.LOCKED)
        except errors.UniqueViolation:
            await self._rollback_open(link)
            return self._ballot(
                link, txid, VoteKind.NO, "claimed for abort by a resolver", co.Cause.NO_VOTE, NokCode.ABORTED
            )
        except psycopg.Error as e:
            # Before PREPARE was sent: this session can never prepare it now.
            self.log.error(link.name, txid, "before-prepare", e)
            await self._rollback_open(link)
            return self._ballot(link, txid, VoteKind.NO, f"lost before PREPARE: {first_line(e)}", co.Cause.UNREACHABLE)
        hold = None
        if self._terminate_due(TerminatePoint.BEFORE_PREPARE, link):
            await self._terminate(TerminatePoint.BEFORE_PREPARE, link)
        elif during_prepare:
            hold = asyncio.create_task(self._terminate_soon(TerminatePoint.DURING_PREPARE, link))
        try:
            await conn.tpc_prepare()
        except (errors.IntegrityError, errors.LockNotAvailable) as e:  # refused at PREPARE: a certain no
            self.log.error(link.name, txid, "prepare", e)
            await self._rollback_open(link)
            return self._ballot(link, txid, VoteKind.NO, first_line(e), co.Cause.NO_VOTE)
        except psycopg.Error as e:
            self.log.error(link.name, txid, "prepare", e)
            await link.drop()
            return await self._ask(link, txid, deadline)
        finally:
            if hold is not None:
                await hold
        if self._terminate_due(TerminatePoint.AFTER_PREPARE, link):
            await self._terminate(TerminatePoint.AFTER_PREPARE, link)
        return self._ballot(link, txid, VoteKind.YES)

    async def _terminate_soon(self, point: TerminatePoint, link: ClusterLink) -> None:
        await asyncio.sleep(HOLD_PREPARE / 5)  # PREPARE is held for HOLD_PREPARE: strike within it
        await self._terminate(point, link, wait=False)

    def _ballot(
        self,
        link: ClusterLink,
        txid: str,
        kind: VoteKind,
        reason: str = "",
        cause: co.Cause = co.Cause.ALL_YES,
        code: NokCode | None = None,
    ) -> Ballot:
        if kind is not VoteKind.UNKNOWN:
            self.log.message(RECV, link.name, Vote(txid=txid, yes=kind is VoteKind.YES, code=code, reason=reason))
        return Ballot(link.name, kind, reason, cause, code)

    async def _rollback_open(self, link: ClusterLink) -> None:
        """End the session's failed transaction (not prepared: a plain ROLLBACK)."""
        if link.conn is None:
            return
        try:
            await link.conn.tpc_rollback()
        except psycopg.Error:
            await link.drop()

    async def _ask(self, link: ClusterLink, txid: str, deadline: float) -> Ballot:
        """The vote was lost: what does the cluster hold? (schema.probe, which
        claims it for abort if it is not prepared there.)"""
        while True:
            self.log.message(SEND, link.name, Resolve(txid=txid))
            held, detail = await schema.probe(link.conninfo, txid)
            if held is Held.PREPARED:
                self.log.message(RECV, link.name, Outcome(txid=txid, state=TxState.PREPARED))
                return self._ballot(link, txid, VoteKind.YES, detail)
            if held is Held.ABORTED:
                self.log.message(RECV, link.name, Outcome(txid=txid, state=TxState.ABORTED))
                return self._ballot(link, txid, VoteKind.NO, f"aborted when asked ({detail})", co.Cause.TIMEOUT)
            self.log.error(link.name, txid, "resolve", RuntimeError(f"{held.value}: {detail}"))
            if time.monotonic() >= deadline:
                return Ballot(link.name, VoteKind.UNKNOWN, detail, co.Cause.NO_ANSWER)
            await asyncio.sleep(PROBE_RETRY)  # polling the cluster until it answers or the timeout

    async def _finish(self, link: ClusterLink, txid: str, *, commit: bool, deadline: float) -> None:
        """COMMIT PREPARED or ROLLBACK (PREPARED) at one cluster; retried on a
        new session until the deadline, then left to the resolver."""
        self.log.message(SEND, link.name, Commit(txid=txid) if commit else Abort(txid=txid))
        state = TxState.COMMITTED if commit else TxState.ABORTED
        during = commit and self._terminate_due(TerminatePoint.DURING_COMMIT, link)
        recovering = False
        while True:
            try:
                if not recovering and link.conn is not None and not link.conn.broken:
                    conn = link.conn
                    if during:
                        strike = asyncio.create_task(self._terminate(TerminatePoint.DURING_COMMIT, link, wait=False))
                        try:
                            await (conn.tpc_commit() if commit else conn.tpc_rollback())
                        finally:
                            await strike
                    else:
                        await (conn.tpc_commit() if commit else conn.tpc_rollback())
                else:
                    conn = await link.ensure(self.name)
                    await (conn.tpc_commit(txid) if commit else conn.tpc_rollback(txid))
                self.log.message(RECV, link.name, Outcome(txid=txid, state=state))
                if commit and self._terminate_due(TerminatePoint.AFTER_COMMIT, link):
                    await self._terminate(TerminatePoint.AFTER_COMMIT, link)
                return
            except errors.UndefinedObject:
                # No such prepared transaction: finished already (our first try
                # went through before its answer was lost), or never prepared
                # here (an abort of a no vote).
                held, _ = await schema.probe(link.conninfo, txid)
                if held in (Held.COMMITTED, Held.ABORTED) or not commit:
                    self.log.message(RECV, link.name, Outcome(txid=txid, state=state))
                    return
                self.log.error(link.name, txid, "commit" if commit else "rollback", RuntimeError(held.value))
            except psycopg.Error as e:
                if not recovering:  # the first failure; the retries' are alike
                    self.log.error(link.name, txid, "commit" if commit else "rollback", e)
            await link.drop()
            recovering = True
            if time.monotonic() >= deadline:
                self.log.error(link.name, txid, "left to the resolver", RuntimeError("timeout"))
                return
            await asyncio.sleep(PROBE_RETRY)  # the cluster is down or cut: try again until the deadline
