"""The checker on a ``--backend postgres`` run folder, written by hand (no PostgreSQL needed).

Each test starts from a consistent folder, breaks one thing in the
databases' final states, and expects the violation that names it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from harness.events.log import EventLog
from harness.events.schema import BEGIN, OUTCOME
from harness.verify.checker import check_run
from harness.verify.model import CheckReport, ViolationKind

CLUSTERS = ("pg1", "pg2", "pg3")
T1, T2 = "client1-aa-1", "client1-aa-2"


def write_folder(folder: Path, final: dict[str, Any], results: tuple[str, str] = ("committed", "committed")) -> Path:
    folder.mkdir()
    (folder / "run.json").write_text(
        json.dumps(
            {
                "backend": "postgres",
                "participants": [{"node": n, "address": f"127.0.0.1:{5000 + i}"} for i, n in enumerate(CLUSTERS)],
                "clients": ["client1"],
            }
        )
    )
    log = EventLog(folder / "client1.log", "client1")
    for op, (txid, result) in enumerate(zip((T1, T2), results, strict=True), 1):
        log.write(BEGIN, txid=txid, value=op, participants=",".join(CLUSTERS), prepare="parallel")
        log.write(
            OUTCOME,
            txid=txid,
            result=result,
            op=op,
            attempt=1,
            value=op,
            latency_ms="1.000",
            cause="all-yes" if result == "committed" else "no-vote",
        )
    log.close()
    (folder / "final_states.json").write_text(json.dumps(final))
    return folder


def consistent_final() -> dict[str, Any]:
    committed = [[T1, 1, 1], [T2, 2, 2]]
    return {
        n: {
            "address": f"127.0.0.1:{5000 + i}",
            "backend": "postgres",
            "status": {"storage_server": 2, "version": 2, "lock": None, "committed": 2, "aborted": 0},
            "storage": {"committed": copy.deepcopy(committed), "prepared": [], "aborted": 0, "pg_prepared_xacts": []},
        }
        for i, n in enumerate(CLUSTERS)
    }


def kinds(report: CheckReport) -> set[ViolationKind]:
    return {v.kind for v in report.violations}


@pytest.mark.timeout(10)
def test_a_consistent_postgres_folder_passes_without_participant_logs(tmp_path: Path) -> None:
    report = check_run(write_folder(tmp_path / "run", consistent_final()))
    assert report.consistent, [v.message for v in report.violations]
    assert [r.commits for r in report.replicas] == [2, 2, 2]


@pytest.mark.timeout(10)
def test_a_prepared_transaction_left_behind_is_a_violation(tmp_path: Path) -> None:
    final = consistent_final()
    final["pg2"]["storage"]["prepared"] = ["client9-zz-7"]
    report = check_run(write_folder(tmp_path / "run", final))
    left = [v for v in report.violations if v.kind is ViolationKind.PREPARED_LEFT]
    assert [(v.txid, "pg2" in v.message) for v in left] == [("client9-zz-7", True)]


@pytest.mark.timeout(10)
def test_a_commit_with_another_value_than_proposed_is_a_violation(tmp_path: Path) -> None:
    final = consistent_final()
    for n in CLUSTERS:
        final[n]["storage"]["committed"][1][2] = 99
        final[n]["status"]["storage_server"] = 99
    report = check_run(write_folder(tmp_path / "run", final))
    assert kinds(report) == {ViolationKind.VALIDITY}
    assert {v.txid for v in report.violations} == {T2}


@pytest.mark.timeout(10)
def test_a_commit_missing_at_one_cluster_breaks_replicas_and_the_client_truth(tmp_path: Path) -> None:
    final = consistent_final()
    final["pg3"]["storage"]["committed"].pop()
    final["pg3"]["status"].update(storage_server=1, version=1)
    report = check_run(write_folder(tmp_path / "run", final))
    assert {ViolationKind.REPLICAS, ViolationKind.CLIENT_TRUTH} <= kinds(report)
    assert any(v.kind is ViolationKind.CLIENT_TRUTH and v.txid == T2 for v in report.violations)


@pytest.mark.timeout(10)
def test_a_client_told_aborted_of_a_commit_is_caught(tmp_path: Path) -> None:
    report = check_run(write_folder(tmp_path / "run", consistent_final(), results=("committed", "aborted")))
    assert kinds(report) == {ViolationKind.CLIENT_TRUTH}
