"""Group commit: a participant's persists made durable in order, batched per loop pass."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable

from harness.events.log import EventLog, log_record
from harness.events.schema import DURABLE, FATAL, FORGOTTEN
from harness.node.storage import Storage, StorageError
from harness.protocol.participant import Forget, Persist

# A lazy persist (a committed record, acknowledged already) is written with the
# next persist that something waits for, or this long after it at the latest:
# one client's next PREPARE comes within a few milliseconds, so its yes vote and
# the previous commit share one fsync.
LAZY_WRITE_AFTER = 0.02


class GroupCommit:
    """Makes Persist actions durable in order, batching those that queue up.

    ``submit`` returns a sequence number and schedules one write for the end of
    this pass of the event loop: every persist submitted meanwhile (by every
    message that arrived in the same poll) goes into that one SQLite transaction,
    one fsync. A lazy persist waits for the next write, or LAZY_WRITE_AFTER.
    ``durable`` counts the persists on disk; ``wait(n)`` returns once the first
    n are, and ``on_durable`` hears of every batch's persists. A Forget
    (compaction) is queued like a persist that is not lazy, and goes into the
    same SQLite transaction after the records.

    Storage that does not fsync (``--no-durable``) is written at once, in
    ``submit``: there is no fsync to share, and waiting for the end of the
    pass cost a pass of the loop of its own (a poll, its callbacks) per vote,
    a fifth of a participant's loop passes. Lazy persists stay lazy."""

    def __init__(self, storage: Storage, log: EventLog, on_durable: Callable[[list[Persist]], None]) -> None:
        self._storage = storage
        self._log = log
        self._on_durable = on_durable
        self._pending: list[Persist | Forget] = []
        self.issued = 0
        self.durable = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._scheduled = False
        self._immediate = not storage.durable
        self._loop: asyncio.AbstractEventLoop | None = None
        # Armed by a lazy persist when none is, never cancelled: a write meanwhile
        # leaves it nothing to do, or a later lazy persist to write a little early.
        self._lazy_timer: asyncio.TimerHandle | None = None

    def submit(self, persist: Persist | Forget) -> int:
        self._pending.append(persist)
        self.issued += 1
        if isinstance(persist, Persist) and persist.lazy:
            if self._lazy_timer is None and not self._scheduled:
                self._lazy_timer = asyncio.get_running_loop().call_later(LAZY_WRITE_AFTER, self._lazy_due)
        elif self._immediate:
            self._write()
        else:
            self.write_soon()
        return self.issued

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        self._write()

    async def wait(self, seq: int) -> None:
        if self.durable >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    def _write(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            # In the loop's own thread: handing each write to a worker thread
            # cost more than the write (measured: x1.4-1.6 transactions per
            # second without the hop). The fsync blocks the loop; what arrives
            # meanwhile waits in the kernel, and the persists it causes are
            # batched into the next write.
            persists = [p for p in batch if isinstance(p, Persist)]
            forgets = [p for p in batch if isinstance(p, Forget)]
            self._storage.write([p.record for p in persists], forgets)
        except (sqlite3.Error, OSError, StorageError) as e:
            # Nothing more can be promised: stop at once, as a crash would. The
            # batch is one SQLite transaction, so a restart finds all of it or none.
            self._log.write(FATAL, error=f"storage write failed: {e}")
            self._log.flush()
            print(f"participant: storage write failed: {e}; stopping", file=sys.stderr, flush=True)
            os._exit(3)
        for p in persists:
            log_record(self._log, DURABLE, p.record, p.why)
        for f in forgets:
            self._log.write(
                FORGOTTEN,
                count=len(f.txids),
                txids=",".join(f.txids),
                marks=",".join(f"{c}:{q}" for c, q in f.marks),
                version=f.summary.version,
            )
        self.durable += len(batch)
        if self._waiters:
            still = []
            for seq, future in self._waiters:
                if seq > self.durable:
                    still.append((seq, future))
                elif not future.done():
                    future.set_result(None)
            self._waiters = still
        self._on_durable(persists)

    def write_soon(self) -> None:
        """Write what is queued, lazy persists included, at the end of this loop pass."""
        if self._pending and not self._scheduled:
            self._scheduled = True
            if self._loop is None:  # asyncio.get_running_loop() costs a getpid: once
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._write)

    def close(self) -> None:
        """Write what is queued now."""
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        self._write()
