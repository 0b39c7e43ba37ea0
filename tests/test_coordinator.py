"""The coordinator's state machine, driven with replies, connection events and timeouts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocol.coordinator import (
    CoordinatorAction,
    CoordinatorCore,
    Finished,
    Report,
    Result,
    Send,
    SetTimer,
    Timer,
)
from harness.protocol.messages import Abort, Commit, Error, Message, Outcome, Prepare, Resolve, TxState, Vote

A, B, C = "127.0.0.1:8886", "127.0.0.1:8887", "127.0.0.1:8888"
ALL = (A, B, C)
STRANGER = "10.0.0.9:9999"
TX = "c1-0001"
VALUE = 42

P, COMMITTED, ABORTED = TxState.PREPARED, TxState.COMMITTED, TxState.ABORTED


def yes(txid: str = TX) -> Vote:
    return Vote(txid=txid, yes=True)


def no(reason: str = "locked by c2-0001") -> Vote:
    return Vote(txid=TX, yes=False, reason=reason)


def outcome(state: TxState) -> Outcome:
    return Outcome(txid=TX, state=state)


def started() -> CoordinatorCore:
    core = CoordinatorCore(txid=TX, value=VALUE, participants=ALL)
    core.start()
    return core


def reports(actions: list[CoordinatorAction]) -> list[Report]:
    return [a for a in actions if isinstance(a, Report)]


def only_report(actions: list[CoordinatorAction]) -> Report:
    (report,) = reports(actions)
    return report


def sent(actions: list[CoordinatorAction], kind: type[Message]) -> list[str]:
    """Recipients of messages of ``kind``, in order."""
    out = []
    for a in actions:
        if isinstance(a, Send) and isinstance(a.msg, kind):
            assert getattr(a.msg, "txid", TX) == TX
            out.append(a.to)
    return out


def decided_commit() -> tuple[CoordinatorCore, list[CoordinatorAction]]:
    core = started()
    core.on_reply(A, yes())
    core.on_reply(B, yes())
    return core, core.on_reply(C, yes())


def resolving(*voted_yes: str) -> CoordinatorCore:
    """Voting timed out after ``voted_yes`` voted; RESOLVE went to the rest."""
    core = started()
    for p in voted_yes:
        core.on_reply(p, yes())
    core.on_timeout(Timer.PHASE)
    return core


# ---------------------------------------------------------------- voting


def test_start_sends_prepare_with_value_and_list_to_every_participant_then_sets_the_phase_timer() -> None:
    core = CoordinatorCore(txid=TX, value=VALUE, participants=ALL)
    actions = core.start()
    prepare = Prepare(txid=TX, value=VALUE, participants=ALL)
    assert sorted(sent(actions, Prepare)) == sorted(ALL)
    assert all(a.msg == prepare for a in actions if isinstance(a, Send))
    assert actions[-1] == SetTimer(timer=Timer.PHASE)
    assert reports(actions) == []


def test_no_decision_before_every_vote_is_in() -> None:
    core = started()
    assert core.on_reply(A, yes()) == []
    assert core.on_reply(B, yes()) == []
    assert core.on_reply(B, yes()) == []  # a duplicate vote is not a third vote
    assert core.result is None


@pytest.mark.parametrize("order", [(A, B, C), (C, B, A), (B, C, A)])
def test_all_yes_reports_committed_then_sends_commit_to_everyone(order: tuple[str, str, str]) -> None:
    core = started()
    core.on_reply(order[0], yes())
    core.on_reply(order[1], yes())
    actions = core.on_reply(order[2], yes())
    report = only_report(actions)
    assert report.result is Result.COMMITTED
    assert sorted(sent(actions, Commit)) == sorted(ALL)
    assert sent(actions, Abort) == []
    first_commit = next(i for i, a in enumerate(actions) if isinstance(a, Send))
    assert actions.index(report) < first_commit
    assert actions[-1] == SetTimer(timer=Timer.PHASE)


def test_a_no_vote_reports_aborted_with_a_reason_naming_the_voter() -> None:
    core = started()
    core.on_reply(A, yes())
    actions = core.on_reply(B, no("locked by c7-0003"))
    report = only_report(actions)
    assert report.result is Result.ABORTED
    assert B in report.reason
    assert "locked by c7-0003" in report.reason
    assert A not in report.reason and C not in report.reason
    assert sent(actions, Commit) == []
    first_abort = next(i for i, a in enumerate(actions) if isinstance(a, Send))
    assert actions.index(report) < first_abort


def test_abort_goes_to_the_yes_voters_and_the_silent() -> None:
    core = started()
    core.on_reply(A, yes())
    actions = core.on_reply(B, no())
    assert {A, C} <= set(sent(actions, Abort))


def test_abort_is_not_sent_to_the_no_voter() -> None:
    core = started()
    core.on_reply(A, yes())
    actions = core.on_reply(B, no())
    assert sorted(sent(actions, Abort)) == sorted([A, C])


def test_first_no_vote_decides_and_later_votes_change_nothing() -> None:
    core = started()
    core.on_reply(A, no())
    assert core.on_reply(B, yes()) == []
    assert core.on_reply(C, no()) == []
    assert core.result is Result.ABORTED


def test_unreachable_participant_during_voting_aborts() -> None:
    core = started()
    core.on_reply(A, yes())
    actions = core.on_unreachable(C)
    report = only_report(actions)
    assert report.result is Result.ABORTED
    assert C in report.reason
    assert sent(actions, Commit) == []
    assert A in sent(actions, Abort)


# ---------------------------------------------------------------- silence: resolving


def test_timeout_during_voting_sends_resolve_to_the_silent_only() -> None:
    core = started()
    core.on_reply(A, yes())
    actions = core.on_timeout(Timer.PHASE)
    assert sorted(sent(actions, Resolve)) == [B, C]
    assert SetTimer(timer=Timer.PHASE) in actions
    assert reports(actions) == []


def test_silent_participant_that_aborted_when_asked_gives_aborted() -> None:
    core = resolving(A)
    actions = core.on_reply(B, outcome(ABORTED))
    report = only_report(actions)
    assert report.result is Result.ABORTED
    assert B in report.reason
    assert {A, C} <= set(sent(actions, Abort))


def test_every_silent_participant_saying_prepared_gives_committed() -> None:
    core = resolving(A)
    assert core.on_reply(B, outcome(P)) == []
    actions = core.on_reply(C, outcome(P))
    assert only_report(actions).result is Result.COMMITTED
    assert sorted(sent(actions, Commit)) == sorted(ALL)


def test_a_late_yes_vote_counts_like_prepared_while_resolving() -> None:
    core = resolving(A)
    core.on_reply(B, yes())
    actions = core.on_reply(C, outcome(P))
    assert only_report(actions).result is Result.COMMITTED


def test_a_late_no_vote_while_resolving_gives_aborted() -> None:
    core = resolving(A)
    report = only_report(core.on_reply(C, no("locked by c9-0001")))
    assert report.result is Result.ABORTED
    assert C in report.reason


def test_a_participant_that_already_committed_gives_committed() -> None:
    # Its peers finished the transaction among themselves: every vote was yes.
    core = resolving(A)
    assert only_report(core.on_reply(B, outcome(COMMITTED))).result is Result.COMMITTED


def test_second_timeout_with_participants_still_silent_reports_unknown_and_finishes() -> None:
    core = resolving(A)
    core.on_reply(B, outcome(P))
    actions = core.on_timeout(Timer.PHASE)
    report = only_report(actions)
    assert report.result is Result.UNKNOWN
    assert C in report.reason
    assert actions[-1] == Finished()
    assert sent(actions, Commit) == sent(actions, Abort) == []


def test_losing_the_connection_to_every_silent_participant_resolves_at_once() -> None:
    core = started()
    core.on_reply(A, yes())
    assert core.on_connection_lost(B) == []  # C may still answer
    actions = core.on_connection_lost(C)
    assert sorted(sent(actions, Resolve)) == [B, C]
    assert SetTimer(timer=Timer.PHASE) in actions
    assert reports(actions) == []


def test_losing_a_participant_then_all_others_voting_yes_resolves_at_once() -> None:
    core = started()
    core.on_connection_lost(B)
    core.on_reply(A, yes())
    actions = core.on_reply(C, yes())
    assert sent(actions, Resolve) == [B]


def test_lost_connection_while_resolving_retries_resolve_on_the_retry_timer() -> None:
    core = resolving(A)
    assert core.on_connection_lost(B) == [SetTimer(timer=Timer.RETRY)]
    actions = core.on_timeout(Timer.RETRY)
    assert sent(actions, Resolve) == [B]
    assert core.on_timeout(Timer.RETRY) == []  # nothing left to retry


def test_unreachable_while_resolving_retries_instead_of_deciding() -> None:
    core = resolving(A)
    assert core.on_unreachable(C) == [SetTimer(timer=Timer.RETRY)]
    assert core.result is None
    assert sent(core.on_timeout(Timer.RETRY), Resolve) == [C]


# ---------------------------------------------------------------- finishing


def test_acknowledgements_from_everyone_finish_exactly_once() -> None:
    core, _ = decided_commit()
    assert core.on_reply(A, outcome(COMMITTED)) == []
    assert core.on_reply(B, outcome(COMMITTED)) == []
    assert core.on_reply(C, outcome(COMMITTED)) == [Finished()]
    assert core.on_reply(C, outcome(COMMITTED)) == []
    assert core.on_timeout(Timer.PHASE) == []


def test_repeated_acknowledgement_from_one_participant_does_not_finish() -> None:
    core, _ = decided_commit()
    core.on_reply(A, outcome(COMMITTED))
    assert core.on_reply(A, outcome(COMMITTED)) == []
    assert core.on_reply(B, outcome(COMMITTED)) == []


def test_abort_finishes_when_those_sent_abort_acknowledge() -> None:
    core = started()
    core.on_reply(A, yes())
    actions = core.on_reply(B, no())
    to_ack = sent(actions, Abort)
    finished = [core.on_reply(p, outcome(ABORTED)) for p in to_ack]
    assert finished[-1] == [Finished()]
    assert all(f == [] for f in finished[:-1])


def test_not_prepared_error_counts_as_an_acknowledgement() -> None:
    core, _ = decided_commit()
    core.on_reply(A, outcome(COMMITTED))
    core.on_reply(B, outcome(COMMITTED))
    assert core.on_reply(C, Error(code="not-prepared", txid=TX, detail="never voted yes")) == [Finished()]


def test_unreachable_while_finishing_counts_as_an_acknowledgement() -> None:
    # A participant that cannot be reached learns the decision from its peers.
    core, _ = decided_commit()
    core.on_reply(A, outcome(COMMITTED))
    assert core.on_unreachable(B) == []
    assert core.on_connection_lost(C) == [Finished()]


def test_finishing_timeout_finishes_without_changing_the_decision() -> None:
    core, _ = decided_commit()
    actions = core.on_timeout(Timer.PHASE)
    assert actions == [Finished()]
    assert core.result is Result.COMMITTED


# ---------------------------------------------------------------- what does not concern it


@pytest.mark.parametrize(
    "msg",
    [yes("c9-0009"), Vote(txid="c9-0009", yes=False, reason="x"), Outcome(txid="c9-0009", state=ABORTED)],
    ids=["yes", "no", "outcome"],
)
def test_replies_for_another_txid_are_ignored(msg: Message) -> None:
    core = started()
    core.on_reply(A, yes())
    core.on_reply(B, yes())
    assert core.on_reply(C, msg) == []
    assert core.result is None


def test_replies_from_a_non_participant_are_ignored() -> None:
    core = started()
    core.on_reply(A, yes())
    core.on_reply(B, yes())
    assert core.on_reply(STRANGER, yes()) == []
    assert core.on_reply(STRANGER, no()) == []
    assert core.result is None
    core.on_timeout(Timer.PHASE)
    assert core.on_reply(STRANGER, outcome(ABORTED)) == []
    assert core.on_reply(STRANGER, outcome(COMMITTED)) == []
    assert core.result is None


def test_an_error_without_txid_is_ignored() -> None:
    core = started()
    assert core.on_reply(A, Error(code="bad-field", detail="x")) == []
    assert core.result is None


# ---------------------------------------------------------------- properties over any input sequence

inputs = st.lists(
    st.one_of(
        st.tuples(
            st.just("reply"),
            st.sampled_from([*ALL, STRANGER]),
            st.sampled_from(
                [
                    yes(),
                    no(),
                    outcome(P),
                    outcome(COMMITTED),
                    outcome(ABORTED),
                    Error(code="not-prepared", txid=TX, detail="x"),
                    yes("c9-0009"),
                ]
            ),
        ),
        st.tuples(st.just("unreachable"), st.sampled_from(ALL), st.none()),
        st.tuples(st.just("lost"), st.sampled_from(ALL), st.none()),
        st.tuples(st.just("timeout"), st.sampled_from(Timer), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(steps=inputs)
def test_any_input_sequence_reports_once_at_most_and_justly_and_finishes_last(
    steps: list[tuple[str, object, object]],
) -> None:
    core = CoordinatorCore(txid=TX, value=VALUE, participants=ALL)
    out: list[CoordinatorAction] = list(core.start())
    said_yes: set[str] = set()  # voted yes or said prepared
    said_committed = said_no = unreachable_in_voting = False
    grounds = None  # what had been said when the report was made
    for what, who, arg in steps:
        if what == "reply":
            assert isinstance(who, str)
            assert isinstance(arg, Vote | Outcome | Error)
            if who in ALL:
                if arg in (yes(), outcome(P)):
                    said_yes.add(who)
                said_committed |= arg == outcome(COMMITTED)
                said_no |= arg in (no(), outcome(ABORTED))
            actions = core.on_reply(who, arg)
        elif what == "unreachable":
            assert isinstance(who, str)
            unreachable_in_voting |= core.result is None
            actions = core.on_unreachable(who)
        elif what == "lost":
            assert isinstance(who, str)
            actions = core.on_connection_lost(who)
        else:
            assert isinstance(who, Timer)
            actions = core.on_timeout(who)
        if reports(actions):
            grounds = (set(said_yes), said_committed, said_no, unreachable_in_voting)
        out += actions

    found = reports(out)
    assert len(found) <= 1
    assert out.count(Finished()) <= 1
    if Finished() in out:
        assert len(found) == 1
        assert out.index(found[0]) < out.index(Finished())
        assert out[-1] == Finished()  # nothing after it
    if found:
        assert grounds is not None
        yes_from, committed_seen, no_seen, unreachable_seen = grounds
        assert found[0].result is core.result
        # AC3: committed only if every participant said yes (or one knows it
        # committed); aborted only if one can never vote yes.
        if found[0].result is Result.COMMITTED:
            assert yes_from == set(ALL) or committed_seen
            assert sent(out, Abort) == []
        if found[0].result is Result.ABORTED:
            assert no_seen or unreachable_seen
            assert sent(out, Commit) == []


def test_late_prepared_outcome_is_not_taken_as_an_acknowledgement() -> None:
    core = resolving()  # everyone silent, RESOLVE sent to all
    for p in (A, B, C):
        core.on_reply(p, Outcome(txid=TX, state=TxState.PREPARED))
    assert core.result is Result.COMMITTED
    # A second, late answer to the RESOLVE says "prepared": the decision is not applied yet.
    assert core.on_reply(A, Outcome(txid=TX, state=TxState.PREPARED)) == []
    assert A not in core.acked
    assert core.on_reply(A, Outcome(txid=TX, state=TxState.COMMITTED)) == []
    assert A in core.acked


# ---------------------------------------------------------------- ordered prepare


def ordered() -> CoordinatorCore:
    return CoordinatorCore(txid=TX, value=VALUE, participants=(A, B, C), ordered=True)


def test_ordered_prepare_asks_the_first_participant_alone_then_the_others() -> None:
    core = ordered()
    actions = core.start()
    assert sent(actions, Prepare) == [A]
    actions = core.on_reply(A, yes())
    assert sorted(sent(actions, Prepare)) == [B, C]
    assert SetTimer(timer=Timer.PHASE) in actions
    core.on_reply(B, yes())
    actions = core.on_reply(C, yes())
    assert only_report(actions).result is Result.COMMITTED
    assert sorted(sent(actions, Commit)) == [A, B, C]


def test_ordered_prepare_aborts_on_the_first_no_without_asking_the_others() -> None:
    core = ordered()
    core.start()
    actions = core.on_reply(A, no())
    assert only_report(actions).result is Result.ABORTED
    assert sent(actions, Prepare) == [] and sent(actions, Abort) == []  # nobody else holds a promise
    assert actions[-1] == Finished()


def test_ordered_prepare_whose_first_vote_comes_too_late_aborts() -> None:
    core = ordered()
    core.start()
    actions = core.on_timeout(Timer.PHASE)  # A silent: ask it
    assert sent(actions, Resolve) == [A]
    actions = core.on_reply(A, Outcome(txid=TX, state=TxState.PREPARED))
    # B and C never got PREPARE and never will: the transaction cannot commit.
    assert only_report(actions).result is Result.ABORTED
    assert sent(actions, Abort) == [A]
