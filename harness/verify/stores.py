"""What the checker proves from the participants' stores (final_states.json) beside their logs.

Theory of operation. The runner reads each participant's store after the run:
its committed records (txid, version, value), the txids still prepared, and,
with ``--compact``, the summary of what it forgot. Each store's committed
list is parsed once, before the logs are read (``parse_storage``: the JSON
form is twice the size, and a long run's stores hold hundreds of thousands).
Then ``check_replicas`` holds every store to its STATUS answer, to its own
log (what the log says committed, less what its "forgotten" lines dropped),
and to the other stores: the same commit at every version both kept, the same
last version, and a compacted summary's value where another store kept that
version. A database participant (``--backend postgres``) keeps no log of
ours: its store is judged by harness.verify.databases.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import count
from sys import intern
from typing import Any, Protocol

from harness.verify.databases import check_database
from harness.verify.model import ReplicaStats, ViolationKind
from harness.verify.reader import Log, Observation


class TrackView(Protocol):
    """What these rules read of the checker's track of one transaction at one participant."""

    @property
    def state(self) -> str: ...
    @property
    def last(self) -> Observation: ...


class StoreChecker(Protocol):
    """The checker's state these rules read, and where they flag (harness.verify.checker)."""

    participants: list[tuple[str, str]]
    final: dict[str, Any]
    parsed_stores: dict[str, tuple[list[tuple[str, int, int]], list[str], tuple[int, int]] | str | None]
    replicas: dict[str, ReplicaStats]
    stored: dict[str, list[tuple[str, int, int]]]
    databases: set[str]
    forgotten: dict[str, set[str]]
    begins: dict[str, tuple[int, Log, int]]

    @property
    def tracks(self) -> Mapping[str, Mapping[str, TrackView]]: ...

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None: ...
    def cite_record(self, node: str, txid: str | None) -> list[str]: ...
    def cite_commit(self, node: str, txid: str | None) -> list[str]: ...


def parse_storage(entry: Any) -> tuple[list[tuple[str, int, int]], list[str], tuple[int, int]] | str | None:
    """A participant's entry of final_states.json as _Checker._storage returns
    it; None when it has no storage records, or what is wrong with them. Its
    committed list leaves the entry: read once, held once (a long run's
    stores hold hundreds of thousands, and the JSON form is twice the size)."""
    storage = entry.get("storage") if isinstance(entry, dict) else None
    if not isinstance(storage, dict) or "committed" not in storage:
        return None
    try:
        seq = [(intern(str(t)), int(v), int(val)) for t, v, val in storage.pop("committed")]
        raw_prepared = storage.get("prepared", [])
        if not isinstance(raw_prepared, list):
            raise TypeError("prepared is not a list")
        prepared = [str(t) for t in raw_prepared]
        forgotten = storage.get("forgotten")
        base = (int(forgotten["version"]), int(forgotten["storage_server"])) if forgotten is not None else (0, 0)
    except (TypeError, ValueError, KeyError):
        return "are malformed"
    return seq, prepared, base


def _storage(c: StoreChecker, node: str) -> tuple[list[tuple[str, int, int]], list[str], tuple[int, int]] | None:
    """The node's committed (txid, version, value) list, prepared txids, and
    the (version, value) its compaction's summary holds ((0, 0) without
    compaction: its committed list then starts at version 1) from
    final_states.json, or None (flagged) when they are missing or malformed."""
    parsed = c.parsed_stores.get(node)
    if parsed is None:
        c.flag(ViolationKind.MISSING_FINAL_STATE, None, f"final_states.json has no storage records for {node}")
        return None
    if isinstance(parsed, str):
        c.flag(ViolationKind.MISSING_FINAL_STATE, None, f"final_states.json: {node}'s storage records {parsed}")
        return None
    return parsed


def _check_forgotten_count(c: StoreChecker, node: str, gone: set[str]) -> None:
    """The store's compaction summary counts as many commits as the log's
    "forgotten" lines dropped committed records."""
    entry = c.final.get(node)
    summary = entry.get("storage", {}).get("forgotten") if isinstance(entry, dict) else None
    tracks = c.tracks[node]
    logged = sum(1 for t in gone if (track := tracks.get(t)) is not None and track.state == "committed")
    stored = summary.get("committed", 0) if isinstance(summary, dict) else 0
    if logged != stored:
        c.flag(
            ViolationKind.LOG_STORAGE,
            None,
            f"{node}'s log shows {logged} committed records forgotten, its store's summary counts {stored}",
        )


