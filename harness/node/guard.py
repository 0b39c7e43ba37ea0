"""Open a participant's store, or refuse to start: a store that cannot lie about having had state.

Theory of operation (docs/security.md). The store (harness.node.storage)
carries its identity and checksums; this module decides, before the
participant serves anyone, whether the store it finds is the one it should
have. Evidence that the participant had state comes from two places:

* its own event log: every start writes a ``listening`` line with the store's
  id and the version it held, so the last such line says which store this
  participant last ran on and a version that store must still reach;
* its peers: every commit needs this participant's durable yes vote, so a peer
  at version > 0 proves that this participant held state too.

The store is refused (:class:`StoreRefused`, one line, exit 2) when it is
corrupt or belongs to another participant or cluster (the storage says so);
when it is missing or empty while the log or a peer shows state (lost); when
its id is not the one the log last saw (replaced); when it holds a lower
version than the log last saw (rolled back or emptied of records). With
``rejoin_empty`` a missing or empty store is made anew instead, and the
participant starts *rejoining*: it votes on nothing until it has learnt the
decided state from its peers (harness.protocol.participant).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from harness.node.address import parse_address
from harness.node.query import query_status
from harness.node.storage import Storage, StorageError, StoreMissing
from harness.protocol.messages import State

PEER_CHECK_TIMEOUT = 1.0  # seconds to ask each peer for its version when the store is empty
_TAIL_CHUNK = 1 << 20
# A start's ``listening`` line, or a ``checkpoint`` a running participant writes
# every few thousand durable writes (harness.node.participant_node): both name
# the store and a version it held durably, and the checkpoints keep the search
# from the end of the log short however long the participant has run.
_LISTENING_RE = re.compile(rb" (?:listening|checkpoint) .*? version=(\d+) .*? store=([0-9a-f]+)")


class StoreRefused(Exception):
    """The participant must not start on this store (one line for the operator)."""


@dataclass(frozen=True, slots=True)
class LoggedStore:
    """What the last ``listening`` line of a participant's log says of its store."""

    store: str
    version: int


def last_store_in_log(path: Path | None) -> LoggedStore | None:
    """The store id and version of the last start or checkpoint the log records
    (read from its end, a megabyte at a time); None without a log or such a line."""
    if path is None:
        return None
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; read backwards)
    except OSError:
        return None
    with f:
        end = f.seek(0, 2)
        tail = b""
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start) + tail
            lines = chunk.split(b"\n")
            tail = lines[0] if start > 0 else b""  # maybe cut: joined to the next chunk read
            for line in reversed(lines[1:] if start > 0 else lines):
                m = _LISTENING_RE.search(line)
                if m:
                    return LoggedStore(store=m.group(2).decode(), version=int(m.group(1)))
            end = start
    return None


async def peer_versions(
    peers: list[str], ssl_context: ssl.SSLContext | None, timeout: float = PEER_CHECK_TIMEOUT
) -> dict[str, int]:
    """The version each reachable peer reports (unreachable ones are left out)."""

    async def one(name: str) -> tuple[str, int | None]:
        try:
            state = await query_status(parse_address(name), timeout, ssl=ssl_context)
        except (OSError, TimeoutError, ValueError):
            return name, None
        return name, state.version if isinstance(state, State) else None

    answers = await asyncio.gather(*(one(p) for p in peers))
    return {name: v for name, v in answers if v is not None}


async def open_store(
    path: Path,
    node: str,
    cluster: tuple[str, ...] | None,
    me: str,
    *,
    durable: bool,
    log: Path | None,
    rejoin_empty: bool,
    ask_peers: bool,
    ssl_context: ssl.SSLContext | None,
) -> tuple[Storage, bool]:
    """The participant's storage and whether it must rejoin (start empty and
    learn from its peers); StoreRefused with the reason otherwise."""
    logged = last_store_in_log(log)
    hint = "restore the file, or start with --rejoin-empty to learn the decided state from the peers"
    try:
        storage = Storage(path, node, durable=durable, cluster=cluster, create=False)
    except StoreMissing as e:
        if not rejoin_empty:
            if logged is not None:
                raise StoreRefused(
                    f"{e}, but {log} shows this participant ran on store {logged.store} "
                    f"(version {logged.version}): its state is lost; {hint}"
                ) from None
            if ask_peers:
                peers = [name for name in cluster or () if name != me]
                ahead = {p: v for p, v in (await peer_versions(peers, ssl_context)).items() if v > 0}
                if ahead:
                    peer, version = next(iter(sorted(ahead.items())))
                    raise StoreRefused(
                        f"{e}, but peer {peer} is at version {version}, which took this participant's yes vote: "
                        f"its state is lost; {hint}"
                    ) from None
        try:
            return Storage(path, node, durable=durable, cluster=cluster, create=True), rejoin_empty
        except StorageError as e2:
            raise StoreRefused(str(e2)) from None
    except StorageError as e:
        raise StoreRefused(str(e)) from None
    try:
        records = storage.load()
    except StorageError as e:
        storage.close()
        raise StoreRefused(str(e)) from None
    try:
        summary, _ = storage.load_compacted()
    except StorageError as e:
        storage.close()
        raise StoreRefused(str(e)) from None
    version = max([r.version for r in records] + [summary.version if summary else 0])
    if logged is not None and logged.store != storage.identity.store:
        storage.close()
        raise StoreRefused(
            f"{path} is store {storage.identity.store}, but {log} shows this participant last ran on store "
            f"{logged.store}: the file was replaced; {hint}"
        )
    if logged is not None and version < logged.version:
        storage.close()
        raise StoreRefused(
            f"{path} holds version {version}, but {log} shows this participant at version {logged.version}: "
            f"records were lost; {hint}"
        )
    storage.preloaded = records
    return storage, False
