"""Wait-die at the participant (harness.protocol.conflict), driven with messages only.

Expected replies are written out from the rule (docs/protocol.md), not read
from the core, so that a wrong grant or a wrong death is caught.
"""

from __future__ import annotations

import pytest

from harness.protocol.conflict import ConflictPolicy
from harness.protocol.messages import (
    FORGOTTEN,
    Abort,
    Commit,
    Error,
    Message,
    NokCode,
    Outcome,
    Prepare,
    Resolve,
    Status,
    TxState,
    Vote,
)
from harness.protocol.participant import Action, ParticipantCore, Persist, Reply, TxRecord

ME = "127.0.0.1:8886"
P2 = "127.0.0.1:8887"
ALL = (ME, P2)
HOLDER, OLD, OLDER, YOUNG = "h", "o", "oo", "y"
# Ages: smaller is older. The holder is in the middle.
PRIO = {OLDER: 10, OLD: 20, HOLDER: 30, YOUNG: 40}


def prepare(txid: str, prio: int | None = -1) -> Prepare:
    return Prepare(txid=txid, value=1, participants=ALL, prio=PRIO[txid] if prio == -1 else prio)


def core(policy: ConflictPolicy = ConflictPolicy.WAIT_DIE) -> ParticipantCore:
    return ParticipantCore.restore(ME, [], conflict=policy)


def replies(actions: list[Action]) -> list[tuple[int, Message]]:
    return [(a.conn, a.msg) for a in actions if isinstance(a, Reply)]


def persisted(actions: list[Action]) -> list[tuple[str, TxState]]:
    return [(a.record.txid, a.record.state) for a in actions if isinstance(a, Persist)]


def held(c: ParticipantCore) -> ParticipantCore:
    assert replies(c.on_request(1, prepare(HOLDER))) == [(1, Vote(txid=HOLDER, yes=True))]
    return c


def test_older_waits_without_record_or_reply() -> None:
    c = held(core())
    assert c.on_request(2, prepare(OLD)) == []
    assert OLD not in c.records and list(c.waiting) == [OLD]


def test_younger_dies_at_once_with_a_durable_nok() -> None:
    c = held(core())
    actions = c.on_request(2, prepare(YOUNG))
    assert persisted(actions) == [(YOUNG, TxState.ABORTED)]
    [(conn, vote)] = replies(actions)
    assert conn == 2 and isinstance(vote, Vote) and not vote.yes and vote.code is NokCode.LOCKED
    assert not c.waiting


def test_nok_policy_ignores_age() -> None:
    c = held(core(ConflictPolicy.NOK))
    [(_, vote)] = replies(c.on_request(2, prepare(OLDER)))
    assert isinstance(vote, Vote) and not vote.yes and not c.waiting


def test_without_a_priority_a_prepare_counts_as_youngest() -> None:
    c = held(core())
    [(_, vote)] = replies(c.on_request(2, prepare(OLD, prio=None)))
    assert isinstance(vote, Vote) and not vote.yes


def test_a_holder_restored_from_storage_has_no_known_age_so_requesters_die() -> None:
    record = TxRecord(txid=HOLDER, state=TxState.PREPARED, value=1, participants=ALL)
    c = ParticipantCore.restore(ME, [record], conflict=ConflictPolicy.WAIT_DIE)
    [(_, vote)] = replies(c.on_request(2, prepare(OLDER)))
    assert isinstance(vote, Vote) and not vote.yes


def test_release_grants_the_oldest_waiter_on_its_own_connection_and_younger_waiters_die() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    c.on_request(3, prepare(OLDER))
    actions = c.on_request(1, Commit(txid=HOLDER))
    assert persisted(actions) == [(HOLDER, TxState.COMMITTED), (OLDER, TxState.PREPARED), (OLD, TxState.ABORTED)]
    got = replies(actions)
    assert got[0] == (1, Outcome(txid=HOLDER, state=TxState.COMMITTED))
    assert got[1] == (3, Vote(txid=OLDER, yes=True))
    conn, vote = got[2]
    assert conn == 2 and isinstance(vote, Vote) and not vote.yes and vote.code is NokCode.LOCKED
    assert c.lock == OLDER and not c.waiting
    # The vote is made durable before its reply: the Persist comes first in the list.
    vote_at = next(i for i, a in enumerate(actions) if isinstance(a, Reply) and a.msg == Vote(txid=OLDER, yes=True))
    persist_at = next(i for i, a in enumerate(actions) if isinstance(a, Persist) and a.record.txid == OLDER)
    assert persist_at < vote_at


