"""The coordinator's every path, pinned: the cause it reports and the exact actions it emits.

The client changes behaviour on the cause (it turns to ordered prepare after
a no vote), so a wrong cause is a bug even when the result is right. Each test
drives one path of harness.protocol.coordinator and compares the whole action
list, messages and timers included. The last test drives a participant with
any input sequence and checks that its STATE never carries a negative count
and always survives the codec.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocol.coordinator import (
    Cause,
    CoordinatorAction,
    CoordinatorCore,
    Finished,
    Report,
    Result,
    Send,
    SetTimer,
    Timer,
)
from harness.protocol.messages import Abort, Commit, Outcome, Prepare, Resolve, State, TxState, Vote, decode, encode
from harness.protocol.participant import ParticipantCore, TxRecord

A, B, C = "127.0.0.1:8886", "127.0.0.1:8887", "127.0.0.1:8888"
ALL = (A, B, C)
TX = "c1-0001"
VALUE = 42
PREPARE = Prepare(txid=TX, value=VALUE, participants=ALL)
PHASE = SetTimer(timer=Timer.PHASE)


def core(*, ordered: bool = False) -> CoordinatorCore:
    return CoordinatorCore(txid=TX, value=VALUE, participants=ALL, ordered=ordered)


def yes() -> Vote:
    return Vote(txid=TX, yes=True)


def no() -> Vote:
    return Vote(txid=TX, yes=False, reason="locked by c2-0001")


def outcome(state: TxState) -> Outcome:
    return Outcome(txid=TX, state=state)


def split(actions: list[CoordinatorAction]) -> tuple[tuple[Result, Cause] | None, list[CoordinatorAction]]:
    """The (result, cause) reported, if any, and the other actions in order."""
    reports = [a for a in actions if isinstance(a, Report)]
    assert len(reports) <= 1
    rest = [a for a in actions if not isinstance(a, Report)]
    return ((reports[0].result, reports[0].cause) if reports else None), rest


def commit_to(*names: str) -> list[CoordinatorAction]:
    return [Send(to=n, msg=Commit(txid=TX)) for n in names]


def abort_to(*names: str) -> list[CoordinatorAction]:
    return [Send(to=n, msg=Abort(txid=TX)) for n in names]


def resolve_to(*names: str) -> list[CoordinatorAction]:
    return [Send(to=n, msg=Resolve(txid=TX)) for n in names]


# ---------------------------------------------------------------- every cause, every path


def test_start_parallel_and_ordered() -> None:
    assert core().start() == [Send(to=A, msg=PREPARE), Send(to=B, msg=PREPARE), Send(to=C, msg=PREPARE), PHASE]
    assert core(ordered=True).start() == [Send(to=A, msg=PREPARE), PHASE]


def test_all_yes_commits_with_cause_all_yes_and_sends_commit_to_everyone() -> None:
    c = core()
    c.start()
    assert c.on_reply(A, yes()) == [] and c.on_reply(B, yes()) == []
    report, rest = split(c.on_reply(C, yes()))
    assert report == (Result.COMMITTED, Cause.ALL_YES)
    assert rest == [*commit_to(A, B, C), PHASE]


def test_a_no_vote_aborts_with_cause_no_vote_and_aborts_only_those_that_may_hold_a_promise() -> None:
    c = core()
    c.start()
    c.on_reply(A, yes())
    report, rest = split(c.on_reply(B, no()))
    assert report == (Result.ABORTED, Cause.NO_VOTE)
    assert rest == [*abort_to(A, C), PHASE]  # not B: its no vote released its promise


def test_a_no_vote_that_is_the_only_one_needing_nothing_finishes_at_once() -> None:
    c = core(ordered=True)
    c.start()
    report, rest = split(c.on_reply(A, no()))
    assert report == (Result.ABORTED, Cause.NO_VOTE)
    assert rest == [Finished()]


def test_an_unreachable_participant_aborts_with_cause_unreachable() -> None:
    c = core()
    c.start()
    c.on_reply(A, yes())
    report, rest = split(c.on_unreachable(B))
    assert report == (Result.ABORTED, Cause.UNREACHABLE)
    assert rest == [*abort_to(A, B, C), PHASE]


def test_a_silent_participant_that_aborts_when_asked_gives_cause_timeout() -> None:
    c = core()
    c.start()
    c.on_reply(A, yes())
    c.on_reply(B, yes())
    assert c.on_timeout(Timer.PHASE) == [*resolve_to(C), PHASE]
    report, rest = split(c.on_reply(C, outcome(TxState.ABORTED)))
    assert report == (Result.ABORTED, Cause.TIMEOUT)
    assert rest == [*abort_to(A, B), PHASE]


def test_a_late_no_vote_while_resolving_gives_cause_no_vote() -> None:
    c = core()
    c.start()
    c.on_timeout(Timer.PHASE)
    report, rest = split(c.on_reply(B, no()))
    assert report == (Result.ABORTED, Cause.NO_VOTE)
    assert rest == [*abort_to(A, C), PHASE]


@pytest.mark.parametrize("answer", [outcome(TxState.PREPARED), yes()], ids=["prepared", "late-yes"])
def test_late_yes_answers_while_resolving_commit_with_cause_all_yes(answer: Outcome | Vote) -> None:
    c = core()
    c.start()
    c.on_reply(A, yes())
    assert c.on_timeout(Timer.PHASE) == [*resolve_to(B, C), PHASE]
    assert c.on_reply(B, answer) == []
    report, rest = split(c.on_reply(C, answer))
    assert report == (Result.COMMITTED, Cause.ALL_YES)
    assert rest == [*commit_to(A, B, C), PHASE]


def test_a_participant_that_already_committed_gives_cause_all_yes() -> None:
    c = core()
    c.start()
    c.on_timeout(Timer.PHASE)
    report, rest = split(c.on_reply(A, outcome(TxState.COMMITTED)))
    assert report == (Result.COMMITTED, Cause.ALL_YES)
    assert rest == [*commit_to(A, B, C), PHASE]


def test_silence_after_resolve_gives_unknown_with_cause_no_answer_and_sends_nothing() -> None:
    c = core()
    c.start()
    c.on_reply(A, yes())
    c.on_timeout(Timer.PHASE)
    report, rest = split(c.on_timeout(Timer.PHASE))
    assert report == (Result.UNKNOWN, Cause.NO_ANSWER)
    assert rest == [Finished()]


def test_every_cause_is_reachable() -> None:
    # The paths above, as data: each cause the enum names is reported by one of them.
    seen = set()
    for drive in (
        lambda c: [c.on_reply(p, yes()) for p in ALL][-1],
        lambda c: c.on_reply(A, no()),
        lambda c: c.on_unreachable(A),
        lambda c: (c.on_timeout(Timer.PHASE), c.on_reply(A, outcome(TxState.ABORTED)))[1],
        lambda c: (c.on_timeout(Timer.PHASE), c.on_timeout(Timer.PHASE))[1],
    ):
        c = core()
        c.start()
        report, _ = split(drive(c))
        assert report is not None
        seen.add(report[1])
    assert seen == set(Cause)


# ---------------------------------------------------------------- ordered prepare past its deadline


def test_ordered_prepare_past_the_deadline_after_the_first_yes_resolves_the_others_only() -> None:
    c = core(ordered=True)
    c.start()
    assert c.on_reply(A, yes()) == [Send(to=B, msg=PREPARE), Send(to=C, msg=PREPARE), PHASE]
    # B and C stay silent past the deadline: RESOLVE goes to them, not to A (which voted).
    assert c.on_timeout(Timer.PHASE) == [*resolve_to(B, C), PHASE]
    report, rest = split(c.on_reply(B, outcome(TxState.ABORTED)))
    assert report == (Result.ABORTED, Cause.TIMEOUT)
    assert rest == [*abort_to(A, C), PHASE]


def test_ordered_prepare_past_the_deadline_after_the_first_yes_commits_on_late_yes_votes() -> None:
    c = core(ordered=True)
    c.start()
    c.on_reply(A, yes())
    c.on_timeout(Timer.PHASE)
    assert c.on_reply(B, outcome(TxState.PREPARED)) == []
    report, rest = split(c.on_reply(C, yes()))
    assert report == (Result.COMMITTED, Cause.ALL_YES)
    assert rest == [*commit_to(A, B, C), PHASE]


def test_ordered_prepare_past_the_deadline_after_the_first_yes_reports_unknown_when_still_silent() -> None:
    c = core(ordered=True)
    c.start()
    c.on_reply(A, yes())
    c.on_timeout(Timer.PHASE)
    c.on_reply(B, outcome(TxState.PREPARED))
    report, rest = split(c.on_timeout(Timer.PHASE))
    assert report == (Result.UNKNOWN, Cause.NO_ANSWER)
    assert rest == [Finished()]


def test_ordered_prepare_first_vote_late_aborts_with_cause_timeout_and_aborts_only_the_first() -> None:
    c = core(ordered=True)
    c.start()
    assert c.on_timeout(Timer.PHASE) == [*resolve_to(A), PHASE]
    report, rest = split(c.on_reply(A, outcome(TxState.PREPARED)))
    assert report == (Result.ABORTED, Cause.TIMEOUT)
    assert rest == [*abort_to(A), PHASE]


# ---------------------------------------------------------------- STATE never negative

ME = A
requests = st.lists(
    st.one_of(
        st.tuples(
            st.just("request"),
            st.sampled_from(
                [
                    Prepare(txid="t1", value=1, participants=ALL),
                    Prepare(txid="t2", value=-5, participants=ALL),
                    Prepare(txid="t3", value=3, participants=(ME,)),
                    Commit(txid="t1"),
                    Commit(txid="t2"),
                    Abort(txid="t1"),
                    Abort(txid="t2"),
                    Resolve(txid="t1"),
                    Resolve(txid="t3"),
                ]
            ),
        ),
        st.tuples(
            st.just("peer"),
            st.sampled_from([Outcome(txid=t, state=s) for t in ("t1", "t2") for s in TxState]),
        ),
        st.tuples(st.just("timeout"), st.sampled_from(["t1", "t2", "t3"])),
        st.tuples(st.just("restart"), st.none()),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(steps=requests)
def test_state_counts_are_never_negative_and_state_survives_the_codec(steps: list[tuple[str, object]]) -> None:
    p = ParticipantCore.restore(ME, [])
    durable: dict[str, TxRecord] = {}
    for what, arg in steps:
        if what == "request":
            actions = p.on_request(1, arg)  # type: ignore[arg-type]
        elif what == "peer":
            actions = p.on_peer_reply(B, arg)  # type: ignore[arg-type]
        elif what == "timeout":
            actions = p.on_timeout(str(arg))
        else:
            p = ParticipantCore.restore(ME, [durable[t] for t in sorted(durable)])
            actions = p.recover()
        for action in actions:
            record = getattr(action, "record", None)
            if isinstance(record, TxRecord):
                durable[record.txid] = record
        state = p.status()
        assert state.version >= 0 and state.committed >= 0 and state.aborted >= 0
        assert state.committed <= len(p.records)  # counts come from records
        assert decode(encode(state)) == state
    final: State = p.status()
    assert final.committed == sum(r.state is TxState.COMMITTED for r in p.records.values())
