"""The participant's state machine, driven with messages and timeouts only.

The expected transitions below are written out by hand from the protocol
(docs/protocol.md and the module docstring), not read from TRANSITIONS, so that
a wrong entry in the table is caught rather than copied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from harness.protocol.messages import (
    Abort,
    Commit,
    Error,
    Message,
    NokCode,
    Outcome,
    Prepare,
    Resolve,
    State,
    Status,
    TxState,
    Vote,
)
from harness.protocol.participant import (
    TRANSITIONS,
    Action,
    CancelTimer,
    Close,
    Event,
    ParticipantCore,
    Persist,
    Reply,
    SendPeer,
    StartTimer,
    TxRecord,
)

ME = "127.0.0.1:8886"
P2 = "127.0.0.1:8887"
P3 = "127.0.0.1:8888"
ALL = (ME, P2, P3)
STRANGER = "10.0.0.9:9999"
TX = "c1-0001"
OTHER = "c2-0001"  # a second transaction, to hold the lock
VALUE = 42
CONN = 7


def prepare(txid: str = TX, value: int = VALUE, participants: tuple[str, ...] = ALL) -> Prepare:
    return Prepare(txid=txid, value=value, participants=participants)


def record(txid: str, state: TxState, value: int = VALUE, version: int = 0) -> TxRecord:
    return TxRecord(txid=txid, state=state, value=value, participants=ALL, version=version)


def persists(actions: list[Action]) -> list[Persist]:
    return [a for a in actions if isinstance(a, Persist)]


def replies(actions: list[Action]) -> list[Reply]:
    return [a for a in actions if isinstance(a, Reply)]


def only_reply(actions: list[Action]) -> Message:
    (reply,) = replies(actions)
    assert reply.conn == CONN
    return reply.msg


def gist(msg: Message) -> Message:
    """A reply without its free-text reason (which may say why differently)."""
    return Vote(txid=msg.txid, yes=msg.yes) if isinstance(msg, Vote) else msg


def state_of(core: ParticipantCore, txid: str = TX) -> TxState | None:
    rec = core.records.get(txid)
    return rec.state if rec else None


def replay(cores_actions: list[list[Action]]) -> dict[str, TxRecord]:
    """What storage would hold after these actions: the last Persist per txid."""
    stored: dict[str, TxRecord] = {}
    for actions in cores_actions:
        for p in persists(actions):
            stored[p.record.txid] = p.record
    return stored


# ---------------------------------------------------------------- the table itself


def test_transition_table_is_total_over_states_and_events() -> None:
    states = [None, *TxState]
    assert set(TRANSITIONS) == set(itertools.product(states, Event))


def test_transition_table_never_forgets_a_record_or_changes_a_decision() -> None:
    for (before, event), (after, _answer) in TRANSITIONS.items():
        if before is not None:
            assert after is not None, (before, event)
        if before in (TxState.COMMITTED, TxState.ABORTED):
            assert after is before, (before, event)  # AC2: a decision never changes


def test_transition_table_only_commits_what_was_prepared() -> None:
    for (before, event), (after, _answer) in TRANSITIONS.items():
        if after is TxState.COMMITTED:
            assert before in (TxState.PREPARED, TxState.COMMITTED), (before, event)


# ---------------------------------------------------------------- every (state, request) pair


@dataclass(frozen=True)
class Case:
    before: TxState | None
    request: str  # a key of REQUESTS
    after: TxState | None
    reply: str  # "yes", "no", "outcome", "not-prepared", "state"


REQUESTS = ["prepare-lock-free", "prepare-locked-by-other", "commit", "abort", "resolve", "status"]

P, C, A = TxState.PREPARED, TxState.COMMITTED, TxState.ABORTED
CASES = [
    # no record of TX yet
    Case(None, "prepare-lock-free", P, "yes"),
    Case(None, "prepare-locked-by-other", A, "no"),  # the seed's NOK, remembered
    Case(None, "commit", None, "not-prepared"),  # never voted: cannot commit
    Case(None, "abort", A, "outcome"),
    Case(None, "resolve", A, "outcome"),  # Cornus: asked before voting -> abort
    Case(None, "status", None, "state"),
    # voted yes on TX
    Case(P, "prepare-lock-free", P, "yes"),  # a duplicate PREPARE
    Case(P, "prepare-locked-by-other", P, "yes"),
    Case(P, "commit", C, "outcome"),
    Case(P, "abort", A, "outcome"),
    Case(P, "resolve", P, "outcome"),
    Case(P, "status", P, "state"),
    # TX committed
    Case(C, "prepare-lock-free", C, "yes"),
    Case(C, "prepare-locked-by-other", C, "yes"),
    Case(C, "commit", C, "outcome"),
    Case(C, "abort", C, "outcome"),  # too late: says committed
    Case(C, "resolve", C, "outcome"),
    Case(C, "status", C, "state"),
    # TX aborted
    Case(A, "prepare-lock-free", A, "no"),
    Case(A, "prepare-locked-by-other", A, "no"),
    Case(A, "commit", A, "outcome"),  # too late: says aborted
    Case(A, "abort", A, "outcome"),
    Case(A, "resolve", A, "outcome"),
    Case(A, "status", A, "state"),
]


def test_cases_cover_every_state_and_request() -> None:
    assert {(c.before, c.request) for c in CASES} == set(itertools.product([None, *TxState], REQUESTS))


def setup_core(before: TxState | None, locked_by_other: bool) -> ParticipantCore:
    """A participant whose record of TX is ``before``, from stored records.

    With ``locked_by_other``, OTHER holds the lock. For before=PREPARED that
    needs two prepared records, which the protocol never produces (a prepared
    transaction holds the lock itself); it is built anyway so that the table's
    entry for that pair is exercised: the last prepared record restored wins.
    """
    records = []
    if before is not None:
        records.append(record(TX, before, version=1 if before is C else 0))
    if locked_by_other:
        records.append(record(OTHER, P, value=7))
    core = ParticipantCore.restore(ME, records)
    assert state_of(core) is before
    assert core.lock == (OTHER if locked_by_other else TX if before is P else None)
    return core


def request_for(name: str) -> Message:
    return {
        "prepare-lock-free": prepare(),
        "prepare-locked-by-other": prepare(),
        "commit": Commit(txid=TX),
        "abort": Abort(txid=TX),
        "resolve": Resolve(txid=TX),
        "status": Status(),
    }[name]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.before.value if c.before else 'none'}-{c.request}")
def test_participant_transition(case: Case) -> None:
    core = setup_core(case.before, locked_by_other=case.request == "prepare-locked-by-other")
    actions = core.on_request(CONN, request_for(case.request))

    assert state_of(core) is case.after
    assert not any(isinstance(a, Close) for a in actions)
    msg = only_reply(actions)
    match case.reply:
        case "yes":
            assert msg == Vote(txid=TX, yes=True)
        case "no":
            assert isinstance(msg, Vote)
            assert msg.txid == TX
            assert msg.yes is False
            assert msg.reason  # the seed's NOK always says why
        case "outcome":
            assert msg == Outcome(txid=TX, state=case.after)
        case "not-prepared":
            assert isinstance(msg, Error)
            assert (msg.code, msg.txid) == ("not-prepared", TX)
        case "state":
            assert msg == State(
                node=ME,
                storage_server=VALUE if case.before is C else 0,
                version=1 if case.before is C else 0,
                lock=TX if case.before is P else None,
                committed=1 if case.before is C else 0,
                aborted=1 if case.before is A else 0,
            )

    # Every state change is exactly one Persist of the new record, and it
    # comes before the reply; no change, no Persist. Only a commit may be
    # lazy (acknowledged before it is durable): a vote or an abort never.
    written = persists(actions)
    if case.after is case.before:
        assert written == []
    else:
        (persist,) = written
        assert persist.record == core.records[TX]
        assert persist.record.state is case.after
        assert actions.index(persist) < actions.index(replies(actions)[0])
        assert persist.why
        assert persist.lazy is (case.after is C)


def test_participant_votes_no_when_locked() -> None:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, prepare(OTHER))
    actions = core.on_request(CONN, prepare(TX))
    vote = only_reply(actions)
    assert isinstance(vote, Vote)
    assert vote.yes is False
    assert vote.code is NokCode.LOCKED  # for programs; the reason is for people
    assert OTHER in vote.reason
    assert core.lock == OTHER
    assert persists(actions)[0].record == TxRecord(txid=TX, state=A, value=VALUE, participants=ALL)


def test_vote_yes_persists_value_and_participants_takes_the_lock_and_starts_a_timer() -> None:
    core = ParticipantCore.restore(ME, [])
    actions = core.on_request(CONN, prepare(value=-5))
    assert actions == [
        Persist(record=TxRecord(txid=TX, state=P, value=-5, participants=ALL), why=persists(actions)[0].why),
        StartTimer(txid=TX),
        Reply(conn=CONN, msg=Vote(txid=TX, yes=True)),
    ]
    assert core.lock == TX
    assert core.storage_server == 0  # nothing is written before the commit


@pytest.mark.parametrize(("decision", "state"), [(Commit(txid=TX), C), (Abort(txid=TX), A)])
def test_decision_on_a_prepared_transaction_releases_the_lock_and_cancels_its_timer(
    decision: Message, state: TxState
) -> None:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, prepare())
    actions = core.on_request(CONN, decision)
    assert [type(a) for a in actions] == [Persist, CancelTimer, Reply]
    assert actions[1] == CancelTimer(txid=TX)
    assert core.lock is None
    assert state_of(core) is state


def test_commit_writes_the_prepared_value_and_bumps_the_version() -> None:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, prepare(value=99))
    (persist,) = persists(core.on_request(CONN, Commit(txid=TX)))
    assert persist.record == TxRecord(txid=TX, state=C, value=99, participants=ALL, version=1)
    assert (core.storage_server, core.version, core.committed_count) == (99, 1, 1)


# ---------------------------------------------------------------- remembered votes, duplicates


def test_no_vote_is_remembered_when_the_lock_is_free_again() -> None:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, prepare(OTHER))
    core.on_request(2, prepare(TX))  # NOK: locked by OTHER
    core.on_request(3, Commit(txid=OTHER))
    assert core.lock is None
    actions = core.on_request(CONN, prepare(TX))
    vote = only_reply(actions)
    assert isinstance(vote, Vote)
    assert vote.yes is False
    assert vote.code is NokCode.ABORTED  # no longer locked: its earlier no stands
    assert persists(actions) == []
    assert core.lock is None


def test_prepare_after_abort_gets_no_even_with_the_lock_free() -> None:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, Abort(txid=TX))  # the ABORT overtook the PREPARE
    vote = only_reply(core.on_request(CONN, prepare()))
    assert isinstance(vote, Vote)
    assert vote.yes is False
    assert vote.code is NokCode.ABORTED
    assert core.lock is None


def test_prepare_after_resolve_gets_no_so_a_late_yes_is_impossible() -> None:
    core = ParticipantCore.restore(ME, [])
    assert only_reply(core.on_request(CONN, Resolve(txid=TX))) == Outcome(txid=TX, state=A)
    vote = only_reply(core.on_request(CONN, prepare()))
    assert isinstance(vote, Vote)
    assert vote.yes is False


@pytest.mark.parametrize(
    ("setup", "dup"),
    [
        ([], prepare()),
        ([prepare()], Commit(txid=TX)),
        ([prepare()], Abort(txid=TX)),
        ([], Abort(txid=TX)),
        ([], Resolve(txid=TX)),
        ([prepare()], Resolve(txid=TX)),
        ([prepare(), Commit(txid=TX)], prepare()),
        ([prepare(OTHER)], prepare()),  # a duplicate NOK
    ],
    ids=lambda v: v.kind.value if isinstance(v, Message) else "-".join(m.kind.value for m in v) or "fresh",
)
def test_duplicate_request_is_idempotent(setup: list[Message], dup: Message) -> None:
    core = ParticipantCore.restore(ME, [])
    for msg in setup:
        core.on_request(1, msg)
    first = core.on_request(CONN, dup)
    records, status = dict(core.records), core.status()
    again = core.on_request(CONN, dup)
    assert persists(again) == []
    assert gist(only_reply(again)) == gist(only_reply(first))
    assert core.records == records
    assert core.status() == status


def test_duplicate_prepare_does_not_restart_the_timer() -> None:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, prepare())
    assert core.on_request(CONN, prepare()) == [Reply(conn=CONN, msg=Vote(txid=TX, yes=True))]


# ---------------------------------------------------------------- derived state and restore


def run_history() -> tuple[ParticipantCore, dict[str, TxRecord]]:
    """T1 commits 10, T2 is refused while T3 holds the lock, T3 commits 30,
    T4 aborts after a yes vote, T5 is left prepared holding the lock."""
    core = ParticipantCore.restore(ME, [])
    log = [
        core.on_request(1, prepare("T1", 10)),
        core.on_request(1, Commit(txid="T1")),
        core.on_request(1, prepare("T3", 30)),
        core.on_request(2, prepare("T2", 20)),
        core.on_request(1, Commit(txid="T3")),
        core.on_request(1, prepare("T4", 40)),
        core.on_request(1, Abort(txid="T4")),
        core.on_request(1, prepare("T5", 50)),
    ]
    return core, replay(log)


def test_value_version_lock_and_counts_are_derived_from_the_records() -> None:
    core, stored = run_history()
    assert core.status() == State(node=ME, storage_server=30, version=2, lock="T5", committed=2, aborted=2)
    assert {t: (r.state, r.version) for t, r in stored.items()} == {
        "T1": (C, 1),
        "T2": (A, 0),
        "T3": (C, 2),
        "T4": (A, 0),
        "T5": (P, 0),
    }
    assert stored == core.records  # memory holds exactly what was persisted


def test_restore_from_records_in_any_order_gives_the_same_state() -> None:
    core, stored = run_history()
    for order in itertools.permutations(stored.values()):
        restored = ParticipantCore.restore(ME, order)
        assert restored.status() == core.status(), [r.txid for r in order]
        assert restored.records == core.records


def test_restored_participant_keeps_its_lock_and_refuses_other_transactions() -> None:
    core = ParticipantCore.restore(ME, [record("T9", A), record(TX, P)])
    assert core.lock == TX
    vote = only_reply(core.on_request(CONN, prepare(OTHER)))
    assert isinstance(vote, Vote)
    assert vote.yes is False


def test_restored_participant_finishes_a_prepared_transaction_with_its_stored_value() -> None:
    core = ParticipantCore.restore(ME, [record("T0", C, value=5, version=1), record(TX, P, value=77)])
    core.on_request(CONN, Commit(txid=TX))
    assert (core.storage_server, core.version, core.lock) == (77, 2, None)
    assert core.records[TX].version == 2


def test_fresh_participant_has_the_seed_initial_state() -> None:
    status = ParticipantCore.restore(ME, []).status()
    assert status == State(node=ME, storage_server=0, version=0, lock=None, committed=0, aborted=0)


# ---------------------------------------------------------------- recovery


def test_recover_asks_every_peer_about_each_prepared_transaction() -> None:
    core = ParticipantCore.restore(ME, [record("T0", C, version=1), record(TX, P), record("T9", A)])
    actions = core.recover()
    assert actions == [
        SendPeer(peer=P2, msg=Resolve(txid=TX)),
        SendPeer(peer=P3, msg=Resolve(txid=TX)),
        StartTimer(txid=TX),
    ]
    assert state_of(core) is P


def test_recover_with_nothing_prepared_does_nothing() -> None:
    core = ParticipantCore.restore(ME, [record("T0", C, version=1), record("T9", A)])
    assert core.recover() == []


def test_recover_commits_a_prepared_transaction_that_has_no_peers() -> None:
    # Alone in its transaction, its own durable yes is every yes vote.
    alone = TxRecord(txid=TX, state=P, value=3, participants=(ME,))
    core = ParticipantCore.restore(ME, [alone])
    actions = core.recover()
    assert [p.record.state for p in persists(actions)] == [C]
    assert not any(isinstance(a, SendPeer) for a in actions)
    assert (core.storage_server, core.lock) == (3, None)


# ---------------------------------------------------------------- cooperative termination


def prepared_core() -> ParticipantCore:
    core = ParticipantCore.restore(ME, [])
    core.on_request(1, prepare())
    return core


def test_all_peers_prepared_commits() -> None:
    core = prepared_core()
    assert core.on_peer_reply(P2, Outcome(txid=TX, state=P)) == []
    assert state_of(core) is P
    actions = core.on_peer_reply(P3, Outcome(txid=TX, state=P))
    assert [type(a) for a in actions] == [Persist, CancelTimer]
    assert persists(actions)[0].record == TxRecord(txid=TX, state=C, value=VALUE, participants=ALL, version=1)
    assert (core.storage_server, core.lock) == (VALUE, None)


def test_the_same_peer_saying_prepared_twice_is_not_every_peer() -> None:
    core = prepared_core()
    core.on_peer_reply(P2, Outcome(txid=TX, state=P))
    assert core.on_peer_reply(P2, Outcome(txid=TX, state=P)) == []
    assert state_of(core) is P


@pytest.mark.parametrize("state", [C, A])
def test_a_peer_decision_is_adopted(state: TxState) -> None:
    core = prepared_core()
    actions = core.on_peer_reply(P3, Outcome(txid=TX, state=state))
    assert [p.record.state for p in persists(actions)] == [state]
    assert CancelTimer(txid=TX) in actions
    assert state_of(core) is state
    assert core.lock is None


def test_a_peer_abort_wins_over_earlier_prepared_replies() -> None:
    core = prepared_core()
    core.on_peer_reply(P2, Outcome(txid=TX, state=P))
    core.on_peer_reply(P3, Outcome(txid=TX, state=A))
    assert state_of(core) is A


@pytest.mark.parametrize("state", [P, C, A])
def test_reply_from_a_node_not_in_the_transaction_is_ignored(state: TxState) -> None:
    core = prepared_core()
    core.on_peer_reply(P2, Outcome(txid=TX, state=P))
    assert core.on_peer_reply(STRANGER, Outcome(txid=TX, state=state)) == []
    assert state_of(core) is P


def test_own_name_saying_prepared_does_not_stand_in_for_a_peer() -> None:
    core = prepared_core()
    core.on_peer_reply(P2, Outcome(txid=TX, state=P))
    core.on_peer_reply(ME, Outcome(txid=TX, state=P))
    assert state_of(core) is P


@pytest.mark.parametrize("before", [None, C, A])
@pytest.mark.parametrize("said", [P, C, A])
def test_peer_replies_for_a_transaction_not_prepared_here_are_ignored(before: TxState | None, said: TxState) -> None:
    core = setup_core(before, locked_by_other=False)
    records = dict(core.records)
    assert core.on_peer_reply(P2, Outcome(txid=TX, state=said)) == []
    assert core.on_peer_reply(P3, Outcome(txid=TX, state=said)) == []
    assert core.records == records


@pytest.mark.parametrize(
    "msg",
    [Error(code="not-prepared", txid=TX, detail="x"), Vote(txid=TX, yes=True), Commit(txid=TX)],
    ids=lambda m: m.kind.value,
)
def test_peer_replies_that_are_not_outcomes_are_ignored(msg: Message) -> None:
    core = prepared_core()
    core.on_peer_reply(P2, Outcome(txid=TX, state=P))
    assert core.on_peer_reply(P3, msg) == []
    assert state_of(core) is P


def test_timeout_on_a_prepared_transaction_asks_peers_again_and_never_aborts() -> None:
    core = prepared_core()
    for _ in range(5):
        actions = core.on_timeout(TX)
        assert actions == [
            SendPeer(peer=P2, msg=Resolve(txid=TX)),
            SendPeer(peer=P3, msg=Resolve(txid=TX)),
            StartTimer(txid=TX),
        ]
        assert state_of(core) is P
        assert core.lock == TX


@pytest.mark.parametrize("before", [None, C, A])
def test_timeout_for_a_transaction_not_prepared_does_nothing(before: TxState | None) -> None:
    core = setup_core(before, locked_by_other=False)
    assert core.on_timeout(TX) == []


def test_peer_yes_gathered_across_timeouts_still_commits() -> None:
    core = prepared_core()
    core.on_timeout(TX)
    core.on_peer_reply(P2, Outcome(txid=TX, state=P))
    core.on_timeout(TX)
    core.on_peer_reply(P3, Outcome(txid=TX, state=P))
    assert state_of(core) is C


# ---------------------------------------------------------------- refused requests


@pytest.mark.parametrize("before", [None, P, C, A])
def test_prepare_that_does_not_list_this_participant_is_refused_and_changes_nothing(before: TxState | None) -> None:
    core = setup_core(before, locked_by_other=False)
    records, status = dict(core.records), core.status()
    actions = core.on_request(CONN, prepare(participants=(P2, P3)))
    assert persists(actions) == []
    msg = only_reply(actions)
    assert isinstance(msg, Error)
    assert (msg.code, msg.txid) == ("not-participant", TX)
    assert core.records == records
    assert core.status() == status


@pytest.mark.parametrize(
    "msg",
    [
        Vote(txid=TX, yes=True),
        Vote(txid=TX, yes=False, reason="no"),
        Outcome(txid=TX, state=C),
        State(node=P2, storage_server=1, version=1, lock=None, committed=1, aborted=0),
        Error(code="x", detail="y", txid=TX),
    ],
    ids=lambda m: m.kind.value,
)
def test_reply_sent_as_a_request_gets_error_and_close_and_changes_nothing(msg: Message) -> None:
    core = prepared_core()
    records, status = dict(core.records), core.status()
    actions = core.on_request(CONN, msg)
    assert len(actions) == 2
    error, close = actions
    assert isinstance(error, Reply)
    assert error.conn == CONN
    assert isinstance(error.msg, Error)
    assert error.msg.code == "not-a-request"
    assert close == Close(conn=CONN)
    assert core.records == records
    assert core.status() == status


@pytest.mark.parametrize(
    "changed",
    [{"value": VALUE + 1}, {"participants": (ALL[1], ALL[0], *ALL[2:])}],
    ids=["other value", "other participants"],
)
def test_prepare_conflicting_with_the_prepared_one_is_refused_and_changes_nothing(
    changed: dict[str, object],
) -> None:
    core = ParticipantCore(name=ME)
    core.on_request(CONN, prepare())
    before = dict(core.records)
    actions = core.on_request(CONN, prepare(**changed))  # type: ignore[arg-type]
    assert persists(actions) == []
    reply = only_reply(actions)
    assert isinstance(reply, Error) and reply.code == "conflict" and reply.txid == TX
    assert core.records == before
