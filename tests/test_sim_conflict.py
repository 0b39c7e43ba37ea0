"""Wait-die (harness.protocol.conflict) under the simulator and the explorer, and its broken variants caught."""

from __future__ import annotations

import io

import pytest

from harness.protocol.conflict import ConflictPolicy
from harness.protocol.messages import Prepare
from harness.protocol.participant import ParticipantCore
from harness.sim import __main__ as cli
from harness.sim.explore import Bounds, Explorer
from harness.sim.invariants import DEADLOCK, LIVENESS, LOCK, check_quiescent, check_waits
from harness.sim.model import ordered_coordinator, wait_die_participant
from harness.sim.simulate import random_runs
from harness.sim.variants import participant_factory


def test_wait_die_two_participants_two_clients_with_a_crash_has_no_violation() -> None:
    result = Explorer(2, 2, Bounds(crashes=1), participant_factory=wait_die_participant).run()
    assert result.ok and result.complete, result.trace


def test_wait_die_one_participant_three_clients_ordered_queue_has_no_violation() -> None:
    result = Explorer(
        1, 3, Bounds(crashes=0), participant_factory=wait_die_participant, coordinator_factory=ordered_coordinator
    ).run()
    assert result.ok and result.complete, result.trace


def test_wait_die_symmetry_reduction_keeps_the_verdict() -> None:
    reduced = Explorer(2, 2, Bounds(crashes=0), participant_factory=wait_die_participant).run()
    full = Explorer(2, 2, Bounds(crashes=0), participant_factory=wait_die_participant, symmetry=False).run()
    assert reduced.ok and full.ok
    assert reduced.states < full.states
    # Clients sent ages and participants queued PREPAREs: the policy was exercised, not bypassed.
    assert reduced.states > Explorer(2, 2, Bounds(crashes=0)).run().states


@pytest.mark.parametrize("symmetry", [True, False])
def test_explorer_catches_younger_waiting_too_with_a_shortest_deadlock(symmetry: bool) -> None:
    result = Explorer(
        2, 2, Bounds(crashes=0), participant_factory=participant_factory("younger-waits"), symmetry=symmetry
    ).run()
    assert [v.rule for v in result.violations] == [DEADLOCK]
    # Shortest: two starts, one PREPARE granted at each participant, two that wait for each other.
    assert sum(1 for line in result.trace if not line.startswith(("    ", "VIOLATION"))) == 6
    assert "t1 waits at p2 for t2" in result.violations[0].detail


def test_explorer_catches_a_grant_to_every_waiter_as_two_locks() -> None:
    result = Explorer(
        1,
        3,
        Bounds(crashes=0),
        participant_factory=participant_factory("grant-every-waiter"),
        coordinator_factory=ordered_coordinator,
    ).run()
    assert LOCK in {v.rule for v in result.violations}


def test_wait_die_passes_seeded_random_runs() -> None:
    summary = random_runs(100, seed=7, participant_factory=wait_die_participant)
    assert summary.failure is None, summary.failure and summary.failure.trace[-30:]


def test_random_simulation_catches_younger_waiting_too() -> None:
    summary = random_runs(100, seed=1, participant_factory=participant_factory("younger-waits"))
    assert summary.failure is not None and summary.failure.violations[0].rule == DEADLOCK


def test_a_waiter_left_queued_once_quiet_is_a_liveness_violation() -> None:
    core = ParticipantCore.restore("p1:1", [], conflict=ConflictPolicy.WAIT_DIE)
    core.on_request(5, Prepare(txid="t1", value=1, participants=("p1:1",), prio=2))
    core.on_request(6, Prepare(txid="t2", value=2, participants=("p1:1",), prio=1))
    assert list(core.waiting) == ["t2"]
    store = {t: r for t, r in core.records.items()}
    rules = {v.rule for v in check_quiescent(["p1"], [core], [store], {}, [])}
    assert LIVENESS in rules


def test_check_waits_finds_a_cycle_across_participants_and_nothing_in_a_chain() -> None:
    assert [v.rule for v in check_waits([("p1", "t2", "t1"), ("p2", "t1", "t2")])] == [DEADLOCK]
    assert check_waits([("p1", "t2", "t1"), ("p2", "t3", "t2"), ("p2", "t2", "t1")]) == []


def test_cli_explore_takes_the_conflict_policy_and_a_participant_variant() -> None:
    out = io.StringIO()
    argv = ["explore", "--conflict", "wait-die", "--participants", "1", "--clients", "2", "--crashes", "0"]
    assert cli.main(argv, out) == 0, out.getvalue()
    out = io.StringIO()
    assert (
        cli.main(
            [*argv[:-4], "--participants", "2", "--clients", "2", "--crashes", "0", "--variant", "younger-waits"], out
        )
        == 1
    )
    assert "no deadlock" in out.getvalue() and "--variant younger-waits" in out.getvalue()
