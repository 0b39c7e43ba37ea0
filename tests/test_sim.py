"""The simulator and the explorer: the real protocol passes; deliberately broken variants are caught.

The broken variants are subclasses of the real cores, each breaking one rule
the protocol depends on. Each must be caught with a counterexample, and the
real protocol must pass the same checks: together they show the checks can fail.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
from collections.abc import Iterable
from typing import Any

import pytest

from harness.protocol import coordinator as co
from harness.protocol.messages import Error, Message, Outcome, Prepare, TxState, Vote, decode, encode
from harness.protocol.participant import Action, ParticipantCore, Persist, Reply, StartTimer, TxRecord
from harness.sim import __main__ as cli
from harness.sim import variants
from harness.sim.cuts import mid_step_cuts
from harness.sim.explore import Bounds, Explorer
from harness.sim.invariants import (
    AC1,
    AC2,
    AC3,
    AC4,
    CODEC,
    LIVENESS,
    LOCK,
    MEMBERSHIP,
    REFINEMENT,
    RM,
    TCOMMIT_STATES_FOR_3_RMS,
    TRUTH,
    check_persist,
    check_report,
    tcommit_reachable,
    tcommit_step,
)
from harness.sim.model import Cut, Fx, PropertyViolation, WireCodec, ordered_coordinator
from harness.sim.simulate import SimParams, random_runs, simulate
from harness.sim.states import PSnap, Step, StepKind

# ====================================================================== broken variants


class VoteBeforePersist(ParticipantCore):
    """Sends its reply before the record that backs it is durable."""

    def on_request(self, conn: int, msg: Message) -> list[Action]:
        actions = super().on_request(conn, msg)
        return [a for a in actions if isinstance(a, Reply)] + [a for a in actions if not isinstance(a, Reply)]


class CommitWithMissingVote(co.CoordinatorCore):
    """Commits once all but one participant voted yes."""

    def _all_yes(self) -> bool:
        return len(self.yes) >= len(self.participants) - 1


class AbortOnTimeout(ParticipantCore):
    """A prepared participant that gives up and aborts when its timer fires."""

    def on_timeout(self, txid: str) -> list[Action]:
        record = self.records.get(txid)
        if record is not None and record.state is TxState.PREPARED:
            return self._decide(record, TxState.ABORTED, "gave up waiting")
        return super().on_timeout(txid)


class ForgetLockOnRestart(ParticipantCore):
    """Restarts without its prepared transactions (and so without its lock)."""

    @classmethod
    def restore(
        cls, name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None, rejoining: bool = False
    ) -> ParticipantCore:
        return super().restore(name, [r for r in records if r.state is not TxState.PREPARED], cluster, rejoining)


class ForgetNoVote(ParticipantCore):
    """Votes no on a locked PREPARE without making the abort durable."""

    def on_request(self, conn: int, msg: Message) -> list[Action]:
        actions = super().on_request(conn, msg)
        if isinstance(msg, Prepare):
            actions = [
                a
                for a in actions
                if not (isinstance(a, Persist) and a.record.state is TxState.ABORTED and a.why.startswith("vote no"))
            ]
        return actions


class AcceptSubset(ParticipantCore):
    """Keeps the membership rule only against outsiders: a PREPARE listing a
    subset of the cluster (this participant among them) is taken as any other."""

    def on_request(self, conn: int, msg: Message) -> list[Action]:
        if isinstance(msg, Prepare) and self.cluster is not None and set(msg.participants) < self.cluster:
            cluster, self.cluster = self.cluster, None
            try:
                return super().on_request(conn, msg)
            finally:
                self.cluster = cluster
        return super().on_request(conn, msg)


def commit_with_missing_vote(txid: str, value: int, participants: tuple[str, ...]) -> co.CoordinatorCore:
    return CommitWithMissingVote(txid=txid, value=value, participants=participants)


class NokReleasesLock(ParticipantCore):
    """Votes no on a locked PREPARE and, wrongly, releases the lock it holds for the other transaction."""

    def on_request(self, conn: int, msg: Message) -> list[Action]:
        actions = super().on_request(conn, msg)
        if isinstance(msg, Prepare) and any(
            isinstance(a, Reply) and isinstance(a.msg, Vote) and not a.msg.yes for a in actions
        ):
            self.lock = None
        return actions


class NeverPrepare(co.CoordinatorCore):
    """Never sends PREPARE: every transaction times out and aborts."""

    def _prepare(self, targets: tuple[str, ...] | list[str]) -> list[co.CoordinatorAction]:
        return []


class NeverCommit(co.CoordinatorCore):
    """Never decides commit: with every vote yes it waits, then reports UNKNOWN
    (the participants then commit among themselves, so only AC4 sees it)."""

    def _all_yes(self) -> bool:
        return False


def never_prepare(txid: str, value: int, participants: tuple[str, ...]) -> co.CoordinatorCore:
    return NeverPrepare(txid=txid, value=value, participants=participants)


def never_commit(txid: str, value: int, participants: tuple[str, ...]) -> co.CoordinatorCore:
    return NeverCommit(txid=txid, value=value, participants=participants)


def every_vote_ok(msg: Message) -> bytes:
    """A broken encoder: every vote goes out as ok."""
    return encode(dataclasses.replace(msg, yes=True, reason="") if isinstance(msg, Vote) else msg)


BROKEN_CODEC = WireCodec(every_vote_ok, decode)


# Every broken variant, as keyword arguments for Explorer, simulate and random_runs.
BROKEN: dict[str, dict[str, Any]] = {
    "vote-before-persist": {"participant_factory": VoteBeforePersist.restore},
    "commit-with-missing-vote": {"coordinator_factory": commit_with_missing_vote},
    "abort-on-timeout": {"participant_factory": AbortOnTimeout.restore},
    "forget-lock-on-restart": {"participant_factory": ForgetLockOnRestart.restore},
    "forget-no-vote": {"participant_factory": ForgetNoVote.restore},
    "never-prepare": {"coordinator_factory": never_prepare},
    "never-commit": {"coordinator_factory": never_commit},
    "nok-releases-lock": {"participant_factory": NokReleasesLock.restore},
    "codec-every-vote-ok": {"codec": BROKEN_CODEC},
    "accept-subset": {"participant_factory": AcceptSubset.restore},
    # The named variant the tour runs (harness.sim.variants).
    "count-no-as-yes": {"coordinator_factory": variants.coordinator_factory("count-no-as-yes")},
}
# Only the explorer sends a stranger's PREPARE (the random simulator has no stranger).
EXPLORER_ONLY = {"accept-subset"}


# ====================================================================== TCommit and the rules


def test_tcommit_model_has_the_published_34_states_for_three_resource_managers() -> None:
    assert len(tcommit_reachable(3)) == TCOMMIT_STATES_FOR_3_RMS == 34


def test_tcommit_model_has_every_combination_for_one_resource_manager() -> None:
    assert tcommit_reachable(1) == {(s,) for s in RM}


def test_tcommit_forbids_commit_while_one_is_working_and_abort_after_a_commit() -> None:
    p, c, w = TxState.PREPARED, TxState.COMMITTED, None
    assert tcommit_step((p, p, p), (c, p, p)) == "Decide(r1, commit)"
    assert tcommit_step((p, p, w), (c, p, w)) is None
    assert tcommit_step((c, p, p), (c, TxState.ABORTED, p)) is None
    assert tcommit_step((p, p, w), (p, p, w)) == "stutter"


def rules(violations: list[PropertyViolation]) -> set[str]:
    return {v.rule for v in violations}


def test_commit_while_a_participant_never_voted_breaks_validity_and_refinement() -> None:
    found = check_persist(
        "t1", ("p1", "p2", "p3"), (TxState.PREPARED, TxState.PREPARED, None), 0, TxState.COMMITTED, None
    )
    assert rules(found) == {AC3, REFINEMENT}


def test_abort_after_another_committed_breaks_agreement_and_refinement() -> None:
    view = (TxState.COMMITTED, TxState.PREPARED, TxState.PREPARED)
    assert rules(check_persist("t1", ("p1", "p2", "p3"), view, 1, TxState.ABORTED, None)) == {AC1, REFINEMENT}


def test_a_decision_that_changes_breaks_stability() -> None:
    view = (TxState.COMMITTED, TxState.COMMITTED, TxState.COMMITTED)
    assert AC2 in rules(check_persist("t1", ("p1", "p2", "p3"), view, 0, TxState.ABORTED, None))


def test_commit_after_the_user_was_told_aborted_breaks_truth() -> None:
    view = (TxState.PREPARED, TxState.PREPARED, TxState.PREPARED)
    assert TRUTH in rules(check_persist("t1", ("p1", "p2", "p3"), view, 0, TxState.COMMITTED, co.Result.ABORTED))


def test_reporting_committed_before_every_vote_is_durable_breaks_truth() -> None:
    view = (TxState.PREPARED, TxState.PREPARED, None)
    assert rules(check_report("t1", ("p1", "p2", "p3"), view, co.Result.COMMITTED, "client1")) == {TRUTH}
    assert check_report("t1", ("p1", "p2", "p3"), view, co.Result.ABORTED, "client1") == []


# ====================================================================== the real protocol passes


@pytest.mark.timeout(300)
def test_real_protocol_small_configuration_with_a_crash_has_no_violation() -> None:
    result = Explorer(3, 2, Bounds(crashes=1)).run()
    assert result.violations == [], "\n".join(result.trace)
    assert result.complete and result.symmetry
    # Classes of states up to renaming, and the states they hold (what
    # python -m harness.sim explore --no-symmetry counts). Pinned: a change to
    # the model or the reduction shows here.
    assert (result.states, result.full_states) == (29_825, 341_716)


def test_symmetry_reduction_keeps_the_verdict_and_shrinks_the_state_count() -> None:
    for participants, clients, crashes in [(2, 2, 1), (3, 2, 0), (2, 3, 0)]:
        reduced = Explorer(participants, clients, Bounds(crashes=crashes)).run()
        full = Explorer(participants, clients, Bounds(crashes=crashes), symmetry=False).run()
        assert reduced.ok and full.ok and reduced.complete and full.complete
        assert reduced.depth == full.depth
        assert reduced.states < full.states
        # The classes' sizes (group size / stabiliser) add up to the states
        # explored without reduction: every renaming of a reachable state is
        # reachable and no two classes overlap, crash left or not.
        assert reduced.full_states == full.states, (participants, clients, crashes)
    assert (reduced.states, full.states) == (294, 3_045)  # 2 participants, 3 clients, no crash: pinned


# Each broken variant on a small configuration that catches it (one crash, or
# three clients for a lock released by a no vote).
SMALL = {name: (2, 3, 0) if name == "nok-releases-lock" else (2, 2, 1) for name in BROKEN}


@pytest.mark.parametrize("name", sorted(set(BROKEN) - {"forget-no-vote"}))
def test_symmetry_reduction_gives_every_broken_variant_the_same_verdict(name: str) -> None:
    participants, clients, crashes = SMALL[name]
    found = []
    for symmetry in (True, False):
        result = Explorer(participants, clients, Bounds(crashes=crashes), symmetry=symmetry, **BROKEN[name]).run()
        assert not result.ok, name
        assert result.trace[-1].startswith("VIOLATION")
        found.append((rules(result.violations), result.depth))
    assert found[0] == found[1]


def test_a_crash_may_cut_a_run_of_sends_anywhere_but_moot_cuts_are_one() -> None:
    prepare = Prepare(txid="t1", value=1, participants=("p1:1", "p2:2", "p3:3"))
    decide: list[object] = [co.Report(result=co.Result.COMMITTED, reason="")]
    decide += [co.Send(to=p, msg=prepare) for p in prepare.participants] + [co.SetTimer(timer=co.Timer.PHASE)]

    def done(cuts: tuple[Cut, ...]) -> set[frozenset[int]]:
        return {frozenset(i for i in range(c.reached) if not c.unsent >> i & 1) for c in cuts}

    # The report, then any proper subset of the three sends; all three (with or
    # without the timer) is the step followed by a crash; nothing is a crash before it.
    assert done(mid_step_cuts(decide)) == {
        frozenset({0, *sends}) for sends in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3)]
    }
    # A vote: persist, timer, reply. Only "persisted, then crashed before the reply".
    vote = [
        Persist(record=TxRecord(txid="t1", state=TxState.PREPARED, value=1, participants=()), why=""),
        StartTimer(txid="t1"),
        Reply(conn=0, msg=Vote(txid="t1", yes=True)),
    ]
    assert done(mid_step_cuts(vote)) == {frozenset({0})}


def test_a_finishing_coordinator_never_sends_or_reports_again_whatever_it_is_fed() -> None:
    # The explorer takes the protocol's own coordinator for finished once it
    # is FINISHING (harness.sim.transitions._intern_client): sound only while
    # nothing it is fed then makes it send or report. Every input, in every
    # order up to three deep, from a commit and from an abort.
    names = ("p1:1", "p2:2", "p3:3")
    replies: list[Message] = [Outcome(txid="t1", state=st) for st in TxState]
    replies += [Vote(txid="t1", yes=True), Vote(txid="t1", yes=False), Error(code="not-prepared", txid="t1", detail="")]
    inputs = [("reply", p, m) for p in names for m in replies]
    inputs += [(what, p, None) for what in ("unreachable", "lost") for p in names]
    inputs += [("timeout", t, None) for t in co.Timer]

    def feed(core: co.CoordinatorCore, what: str, arg: Any, msg: Message | None) -> list[co.CoordinatorAction]:
        if what == "reply":
            assert msg is not None
            return core.on_reply(arg, msg)
        if what == "unreachable":
            return core.on_unreachable(arg)
        if what == "lost":
            return core.on_connection_lost(arg)
        return core.on_timeout(arg)

    for last in (Vote(txid="t1", yes=True), Vote(txid="t1", yes=False)):
        start = co.CoordinatorCore(txid="t1", value=1, participants=names)
        start.start()
        for p in names:
            if start.phase is co.Phase.VOTING:
                start.on_reply(p, last if p == names[-1] else Vote(txid="t1", yes=True))
        assert start.phase is co.Phase.FINISHING
        frontier, seen = [start], 0
        for _ in range(3):
            nxt = []
            for core in frontier:
                for what, arg, msg in inputs:
                    again = copy.deepcopy(core)
                    actions = feed(again, what, arg, msg)
                    assert not [a for a in actions if isinstance(a, co.Send | co.Report)], (what, arg, msg)
                    seen += 1
                    if again.phase is co.Phase.FINISHING:
                        nxt.append(again)
            frontier = nxt[:200]
        assert seen > len(inputs)


def test_explorer_catches_a_participant_that_accepts_a_subset_list_from_a_stranger() -> None:
    result = Explorer(3, 1, Bounds(crashes=0), **BROKEN["accept-subset"]).run()
    assert rules(result.violations) == {MEMBERSHIP} and result.depth == 1, result.trace
    assert result.trace[0] == "a stranger -> p1: PREPARE txid=x1 value=99 participants=p1:1"
    assert "p1 persists x1 prepared (vote yes)" in result.trace[1]


def test_the_real_participant_refuses_every_stranger_and_changes_nothing() -> None:
    explorer = Explorer(3, 1, Bounds(crashes=0))
    state = explorer.initial_state()
    for node in range(3):
        entries = explorer.stranger_entries(node)
        assert len(entries) == 4  # itself alone, the cluster less either other member, the cluster and an outsider
        for eid in entries:
            step = Step(StepKind.STRANGER, node, eid)
            after, effects, violations = explorer.apply(state, step)
            assert after.nodes == state.nodes and violations == []
            (reply,) = [e[-1] for _, e in effects if e[0] is Fx.SEND]
            assert isinstance(reply, Error) and reply.code == "not-cluster"
        # So no stranger's step is offered: it would lead back to the same state.
        assert not [st for st in explorer.steps(state) if st.kind is StepKind.STRANGER]


def test_a_held_commit_record_outlives_other_steps_and_is_lost_in_a_crash() -> None:
    # nodes.py acknowledges a COMMIT before its record is durable and may hold
    # the record across other steps: the explorer must hold it too, offer its
    # write as a step of its own, and lose it in a crash.
    explorer = Explorer(3, 1, Bounds(crashes=1))
    state = explorer.initial_state()

    def take(text: str) -> None:
        nonlocal state
        (step,) = [st for st in explorer.steps(state) if explorer.describe(state, st) == text]
        state = explorer.apply(state, step)[0]

    def p1() -> PSnap:
        return explorer.psnap(state.nodes[0])

    take("client1 begins t1 (value=1)")
    for p in ("p1", "p2", "p3"):  # each vote is handled by the client as it arrives
        take(f"client1 -> {p}: PREPARE txid=t1 value=1 participants=p1:1,p2:2,p3:3")
    take("client1 -> p1: COMMIT txid=t1")
    assert [r.state for r in p1().held] == [TxState.COMMITTED]  # acknowledged, held
    take("client1 -> p2: COMMIT txid=t1")  # another node's step: still held, and its write still a step
    assert [r.state for r in p1().held] == [TxState.COMMITTED]
    assert "p1 writes the commit record(s) it held" in [explorer.describe(state, st) for st in explorer.steps(state)]
    take("p1 crashes")
    assert [r.state for r in p1().durable] == [TxState.PREPARED] and p1().held == ()  # the yes vote is all it has


def test_real_protocol_without_faults_commits_or_aborts_cleanly() -> None:
    result = Explorer(3, 2, Bounds(crashes=0)).run()
    assert result.ok and result.complete
    assert (result.states, result.full_states) == (245, 2_298)  # the second: without symmetry reduction


def test_explorer_catches_a_coordinator_that_never_prepares() -> None:
    result = Explorer(3, 1, Bounds(crashes=0), coordinator_factory=never_prepare).run()
    assert rules(result.violations) == {AC4}
    assert "client1 reports t1 ABORTED although it met no fault and no conflict" in str(result.violations[0])
    assert result.depth == 3  # begin, timer, the RESOLVE answered: the shortest


def test_explorer_catches_a_coordinator_that_never_commits() -> None:
    result = Explorer(3, 1, Bounds(crashes=0), coordinator_factory=never_commit).run()
    assert rules(result.violations) == {AC4}
    assert "reports t1 UNKNOWN" in str(result.violations[0])
    assert sum("VOTE txid=t1 vote=ok" in line for line in result.trace) == 3


def test_explorer_catches_a_no_vote_that_releases_the_lock() -> None:
    result = Explorer(1, 3, Bounds(crashes=0), participant_factory=NokReleasesLock.restore).run()
    assert rules(result.violations) == {LOCK}
    assert "p1 holds 2 transactions prepared" in str(result.violations[0])
    assert any("vote=NOK" in line for line in result.trace)


def test_explorer_catches_a_codec_that_changes_a_vote() -> None:
    result = Explorer(2, 2, Bounds(crashes=0), codec=BROKEN_CODEC).run()
    assert rules(result.violations) == {CODEC}
    assert "vote=ok" in str(result.violations[0]) and "yes=False" in str(result.violations[0])


def test_explorer_passes_every_message_through_the_codec() -> None:
    carried: list[Message] = []

    def counting_decode(line: bytes) -> Message:
        msg = decode(line)
        carried.append(msg)
        return msg

    Explorer(2, 1, Bounds(crashes=0), codec=WireCodec(encode, counting_decode)).run()
    kinds = {type(m).__name__ for m in carried}
    assert {"Prepare", "Vote", "Commit", "Outcome"} <= kinds


def test_real_protocol_with_one_client_a_crash_a_loss_and_a_duplicate_has_no_violation() -> None:
    result = Explorer(3, 1, Bounds(crashes=1, losses=1, duplicates=1)).run()
    assert result.violations == [], "\n".join(result.trace)
    assert result.complete


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_protocol_with_one_client_two_crashes_and_a_loss_has_no_violation() -> None:
    result = Explorer(3, 1, Bounds(crashes=2, losses=1)).run()
    assert result.violations == [], "\n".join(result.trace)
    assert result.complete


def test_ordered_prepare_small_configuration_with_a_crash_has_no_violation() -> None:
    result = Explorer(3, 2, Bounds(crashes=1), coordinator_factory=ordered_coordinator).run()
    assert result.violations == [], "\n".join(result.trace)
    assert result.complete and result.states > 10_000


def test_ordered_prepare_passes_a_thousand_seeded_random_runs() -> None:
    summary = random_runs(1000, seed=101, coordinator_factory=ordered_coordinator)
    failure = summary.failure
    assert failure is None, "\n".join(failure.trace if failure else [])
    assert summary.crashes > 100 and summary.results[co.Result.COMMITTED] > 100


@pytest.mark.timeout(300)
def test_real_protocol_passes_four_thousand_seeded_random_runs() -> None:
    summary = random_runs(4000, seed=1)
    failure = summary.failure
    assert failure is None, "\n".join(failure.trace if failure else [])
    assert summary.runs == 4000
    # The runs did exercise faults and both outcomes.
    assert summary.crashes > 500 and summary.lost > 1000 and summary.duplicated > 500
    assert summary.results[co.Result.COMMITTED] > 1000 and summary.results[co.Result.ABORTED] > 1000


def test_same_seed_gives_the_same_run_event_for_event() -> None:
    a = simulate(7, trace=True)
    b = simulate(7, trace=True)
    c = simulate(8, trace=True)
    assert a.trace == b.trace and a.events == b.events
    assert a.trace != c.trace


# ====================================================================== broken variants are caught


def test_explorer_catches_a_vote_sent_before_it_is_durable() -> None:
    result = Explorer(3, 2, Bounds(crashes=1), participant_factory=VoteBeforePersist.restore).run()
    assert not result.ok
    assert rules(result.violations) & {TRUTH, AC3}
    text = "\n".join(result.trace)
    # The shortest trace: the third participant replies, then crashes before its persist.
    assert "p3: PREPARE txid=t1 value=1 participants=p1:1,p2:2,p3:3  [and crashes after 1 of its actions]" in text
    assert "p3 -> client1: VOTE txid=t1 vote=ok" in text
    assert result.depth <= 5


def test_explorer_catches_a_coordinator_that_commits_with_a_missing_vote() -> None:
    result = Explorer(3, 2, Bounds(crashes=0), coordinator_factory=commit_with_missing_vote).run()
    assert rules(result.violations) == {TRUTH}
    assert "reports t1 COMMITTED before every participant durably voted yes" in str(result.violations[0])


def test_explorer_catches_a_prepared_participant_that_aborts_on_timeout() -> None:
    result = Explorer(3, 2, Bounds(crashes=1), participant_factory=AbortOnTimeout.restore).run()
    assert TRUTH in rules(result.violations)
    assert any("timer for t1 fires" in line for line in result.trace)


def test_explorer_catches_a_restart_that_forgets_its_lock() -> None:
    result = Explorer(3, 1, Bounds(crashes=1), participant_factory=ForgetLockOnRestart.restore).run()
    assert LIVENESS in rules(result.violations)
    assert "-- faults stop here; the healing schedule follows --" in result.trace


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_explorer_catches_a_no_vote_that_is_not_durable() -> None:
    # A duplicated PREPARE outlives the participant's crash, which forgot its no vote.
    result = Explorer(2, 2, Bounds(crashes=1, losses=1, duplicates=1), participant_factory=ForgetNoVote.restore).run()
    assert TRUTH in rules(result.violations)
    assert "ABORTED, but" in str(result.violations[0])
    assert any("[duplicated: a copy stays in flight]" in line for line in result.trace)


@pytest.mark.parametrize("name", sorted(set(BROKEN) - {"forget-no-vote"} - EXPLORER_ONLY))
def test_random_simulation_catches_broken_variant(name: str) -> None:
    kwargs = BROKEN[name]
    summary = random_runs(300, seed=1, **kwargs)
    failure = summary.failure
    assert failure is not None
    assert failure.violations and failure.trace[-1].startswith("VIOLATION")
    again = simulate(failure.seed, **kwargs, trace=True)
    assert again.violations == failure.violations and again.trace == failure.trace


def test_random_simulation_catches_a_no_vote_that_is_not_durable() -> None:
    # Rare: it takes a crash, a loss and a duplicate in the right places. This
    # seed was found by random_runs with these parameters (about 1 run in 4,000;
    # a change to what the simulator draws changes the runs, and the seed).
    params = SimParams(
        participants=2, clients=2, duplicate=0.5, loss=0.2, crashes=4, max_downtime=5, max_delay=60, mid_step=0.8
    )
    result = simulate(4612, params, participant_factory=ForgetNoVote.restore)
    assert rules(result.violations) & {TRUTH, AC1}
    assert simulate(4612, params).ok  # the real protocol, same seed and faults


# ====================================================================== the command line


def test_cli_explore_exits_0_and_reports_figures_when_no_violation() -> None:
    out = io.StringIO()
    assert cli.main(["explore", "--clients", "1", "--crashes", "1"], out) == 0
    text = out.getvalue()
    assert "no violation" in text and "states/s" in text and "depth" in text
    assert "TCommit model: 34 distinct states for 3 resource managers" in text


def test_cli_explore_exits_1_with_the_trace_and_the_repeat_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        return Explorer(*args, **{**kwargs, "coordinator_factory": commit_with_missing_vote})

    monkeypatch.setattr(cli, "Explorer", broken)
    out = io.StringIO()
    assert cli.main(["explore", "--crashes", "0"], out) == 1
    text = out.getvalue()
    assert "    1. client1 begins t1 (value=1)\n        client1 -> p1: PREPARE txid=t1" in text
    assert "client1 -> p1: PREPARE txid=t1 value=1 participants=p1:1,p2:2,p3:3" in text
    assert "VIOLATION client told the truth" in text
    assert (
        "repeat with: python -m harness.sim explore --participants 3 --prepare parallel --clients 2 --crashes 0" in text
    )


def test_cli_random_exits_1_with_a_seed_that_repeats_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    real = random_runs

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        return real(*args, **{**kwargs, "participant_factory": AbortOnTimeout.restore})

    monkeypatch.setattr(cli, "random_runs", broken)
    out = io.StringIO()
    assert cli.main(["random", "--runs", "50", "--seed", "3"], out) == 1
    text = out.getvalue()
    repeat = text.split("repeat with: ")[1].strip()
    assert " --runs 1 " in repeat + " " and " --seed " in repeat
    again = io.StringIO()
    argv = repeat.split()[3:]
    assert cli.main(argv, again) == 1
    assert (
        text.split("failed:")[1].split("repeat with")[0] == again.getvalue().split("failed:")[1].split("repeat with")[0]
    )


def test_cli_random_exits_0_for_the_real_protocol() -> None:
    out = io.StringIO()
    assert cli.main(["random", "--runs", "20", "--seed", "11"], out) == 0
    assert "transactions per CPU second" in out.getvalue()


@pytest.mark.parametrize("command", ["explore", "random"])
def test_cli_help_gives_every_option_its_default(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = [a for a in sub.choices[command]._actions if a.dest != "help"]
    for action in options:
        flag = action.option_strings[0]
        assert flag in text
        if action.default not in (None, False):
            assert f"(default: {action.default})" in text, flag


def test_cli_explore_prints_the_tcommit_count_for_the_participants_asked_and_both_state_counts() -> None:
    reduced, full = io.StringIO(), io.StringIO()
    argv = ["explore", "--participants", "2", "--clients", "1", "--crashes", "0"]
    assert cli.main(argv, reduced) == 0 and cli.main([*argv, "--no-symmetry"], full) == 0
    assert len(tcommit_reachable(2)) == 12  # working, prepared, committed, aborted: 16 pairs less 4 that mix
    for out in (reduced, full):
        assert "TCommit model: 12 distinct states for 2 resource managers\n" in out.getvalue()
    # Two participants, one client, no fault: the two participants are interchangeable.
    assert reduced.getvalue().startswith("explored 6 states (one per class up to renaming")
    assert full.getvalue().startswith("explored 8 states (")
