"""Compaction under the explorer: every interleaving, from histories where one
participant is still prepared on a transaction another may forget, or where
late requests of a forgotten transaction are still in flight."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from test_sim_compaction import ForgetCommitEarly, ForgottenMeansCommitted, ForgottenPrepareVotesAgain

from harness.protocol.messages import Commit, Message, Prepare, TxState
from harness.protocol.participant import Action, Forget, ParticipantCore, TxRecord
from harness.sim.explore import Bounds, Explorer
from harness.sim.invariants import AC1, AC2, AC3
from harness.sim.model import ParticipantFactory
from harness.sim.states import History

P = ("p1:1", "p2:2")


def rec(txid: str, state: TxState, version: int = 0, value: int = 1) -> TxRecord:
    return TxRecord(txid=txid, state=state, value=value, participants=P, version=version)


# p1 committed t1-1; p2 voted yes and crashed before it heard; client 1 moved on to t1-2.
PREPARED_ELSEWHERE = History(
    records=((rec("t1-1", TxState.COMMITTED, 1),), (rec("t1-1", TxState.PREPARED),)), down=frozenset({1})
)
# p1 aborted t1-1 (it voted no); p2 voted yes and crashed.
ABORTED_ELSEWHERE = History(
    records=((rec("t1-1", TxState.ABORTED),), (rec("t1-1", TxState.PREPARED),)), down=frozenset({1})
)
# Both committed t1-1 then t2-1; copies of t1-1's PREPARE and COMMIT are still in flight.
_BOTH = (rec("t1-1", TxState.COMMITTED, 1, 1), rec("t2-1", TxState.COMMITTED, 2, 2))
LATE_COPIES = History(
    records=(_BOTH, _BOTH),
    late=tuple((0, p, m) for p in (0, 1) for m in (Prepare(txid="t1-1", value=1, participants=P), Commit(txid="t1-1"))),
)
HISTORIES = {"prepared-elsewhere": PREPARED_ELSEWHERE, "aborted-elsewhere": ABORTED_ELSEWHERE, "late": LATE_COPIES}

forgot: set[str] = set()  # histories under which the real core forgot something


class Watched(ParticipantCore):
    """The real compacting core, noting whether it ever forgets (so that a
    passing exploration is known to have exercised forgetting)."""

    history = ""

    def on_request(self, conn: int, msg: Message) -> list[Action]:
        actions = super().on_request(conn, msg)
        if any(isinstance(a, Forget) and a.txids for a in actions):
            forgot.add(self.history)
        return actions


def compacting(cls: type[ParticipantCore], history: str = "") -> ParticipantFactory:
    def factory(name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None) -> ParticipantCore:
        core = cls.restore(name, records, cluster, compact=True)
        if isinstance(core, Watched):
            core.history = history
        return core

    return factory


def explore(history: str, factory: ParticipantFactory, bounds: Bounds) -> Explorer:
    return Explorer(2, 1, bounds, participant_factory=factory, txids=("t1-2",), history=HISTORIES[history])


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_compacting_participants_pass_every_interleaving(history: str) -> None:
    result = explore(history, compacting(Watched, history), Bounds(crashes=1)).run()
    assert result.ok and result.complete, result.violations
    assert result.states > 1000


def test_the_real_core_forgets_within_the_explored_histories() -> None:
    forgot.clear()
    for history in sorted(HISTORIES):
        explore(history, compacting(Watched, history), Bounds(crashes=1)).run()
    # late: t1-1 (version 1 < 2) at t1-2's PREPARE; aborted-elsewhere: p1's abort at once;
    # prepared-elsewhere: p2's t1-1 once it has learnt the commit and t1-2's PREPARE arrives.
    assert forgot == set(HISTORIES)


@pytest.mark.slow
@pytest.mark.parametrize("history", ["prepared-elsewhere", "late"])
def test_compacting_participants_pass_every_interleaving_with_loss_and_duplicates(history: str) -> None:
    result = explore(history, compacting(Watched), Bounds(crashes=1, losses=1, duplicates=1)).run()
    assert result.ok and result.complete, result.violations


@pytest.mark.parametrize(
    ("variant", "history", "rule"),
    [
        (ForgetCommitEarly, "prepared-elsewhere", AC1),
        (ForgottenMeansCommitted, "aborted-elsewhere", AC3),
        (ForgottenPrepareVotesAgain, "late", AC2),
    ],
)
def test_explorer_catches_broken_compaction_with_a_short_trace(
    variant: type[ParticipantCore], history: str, rule: str
) -> None:
    result = explore(history, compacting(variant), Bounds(crashes=1)).run()
    assert not result.ok and result.violations[0].rule == rule
    assert len(result.trace) < 30 and result.trace[-1].startswith("VIOLATION")
