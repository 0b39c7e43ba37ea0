"""PostgreSQL clusters as participants: real clusters, real prepared transactions, real faults.

Three clusters are started once per test session (``clusters``, module-scoped) for the
tests of the client, the resolver and the faults; the runner's tests make
their own, as ``harness.run --backend postgres`` does. Where PostgreSQL or
psycopg is absent every test here is skipped with the reason, except where
HARNESS_REQUIRE_POSTGRES is set (CI sets it): there, a missing PostgreSQL
fails the tests instead of hiding them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.experiment.config import Backend, RunConfig, with_default_timeouts
from harness.experiment.faults import FaultKind
from harness.experiment.workload import RetryMode
from harness.postgres.cluster import unavailable
from harness.verify.checker import check_run

REASON = unavailable()
if REASON and os.environ.get("HARNESS_REQUIRE_POSTGRES"):
    pytest.fail(f"HARNESS_REQUIRE_POSTGRES is set but {REASON}", pytrace=False)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

if REASON is None:
    import psycopg

    from harness.events.log import EventLog
    from harness.experiment.runner import run
    from harness.postgres import schema
    from harness.postgres.client import PgClient
    from harness.postgres.cluster import PgCluster, make_clusters
    from harness.postgres.resolver import Resolver
    from harness.protocol import coordinator as co


def _folder() -> Path:
    """A folder the unprivileged PostgreSQL user can reach (pytest's tmp_path is mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="harness-pg-test-"))
    path.chmod(0o755)
    return path


# Module scope: every test that uses the clusters is in this module, so they are
# made once per session; and their removal is charged to this module's last test
# (its timeout fits it), not to whatever test happens to end the session.
@pytest.fixture(scope="module")
def clusters() -> Iterator[list[PgCluster]]:
    folder = _folder()
    made = make_clusters(folder, 3, max_prepared=20, max_connections=40)
    try:
        for c in made:
            asyncio.run(schema.create_schema(c.conninfo()))
        yield made
    finally:
        for c in made:
            c.remove()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def folder() -> Iterator[Path]:
    path = _folder()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def links(clusters: list[PgCluster]) -> list[tuple[str, str, str]]:
    return [(c.name, c.conninfo(), c.conninfo()) for c in clusters]


def client(clusters: list[PgCluster], folder: Path, name: str = "client1", crash: str | None = None) -> PgClient:
    return PgClient(name, links(clusters), EventLog(folder / f"{name}.log", name), timeout=2.0, crash=crash)


def state(c: PgCluster) -> dict[str, Any]:
    return asyncio.run(schema.final_state(c.conninfo()))


def committed_at(clusters: list[PgCluster], txid: str) -> list[str]:
    return [c.name for c in clusters if any(t == txid for t, _, _ in state(c)["storage"]["committed"])]


def prepared_anywhere(clusters: list[PgCluster]) -> list[str]:
    return [g for c in clusters for g in state(c)["storage"]["prepared"]]


def resolve_all(clusters: list[PgCluster], folder: Path) -> list[Any]:
    log = EventLog(folder / "resolver.log", "resolver")
    try:
        return asyncio.run(Resolver({c.name: c.conninfo() for c in clusters}, log, 0.0).settle(10.0))
    finally:
        log.close()


async def transact(c: PgClient, value: int) -> Any:
    await c.connect()
    try:
        return await c.transact(value)
    finally:
        await c.close()


def prepare_by_hand(c: PgCluster, txid: str, value: int) -> None:
    """A transaction prepared at ``c`` as a client does it, then its session closed."""
    conn = psycopg.connect(c.conninfo())
    try:
        conn.tpc_begin(txid)
        conn.execute(schema.LOCK)
        conn.execute(schema.CLAIM_AS_TRANSACTION, (txid,))
        version = conn.execute(schema.WRITE, (value,)).fetchone()
        assert version is not None
        conn.execute(schema.RECORD, (version[0], txid, value))
        conn.tpc_prepare()
    finally:
        conn.close()  # a prepared transaction outlives its session


# ---------------------------------------------------------------- the client


@pytest.mark.timeout(60)
def test_a_transaction_commits_at_every_cluster(clusters: list[PgCluster], folder: Path) -> None:
    result = asyncio.run(transact(client(clusters, folder), 4242))
    assert result.result is co.Result.COMMITTED, result.reason
    assert committed_at(clusters, result.txid) == [c.name for c in clusters]
    assert {state(c)["status"]["storage_server"] for c in clusters} == {4242}
    assert prepared_anywhere(clusters) == []
    log = (folder / "client1.log").read_text()
    assert log.count("msg=VOTE") == 3 and "vote=ok" in log and "result=committed" in log


@pytest.mark.timeout(60)
def test_a_lock_held_elsewhere_is_a_nok_and_the_transaction_aborts_everywhere(
    clusters: list[PgCluster], folder: Path
) -> None:
    before = [state(c)["status"]["version"] for c in clusters]
    holder = psycopg.connect(clusters[1].conninfo())  # another transaction holds pg2's row
    try:
        holder.execute(schema.LOCK)
        result = asyncio.run(transact(client(clusters, folder), 777))
    finally:
        holder.rollback()
        holder.close()
    assert result.result is co.Result.ABORTED and result.cause is co.Cause.NO_VOTE, result.reason
    assert "pg2" in result.reason and "locked by" in result.reason
    assert committed_at(clusters, result.txid) == []
    assert [state(c)["status"]["version"] for c in clusters] == before
    assert prepared_anywhere(clusters) == []  # the yes voters were rolled back
    assert "vote=NOK" in (folder / "client1.log").read_text()


# ---------------------------------------------------------------- the resolver


@pytest.mark.timeout(60)
def test_the_resolver_commits_what_every_cluster_prepared(clusters: list[PgCluster], folder: Path) -> None:
    txid = f"by-hand-{os.getpid()}-all"
    for c in clusters:
        prepare_by_hand(c, txid, 9001)
    assert sorted(prepared_anywhere(clusters)) == [txid] * 3
    done = resolve_all(clusters, folder)
    assert [(r.txid, r.decision) for r in done] == [(txid, "committed")]
    assert committed_at(clusters, txid) == [c.name for c in clusters]
    assert prepared_anywhere(clusters) == []


@pytest.mark.timeout(60)
def test_the_resolver_aborts_what_one_cluster_never_prepared_and_that_cluster_can_no_longer(
    clusters: list[PgCluster], folder: Path
) -> None:
    txid = f"by-hand-{os.getpid()}-two"
    for c in clusters[:2]:
        prepare_by_hand(c, txid, 9002)
    done = resolve_all(clusters, folder)
    assert [(r.txid, r.decision) for r in done] == [(txid, "aborted")]
    assert done[0].held[clusters[2].name] is schema.Held.ABORTED
    assert committed_at(clusters, txid) == [] and prepared_anywhere(clusters) == []
    # The late PREPARE at the third cluster fails: the resolver's claim is there first.
    with pytest.raises(psycopg.errors.UniqueViolation):
        prepare_by_hand(clusters[2], txid, 9002)
    assert prepared_anywhere(clusters) == []


# ---------------------------------------------------------------- faults on the client's session


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "point",
    [
        "terminate-before-prepare",
        "terminate-during-prepare",
        "terminate-after-prepare",
        "terminate-during-commit",
        "terminate-after-commit",
    ],
)
def test_a_session_terminated_around_prepare_and_commit_leaves_an_atomic_truthful_outcome(
    clusters: list[PgCluster], folder: Path, point: str
) -> None:
    c = client(clusters, folder, crash=point)
    result = asyncio.run(transact(c, 5150))
    log = (folder / "client1.log").read_text()
    assert f"crash point={point}" in log and "pg_terminate_backend" in log
    resolve_all(clusters, folder)  # whatever the client left prepared
    here = committed_at(clusters, result.txid)
    assert here in ([], [cl.name for cl in clusters]), f"not atomic: committed at {here}"
    if result.result is co.Result.COMMITTED:
        assert here, result.reason
    elif result.result is co.Result.ABORTED:
        assert not here, result.reason
    if point in ("terminate-before-prepare", "terminate-during-prepare"):
        assert result.result is co.Result.ABORTED  # its session died before the PREPARE completed
        assert "msg=RESOLVE" in log  # the lost vote was asked for, and claimed
    if point in ("terminate-after-prepare", "terminate-after-commit"):
        assert result.result is co.Result.COMMITTED  # prepared everywhere: the commit point
    assert prepared_anywhere(clusters) == []


