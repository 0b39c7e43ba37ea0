"""Compaction under the simulator: the real compacting participant keeps every
property through losses, duplicates, reordering and crashes, and each way of
getting forgetting wrong is caught (harness.protocol.participant, "Compaction")."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from harness.protocol.messages import FORGOTTEN, Error, Message, Outcome, TxState
from harness.protocol.participant import Action, ParticipantCore, TxRecord
from harness.sim.invariants import AC1, AC2, AC3, COMPACTION
from harness.sim.model import ParticipantFactory, compacting_participant, ordered_coordinator
from harness.sim.simulate import SimParams, Simulation, random_runs, simulate

# Four transactions per client: each client's third and fourth name later txids,
# so records are forgotten in most runs; more duplicates than the default, so
# that late copies meet forgotten txids.
PARAMS = SimParams(transactions=4, duplicate=0.1, loss=0.08, crashes=3)


class ForgetCommitEarly(ParticipantCore):
    """Forgets a commit without waiting for a later one (condition (b) dropped)."""

    def may_forget(self, record: TxRecord) -> bool:
        return record.state is not TxState.PREPARED


class ForgottenPrepareVotesAgain(ParticipantCore):
    """Does not recognise a forgotten txid: a late PREPARE of one is voted on anew."""

    def is_forgotten(self, txid: str) -> bool:
        return False


class ForgottenMeansCommitted(ParticipantCore):
    """A prepared participant takes a peer's "forgotten" for "committed"."""

    def on_peer_reply(self, peer: str, msg: Message) -> list[Action]:
        if isinstance(msg, Error) and msg.code == FORGOTTEN and msg.txid is not None:
            msg = Outcome(txid=msg.txid, state=TxState.COMMITTED)
        return super().on_peer_reply(peer, msg)


def compacting(cls: type[ParticipantCore]) -> ParticipantFactory:
    def factory(name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None) -> ParticipantCore:
        return cls.restore(name, records, cluster, compact=True)

    return factory


def test_compacting_participants_forget_records_in_simulated_runs() -> None:
    forgotten = 0
    for seed in range(20):
        sim = Simulation(seed, PARAMS, participant_factory=compacting_participant)
        assert sim.run().ok
        forgotten += sum(len(pn.forgotten) for pn in sim.pnodes)
        for pn in sim.pnodes:
            assert pn.core is not None and pn.core.committed_count == sum(
                r.state is TxState.COMMITTED for r in pn.history.values()
            )
    assert forgotten > 100  # compaction really happens within these sizes


@pytest.mark.parametrize("ordered", [False, True])
def test_compacting_participants_pass_seeded_random_runs(ordered: bool) -> None:
    extra = {"coordinator_factory": ordered_coordinator} if ordered else {}
    summary = random_runs(250, seed=7, params=PARAMS, participant_factory=compacting_participant, **extra)
    assert summary.failure is None, summary.failure and summary.failure.violations
    assert summary.runs == 250


@pytest.mark.parametrize(
    ("variant", "rules"),
    [
        (ForgetCommitEarly, {AC1}),
        (ForgottenPrepareVotesAgain, {AC2, COMPACTION}),
        (ForgottenMeansCommitted, {AC1, AC3}),
    ],
)
def test_random_simulation_catches_broken_compaction(variant: type[ParticipantCore], rules: set[str]) -> None:
    factory = compacting(variant)
    summary = random_runs(300, seed=1, params=PARAMS, participant_factory=factory)
    failure = summary.failure
    assert failure is not None, f"{variant.__name__} was not caught in 300 runs"
    assert failure.violations[0].rule in rules
    assert any(" forgets " in line for line in failure.trace)  # the trace shows the forgetting
    again = simulate(failure.seed, PARAMS, participant_factory=factory, trace=True)
    assert again.violations == failure.violations
