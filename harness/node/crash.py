"""Crash points: a node kills itself with SIGKILL exactly where a crash hurts most.

Used by the tests, ``--crash`` on the command lines and the runner. Each point
is reached where the node says so (harness.node.participant_node and
harness.node.client_node); ``parse_crash_point`` is the one reader of
``POINT[:N]`` for every command line.
"""

from __future__ import annotations

import enum
import os
import signal
from dataclasses import dataclass

from harness.events.log import EventLog
from harness.events.schema import CRASH


class ParticipantCrashPoint(enum.StrEnum):
    """Where a participant can kill itself."""

    BEFORE_VOTE = "before-vote"  # its yes vote durable, not yet sent
    AFTER_VOTE = "after-vote"  # its yes vote in the kernel's hands
    # The OUTCOME of a COMMIT has left ahead of its record (a lazy commit), which
    # is not yet durable; a reply that had to wait for another persist, written
    # with the record, is not this point.
    AFTER_COMMIT_REPLY = "after-commit-reply"
    AFTER_COMMIT = "after-commit"  # the committed record is durable


class ClientCrashPoint(enum.StrEnum):
    """Where a client can kill itself."""

    AFTER_PREPARE = "after-prepare"  # every PREPARE of a transaction sent
    AFTER_FIRST_COMMIT = "after-first-commit"  # one COMMIT sent, the others not


CrashPoint = ParticipantCrashPoint | ClientCrashPoint


def parse_crash_point(
    text: str, points: type[ParticipantCrashPoint] | type[ClientCrashPoint]
) -> tuple[CrashPoint, int]:
    """``POINT[:N]`` -> (point, N): the Nth passage of POINT (N defaults to 1).
    ValueError with a readable message for anything else."""
    name, _, nth = text.partition(":")
    try:
        point = points(name)
    except ValueError:
        raise ValueError(f"crash point must be one of {', '.join(p.value for p in points)}, got {name!r}") from None
    if nth and (not nth.isdigit() or int(nth) < 1):
        raise ValueError(f"crash count must be a positive integer, got {nth!r}")
    return point, int(nth or 1)


@dataclass
class CrashPlan:
    """Kill this process with SIGKILL at a protocol point, on its nth passage."""

    point: CrashPoint
    nth: int = 1
    seen: int = 0

    @classmethod
    def parse(cls, text: str, points: type[ParticipantCrashPoint] | type[ClientCrashPoint]) -> CrashPlan:
        point, nth = parse_crash_point(text, points)
        return cls(point=point, nth=nth)

    def reached(self, point: CrashPoint, log: EventLog) -> None:
        """The node passes ``point``: die here if it is the planned passage."""
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.nth:
            log.write(CRASH, point=point.value, signal="SIGKILL")
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)
