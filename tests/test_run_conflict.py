"""Wait-die on real processes: a contended run stays consistent and every client commits."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from conftest import Cluster, LineClient

from harness.events.log import read_log
from harness.experiment.config import RunConfig
from harness.experiment.runner import run
from harness.experiment.workload import RetryMode
from harness.protocol.conflict import ConflictPolicy
from harness.verify.checker import check_run


def _waited(log: Path) -> int:
    """PREPAREs a participant answered with a yes vote only after another transaction's
    COMMIT or ABORT came in: they waited for its lock (under the immediate-NOK rule,
    a PREPARE that finds the lock held is refused at once)."""
    released: dict[str, bool] = {}  # PREPARE unanswered -> a decision of another came in since
    waited = 0
    for line in read_log(log):
        verb, txid = line.fields.get("msg"), line.fields.get("txid", "")
        if line.event == "recv" and verb == "PREPARE":
            released[txid] = False
        elif line.event == "recv" and verb in ("COMMIT", "ABORT"):
            released = {t: seen or t != txid for t, seen in released.items()}
        elif line.event == "send" and verb == "VOTE" and txid in released:
            waited += line.fields["vote"] == "ok" and released.pop(txid)
    return waited


def test_wait_die_run_is_consistent_every_client_commits_and_prepares_wait(tmp_path: Path) -> None:
    config = RunConfig(
        base_port=0,
        out=tmp_path / "run",
        clients=5,
        transactions=6,
        retry=RetryMode.BACKOFF,
        conflict=ConflictPolicy.WAIT_DIE,
        seed=3,
    )
    run(config)
    assert multiprocessing.active_children() == []
    report = check_run(tmp_path / "run")
    assert report.consistent, report.violations
    assert all(c.committed >= 1 for c in report.clients), [(c.name, c.committed) for c in report.clients]
    # The policy was at work: some PREPARE was queued, then granted on its own connection.
    assert sum(_waited(tmp_path / "run" / f"server{i}.log") for i in (1, 2, 3)) >= 1


def test_a_participant_under_wait_die_answers_each_waiter_on_its_own_connection_in_order(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, size=1)
    clients: list[LineClient] = []
    try:
        cluster.start_participant(1, "--conflict", "wait-die")
        names = cluster.members
        holder, older, lockless, young, asked = clients[:] = [LineClient(cluster.ports[1]) for _ in range(5)]
        assert holder.ask(f"PREPARE txid=h value=1 participants={names} prio=20") == "VOTE txid=h vote=ok"
        older.send(f"PREPARE txid=o value=2 participants={names} prio=10\n".encode())  # older: waits
        lockless.send(f"PREPARE txid=w value=3 participants={names} prio=30 lockless=1\n".encode())  # holds nothing
        assert young.ask(f"PREPARE txid=y value=4 participants={names} prio=40").startswith(
            "VOTE txid=y vote=NOK code=locked"  # younger, and may hold locks elsewhere: dies at once
        )
        assert holder.ask("COMMIT txid=h") == "OUTCOME txid=h state=committed"
        assert older.readline() == "VOTE txid=o vote=ok"  # granted: the oldest waiter
        asked.send(f"PREPARE txid=z value=5 participants={names} prio=5\n".encode())  # older than o: waits
        # Its coordinator gives up: the waiting PREPARE is answered first, then the RESOLVE, in order.
        asked.send(b"RESOLVE txid=z\n")
        assert asked.readline().startswith("VOTE txid=z vote=NOK")
        assert asked.readline() == "OUTCOME txid=z state=aborted"
        assert older.ask("COMMIT txid=o") == "OUTCOME txid=o state=committed"
        assert lockless.readline() == "VOTE txid=w vote=ok"  # it outlived a grant to an older one
        assert lockless.ask("ABORT txid=w") == "OUTCOME txid=w state=aborted"
    finally:
        for c in clients:
            c.close()
        cluster.stop()
