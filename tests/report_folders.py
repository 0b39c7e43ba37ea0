"""A hand-made run folder with known messages, for the report's tests.

One transaction: client1 prepares at three participants (each sees the
client's connection as an ephemeral port), all vote yes, the COMMIT to
server3 is lost, server3 times out and asks server1 with RESOLVE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.events.log import utc_timestamp
from harness.protocol.messages import format_fields
from harness.report.columns import Kind

ADDRESS = {"server1": "127.0.0.1:8886", "server2": "127.0.0.1:8887", "server3": "127.0.0.1:8888"}
PARTICIPANTS = ",".join(ADDRESS.values())
TX = "client1-aaaaaaaaaaaa-1"
T0 = 1_800_000_000.0


class Folder:
    """Log lines written one tick apart, as the nodes write them."""

    def __init__(self) -> None:
        self.logs: dict[str, list[str]] = {n: [] for n in (*ADDRESS, "client1")}
        self.tick = 0

    def emit(self, node: str, event: str, *fields: tuple[str, object]) -> int:
        """Log a line; returns its time in microseconds since the first line."""
        self.tick += 1
        at = T0 + self.tick / 1000 + 5e-7  # half a microsecond on: the timestamp truncates
        self.logs[node].append(f"{utc_timestamp(at)} {node} {event} {format_fields(fields)}")
        return (self.tick - 1) * 1000

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for node, lines in self.logs.items():
            (folder / f"{node}.log").write_text("".join(line + "\n" for line in lines))
        run = {
            "participants": [{"node": n, "address": a} for n, a in ADDRESS.items()],
            "clients": ["client1"],
            "seed": 1,
            "command": "hand-made",
        }
        (folder / "run.json").write_text(json.dumps(run))
        storage = {"committed": [[TX, 1, 7]], "prepared": []}
        status = {"storage_server": 7, "version": 1, "lock": None}
        (folder / "final_states.json").write_text(
            json.dumps({n: {"status": status, "storage": storage} for n in ADDRESS})
        )
        return folder


def durable(f: Folder, server: str, state: str, version: int, why: str) -> int:
    return f.emit(server, "durable", ("txid", TX), ("state", state), ("value", 7), ("version", version),
                  ("participants", PARTICIPANTS), ("why", why))  # fmt: skip


def one_transaction(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The folder, and what the test knows of it: times of its lock edges."""
    f = Folder()
    known: dict[str, Any] = {}
    for s, addr in ADDRESS.items():
        f.emit(s, "listening", ("addr", addr), ("pid", 1), ("name", addr))
    f.emit("client1", "connected", ("pid", 2), ("participants", PARTICIPANTS))
    known["begin"] = f.emit("client1", "begin", ("txid", TX), ("value", 7), ("participants", PARTICIPANTS))
    for addr in ADDRESS.values():
        f.emit("client1", "send", ("peer", addr), ("msg", "PREPARE"), ("txid", TX), ("value", 7),
               ("participants", PARTICIPANTS))  # fmt: skip
    for s in ADDRESS:  # each participant sees the client's connection as an ephemeral port
        f.emit(s, "recv", ("peer", "127.0.0.1:50001"), ("msg", "PREPARE"), ("txid", TX), ("value", 7),
               ("participants", PARTICIPANTS))  # fmt: skip
        known[f"prepared {s}"] = durable(f, s, "prepared", 0, "vote yes")
        f.emit(s, "send", ("peer", "127.0.0.1:50001"), ("msg", "VOTE"), ("txid", TX), ("vote", "ok"))
    for addr in ADDRESS.values():
        f.emit("client1", "recv", ("peer", addr), ("msg", "VOTE"), ("txid", TX), ("vote", "ok"))
    f.emit("client1", "decide", ("txid", TX), ("result", "committed"))
    for addr in ADDRESS.values():
        f.emit("client1", "send", ("peer", addr), ("msg", "COMMIT"), ("txid", TX))
    for s in ("server1", "server2"):  # server3's COMMIT is lost
        f.emit(s, "recv", ("peer", "127.0.0.1:50001"), ("msg", "COMMIT"), ("txid", TX))
        f.emit(s, "send", ("peer", "127.0.0.1:50001"), ("msg", "OUTCOME"), ("txid", TX), ("state", "committed"))
        known[f"committed {s}"] = durable(f, s, "committed", 1, "COMMIT received")
    for addr in list(ADDRESS.values())[:2]:
        f.emit("client1", "recv", ("peer", addr), ("msg", "OUTCOME"), ("txid", TX), ("state", "committed"))
    known["end"] = f.emit("client1", "outcome", ("txid", TX), ("result", "committed"), ("op", 1), ("attempt", 1),
                          ("value", 7), ("latency_ms", "3.000"), ("cause", "all-yes"))  # fmt: skip
    f.emit("server3", "timeout", ("txid", TX), ("after_s", 5))
    f.emit("server3", "send", ("peer", ADDRESS["server1"]), ("msg", "RESOLVE"), ("txid", TX))
    f.emit("server1", "recv", ("peer", "127.0.0.1:40000"), ("msg", "RESOLVE"), ("txid", TX))
    f.emit("server1", "send", ("peer", "127.0.0.1:40000"), ("msg", "OUTCOME"), ("txid", TX), ("state", "committed"))
    f.emit("server3", "recv", ("peer", ADDRESS["server1"]), ("msg", "OUTCOME"), ("txid", TX), ("state", "committed"))
    known["committed server3"] = durable(f, "server3", "committed", 1, "peer 127.0.0.1:8886 says committed")
    return f.write(tmp_path / "hand"), known


# (kind, from, to, received) of every message of the hand-made folder
EXPECTED = sorted(
    [(Kind.PREPARE, "client1", s, True) for s in ADDRESS]
    + [(Kind.VOTE_OK, s, "client1", True) for s in ADDRESS]
    + [(Kind.COMMIT, "client1", s, s != "server3") for s in ADDRESS]
    + [(Kind.OUTCOME, s, "client1", True) for s in ("server1", "server2")]
    + [(Kind.RESOLVE, "server3", "server1", True), (Kind.OUTCOME, "server1", "server3", True)]
)
