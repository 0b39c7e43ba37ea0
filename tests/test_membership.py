"""The membership rule in the participant core (harness.protocol.participant).

A participant built with its cluster refuses, with ERROR not-cluster and no
action but that reply, any PREPARE whose participant list is not exactly the
cluster; it asks RESOLVE of members only and hears only members. While
rejoining it refuses every transactional request and writes nothing.
"""

from __future__ import annotations

import itertools

import pytest

from harness.protocol.messages import Abort, Commit, Error, Outcome, Prepare, Resolve, State, Status, TxState, Vote
from harness.protocol.participant import ParticipantCore, Persist, Reply, SendPeer, TxRecord

ME = "127.0.0.1:8886"
P2 = "127.0.0.1:8887"
P3 = "127.0.0.1:8888"
CLUSTER = (ME, P2, P3)
STRANGER = "127.0.0.1:1"
CONN = 3


def core() -> ParticipantCore:
    return ParticipantCore.restore(ME, [], cluster=CLUSTER)


# Every list a sender could try that is not the cluster: subsets with this
# participant, the cluster plus an outsider, an outsider in a member's place.
NOT_THE_CLUSTER = [lists for n in (1, 2) for lists in itertools.combinations(CLUSTER, n) if ME in lists] + [
    (ME, P2, P3, STRANGER),
    (ME, P2, STRANGER),
    (ME, STRANGER),
]


@pytest.mark.parametrize("participants", NOT_THE_CLUSTER, ids=",".join)
def test_a_prepare_not_naming_exactly_the_cluster_is_refused_and_changes_nothing(
    participants: tuple[str, ...],
) -> None:
    c = core()
    before = c.status()
    actions = c.on_request(CONN, Prepare(txid="t1", value=555, participants=participants))
    assert len(actions) == 1 and isinstance(actions[0], Reply)
    msg = actions[0].msg
    assert isinstance(msg, Error) and msg.code == "not-cluster" and msg.txid == "t1"
    assert c.records == {} and c.status() == before and c.lock is None
    # and the refused transaction is not remembered: the real one still gets a yes vote
    (vote,) = [
        a.msg for a in c.on_request(CONN, Prepare(txid="t1", value=1, participants=CLUSTER)) if isinstance(a, Reply)
    ]
    assert vote == Vote(txid="t1", yes=True)


@pytest.mark.parametrize("order", list(itertools.permutations(CLUSTER)), ids=",".join)
def test_the_cluster_in_any_order_is_accepted(order: tuple[str, ...]) -> None:
    c = core()
    actions = c.on_request(CONN, Prepare(txid="t1", value=7, participants=order))
    assert any(isinstance(a, Persist) and a.record.state is TxState.PREPARED for a in actions)
    assert c.lock == "t1"


def test_resolve_goes_to_members_only_and_strangers_are_not_heard() -> None:
    # A record from before the cluster was known (or a damaged one) names a stranger:
    # the participant still asks only members, and ignores a stranger's answer.
    odd = TxRecord(txid="t1", state=TxState.PREPARED, value=5, participants=(ME, P2, STRANGER))
    c = ParticipantCore.restore(ME, [odd], cluster=CLUSTER)
    sent = {a.peer for a in c.recover() if isinstance(a, SendPeer)}
    assert sent == {P2}
    assert c.on_peer_reply(STRANGER, Outcome(txid="t1", state=TxState.COMMITTED)) == []
    assert c.on_peer_reply(STRANGER, Outcome(txid="t1", state=TxState.ABORTED)) == []
    assert c.records["t1"].state is TxState.PREPARED
    decided = c.on_peer_reply(P2, Outcome(txid="t1", state=TxState.ABORTED))
    assert [a.record.state for a in decided if isinstance(a, Persist)] == [TxState.ABORTED]


def test_without_a_cluster_the_old_rule_holds() -> None:
    c = ParticipantCore.restore(ME, [])
    actions = c.on_request(CONN, Prepare(txid="t1", value=5, participants=(ME, P2)))
    assert c.lock == "t1" and any(isinstance(a, Persist) for a in actions)


@pytest.mark.parametrize(
    "msg",
    [
        Prepare(txid="t1", value=5, participants=CLUSTER),
        Commit(txid="t1"),
        Abort(txid="t1"),
        Resolve(txid="t1"),
    ],
    ids=lambda m: m.kind.value,
)
def test_a_rejoining_participant_refuses_every_transactional_request(msg: Prepare | Commit | Abort | Resolve) -> None:
    c = ParticipantCore.restore(ME, [], cluster=CLUSTER, rejoining=True)
    actions = c.on_request(CONN, msg)
    assert len(actions) == 1 and isinstance(actions[0], Reply)
    reply = actions[0].msg
    assert isinstance(reply, Error) and reply.code == "rejoining"
    assert c.records == {}
    # STATUS is still answered
    (status,) = c.on_request(CONN, Status())
    assert isinstance(status, Reply) and isinstance(status.msg, State)


def test_rejoined_records_the_peers_state_then_votes() -> None:
    c = ParticipantCore.restore(ME, [], cluster=CLUSTER, rejoining=True)
    (persist,) = c.rejoined(storage_server=99, version=4)
    assert isinstance(persist, Persist) and not persist.lazy
    assert persist.record.state is TxState.COMMITTED and persist.record.version == 4
    assert (c.storage_server, c.version, c.rejoining) == (99, 4, False)
    # restored from that record, the participant has the same state
    again = ParticipantCore.restore(ME, [persist.record], cluster=CLUSTER)
    assert (again.storage_server, again.version) == (99, 4)
    actions = c.on_request(CONN, Prepare(txid="t2", value=1, participants=CLUSTER))
    assert Vote(txid="t2", yes=True) in [a.msg for a in actions if isinstance(a, Reply)]
    committed = c.on_request(CONN, Commit(txid="t2"))
    assert [a.record.version for a in committed if isinstance(a, Persist)] == [5]


def test_rejoined_at_version_0_writes_nothing() -> None:
    c = ParticipantCore.restore(ME, [], cluster=CLUSTER, rejoining=True)
    assert c.rejoined(storage_server=0, version=0) == []
    assert not c.rejoining and c.records == {}
