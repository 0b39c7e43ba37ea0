"""A participant that lost its store rejoins: it learns the decided state from its peers before voting.

Theory of operation (docs/security.md). Started with ``--rejoin-empty`` on a
missing or emptied store (harness.node.guard), the participant's core refuses
every transactional request (harness.protocol.participant, *rejoining*) while
:func:`learn_from_peers` asks every other member's STATE until all of them
answer and agree on the value and version. Each transaction a peer still holds
prepared is then settled from this participant's own event log
(:func:`in_flight_from_log`): a line is logged and flushed before what it says
leaves the process (harness.events.log), so a yes vote with no ``send ...
vote=ok`` line never left, and the transaction can be aborted here; one that
left is prepared again from its ``durable`` line and resolved with the peers,
as after a restart. Then the core records the peers' state as one snapshot,
adopts their compaction marks (the highest per client, :func:`gather_marks`,
so that a late duplicate of a transaction they forgot is refused here too)
and serves as usual. Without a readable log, or with a yes vote whose record is not
in it, the participant keeps waiting (safe, not live): an operator must decide.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path
from typing import Protocol

from harness.events.log import EventLog
from harness.events.schema import REJOINED
from harness.node.address import parse_address
from harness.node.query import query_all, query_marks
from harness.node.timing import CONNECT_TIMEOUT
from harness.node.tls import Tls
from harness.protocol.messages import State, TxState
from harness.protocol.participant import Action, ParticipantCore, TxRecord


class RejoiningNode(Protocol):
    """What rejoining needs of its node (harness.node.participant_node.ParticipantNode)."""

    core: ParticipantCore | None
    cluster: tuple[str, ...] | None
    routes: dict[str, tuple[str, int]]
    tls: Tls | None
    log: EventLog
    resolve_after: float

    def apply(self, actions: list[Action]) -> None: ...


def in_flight_from_log(path: Path | None, txids: set[str]) -> list[TxRecord] | None:
    """How a rejoining participant settles the transactions its peers hold
    prepared, from its own log: PREPARED (with the value and participants of its
    durable vote) if a yes vote of it was sent, else ABORTED. A line is logged,
    and flushed, before what it says leaves the process (harness.events.log), so
    no ``send ... vote=ok`` line means no yes vote left. None without a log to read."""
    if path is None or not txids:
        return None if path is None else []
    prepared: dict[str, TxRecord] = {}
    sent: set[str] = set()
    durable = re.compile(rb" durable txid=(\S+) state=prepared value=(-?\d+) version=\d+ participants=(\S+)")
    vote = re.compile(rb" send peer=\S+ msg=VOTE txid=(\S+) vote=ok")
    wanted = {t.encode() for t in txids}
    try:
        with open(path, "rb") as f:
            for line in f:
                if b"txid=" not in line:
                    continue
                if (m := durable.search(line)) and m.group(1) in wanted:
                    txid = m.group(1).decode()
                    prepared[txid] = TxRecord(
                        txid=txid,
                        state=TxState.PREPARED,
                        value=int(m.group(2)),
                        participants=tuple(m.group(3).decode().split(",")),
                    )
                elif (m := vote.search(line)) and m.group(1) in wanted:
                    sent.add(m.group(1).decode())
    except OSError:
        return None
    out = []
    for txid in sorted(txids):
        if txid in sent and txid in prepared:
            out.append(prepared[txid])
        elif txid in sent:
            return None  # a yes vote left but its record is not in the log: cannot rebuild it
        else:
            out.append(TxRecord(txid=txid, state=TxState.ABORTED, value=0, participants=()))
    return out


async def gather_marks(addresses: list[tuple[str, int]], ssl_context: ssl.SSLContext | None) -> dict[str, int] | None:
    """The highest mark per client over every peer; None unless every peer answered."""
    merged: dict[str, int] = {}
    for address in addresses:
        try:
            marks = await query_marks(address, timeout=CONNECT_TIMEOUT, ssl=ssl_context)
        except (OSError, TimeoutError, ValueError):
            return None
        for client, seq in marks.items():
            merged[client] = max(seq, merged.get(client, seq))
    return merged


def _seen(state: State | str) -> tuple[int, int, str | None] | None:
    """What a peer's STATE says of its decided state and its lock (None: no answer)."""
    return (state.storage_server, state.version, state.lock) if isinstance(state, State) else None


async def learn_from_peers(node: RejoiningNode) -> None:
    """Ask every peer's STATE until all answer and agree; then record that
    state, settle what they hold prepared from this participant's own log
    (harness.node.guard.in_flight_from_log), and vote again."""
    assert node.core is not None and node.cluster is not None
    peers = sorted(set(node.cluster) - {node.core.name})
    addresses = [node.routes.get(p) or parse_address(p) for p in peers]
    ssl_context = node.tls.client if node.tls else None
    while node.core.rejoining:
        states = await query_all(addresses, timeout=CONNECT_TIMEOUT, ssl=ssl_context)
        answered = [s for s in states if isinstance(s, State)]
        agree = len({(s.storage_server, s.version) for s in answered}) <= 1
        node.log.flush()
        locks = {s.lock for s in answered if s.lock is not None}
        in_flight = in_flight_from_log(node.log.path, locks) if locks else []
        marks = await gather_marks(addresses, ssl_context) if len(answered) == len(peers) and agree else None
        if marks is not None:
            # The marks came after the states: a peer that prepared a transaction in
            # between raised its mark without it being in flight here, so this node
            # would call it forgotten though its old self may have voted yes on it.
            # The states must be the same again, or ask afresh.
            again = await query_all(addresses, timeout=CONNECT_TIMEOUT, ssl=ssl_context)
            if [_seen(s) for s in again] != [_seen(s) for s in states]:
                marks = None
        if len(answered) == len(peers) and agree and in_flight is not None and marks is not None:
            value, version = (answered[0].storage_server, answered[0].version) if answered else (0, 0)
            node.apply(node.core.rejoined(value, version, in_flight, marks))
            node.log.write(REJOINED, storage_server=value, version=version, peers=",".join(peers))
            node.log.flush()
            return
        await asyncio.sleep(node.resolve_after / 4)  # polling the peers until they are quiet: nothing to wait on
