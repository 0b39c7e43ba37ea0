"""How long nodes wait: every timeout default, and the rule that stretches them with ``--delay``.

One home for these numbers: the command lines, the runner, the nodes and the
benchmark take them from here.

A client waits CLIENT_TIMEOUT for votes (then for a silent participant's
state) before it gives up on them; a prepared participant waits RESOLVE_AFTER
for the decision before it asks its peers. The participants wait longer than
the client, so that a live client decides first. With ``--delay`` (the seed's
slow pace) every message takes that much longer, so both grow with it.
"""

from __future__ import annotations

CLIENT_TIMEOUT = 2.0  # seconds: the client's --timeout; loopback round trips take a millisecond
RESOLVE_AFTER = 5.0  # seconds: the participant's --resolve-after
# Under faults silent peers are common and waiting is their cost: shorter
# timeouts. A client that hears nothing takes up to a timeout for the votes, one
# for RESOLVE and a connect timeout before it gives up; the participants wait
# longer than that.
FAULT_CLIENT_TIMEOUT = 1.0
FAULT_RESOLVE_AFTER = 3.0
# A client paces each message by the delay, and a transaction has about four
# rounds a client waits through; a participant's decision may wait for a whole
# transaction of a client, ten delays, before it asks its peers.
CLIENT_TIMEOUT_PER_DELAY = 4
RESOLVE_AFTER_PER_DELAY = 10

# How long a connect may take before the participant counts as unreachable.
# Loopback connects take microseconds; a full second only passes when the
# listener is stopped (SIGSTOP) and its backlog is full.
CONNECT_TIMEOUT = 1.0
# A coordinator re-sends RESOLVE to a participant it could not reach this often.
RETRY_INTERVAL = 0.05
# harness.status, and the runner's final STATUS queries: seconds for each answer.
STATUS_TIMEOUT = 2.0


def client_timeout(delay: float = 0.0, faults: bool = False) -> float:
    """The client's default --timeout for a run with this --delay, with or without faults."""
    return (FAULT_CLIENT_TIMEOUT if faults else CLIENT_TIMEOUT) + CLIENT_TIMEOUT_PER_DELAY * delay


def resolve_after(delay: float = 0.0, faults: bool = False) -> float:
    """The participant's default --resolve-after for a run with this --delay, with or without faults."""
    return (FAULT_RESOLVE_AFTER if faults else RESOLVE_AFTER) + RESOLVE_AFTER_PER_DELAY * delay
