"""Compaction on real participants: forgotten records leave SQLite, and a late
duplicate of one still gets a safe answer, across a restart too."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import Cluster, LineClient


def _rows(path: Path) -> tuple[set[str], dict[str, int]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        txids = {r[0] for r in db.execute("SELECT txid FROM txns")}
        marks = dict(db.execute("SELECT client, seq FROM marks").fetchall())
    return txids, marks


def test_forgotten_records_leave_sqlite_and_a_late_duplicate_is_refused(cluster: Cluster) -> None:
    procs = {n: cluster.start_participant(n, "--compact") for n in (1, 2, 3)}
    names = cluster.servers
    hand = [LineClient(cluster.ports[n]) for n in (1, 2, 3)]
    try:
        for seq in (1, 2, 3):
            for c in hand:
                assert c.ask(f"PREPARE txid=h-{seq} value={seq} participants={names}") == f"VOTE txid=h-{seq} vote=ok"
            for c in hand:
                assert c.ask(f"COMMIT txid=h-{seq}") == f"OUTCOME txid=h-{seq} state=committed"
        # h-3's PREPARE came after h-2's commit: h-1 was forgotten everywhere.
        late = hand[0].ask(f"PREPARE txid=h-1 value=1 participants={names}")
        assert late == "VOTE txid=h-1 vote=NOK code=aborted reason=forgotten"
        assert hand[1].ask("COMMIT txid=h-1").startswith("ERROR code=forgotten txid=h-1 ")
        assert hand[2].ask("RESOLVE txid=h-1").startswith("ERROR code=forgotten txid=h-1 ")
    finally:
        for c in hand:
            c.close()
    many = cluster.client("--count", "6", "--name", "c1")
    assert many.returncode == 0, many.stdout + many.stderr
    procs[1].stop()
    txids, marks = _rows(cluster.workdir / "data" / "server1.sqlite3")
    assert "h-1" not in txids and {"h-2", "h-3"} <= txids  # h's last two: no later txid of h, or the latest commit
    assert marks["h"] == 1
    (client,) = [c for c in marks if c.startswith("c1-")]
    # Six transactions, two records left: the last (no later txid) and the one before (the latest commit when
    # the last was prepared).
    assert marks[client] == 4 and sum(t.startswith("c1-") for t in txids) == 2
    cluster.start_participant(1, "--compact")  # the marks survive a restart
    again = LineClient(cluster.ports[1])
    try:
        assert again.ask("ABORT txid=h-1").startswith("ERROR code=forgotten txid=h-1 ")
        assert again.ask("STATUS").split()[3:6] == ["version=9", "lock=-", "committed=9"]
    finally:
        again.close()
