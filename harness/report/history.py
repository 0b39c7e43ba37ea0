"""history.jsonl: the clients' operations in Jepsen's invoke/ok/fail/info form.

Theory of operation. Each transaction a client began is one operation: an
``invoke`` when it began (its ``begin`` line), then its completion when the
client reported it (its ``outcome`` line): ``ok`` committed, ``fail`` aborted
(it took no effect), ``info`` unknown (it may or may not have). A transaction
begun by a client that was killed before reporting completes as ``info`` at
the end of the run, as Jepsen does for a crashed process; the client that
takes over is a new process (its number plus the number of clients), so that
no process has two operations open at once. Times are nanoseconds since the
run's first log line. docs/report.md describes every field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.columns import Result, RunData

_TYPES = {Result.COMMITTED: "ok", Result.ABORTED: "fail", Result.UNKNOWN: "info", Result.ABANDONED: "info"}


def operations(data: RunData) -> list[dict[str, Any]]:
    """The history, in time order (an invoke before its completion at the same time)."""
    entries: list[tuple[int, int, int, dict[str, Any]]] = []
    for i in range(len(data.o_lane)):
        common = {
            "process": data.o_process[i],
            "f": "write",
            "value": data.o_value[i],
            "txid": data.txids[data.o_tx[i]] if data.o_tx[i] >= 0 else None,
            "node": data.lanes[data.o_lane[i]],
        }
        begin, end = data.o_begin[i], data.o_end[i]
        entries.append((begin, 0, i, {"type": "invoke", **common, "time": begin * 1000}))
        result = Result(data.o_result[i])
        done: dict[str, Any] = {"type": _TYPES[result], **common, "time": (end if end >= 0 else data.end) * 1000}
        cause = data.strings[data.o_cause[i]] if data.o_cause[i] >= 0 else ""
        if result is Result.ABANDONED:
            done["error"] = "client killed before it reported"
        else:
            done["latency_ms"] = data.o_latency_us[i] / 1000
            if cause:
                done["cause"] = cause
            done.update(data.o_extra[i])
        entries.append((end if end >= 0 else data.end, 1, i, done))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return [e[3] for e in entries]


def write(folder: Path, data: RunData) -> Path:
    path = folder / "history.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(op, separators=(",", ":")) + "\n" for op in operations(data))
    return path