def check_replicas(c: StoreChecker) -> None:
    sequences: dict[str, list[tuple[str, int, int]]] = {}
    summaries: dict[str, tuple[int, int]] = {}  # node -> (version, value) its compaction's summary holds
    for node, _ in c.participants:
        entry = c.final.get(node) or {}
        status = entry.get("status") if isinstance(entry, dict) else None
        stats = c.replicas[node]
        stored_records = _storage(c, node)
        if stored_records is None:
            continue
        seq, prepared, (base, base_value) = stored_records
        c.stored[node] = seq
        sequences[node] = seq
        if base:
            summaries[node] = (base, base_value)
        # Without compaction the store holds every commit: versions 1..N.
        # With it, the commits it has not forgotten, at distinct versions.
        expected = count(1) if not base else iter(sorted({v for _, v, _ in seq}))
        for (txid, version, _), want in zip(seq, expected, strict=False):
            if version != want:
                rule = f"run 1..{len(seq)} without gaps" if not base else "be distinct"
                c.flag(
                    ViolationKind.REPLICAS,
                    txid,
                    f"{node}'s commit of {txid} has version {version}, not {want}: versions must {rule}",
                    *c.cite_commit(node, txid),
                )
                break
        value, version = (seq[-1][2], seq[-1][1]) if seq and seq[-1][1] > base else (base_value, base)
        last_txid = seq[-1][0] if seq else None
        stats.storage_server, stats.version = value, version
        if not isinstance(status, dict):
            c.flag(
                ViolationKind.LOCK_HELD,
                None,
                f"{node} did not answer STATUS at the end: "
                f"{entry.get('status_error', 'no status') if isinstance(entry, dict) else 'no entry'}",
            )
        else:
            stats.lock = status.get("lock")
            if (status.get("storage_server"), status.get("version")) != (value, version):
                c.flag(
                    ViolationKind.REPLICAS,
                    last_txid,
                    f"{node} answered storage_server={status.get('storage_server')} "
                    f"version={status.get('version')} but its storage holds {value} (version {version})",
                    *c.cite_commit(node, last_txid),
                )
            if status.get("lock"):
                lock = str(status["lock"])
                c.flag(
                    ViolationKind.LOCK_HELD,
                    lock,
                    f"{node} still holds its lock for {lock}",
                    *c.cite_record(node, lock),
                )
        if node in c.databases:
            stats.commits = len(seq)
            check_database(c, node, seq, prepared)
            continue
        for txid in prepared:
            c.flag(
                ViolationKind.UNDECIDED,
                txid,
                f"{txid} is still prepared at {node} at the end",
                *c.cite_record(node, txid),
            )
        # the logs and the storage must tell the same story
        gone = c.forgotten[node]  # compaction dropped them from the store, and its log says so
        _check_forgotten_count(c, node, gone)
        logged = {
            txid: t.last for txid, t in c.tracks[node].items() if t.last.state == "committed" and txid not in gone
        }
        stored = {t: (v, val) for t, v, val in seq}
        for txid in sorted(set(logged) ^ set(stored)):
            if txid in logged:
                o = logged[txid]
                c.flag(
                    ViolationKind.LOG_STORAGE,
                    txid,
                    f"{node}'s log says {txid} committed, its storage does not",
                    o.cite(),
                )
            else:
                c.flag(
                    ViolationKind.LOG_STORAGE,
                    txid,
                    f"{node}'s storage holds {txid} committed at version {stored[txid][0]}, its log never says so",
                    *c.cite_record(node, txid),
                )
        for txid in set(logged) & set(stored):
            o = logged[txid]
            if (o.version, o.value) != stored[txid]:
                c.flag(
                    ViolationKind.LOG_STORAGE,
                    txid,
                    f"{node} logged {txid} at version {o.version} value {o.value}, "
                    f"storage says version {stored[txid][0]} value {stored[txid][1]}",
                    o.cite(),
                )
    # A compacting replica's summary holds the value of its version: any replica
    # that kept that version's commit must hold the same value there.
    for node, (v, val) in summaries.items():
        for other, seq in sequences.items():
            kept = next((item for item in seq if item[1] == v), None)
            if kept is not None and kept[2] != val:
                c.flag(
                    ViolationKind.REPLICAS,
                    kept[0],
                    f"{node}'s compaction summary holds value {val} at version {v}, "
                    f"{other}'s store holds {kept[0]} with value {kept[2]} there",
                    *c.cite_commit(other, kept[0]),
                )
    if sequences:
        # By version: a compacting replica keeps only the commits after its
        # summary, so two replicas are compared where both hold a version,
        # and on their last one (which version each was at, every log says).
        reference_node, reference = next(iter(sequences.items()))
        theirs_at = {item[1]: item for item in reference}
        last_ref = c.replicas[reference_node].version or 0
        for node, seq in sequences.items():
            if seq == reference:
                continue
            mine_at = {item[1]: item for item in seq}
            last = c.replicas[node].version or 0
            differ = [v for v in sorted(mine_at.keys() & theirs_at.keys()) if mine_at[v] != theirs_at[v]]
            if differ:
                at = differ[0] - 1
            elif last != last_ref:
                at = min(last, last_ref)
            else:
                continue
            mine, theirs = mine_at.get(at + 1), theirs_at.get(at + 1)

            def show(item: tuple[str, int, int] | None) -> str:
                return f"{item[0]} (value {item[2]})" if item else "nothing"

            c.flag(
                ViolationKind.REPLICAS,
                (mine or theirs or ("?",))[0],
                f"{node} and {reference_node} differ at version {at + 1}: {show(mine)} vs {show(theirs)} "
                f"(they are at versions {last} and {last_ref})",
                *(c.cite_commit(node, mine[0]) if mine else []),
                *(c.cite_commit(reference_node, theirs[0]) if theirs else []),
            )
