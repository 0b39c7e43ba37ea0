"""The report's data model: a run as columns, and the kinds of what they hold.

Theory of operation. A run folder becomes plain column lists (one list per
field, one row per item: a message, a mark on a lane, a lock interval, a
client operation), so that a million-line folder costs a few machine words
per line and the page gets compact typed arrays (harness.report.html).
harness.report.rundata fills them; harness.report.pairing pairs messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Kind(IntEnum):
    """A message's kind, as the diagram colours it."""

    PREPARE = 0
    VOTE_OK = 1
    VOTE_NOK = 2
    COMMIT = 3
    ABORT = 4
    RESOLVE = 5
    OUTCOME = 6
    STATUS = 7  # STATUS and its STATE answer
    ERROR = 8


KIND_OF_VERB = {
    "PREPARE": Kind.PREPARE,
    "COMMIT": Kind.COMMIT,
    "ABORT": Kind.ABORT,
    "RESOLVE": Kind.RESOLVE,
    "OUTCOME": Kind.OUTCOME,
    "STATUS": Kind.STATUS,
    "STATE": Kind.STATUS,
    "ERROR": Kind.ERROR,
}


class Mark(IntEnum):
    """A point event on a lane."""

    PREPARED = 0  # durable prepared (a yes vote)
    COMMITTED = 1  # durable committed
    ABORTED = 2  # durable aborted
    RESTORED = 3  # a record read back at a restart
    START = 4  # listening / connected: a (re)start
    CRASH = 5  # a node killed itself at a crash point, or the nemesis killed it
    STOPPED = 6
    TIMEOUT = 7
    UNREACHABLE = 8
    DISCONNECT = 9
    DROP = 10  # the proxy dropped a line
    CUT = 11  # the proxy cut a link
    PAUSE = 12  # the nemesis paused the node (SIGSTOP)
    RESUME = 13
    BEGIN = 14  # a client began a transaction
    DECIDE = 15  # a client decided


class Result(IntEnum):
    COMMITTED = 0
    ABORTED = 1
    UNKNOWN = 2
    ABANDONED = 3  # begun by a client that died before it could report


PLAIN = frozenset({"PREPARE", "COMMIT", "ABORT", "RESOLVE"})  # messages whose verb and txid say it all

OTHERS = "others"  # the lane of senders no log names


@dataclass
class RunData:
    """Columns, one list per field; times are microseconds since ``origin``
    (the first timestamp of the run, seconds since the epoch)."""

    origin: float = 0.0
    end: int = 0  # the last timestamp, in microseconds since origin
    lanes: list[str] = field(default_factory=list)
    lane_kinds: list[str] = field(default_factory=list)  # client, proxy, participant, others
    txids: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)  # details: values, reasons, states, causes
    lines: int = 0  # event lines read
    # messages (in no particular order; html sorts them)
    m_send: list[int] = field(default_factory=list)  # -1: no send line (sender unknown)
    m_recv: list[int] = field(default_factory=list)  # -1: never received
    m_src: list[int] = field(default_factory=list)
    m_dst: list[int] = field(default_factory=list)
    m_kind: list[int] = field(default_factory=list)
    m_tx: list[int] = field(default_factory=list)
    m_detail: list[int] = field(default_factory=list)
    m_send_line: list[int] = field(default_factory=list)  # line number in the sender's log, 0: none
    m_recv_line: list[int] = field(default_factory=list)
    m_dropped: list[int] = field(default_factory=list)  # 1 when the proxy logged dropping it
    # marks on lanes
    k_t: list[int] = field(default_factory=list)
    k_lane: list[int] = field(default_factory=list)
    k_kind: list[int] = field(default_factory=list)
    k_tx: list[int] = field(default_factory=list)
    k_line: list[int] = field(default_factory=list)
    k_detail: list[int] = field(default_factory=list)
    # lock intervals at participants: prepared until decided (or the end)
    l_lane: list[int] = field(default_factory=list)
    l_tx: list[int] = field(default_factory=list)
    l_from: list[int] = field(default_factory=list)
    l_to: list[int] = field(default_factory=list)
    l_line: list[int] = field(default_factory=list)
    l_end_line: list[int] = field(default_factory=list)  # 0: still held at the end
    # NOK votes for a held lock: (participant, refused tx, holder tx, time)
    n_lane: list[int] = field(default_factory=list)
    n_tx: list[int] = field(default_factory=list)
    n_holder: list[int] = field(default_factory=list)
    n_t: list[int] = field(default_factory=list)
    # client operations: begin and outcome
    o_lane: list[int] = field(default_factory=list)
    o_tx: list[int] = field(default_factory=list)
    o_begin: list[int] = field(default_factory=list)
    o_end: list[int] = field(default_factory=list)  # -1 abandoned
    o_result: list[int] = field(default_factory=list)
    o_cause: list[int] = field(default_factory=list)
    o_latency_us: list[int] = field(default_factory=list)
    o_value: list[int] = field(default_factory=list)
    o_process: list[int] = field(default_factory=list)  # Jepsen process: client index + generation * clients
    o_line: list[int] = field(default_factory=list)  # the outcome line, else the begin line
    o_extra: list[dict[str, str]] = field(default_factory=list)  # op, attempt, reason (history only)
    # faults of the nemesis: id, kind, target, start, end (-1: never healed)
    faults: list[dict[str, Any]] = field(default_factory=list)


class Interner:
    """Strings numbered in order of first appearance (txids, details): a column holds the numbers."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.index: dict[str, int] = {}

    def __call__(self, s: str | None) -> int:
        if s is None:
            return -1
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.items)
            self.items.append(s)
        return i
