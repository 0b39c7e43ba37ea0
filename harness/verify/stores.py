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

from array import array
from itertools import compress, count
from typing import Any, Protocol

from harness.verify.columns import COMMITTED, Begins, Committed, Tracks, TxIds
from harness.verify.databases import check_database
from harness.verify.model import ReplicaStats, ViolationKind

Parsed = tuple[Committed, list[str], tuple[int, int]]


class StoreChecker(Protocol):
    """The checker's state these rules read, and where they flag (harness.verify.checker)."""

    participants: list[tuple[str, str]]
    final: dict[str, Any]
    ids: TxIds
    parsed_stores: dict[str, Parsed | str | None]
    replicas: dict[str, ReplicaStats]
    stored: dict[str, Committed]
    databases: set[str]
    tracks: dict[str, Tracks]

    @property
    def begins(self) -> Begins: ...

    def flag(self, kind: ViolationKind, txid: str | None, message: str, *evidence: str) -> None: ...
    def cite_record(self, node: str, txid: str | None) -> list[str]: ...
    def cite_commit(self, node: str, txid: str | None) -> list[str]: ...


def parse_storage(entry: Any, ids: TxIds) -> Parsed | str | None:
    """A participant's entry of final_states.json as _storage returns it; None
    when it has no storage records, or what is wrong with them. Its committed
    list leaves the entry: read once, held once, as columns over the txids'
    numbers (``ids``; a long run's stores hold hundreds of thousands)."""
    storage = entry.get("storage") if isinstance(entry, dict) else None
    if not isinstance(storage, dict) or "committed" not in storage:
        return None
    try:
        rows = storage.pop("committed")
        seq = Committed(ids.names)
        seq.extend([ids.id(str(t)) for t, _, _ in rows], [int(v) for _, v, _ in rows], [int(v) for _, _, v in rows])
        del rows
        raw_prepared = storage.get("prepared", [])
        if not isinstance(raw_prepared, list):
            raise TypeError("prepared is not a list")
        prepared = [str(t) for t in raw_prepared]
        forgotten = storage.get("forgotten")
        base = (int(forgotten["version"]), int(forgotten["storage_server"])) if forgotten is not None else (0, 0)
    except (TypeError, ValueError, KeyError):
        return "are malformed"
    return seq, prepared, base


def _storage(c: StoreChecker, node: str) -> Parsed | None:
    """The node's committed (txid, version, value) records, prepared txids, and
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


def _forgotten_committed(tracks: Tracks) -> list[int]:
    """The txids whose committed record this participant's compaction dropped (its log says so)."""
    if not tracks.forgot.count(1):
        return []
    return [i for i, gone in enumerate(tracks.forgot) if gone and tracks.state[i] == COMMITTED]


def _check_forgotten_count(c: StoreChecker, node: str) -> None:
    """The store's compaction summary counts as many commits as the log's
    "forgotten" lines dropped committed records."""
    entry = c.final.get(node)
    summary = entry.get("storage", {}).get("forgotten") if isinstance(entry, dict) else None
    logged = len(_forgotten_committed(c.tracks[node]))
    stored = summary.get("committed", 0) if isinstance(summary, dict) else 0
    if logged != stored:
        c.flag(
            ViolationKind.LOG_STORAGE,
            None,
            f"{node}'s log shows {logged} committed records forgotten, its store's summary counts {stored}",
        )


def _check_log_storage(c: StoreChecker, node: str, seq: Committed) -> None:
    """The participant's log and its store tell the same story: the same txids
    committed (less what compaction dropped), at the same versions and values.
    (In C where it can: map, compress and sets iterate without bytecode, and a
    long run's store holds hundreds of thousands.)"""
    tracks, names = c.tracks[node], c.ids.names
    state, forgot = tracks.state, tracks.forgot
    logged = list(compress(tracks.order, map(COMMITTED.__eq__, map(state.__getitem__, tracks.order))))
    if forgot.count(1):
        logged = [i for i in logged if not forgot[i]]
    only = set(logged).symmetric_difference(seq.ids)
    if not only and not _differ(tracks, logged, seq):
        return  # the same txids, each at the same version and value (every consistent run)
    where = array("Q", bytes(8 * len(c.ids)))  # txid -> 1 + its row in the store (the last, as a dict keeps)
    for k, i in enumerate(seq.ids, 1):
        where[i] = k
    for i in sorted(only, key=names.__getitem__):
        txid = names[i]
        if not where[i]:
            c.flag(
                ViolationKind.LOG_STORAGE,
                txid,
                f"{node}'s log says {txid} committed, its storage does not",
                tracks.cite(tracks.last_at[i]),
            )
        else:
            c.flag(
                ViolationKind.LOG_STORAGE,
                txid,
                f"{node}'s storage holds {txid} committed at version {seq.versions.get(where[i] - 1)}, "
                "its log never says so",
                *c.cite_record(node, txid),
            )
    for i in logged:
        k = where[i] - 1
        if k < 0:
            continue
        version, value = tracks.last_version.get(i), tracks.last_value.get(i)
        if (version, value) != (seq.versions.get(k), seq.values.get(k)):
            c.flag(
                ViolationKind.LOG_STORAGE,
                names[i],
                f"{node} logged {names[i]} at version {version} value {value}, "
                f"storage says version {seq.versions.get(k)} value {seq.values.get(k)}",
                tracks.cite(tracks.last_at[i]),
            )


def _differ(tracks: Tracks, logged: list[int], seq: Committed) -> bool:
    """Whether some txid the log and the store both hold committed may be at another
    version or value in each (False: certainly not). Compared row by row in the
    store's order; where it is in doubt (a txid twice in the store, a value kept
    aside), the caller compares exactly."""
    if len(logged) != len(seq) or len(set(seq.ids)) != len(seq):
        return True
    columns = ((tracks.last_version, seq.versions), (tracks.last_value, seq.values))
    if any(mine.big or store.big for mine, store in columns):
        return True
    return any(array("Q", map(mine.data.__getitem__, seq.ids)) != store.data for mine, store in columns)


def check_replicas(c: StoreChecker) -> None:
    sequences: dict[str, Committed] = {}
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
        expected = count(1) if not base else iter(sorted(set(seq.versions)))
        for k, (version, want) in enumerate(zip(seq.versions, expected, strict=False)):
            if version != want:
                txid = seq.item(k)[0]
                rule = f"run 1..{len(seq)} without gaps" if not base else "be distinct"
                c.flag(
                    ViolationKind.REPLICAS,
                    txid,
                    f"{node}'s commit of {txid} has version {version}, not {want}: versions must {rule}",
                    *c.cite_commit(node, txid),
                )
                break
        top = seq.item(-1) if len(seq) else None
        value, version = (top[2], top[1]) if top and top[1] > base else (base_value, base)
        last_txid = top[0] if top else None
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
        _check_forgotten_count(c, node)
        _check_log_storage(c, node, seq)
    # A compacting replica's summary holds the value of its version: any replica
    # that kept that version's commit must hold the same value there.
    for node, (v, val) in summaries.items():
        for other, seq in sequences.items():
            kept = next((seq.item(k) for k, version in enumerate(seq.versions) if version == v), None)
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
        theirs_at: dict[int, tuple[str, int, int]] = {}  # built only if some replica differs
        last_ref = c.replicas[reference_node].version or 0
        for node, seq in sequences.items():
            if seq.same(reference):
                continue
            theirs_at = theirs_at or {item[1]: item for item in reference}
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