@pytest.mark.timeout(90)
def test_a_prepared_transaction_survives_kill_9_of_its_postmaster(clusters: list[PgCluster], folder: Path) -> None:
    txid = f"by-hand-{os.getpid()}-kill9"
    for c in clusters:
        prepare_by_hand(c, txid, 9003)
    pid = clusters[0].kill9()
    assert pid is not None
    clusters[0].start()  # crash recovery
    assert clusters[0].postmaster_pid() != pid
    assert state(clusters[0])["storage"]["prepared"] == [txid]  # it came back from the WAL
    done = resolve_all(clusters, folder)
    assert [(r.txid, r.decision) for r in done] == [(txid, "committed")]
    assert committed_at(clusters, txid) == [c.name for c in clusters]


# ---------------------------------------------------------------- the runner


def _run(folder: Path, **kw: Any) -> Path:
    config = with_default_timeouts(RunConfig(out=folder / "run", backend=Backend.POSTGRES, **kw))
    return run(config).folder


def _final(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "final_states.json").read_text()))


@pytest.mark.timeout(120)
def test_run_contends_and_is_consistent_and_removes_its_clusters(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)  # a relative --out, as reports/... is by default
    config = with_default_timeouts(
        RunConfig(out=Path("run"), backend=Backend.POSTGRES, clients=3, transactions=4, seed=101)
    )
    out = run(config).folder
    assert not out.is_absolute()
    report = check_run(out)
    assert report.consistent, [v.message for v in report.violations]
    assert sum(c.committed for c in report.clients) >= 1
    assert sum(c.attempted for c in report.clients) == 12
    final = _final(out)
    assert sorted(final) == ["pg1", "pg2", "pg3"]
    assert all(e["storage"]["pg_prepared_xacts"] == [] for e in final.values())
    assert not (out / "pg").exists()  # the clusters' data directories are gone
    assert json.loads((out / "run.json").read_text())["backend"] == "postgres"


