"""The checks of a participant that is a database (``--backend postgres``), from its final state alone.

A database keeps no event log of ours, so the rules that read a participant's
log (stability, durability, log and storage agreeing) have nothing to read.
What the checker can prove from each database's final state
(final_states.json, read from its tables and ``pg_prepared_xacts`` after the
run) it proves here: no prepared transaction left behind, and every commit
holding the value its client proposed. The replica rules (same committed
sequence everywhere, versions 1..n) and the clients' truth are checked for
databases as for our participants, by harness.verify.checker.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from harness.events.log import read_log
from harness.verify.model import ViolationKind
from harness.verify.reader import Log


class _Begins(Protocol):
    def get(self, txid: str) -> tuple[int, Log, int] | None: ...  # (value, the begin line: log, at)


class _Checker(Protocol):
    @property
    def begins(self) -> _Begins: ...

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None: ...


def check_database(
    checker: _Checker, node: str, committed: Iterable[tuple[str, int, int]], prepared: list[str]
) -> None:
    """Flag what ``node``'s final state shows wrong."""
    for txid in prepared:
        checker.flag(
            ViolationKind.PREPARED_LEFT,
            txid,
            f"{txid} is still in {node}'s pg_prepared_xacts at the end: a prepared transaction left behind "
            "(it holds its locks until someone resolves it)",
            f"final_states.json: {node} pg_prepared_xacts gid={txid}",
        )
    for txid, version, value in committed:
        begin = checker.begins.get(txid)
        if begin is None:
            checker.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} holds {txid} committed at version {version}, but no client began it",
                f"final_states.json: {node} harness_commits version={version} txid={txid}",
            )
        elif begin[0] != value:
            checker.flag(
                ViolationKind.VALIDITY,
                txid,
                f"{node} committed {txid} with value {value}, but its client proposed {begin[0]}",
                begin[1].cite(begin[2]),
                f"final_states.json: {node} harness_commits version={version} txid={txid} value={value}",
            )


def resolver_decisions(folder: Path) -> tuple[set[str], tuple[float, str | None, str | None]]:
    """The txids the resolver finished without their client (``resolved`` lines
    of resolver.log), and the longest any of them had been prepared: a prepared
    transaction holds its row lock until it is resolved."""
    path = folder / "resolver.log"
    resolved: set[str] = set()
    longest: tuple[float, str | None, str | None] = (0.0, None, None)
    if not path.exists():
        return resolved, longest
    for line in read_log(path):
        if line.event != "resolved" or "txid" not in line.fields:
            continue
        txid = line.fields["txid"]
        resolved.add(txid)
        try:
            age = float(line.fields.get("age_s", "0"))
        except ValueError:
            continue
        if age > longest[0]:
            longest = (age, "resolver", txid)
    return resolved, longest


def postmaster_restarts(faults: list[dict[str, Any]], node: str) -> int:
    """How many times the nemesis killed ``node``'s postmaster (each followed by a restart)."""
    return sum(1 for f in faults if f.get("kind") == "kill-postmaster" and f.get("target") == node)
