"""Wait-die on real processes: a contended run stays consistent and every client commits."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

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
