"""The faults a run can inject, named once: the nemesis's kinds and the targeted ``--crash`` specs.

``FaultKind`` names what ``--nemesis`` draws from (and what ``nemesis.log``
records); ``parse_crashes`` is the one reader of ``--crash TARGET:POINT[:N]``,
which takes its points from harness.node.crash.
"""

from __future__ import annotations

import enum

from harness.node.crash import ClientCrashPoint, ParticipantCrashPoint, parse_crash_point
from harness.postgres.points import parse_terminate_point


class FaultKind(enum.StrEnum):
    """A fault of the nemesis, as ``--nemesis`` and ``nemesis.log`` spell it."""

    KILL_PARTICIPANT = "kill-participant"  # SIGKILL, then a restart from its storage after an outage
    KILL_CLIENT = "kill-client"  # SIGKILL; a new client process takes over its unfinished operations
    PAUSE = "pause"  # SIGSTOP, later SIGCONT, of a participant or a client
    PARTITION = "partition"  # links of the fault proxy cut, or degraded; in netns runs, nftables drop rules
    LOSS = "loss"  # netns runs: a node's frames dropped at random by nftables
    BANDWIDTH = "bandwidth"  # netns runs: a token bucket (tc tbf) on a node's link
    DELAY = (
        "delay"  # every message to and from a participant delayed: the fault proxy, or netem where the kernel has it
    )
    CRASH = "crash"  # a node killed itself at its --crash point (recorded, not drawn)
    # --backend postgres (harness.postgres.nemesis)
    KILL_POSTMASTER = "kill-postmaster"  # SIGKILL of a cluster's postmaster, then a restart (crash recovery)
    TERMINATE_BACKEND = "terminate-backend"  # pg_terminate_backend of a client's session, at any moment
    CUT = "cut"  # a client cut from a cluster through the byte relay, then healed


# What --nemesis may name: with our participants on loopback (the fault proxy
# makes partitions and delay), only with --network netns (the kernel makes
# them), and with --backend postgres.
NEMESIS_KINDS = (
    FaultKind.KILL_PARTICIPANT,
    FaultKind.KILL_CLIENT,
    FaultKind.PAUSE,
    FaultKind.PARTITION,
    FaultKind.DELAY,
)
KERNEL_KINDS = (FaultKind.LOSS, FaultKind.BANDWIDTH)
POSTGRES_NEMESIS_KINDS = (
    FaultKind.KILL_POSTMASTER,
    FaultKind.TERMINATE_BACKEND,
    FaultKind.CUT,
    FaultKind.KILL_CLIENT,
)


class PartitionPoint(enum.StrEnum):
    """A partition made at a protocol point (``--crash partition:POINT``)."""

    BETWEEN_PHASES = "between-phases"  # client1 cut from server2 right after server2's yes vote
    # client1's link to server2 slowed to SLOW_VOTE_DELAY times its --timeout each
    # way: server2's vote comes after the deadline, and client1 must resolve.
    SLOW_VOTE = "slow-vote"


SLOW_VOTE_DELAY = 1.5  # x the client's --timeout: later than the deadline, sooner than two


def parse_nemesis(text: str, allowed: tuple[FaultKind, ...] = NEMESIS_KINDS) -> tuple[FaultKind, ...]:
    """``--nemesis kill-participant,pause`` -> the kinds; ValueError naming a bad one."""
    kinds = []
    for name in (k for k in text.split(",") if k):
        if name not in allowed:
            raise ValueError(f"--nemesis: {name!r} is not one of {', '.join(allowed)}")
        kinds.append(FaultKind(name))
    return tuple(kinds)


def parse_crashes(specs: tuple[str, ...], participants: int, clients: int, postgres: bool = False) -> dict[str, str]:
    """``--crash`` values to {target: POINT[:N]}. ``participant`` means server1 and
    ``client`` client1; ``serverN`` / ``clientN`` name one; ``:N`` after the
    point crashes at its Nth passage; ``partition:between-phases`` is kept
    under the target "partition". With ``postgres`` (--backend postgres) the
    participants are clusters, which have no crash points, and a client also
    takes the points of harness.postgres.points. Raises ValueError with a
    readable message."""
    out: dict[str, str] = {}
    for spec in specs:
        role, _, point = spec.partition(":")
        if role == "partition":
            if point not in tuple(PartitionPoint):
                raise ValueError(f"--crash partition:POINT takes one of {', '.join(PartitionPoint)}")
            if participants < 2:
                raise ValueError(f"--crash partition:{point} needs at least 2 participants")
            out["partition"] = point
            continue
        target = {"participant": "server1", "client": "client1"}.get(role, role)
        if postgres and target.startswith("client") and target[6:].isdigit() and 1 <= int(target[6:]) <= clients:
            if parse_terminate_point(point) is not None:
                out[target] = point
                continue
        elif postgres:
            raise ValueError(f"--crash {spec!r}: with --backend postgres only clients and partition have crash points")
        points: type[ParticipantCrashPoint] | type[ClientCrashPoint]
        if target.startswith("server") and target[6:].isdigit() and 1 <= int(target[6:]) <= participants:
            points = ParticipantCrashPoint
        elif target.startswith("client") and target[6:].isdigit() and 1 <= int(target[6:]) <= clients:
            points = ClientCrashPoint
        else:
            raise ValueError(
                f"--crash {spec!r}: the target must be participant, client, server1..server{participants}"
                f" or client1..client{clients}"
            )
        try:
            parse_crash_point(point, points)
        except ValueError as e:
            raise ValueError(f"--crash {spec!r}: {target}'s {e}") from None
        if target in out:
            raise ValueError(f"--crash names {target} twice")
        out[target] = point
    return out