def test_a_waiter_older_than_the_new_holder_keeps_waiting() -> None:
    c = held(core())
    c.on_request(3, prepare(OLDER))
    c.on_request(1, Abort(txid=HOLDER))  # OLDER now holds
    assert c.lock == OLDER
    # A newcomer older than nobody dies; the lock passes on only at the next release.
    [(_, vote)] = replies(c.on_request(2, prepare(OLD)))
    assert isinstance(vote, Vote) and not vote.yes


def test_resolve_of_a_waiter_answers_its_prepare_with_nok_then_the_resolve_aborted() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    actions = c.on_request(2, Resolve(txid=OLD))
    assert persisted(actions) == [(OLD, TxState.ABORTED)]
    got = replies(actions)
    assert [conn for conn, _ in got] == [2, 2]
    assert isinstance(got[0][1], Vote) and not got[0][1].yes
    assert got[1][1] == Outcome(txid=OLD, state=TxState.ABORTED)
    assert not c.waiting and c.lock == HOLDER


def test_abort_from_elsewhere_ends_the_wait_and_is_answered_there() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    got = replies(c.on_request(9, Abort(txid=OLD)))
    assert [conn for conn, _ in got] == [2, 9]
    assert got[1][1] == Outcome(txid=OLD, state=TxState.ABORTED)
    # Released later, the lock goes to nobody: the waiter is gone for good.
    assert replies(c.on_request(1, Commit(txid=HOLDER))) == [(1, Outcome(txid=HOLDER, state=TxState.COMMITTED))]
    assert c.lock is None


def test_another_request_on_a_waiters_connection_ends_the_wait_first() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    got = replies(c.on_request(2, Status()))
    assert isinstance(got[0][1], Vote) and not got[0][1].yes
    assert got[1][1].kind.value == "STATE"


def test_a_closed_connection_forgets_its_waiter() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    assert c.on_closed(2) == [] and not c.waiting
    assert OLD not in c.records  # as if the PREPARE had been lost: its coordinator resolves it


def test_a_duplicate_prepare_of_a_waiter_is_answered_too_when_granted() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    assert c.on_request(4, prepare(OLD)) == []
    got = replies(c.on_request(1, Commit(txid=HOLDER)))
    assert (2, Vote(txid=OLD, yes=True)) in got and (4, Vote(txid=OLD, yes=True)) in got


def test_a_crash_forgets_the_queue() -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    durable = list(c.records.values())
    again = ParticipantCore.restore(ME, durable, conflict=ConflictPolicy.WAIT_DIE)
    assert not again.waiting and again.lock == HOLDER
    # Its holder's age is forgotten too: requesters die until the lock passes on.
    [(_, vote)] = replies(again.on_request(2, prepare(OLDER)))
    assert isinstance(vote, Vote) and not vote.yes


@pytest.mark.parametrize(
    "answer",
    [Outcome(txid=HOLDER, state=TxState.ABORTED), Error(code=FORGOTTEN, txid=HOLDER, detail="")],
    ids=["aborted", "forgotten"],
)
def test_a_peer_decision_releasing_the_lock_grants_the_waiter(answer: Message) -> None:
    c = held(core())
    c.on_request(2, prepare(OLD))
    c.on_timeout(HOLDER)  # asks P2
    actions = c.on_peer_reply(P2, answer)
    assert (2, Vote(txid=OLD, yes=True)) in replies(actions) and c.lock == OLD


def test_a_lockless_prepare_waits_whatever_its_age_and_survives_a_grant_to_an_older_one() -> None:
    c = held(core())
    young = Prepare(txid=YOUNG, value=1, participants=ALL, prio=PRIO[YOUNG], lockless=True)
    assert c.on_request(2, young) == []
    c.on_request(3, prepare(OLDER))
    got = replies(c.on_request(1, Commit(txid=HOLDER)))
    assert (3, Vote(txid=OLDER, yes=True)) in got and 2 not in [conn for conn, _ in got]
    assert list(c.waiting) == [YOUNG]  # holds nothing: nobody can wait for it, so it may wait for anyone
    got = replies(c.on_request(3, Commit(txid=OLDER)))
    assert (2, Vote(txid=YOUNG, yes=True)) in got
