"""Fault points of a client under ``--backend postgres`` (no psycopg here: the command lines parse them).

A client SIGKILLs itself at the points our clients have (harness.node.crash:
``after-prepare``, ``after-first-commit``); it also asks its first cluster to
``pg_terminate_backend`` its own session at one of the TerminatePoint points,
through a second connection, so that the session dies exactly there.
"""

from __future__ import annotations

import enum


class TerminatePoint(enum.StrEnum):
    """Where a client's session at pg1 is terminated (``--crash client:POINT``)."""

    BEFORE_PREPARE = "terminate-before-prepare"  # its writes done, PREPARE TRANSACTION not sent
    DURING_PREPARE = "terminate-during-prepare"  # while PREPARE TRANSACTION runs (held by a deferred trigger)
    AFTER_PREPARE = "terminate-after-prepare"  # PREPARE acknowledged, COMMIT PREPARED not sent
    DURING_COMMIT = "terminate-during-commit"  # sent together with COMMIT PREPARED: before, during or after it
    AFTER_COMMIT = "terminate-after-commit"  # COMMIT PREPARED acknowledged


def parse_terminate_point(text: str) -> tuple[TerminatePoint, int] | None:
    """``POINT[:N]`` -> (point, N) if POINT is a TerminatePoint, else None;
    ValueError for a bad N."""
    name, _, nth = text.partition(":")
    try:
        point = TerminatePoint(name)
    except ValueError:
        return None
    if nth and (not nth.isdigit() or int(nth) < 1):
        raise ValueError(f"crash count must be a positive integer, got {nth!r}")
    return point, int(nth or 1)