@pytest.mark.timeout(120)
def test_a_client_sigkilled_between_the_phases_is_resolved_without_it(folder: Path) -> None:
    out = _run(folder, clients=1, transactions=2, crash=("client:after-prepare",), seed=102)
    report = check_run(out)
    assert report.consistent, [v.message for v in report.violations]
    assert report.abandoned == 1
    begun = [line for line in (out / "client1.log").read_text().splitlines() if " begin " in line]
    txid = begun[0].split("txid=")[1].split()[0]
    resolved = (out / "resolver.log").read_text()
    assert f"resolved txid={txid} decision=committed" in resolved  # every cluster had prepared it
    final = _final(out)
    for node, entry in final.items():
        assert entry["storage"]["pg_prepared_xacts"] == [], node
        assert txid in [t for t, _, _ in entry["storage"]["committed"]], node


@pytest.mark.timeout(120)
def test_a_client_cut_from_a_cluster_after_its_prepare(folder: Path) -> None:
    out = _run(folder, clients=1, transactions=2, crash=("partition:between-phases",), seed=103)
    report = check_run(out)
    assert report.consistent, [v.message for v in report.violations]
    assert 'cut link="client1->pg2" after="PREPARE TRANSACTION"' in (out / "relay.log").read_text()
    first = next(line for line in (out / "client1.log").read_text().splitlines() if " outcome " in line)
    assert "result=committed" in first  # every vote was yes: committed, pg2's COMMIT left to the resolver
    assert "decision=committed" in (out / "resolver.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_seeded_soak_with_every_postgres_fault(folder: Path) -> None:
    kinds = (FaultKind.KILL_POSTMASTER, FaultKind.TERMINATE_BACKEND, FaultKind.CUT, FaultKind.KILL_CLIENT)
    out = _run(folder, clients=4, duration=6.0, retry=RetryMode.BACKOFF, nemesis=kinds, nemesis_interval=0.5, seed=104)
    report = check_run(out)
    assert report.consistent, [v.message for v in report.violations]
    assert len(report.faults) >= 3
    assert sum(c.committed for c in report.clients) >= 1
    assert all(e["storage"]["pg_prepared_xacts"] == [] for e in _final(out).values())
