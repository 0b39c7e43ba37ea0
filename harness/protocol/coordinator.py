"""The coordinator's state machine: one instance per transaction, run by a client.

Theory of operation. The coordinator sends PREPARE (with the value and the
participant list) to every participant and gathers votes:

* every vote yes: the transaction is committed (the commit point is the last
  durable yes vote, at the participants); COMMIT goes to everyone;
* a vote no, or a PREPARE that was certainly never delivered (the connection
  could not be opened): it can never commit; ABORT goes to everyone;
* silence (timeout, or a connection lost after sending): the coordinator does
  not know, so it does not guess. It sends RESOLVE to the silent ones: a
  participant that has not voted then records abort and says so, one that has
  voted says prepared. If the silent ones stay silent, the outcome is UNKNOWN
  and the participants finish the transaction among themselves.

So a client is told COMMITTED only when every participant durably voted yes,
ABORTED only when the transaction can never commit anywhere, and UNKNOWN
otherwise (Jepsen's ok / fail / info).

The rule this module keeps: no I/O, no clock, no randomness. Timeouts are
inputs; the driver performs the returned actions in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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
    TxState,
    Vote,
)


class Result(enum.Enum):
    """What a client tells its user."""

    COMMITTED = "committed"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


class Phase(enum.Enum):
    VOTING = "voting"  # PREPARE sent, gathering votes
    RESOLVING = "resolving"  # some participants silent: RESOLVE sent to them
    FINISHING = "finishing"  # decided: COMMIT or ABORT sent, gathering acknowledgements
    DONE = "done"


class Timer(enum.Enum):
    PHASE = "phase"  # the current phase's deadline
    RETRY = "retry"  # re-send RESOLVE to a participant we could not reach


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, kw_only=True, slots=True)
class Send:
    """Send ``msg`` to participant ``to``. If the driver cannot even open the
    connection, it must call :meth:`CoordinatorCore.on_unreachable`."""

    to: str
    msg: Message


@dataclass(frozen=True, kw_only=True, slots=True)
class SetTimer:
    """Call :meth:`CoordinatorCore.on_timeout` with ``timer`` after its
    configured delay, replacing any earlier timer of that kind."""

    timer: Timer


class Cause(enum.Enum):
    """Why the transaction ended as it did, as a token for tables."""

    ALL_YES = "all-yes"  # every participant voted yes
    NO_VOTE = "no-vote"  # a participant voted NOK
    UNREACHABLE = "unreachable"  # PREPARE could not be delivered to a participant
    TIMEOUT = "timeout"  # a participant stayed silent, then aborted when asked
    NO_ANSWER = "no-answer"  # silent participants never answered: outcome unknown


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """The outcome to tell the user. Emitted exactly once."""

    result: Result
    reason: str
    cause: Cause = Cause.ALL_YES
    nok: NokCode | None = None  # with Cause.NO_VOTE: the code of the NOK that decided it, if it had one


@dataclass(frozen=True, kw_only=True, slots=True)
class Finished:
    """Nothing more to do for this transaction; emitted once, last."""


CoordinatorAction = Send | SetTimer | Report | Finished


@dataclass
class CoordinatorCore:
    """Coordinates one transaction ``txid`` writing ``value`` at ``participants``."""

    txid: str
    value: int
    participants: tuple[str, ...]
    phase: Phase = Phase.VOTING
    result: Result | None = None
    reason: str = ""
    yes: set[str] = field(default_factory=set)  # voted yes (or said prepared/committed)
    silent: set[str] = field(default_factory=set)  # may have voted; we do not know
    acked: set[str] = field(default_factory=set)  # acknowledged the decision
    unreachable: set[str] = field(default_factory=set)  # RESOLVE could not be delivered yet
    lost: set[str] = field(default_factory=set)  # connection closed while we awaited a vote
    # Ordered prepare: PREPARE goes to the first participant alone, and to the
    # others only once it voted yes. Every client prepares in the same order, so
    # the first participant's lock admits one transaction at a time and votes
    # never split under contention; it costs one round trip more.
    ordered: bool = False
    unsent: set[str] = field(default_factory=set)  # never sent PREPARE: can never vote yes
    # The operation's age, sent with PREPARE for a participant's conflict policy
    # (harness.protocol.conflict): an input, chosen by the client when the
    # operation first started and the same for all its retries.
    prio: int | None = None

    def start(self) -> list[CoordinatorAction]:
        targets = self.participants[:1] if self.ordered else self.participants
        self.silent = set(targets)
        self.unsent = set(self.participants) - self.silent
        return [*self._prepare(targets), SetTimer(timer=Timer.PHASE)]

    def _prepare(self, targets: tuple[str, ...] | list[str]) -> list[CoordinatorAction]:
        # Ordered prepare's first PREPARE goes out while this transaction holds no
        # lock anywhere (no yes vote yet); said with the age, as a hint for wait-die
        # (harness.protocol.conflict).
        lockless = self.ordered and self.prio is not None and not self.yes
        prepare = Prepare(
            txid=self.txid, value=self.value, participants=self.participants, prio=self.prio, lockless=lockless
        )
        return [Send(to=p, msg=prepare) for p in targets]

    # ------------------------------------------------------------ inputs

    def on_reply(self, src: str, msg: Message) -> list[CoordinatorAction]:
        """A participant's reply about this transaction."""
        if src not in self.participants or getattr(msg, "txid", self.txid) != self.txid:
            return []
        match self.phase, msg:
            case Phase.VOTING, Vote(yes=True):
                self.silent.discard(src)
                self.yes.add(src)
                if self._all_yes():
                    return self._commit("every participant voted yes", Cause.ALL_YES)
                if self.unsent and src == self.participants[0]:
                    rest, self.unsent = sorted(self.unsent), set()
                    self.silent |= set(rest)
                    return [*self._prepare(rest), SetTimer(timer=Timer.PHASE)]
                # The rest are silent on dead connections: no vote will come from them.
                return self._start_resolving() if self.silent <= self.lost else []
            case Phase.VOTING, Vote(yes=False):
                self.silent.discard(src)  # it released its promise: it needs no ABORT
                return self._abort(f"{src} voted NOK: {msg.reason or 'no reason given'}", Cause.NO_VOTE, msg.code)
            case Phase.RESOLVING, Outcome(state=TxState.ABORTED):
                self.silent.discard(src)
                return self._abort(f"{src} did not answer in time, then aborted", Cause.TIMEOUT)
            case Phase.RESOLVING, Outcome(state=TxState.COMMITTED):
                return self._commit(f"{src} did not answer in time, then reported committed", Cause.ALL_YES)
            case Phase.RESOLVING, Outcome(state=TxState.PREPARED) | Vote(yes=True):
                self.silent.discard(src)
                self.unreachable.discard(src)
                self.yes.add(src)
                if self._all_yes():
                    return self._commit(f"late yes votes from {self._names(self.participants)}", Cause.ALL_YES)
                if not self.silent and self.unsent:
                    # Ordered prepare timed out before the others got PREPARE: they never will.
                    return self._abort(f"{src} answered too late for the others to be asked", Cause.TIMEOUT)
                return []
            case Phase.RESOLVING, Vote(yes=False):
                self.silent.discard(src)
                return self._abort(f"{src} voted NOK late: {msg.reason or 'no reason given'}", Cause.NO_VOTE, msg.code)
            case Phase.FINISHING, Outcome(state=TxState.PREPARED):
                return []  # a late answer to RESOLVE, not an acknowledgement of the decision
            case Phase.FINISHING, Outcome():
                # The decision applied (or, against the protocol, the opposite one:
                # the participants' logs show it and the checker reports it).
                self.acked.add(src)
                if self.acked >= self._to_acknowledge():
                    return self._finish()
                return []
            case Phase.FINISHING, Error(code=code) if code == FORGOTTEN:
                # Decided there and compacted away: its decision was the one we
                # sent (docs/protocol.md, "Forgetting"). In VOTING or RESOLVING
                # it is no answer (below): the outcome may stay UNKNOWN.
                self.acked.add(src)
                return self._finish() if self.acked >= self._to_acknowledge() else []
            case Phase.FINISHING, Error(code="not-prepared"):
                # An ABORT never needs it, a COMMIT only goes to yes voters: a
                # participant that lost a yes vote. Count it; the checker judges.
                self.acked.add(src)
                return self._finish() if self.acked >= self._to_acknowledge() else []
            case _:
                return []

    def on_unreachable(self, dst: str) -> list[CoordinatorAction]:
        """The connection to ``dst`` could not be opened: the message was
        certainly not delivered."""
        if self.phase is Phase.VOTING:
            # PREPARE never reached dst, and we never send it again: dst can
            # never vote yes, so the transaction can never commit.
            return self._abort(f"{dst} unreachable", Cause.UNREACHABLE)
        if self.phase is Phase.RESOLVING and dst in self.silent:
            self.unreachable.add(dst)
            return [SetTimer(timer=Timer.RETRY)]
        if self.phase is Phase.FINISHING:
            # It will learn the decision from its peers once it is back.
            self.acked.add(dst)
            return self._finish() if self.acked >= self._to_acknowledge() else []
        return []

    def on_connection_lost(self, dst: str) -> list[CoordinatorAction]:
        """The connection to ``dst`` closed after we sent on it: the message may
        or may not have been delivered, and no reply will come on it."""
        match self.phase:
            case Phase.VOTING if dst in self.silent:
                self.lost.add(dst)
                # Once every silent participant is gone, waiting for the deadline is pointless.
                return self._start_resolving() if self.silent <= self.lost else []
            case Phase.RESOLVING if dst in self.silent:
                self.unreachable.add(dst)
                return [SetTimer(timer=Timer.RETRY)]
            case Phase.FINISHING:
                return self.on_unreachable(dst)
            case _:
                return []

    def on_timeout(self, timer: Timer) -> list[CoordinatorAction]:
        if timer is Timer.RETRY:
            if self.phase is not Phase.RESOLVING or not self.unreachable:
                return []
            again, self.unreachable = sorted(self.unreachable), set()
            return [Send(to=p, msg=Resolve(txid=self.txid)) for p in again]
        match self.phase:
            case Phase.VOTING:
                return self._start_resolving()
            case Phase.RESOLVING:
                return self._report_unknown()
            case Phase.FINISHING:
                return self._finish()  # the decision stands; laggards learn it from peers
            case Phase.DONE:
                return []

    # ------------------------------------------------------------ internals

    def _all_yes(self) -> bool:
        return self.yes >= set(self.participants)

    @staticmethod
    def _names(names: object) -> str:
        return ",".join(sorted(names))  # type: ignore[call-overload]

    def _start_resolving(self) -> list[CoordinatorAction]:
        self.phase = Phase.RESOLVING
        actions: list[CoordinatorAction] = [Send(to=p, msg=Resolve(txid=self.txid)) for p in sorted(self.silent)]
        actions.append(SetTimer(timer=Timer.PHASE))
        return actions

    def _commit(self, reason: str, cause: Cause) -> list[CoordinatorAction]:
        return self._decide(Result.COMMITTED, reason, cause, Commit(txid=self.txid))

    def _abort(self, reason: str, cause: Cause, nok: NokCode | None = None) -> list[CoordinatorAction]:
        return self._decide(Result.ABORTED, reason, cause, Abort(txid=self.txid), nok)

    def _decide(
        self, result: Result, reason: str, cause: Cause, msg: Commit | Abort, nok: NokCode | None = None
    ) -> list[CoordinatorAction]:
        self.phase = Phase.FINISHING
        self.result, self.reason = result, reason
        self.acked = set()
        actions: list[CoordinatorAction] = [Report(result=result, reason=reason, cause=cause, nok=nok)]
        actions += [Send(to=p, msg=msg) for p in sorted(self._to_acknowledge())]
        if not self._to_acknowledge():
            return actions + self._finish()
        actions.append(SetTimer(timer=Timer.PHASE))
        return actions

    def _to_acknowledge(self) -> set[str]:
        """Who must hear the decision: everyone for COMMIT; for ABORT, those
        that may hold a promise (a no voter has released it already)."""
        if self.result is Result.COMMITTED:
            return set(self.participants)
        return self.yes | self.silent

    def _report_unknown(self) -> list[CoordinatorAction]:
        self.result = Result.UNKNOWN
        self.reason = f"no answer from {self._names(self.silent)}; the participants will decide"
        return [Report(result=self.result, reason=self.reason, cause=Cause.NO_ANSWER), *self._finish()]

    def _finish(self) -> list[CoordinatorAction]:
        if self.phase is Phase.DONE:
            return []
        self.phase = Phase.DONE
        return [Finished()]
