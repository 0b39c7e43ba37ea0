"""What the checker finds: violations, per-client and per-replica figures, the report of a run folder."""

from __future__ import annotations

import enum
import statistics
from array import array
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ViolationKind(enum.StrEnum):
    """What a violation breaks (docs/architecture.md lists what each one proves)."""

    STABILITY = "stability"  # a participant's record moved backwards (AC2)
    AGREEMENT = "agreement"  # committed at one participant, aborted at another (AC1)
    VALIDITY = "validity"  # committed without every yes vote, or with another value (AC3)
    DURABILITY = "durability"  # a vote or OUTCOME sent before what it says was durable
    LOCK = "lock"  # a second transaction prepared while another held the lock
    LOST = "lost"  # a restart without a record made durable before it
    REPLICAS = "replicas"  # replicas differ in value, version or committed sequence
    LOG_STORAGE = "log-storage"  # a participant's log and its storage tell different stories
    CLIENT_TRUTH = "client-truth"  # a client was told something the replicas do not show
    LOCK_HELD = "lock-held"  # a lock still held at the end (AC5), or no STATUS answer
    UNDECIDED = "undecided"  # a transaction still prepared at the end (AC5)
    PREPARED_LEFT = "prepared-left"  # a prepared transaction left behind in a database (pg_prepared_xacts)
    TXID_REUSED = "txid-reused"  # one txid begun twice
    BAD_LOG_LINE = "bad-log-line"  # a line that is not an event line, or lacks a field
    MISSING_LOG = "missing-log"  # a node's log is missing or unreadable
    MISSING_FINAL_STATE = "missing-final-state"  # final_states.json lacks a participant's records


class CheckError(Exception):
    """The folder is not a run folder (missing or unreadable files)."""


@dataclass(frozen=True)
class Violation:
    """One property that does not hold: its kind, its transaction, and the log lines that prove it."""

    kind: ViolationKind
    txid: str | None
    message: str
    evidence: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "txid": self.txid, "message": self.message, "evidence": list(self.evidence)}


@dataclass
class ClientStats:
    name: str
    attempted: int = 0
    committed: int = 0
    aborted: dict[str, int] = field(default_factory=dict)  # by cause
    unknown: int = 0
    abandoned: int = 0  # begun, then the client died before it could report
    retries: int = 0
    latencies_ms: MutableSequence[float] = field(default_factory=lambda: array("d"))  # compact: a long run has many
    first_begin: str | None = None  # the UTC timestamp of its first begin line (throughput)
    last_outcome: str | None = None  # the UTC timestamp of its last outcome line

    @property
    def aborted_total(self) -> int:
        return sum(self.aborted.values())

    def latency(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q * 100) - 1]


@dataclass
class ReplicaStats:
    node: str
    address: str
    storage_server: int | None = None
    version: int | None = None
    lock: str | None = None
    commits: int = 0
    aborts: int = 0
    yes_votes: int = 0
    no_votes: int = 0
    restarts: int = 0


@dataclass
class CheckReport:
    folder: Path
    violations: list[Violation]
    clients: list[ClientStats]
    replicas: list[ReplicaStats]
    lines: int  # event lines read
    run: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)  # from nemesis.log
    resolved_by_peers: int = 0  # transactions some participant decided with its peers, not its client
    abandoned: int = 0  # transactions begun by a client that died before reporting
    longest_lock: tuple[float, str | None, str | None] = (0.0, None, None)  # seconds, node, txid
    interrupted: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM), or why it is partial
    unchecked: list[str] = field(default_factory=list)  # what an interrupted run's folder could not show

    @property
    def consistent(self) -> bool:
        return not self.violations

    @property
    def verdict(self) -> str:
        return "consistent" if self.consistent else "violation"
