"""Deliberately broken protocol variants, by name: to see the checks fail.

Theory of operation. A variant breaks one rule that two-phase commit depends on
by wrapping one method of one core class of ``harness.protocol``; the wrapper
calls the real method and bends its input or output. One wrapper serves both
worlds that run the cores:

- the simulator and the explorer take core factories, so ``coordinator_factory``
  builds a subclass of the real coordinator with the wrapper in it;
- the real nodes (``harness.node``) build their cores themselves, so ``install``
  puts the wrapper on the real class, in this process only, as a test's
  monkeypatch does; ``python -m harness.run --variant NAME`` installs it before
  the runner forks its nodes, which inherit it. ``install`` returns the function
  that undoes it.

Nothing is installed unless asked for by name, and a run with a variant says so
(its repeat command carries ``--variant``). The tests use these variants too
(tests/test_tour.py), so the tour's broken protocol stays broken in the way the
tour says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from harness.protocol import coordinator as co
from harness.protocol.conflict import ConflictPolicy
from harness.protocol.messages import Message, Prepare, Vote
from harness.protocol.participant import Action, Event, ParticipantCore, TxRecord
from harness.sim.model import ParticipantFactory

Method = Callable[..., Any]


def _count_no_as_yes(on_reply: Method) -> Method:
    def on_reply_broken(self: co.CoordinatorCore, src: str, msg: Message) -> list[co.CoordinatorAction]:
        if isinstance(msg, Vote) and not msg.yes:
            msg = Vote(txid=msg.txid, yes=True)
        result: list[co.CoordinatorAction] = on_reply(self, src, msg)
        return result

    return on_reply_broken


def _commit_with_missing_vote(all_yes: Method) -> Method:
    def all_yes_broken(self: co.CoordinatorCore) -> bool:
        return len(self.yes) >= len(self.participants) - 1

    return all_yes_broken


@dataclass(frozen=True)
class Variant:
    """One broken rule: the coordinator's method ``method`` wrapped by ``wrap``."""

    name: str
    summary: str  # what it gets wrong, for people
    method: str
    wrap: Callable[[Method], Method]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "count-no-as-yes",
            "the client takes a NOK vote for ok, and commits a transaction a participant refused",
            "on_reply",
            _count_no_as_yes,
        ),
        Variant(
            "commit-with-missing-vote",
            "the client commits once all participants but one voted ok",
            "_all_yes",
            _commit_with_missing_vote,
        ),
    )
}


# ---------------------------------------------------------------- broken conflict rules (participants)


class _YoungerWaitsToo(ParticipantCore):
    """Wait-die without the die: every PREPARE that finds the lock held waits."""

    def _may_wait(self, prepare: Prepare) -> bool:
        return True


class _GrantEveryWaiter(ParticipantCore):
    """A release grants every waiter, not only the oldest: nothing re-checks the lock."""

    def _grant(self) -> list[Action]:
        if not self.waiting or self.lock is not None:
            return []
        actions: list[Action] = []
        for w in sorted(self.waiting.values(), key=lambda w: w.age):
            del self.waiting[w.prepare.txid]
            for conn in w.conns:
                actions += self._transition(conn, w.prepare.txid, Event.PREPARE_LOCK_FREE, w.prepare)
        return actions


@dataclass(frozen=True)
class ParticipantVariant:
    """One broken conflict rule: a participant class to build instead of the real one (under wait-die)."""

    name: str
    summary: str
    cls: type[ParticipantCore]


PARTICIPANT_VARIANTS: dict[str, ParticipantVariant] = {
    v.name: v
    for v in (
        ParticipantVariant(
            "younger-waits",
            "wait-die without the die: a younger transaction waits for an older one too, so waits can form a cycle",
            _YoungerWaitsToo,
        ),
        ParticipantVariant(
            "grant-every-waiter",
            "a released lock is granted to every waiting PREPARE, not to the oldest alone",
            _GrantEveryWaiter,
        ),
    )
}


def participant_factory(variant_name: str) -> ParticipantFactory:
    """A core factory for the simulator and the explorer (harness.sim.model's
    ParticipantFactory) that builds the wait-die participant of variant ``variant_name``."""
    variant = PARTICIPANT_VARIANTS[variant_name]

    def factory(name: str, records: Iterable[TxRecord], cluster: Iterable[str] | None = None) -> ParticipantCore:
        return variant.cls.restore(name, records, cluster, conflict=ConflictPolicy.WAIT_DIE)

    return factory


def get(name: str) -> Variant:
    """The variant called ``name``; ValueError naming the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def install(name: str) -> Callable[[], None]:
    """Put variant ``name`` on the real coordinator class, in this process and
    the processes it forks from now on; returns the function that undoes it."""
    variant = get(name)
    original = co.CoordinatorCore.__dict__[variant.method]
    setattr(co.CoordinatorCore, variant.method, variant.wrap(original))

    def undo() -> None:
        setattr(co.CoordinatorCore, variant.method, original)

    return undo


def coordinator_factory(name: str, ordered: bool = False) -> Callable[[str, int, tuple[str, ...]], co.CoordinatorCore]:
    """A core factory for the simulator and the explorer (harness.sim.model's
    CoordinatorFactory) that builds the coordinator of variant ``name``."""
    variant = get(name)
    broken = type(
        f"CoordinatorCore_{variant.name.replace('-', '_')}",
        (co.CoordinatorCore,),
        {variant.method: variant.wrap(co.CoordinatorCore.__dict__[variant.method])},
    )

    def factory(txid: str, value: int, participants: tuple[str, ...]) -> co.CoordinatorCore:
        core: co.CoordinatorCore = broken(txid=txid, value=value, participants=participants, ordered=ordered)
        return core

    return factory
