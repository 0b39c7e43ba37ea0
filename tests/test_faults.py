"""Faults on real processes: every crash point, a partition between the phases,
random faults of every kind, each run checked from its folder."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any, cast

import pytest

from harness.events.log import read_log
from harness.experiment.config import RunConfig
from harness.experiment.faults import NEMESIS_KINDS
from harness.experiment.runner import run
from harness.verify.checker import check_run
from harness.verify.model import CheckReport

# Short timeouts keep the runs quick; the participants still wait longer than
# a client before they step in, as in real use.
FAST = {"timeout": 0.5, "resolve_after": 1.0, "base_port": 0}


def _checked(tmp_path: Path, **kw: object) -> CheckReport:
    folder = tmp_path / "run"
    run(RunConfig(out=folder, **{**FAST, **kw}))  # type: ignore[arg-type]
    assert multiprocessing.active_children() == []
    report = check_run(folder)
    assert report.violations == [], "\n".join(v.message for v in report.violations)
    for replica in report.replicas:
        assert replica.lock is None
    assert all(f["healed"] is not None for f in report.faults)
    return report


def _final(folder: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((folder / "final_states.json").read_text()))


def _events(folder: Path, node: str, event: str) -> list[dict[str, str]]:
    return [line.fields for line in read_log(folder / f"{node}.log") if line.event == event]


@pytest.mark.parametrize("point", ["before-vote", "after-vote", "after-commit-reply", "after-commit"])
def test_participant_killed_at_a_crash_point_restarts_and_loses_nothing(tmp_path: Path, point: str) -> None:
    # Two clients with retries: some contention, and commits for certain (after-commit needs one).
    # after-commit-reply: the commit was acknowledged, its record not yet durable (a lazy commit):
    # the restart finds the yes vote, and the peers say commit.
    report = _checked(tmp_path, clients=2, transactions=4, retry="backoff", crash=(f"participant:{point}",), seed=11)
    folder = tmp_path / "run"
    assert [c["point"] for c in _events(folder, "server1", "crash")] == [point]
    (crash,) = [f for f in report.faults if f["kind"] == "crash"]
    assert crash["target"] == "server1" and crash["point"] == point
    server1 = next(r for r in report.replicas if r.node == "server1")
    assert server1.restarts == 1
    # it crashed holding a yes vote (or a commit) that it had made durable: it came back with it
    restored = _events(folder, "server1", "restored")
    expected = "committed" if point == "after-commit" else "prepared"
    assert any(r["state"] == expected for r in restored)
    if point == "after-commit-reply":
        lines = list(read_log(folder / "server1.log"))
        crashed = next(n for n, line in enumerate(lines) if line.event == "crash")
        (acked,) = [line.fields["txid"] for line in lines[crashed - 1 : crashed] if line.event == "send"]
        assert {r["txid"]: r["state"] for r in restored}[acked] == "prepared"
        # and it ends committed at every replica (the checker's agreement and replicas rules)
        assert all(acked in [t for t, _, _ in f["storage"]["committed"]] for f in _final(folder).values())


@pytest.mark.parametrize("point", ["after-prepare", "after-first-commit"])
def test_client_killed_between_the_phases_leaves_the_participants_to_finish(tmp_path: Path, point: str) -> None:
    report = _checked(tmp_path, clients=1, transactions=3, crash=(f"client:{point}",), seed=12)
    assert report.abandoned == 1  # the client died inside its first transaction
    assert report.resolved_by_peers >= 1
    # with no contention every participant voted yes: the transaction commits, without its client
    final = _final(tmp_path / "run")
    committed = {tuple(tuple(c) for c in f["storage"]["committed"]) for f in final.values()}
    assert len(committed) == 1
    (sequence,) = committed
    assert [txid.split("-")[0] for txid, _, _ in sequence] == ["client1"]


def test_partition_between_the_phases_is_resolved_by_the_cut_participant(tmp_path: Path) -> None:
    report = _checked(tmp_path, clients=1, transactions=3, crash=("partition:between-phases",), seed=13)
    (cut,) = [f for f in report.faults if f["kind"] == "partition"]
    assert cut["target"] == "client1->server2"
    folder = tmp_path / "run"
    # server2 voted yes, never heard the COMMIT, and committed after asking its peers
    decided = [d for d in _events(folder, "server2", "durable") if d["state"] == "committed"]
    assert decided, "server2 never committed"
    why = decided[0]["why"]
    assert why == "every participant voted yes" or why.startswith("peer "), why
    assert report.resolved_by_peers >= 1
    assert {(r.storage_server, r.version) for r in report.replicas} == {(1_000_001, 1)}


def test_random_faults_of_every_kind_keep_the_replicas_consistent(tmp_path: Path) -> None:
    report = _checked(
        tmp_path, clients=5, duration=4.0, retry="backoff", nemesis=NEMESIS_KINDS, nemesis_interval=0.4, seed=14
    )
    assert len(report.faults) >= 3
    assert sum(c.committed for c in report.clients) >= 1


@pytest.mark.slow
def test_soak_sixty_seconds_of_random_faults_with_ten_clients(tmp_path: Path) -> None:
    report = _checked(
        tmp_path,
        clients=10,
        duration=60.0,
        retry="backoff",
        nemesis=NEMESIS_KINDS,
        nemesis_interval=1.0,
        seed=15,
        timeout=1.0,
        resolve_after=2.0,
    )
    kinds = {f["kind"] for f in report.faults}
    assert kinds >= set(NEMESIS_KINDS) - {"kill-client"} or len(report.faults) >= 20
    assert sum(c.committed for c in report.clients) >= 10
