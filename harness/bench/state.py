"""Flat state: resident memory, storage size and restart time over a long run with compaction.

Theory of operation. Three compacting participants (harness.protocol.participant,
"Compaction") and one client are forked through the runner's own child entry
points, exactly as the memory section does, and the client runs ``transactions``
transactions one after the other. Every ``every`` transactions the bench samples
the participants' and the client's VmRSS, the size of the participants' SQLite
files (data file and WAL) and the time a restart spends on the store: opening
it, loading the records and what compaction left, and rebuilding the core
(harness.node.guard and ParticipantNode.start's path, on a second SQLite
connection, which WAL mode allows beside the running writer).

Growth is the least-squares slope over the samples after the first fifth (the
warm-up: caches, the allocator's arenas, SQLite's page cache filling), in MiB
(or milliseconds, or KiB) per 100,000 transactions; flat state means a slope
near zero, whatever ``transactions`` is. The participants do not fsync: memory
and sizes do not depend on it, and the run takes a third of the time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from harness.bench.measure import next_result, proc_status, start_participants
from harness.experiment.children import client_child
from harness.experiment.processes import MP, READY_TIMEOUT, Processes, RunError, await_ready
from harness.experiment.workload import ClientConfig
from harness.node.storage import Storage
from harness.protocol.participant import ParticipantCore

WARM_UP = 0.2  # the first fifth of the samples are left out of the slopes


def slope_per_100k(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs, times 100,000 (0.0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 100_000


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def restore_seconds(path: Path, node: str) -> tuple[float, int]:
    """(seconds to open, load and restore a participant's store, records it holds)."""
    t = time.perf_counter()
    storage = Storage(path, node, durable=False, create=False)
    try:
        records = storage.load()
        summary, marks = storage.load_compacted()
        ParticipantCore.restore(node, records, compact=True, summary=summary, marks=marks)
    finally:
        storage.close()
    return time.perf_counter() - t, len(records)


def state(workdir: Path, transactions: int, every: int) -> dict[str, Any]:
    """Sample memory, storage and restart cost every ``every`` of ``transactions`` transactions."""
    folder = workdir / "state"
    procs = Processes()
    samples: list[dict[str, float]] = []
    try:
        participants, addresses = start_participants(procs, folder, compact=True)
        go = MP.Event()
        ccfg = ClientConfig(
            name="client1",
            servers=addresses,
            log=folder / "client1.log",
            values=lambda op: op,
            count=transactions,
            # It runs until stopped, not for ``transactions``: a client that had
            # finished would be gone (no VmRSS) when the last sample reads it.
            duration=float(24 * 3600),
        )
        parent, child = MP.Pipe(duplex=False)
        client = procs.start(client_child, (ccfg, child, go), "client1")
        child.close()
        await_ready("client1", client, parent, time.monotonic() + READY_TIMEOUT)
        go.set()
        done = committed = 0
        while done < transactions:
            committed += next_result(parent, client, "state") == "committed"
            done += 1
            if done % every == 0:
                assert client.pid is not None
                pids = [p.pid for p in participants if p.pid is not None]
                restart_s, records = restore_seconds(folder / "data" / "server1.sqlite3", "server1")
                samples.append(
                    {
                        "transactions": done,
                        "participant_mib": max(proc_status(pid, "VmRSS") for pid in pids),
                        "client_mib": proc_status(client.pid, "VmRSS"),
                        "store_kib": max(_store_bytes(folder / "data" / f"server{i}.sqlite3") for i in (1, 2, 3))
                        / 1024,
                        "restart_ms": restart_s * 1000,
                        "records": records,
                        "bench_pid_mib": proc_status(os.getpid(), "VmRSS"),
                    }
                )
        parent.close()
        procs.stop([client])
    finally:
        procs.stop()
    if len(samples) < 2:
        raise RunError("the state section needs at least two samples: raise --state-transactions")
    kept = samples[int(len(samples) * WARM_UP) :] if len(samples) >= 5 else samples
    xs = [s["transactions"] for s in kept]
    first, last = kept[0], samples[-1]
    out: dict[str, Any] = {
        "transactions": transactions,
        "every": every,
        "committed": committed,
        "samples": samples,
    }
    for key in ("participant_mib", "client_mib", "store_kib", "restart_ms", "records"):
        out[f"{key}_start"] = first[key]
        out[f"{key}_end"] = last[key]
        out[f"{key}_per_100k"] = slope_per_100k(xs, [s[key] for s in kept])
    out["start_at"] = first["transactions"]
    return out
