"""Synthetic run folders for the checker's benchmark, written through the real event log."""

from __future__ import annotations

import gc
import io
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bench.floor import HOST, PARTICIPANTS
from harness.events.log import EventLog, read_log
from harness.events.schema import BEGIN, CONNECTED, DECIDE, DURABLE, LISTENING, OUTCOME, RECV, SEND, STOPPED, EventKind
from harness.experiment import workload
from harness.node import event_loop
from harness.protocol import coordinator as co
from harness.protocol.messages import (
    Abort,
    Commit,
    Message,
    NokCode,
    Outcome,
    Prepare,
    State,
    Status,
    TxState,
    Vote,
)
from harness.verify.checker import check_run
from harness.verify.model import CheckError

SYNTH_CLIENTS = 5  # clients in the synthetic checker folder


# Sentinels: a line is rendered once by the real EventLog with these in its
# fields, then each sentinel becomes a placeholder filled per transaction.
_SENTINELS = {
    "SYNTHTXID0": "txid",
    "SYNTHLOCK0": "lock",
    "SYNTHPEER:1": "peer",
    "SYNTHNODE:1": "node",
    "SYNTHMODE0": "mode",
    "7777777777771": "value",
    "7777777777772": "version",
    "7777777777773": "op",
    "7777777777774": "attempt",
    "7777777777775": "latency",
    "7777777777776": "committed",
    "7777777777777": "aborted",
    "7777777777778": "storage",
}


SENTINEL = {name: sentinel for sentinel, name in _SENTINELS.items()}


def _template(node: str, write: Callable[[EventLog], None]) -> str:
    """The line ``write`` logs for ``node``, as a str.format template: the
    timestamp becomes {ts} and each sentinel its placeholder."""
    sink = io.StringIO()
    log = EventLog(None, node, echo=sink)
    write(log)
    line = sink.getvalue()
    if line.count("\n") != 1:
        raise AssertionError(f"expected one line, got {line!r}")
    rest = line.split(" ", 1)[1].replace("{", "{{").replace("}", "}}")
    for sentinel, name in _SENTINELS.items():
        rest = rest.replace(sentinel, "{" + name + "}")
    return "{ts} " + rest


def _msg(kind: EventKind, msg: Message) -> Callable[[EventLog], None]:
    return lambda log: log.message(kind, SENTINEL["peer"], msg)


def _ev(kind: EventKind, /, **fields: object) -> Callable[[EventLog], None]:
    return lambda log: log.write(kind, **fields)


class _Stamps:
    """Increasing event-log timestamps, cheap: the seconds part is formatted once per second."""

    def __init__(self, start: float) -> None:
        self.us = int(start * 1_000_000)
        self._second = -1
        self._prefix = ""

    def next(self, step_us: int) -> str:
        self.us += step_us
        second, micros = divmod(self.us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{micros:06d}Z"


class _Files:
    """Buffered per-node log files."""

    def __init__(self, folder: Path, nodes: list[str]) -> None:
        self.buffers: dict[str, list[str]] = {n: [] for n in nodes}
        self.files = {n: open(folder / f"{n}.log", "w", encoding="utf-8") for n in nodes}  # noqa: SIM115
        self.lines = 0

    def add(self, node: str, line: str) -> None:
        buffer = self.buffers[node]
        buffer.append(line)
        self.lines += 1
        if len(buffer) >= 50_000:
            self.files[node].writelines(buffer)
            buffer.clear()

    def close(self) -> None:
        for node, f in self.files.items():
            f.writelines(self.buffers[node])
            f.close()


def synthesize_run(folder: Path, lines: int, clients: int = SYNTH_CLIENTS) -> int:
    """Write a consistent run folder of at least ``lines`` event lines; return how many.

    Every line is rendered by harness.events from a real message (or with
    the fields the nodes log), so its format is exactly a real one's. The
    workload is a run with ``--retry backoff``: in every other round two
    clients contend, one prepares and commits everywhere while the other's
    PREPARE finds the participants locked, is voted NOK and aborted, and is
    retried by the same client as the next round's committer. Clients prepare
    in order for ORDERED_AFTER_CONTENTION transactions after a NOK vote, as
    ``--prepare adaptive`` does."""
    folder.mkdir(parents=True)
    loop_name = event_loop.chosen().value  # as the nodes of a run from this process log it
    names = [f"{HOST}:{41001 + i}" for i in range(PARTICIPANTS)]
    servers = [f"server{i}" for i in range(1, PARTICIPANTS + 1)]
    client_names = [f"client{i}" for i in range(1, clients + 1)]
    listed = ",".join(names)
    # Clients send every operation's age (wall-clock microseconds, harness.protocol.conflict); one will do.
    prep = Prepare(
        txid=SENTINEL["txid"], value=int(SENTINEL["value"]), participants=tuple(names), prio=1_764_000_000_000_000
    )
    locked = f"locked by {SENTINEL['lock']}"
    state = State(
        node=SENTINEL["node"],
        storage_server=int(SENTINEL["storage"]),
        version=int(SENTINEL["version"]),
        lock=None,
        committed=int(SENTINEL["committed"]),
        aborted=int(SENTINEL["aborted"]),
    )

    def durable(state: TxState, why: str) -> Callable[[EventLog], None]:
        return _ev(
            DURABLE,
            txid=SENTINEL["txid"],
            state=state.value,
            value=SENTINEL["value"],
            version=SENTINEL["version"] if state is TxState.COMMITTED else 0,
            participants=listed,
            why=why,
        )

    def outcome(
        result: co.Result, cause: co.Cause, reason: str, nok: NokCode | None = None
    ) -> Callable[[EventLog], None]:
        return _ev(
            OUTCOME,
            txid=SENTINEL["txid"],
            result=result.value,
            op=SENTINEL["op"],
            attempt=SENTINEL["attempt"],
            value=SENTINEL["value"],
            latency_ms=SENTINEL["latency"],
            cause=cause.value,
            nok=nok.value if nok else None,
            reason=reason,
        )

    nok_reason = f"{SENTINEL['peer']} voted NOK: {locked}"
    p_kinds: dict[str, Callable[[EventLog], None]] = {
        "recv-status": _msg(RECV, Status()),
        "send-state": _msg(SEND, state),
        "recv-prepare": _msg(RECV, prep),
        "durable-prepared": durable(TxState.PREPARED, "vote yes"),
        "durable-aborted": durable(TxState.ABORTED, f"vote no: {locked}"),
        "durable-committed": durable(TxState.COMMITTED, "COMMIT received"),
        "send-yes": _msg(SEND, Vote(txid=SENTINEL["txid"], yes=True)),
        "send-no": _msg(SEND, Vote(txid=SENTINEL["txid"], yes=False, code=NokCode.LOCKED, reason=locked)),
        "recv-commit": _msg(RECV, Commit(txid=SENTINEL["txid"])),
        "recv-abort": _msg(RECV, Abort(txid=SENTINEL["txid"])),
        "send-committed": _msg(SEND, Outcome(txid=SENTINEL["txid"], state=TxState.COMMITTED)),
        "send-aborted": _msg(SEND, Outcome(txid=SENTINEL["txid"], state=TxState.ABORTED)),
        "stopped": _ev(STOPPED),
    }
    c_kinds: dict[str, Callable[[EventLog], None]] = {
        "send-status": _msg(SEND, Status()),
        "recv-state": _msg(RECV, state),
        "connected": _ev(CONNECTED, pid=SENTINEL["op"], participants=listed, loop=loop_name),
        "begin": _ev(
            BEGIN, txid=SENTINEL["txid"], value=SENTINEL["value"], participants=listed, prepare=SENTINEL["mode"]
        ),
        "send-prepare": _msg(SEND, prep),
        "recv-yes": _msg(RECV, Vote(txid=SENTINEL["txid"], yes=True)),
        "recv-no": _msg(RECV, Vote(txid=SENTINEL["txid"], yes=False, code=NokCode.LOCKED, reason=locked)),
        "decide-committed": _ev(
            DECIDE, txid=SENTINEL["txid"], result="committed", reason="every participant voted yes"
        ),
        "decide-aborted": _ev(DECIDE, txid=SENTINEL["txid"], result="aborted", reason=nok_reason),
        "send-commit": _msg(SEND, Commit(txid=SENTINEL["txid"])),
        "send-abort": _msg(SEND, Abort(txid=SENTINEL["txid"])),
        "recv-committed": _msg(RECV, Outcome(txid=SENTINEL["txid"], state=TxState.COMMITTED)),
        "recv-aborted": _msg(RECV, Outcome(txid=SENTINEL["txid"], state=TxState.ABORTED)),
        "outcome-committed": outcome(co.Result.COMMITTED, co.Cause.ALL_YES, "every participant voted yes"),
        "outcome-aborted": outcome(co.Result.ABORTED, co.Cause.NO_VOTE, nok_reason, NokCode.LOCKED),
        "stopped": _ev(STOPPED),
    }
    tpl = {node: {k: _template(node, w) for k, w in p_kinds.items()} for node in servers}
    tpl.update({node: {k: _template(node, w) for k, w in c_kinds.items()} for node in client_names})

    files = _Files(folder, servers + client_names)
    stamps = _Stamps(time.time())
    # the address a participant sees a client's connection come from
    port_of = {
        (c, p): f"{HOST}:{50000 + 10 * ci + pi}" for ci, c in enumerate(client_names) for pi, p in enumerate(servers)
    }
    footer = clients + 3 * len(servers)  # clients' stopped; participants' last STATUS, STATE, stopped

    def emit(writer: str, kind: str, **fields: object) -> None:
        files.add(writer, tpl[writer][kind].format(ts=stamps.next(23), **fields))

    for pi, node in enumerate(servers):
        files.add(
            node,
            _template(
                node,
                _ev(
                    LISTENING,
                    addr=names[pi],
                    pid=4000 + pi,
                    name=names[pi],
                    storage_server=0,
                    version=0,
                    lock="-",
                    records=0,
                    data=folder / "data" / f"{node}.sqlite3",
                    loop=loop_name,
                    store=f"{pi:016x}",
                    cluster=",".join(names),
                    tls="off",
                ),
            ).format(ts=stamps.next(500)),
        )
    zero = {"storage": 0, "version": 0, "committed": 0, "aborted": 0}
    for c in client_names:
        for p, name in zip(servers, names, strict=True):
            emit(c, "send-status", peer=name)
            emit(p, "recv-status", peer=port_of[c, p])
            emit(p, "send-state", peer=port_of[c, p], node=name, **zero)
            emit(c, "recv-state", peer=name, node=name, **zero)
        emit(c, "connected", op=5000 + len(c))

    seq = dict.fromkeys(client_names, 0)
    op = dict.fromkeys(client_names, 1)
    attempt = dict.fromkeys(client_names, 1)
    ordered_left = dict.fromkeys(client_names, 0)  # as client.run counts for --prepare adaptive
    token = {c: secrets.token_hex(6) for c in client_names}
    committed: list[list[Any]] = []
    aborted = 0

    def begin(c: str) -> tuple[str, int, bool]:
        seq[c] += 1
        tx, value, ordered = (
            f"{c}-{token[c]}-{seq[c]}",
            int(c[len("client") :]) * 1_000_000 + op[c],
            ordered_left[c] > 0,
        )
        emit(c, "begin", txid=tx, value=value, mode="ordered" if ordered else "parallel")
        return tx, value, ordered

    def prepared(c: str, at: list[int], tx: str, value: int) -> None:
        """``c`` sends PREPARE to the participants ``at``, each votes yes."""
        for i in at:
            emit(c, "send-prepare", peer=names[i], txid=tx, value=value)
        for i in at:
            p = servers[i]
            emit(p, "recv-prepare", peer=port_of[c, p], txid=tx, value=value)
            emit(p, "durable-prepared", txid=tx, value=value)
            emit(p, "send-yes", peer=port_of[c, p], txid=tx)

    def done(c: str, result: str, tx: str, value: int, latency: str, **extra: object) -> None:
        emit(c, f"outcome-{result}", txid=tx, op=op[c], attempt=attempt[c], value=value, latency=latency, **extra)
        if ordered_left[c]:
            ordered_left[c] -= 1
        if result == "committed":
            op[c], attempt[c] = op[c] + 1, 1
        else:
            attempt[c] += 1
            ordered_left[c] = workload.ORDERED_AFTER_CONTENTION

    everyone = list(range(len(servers)))
    r = 0
    while files.lines + footer < lines:
        r += 1
        a = client_names[r % clients]  # commits
        b = client_names[(r + 1) % clients] if r % 2 == 0 else None  # contends, and is refused
        latency = f"{1.2 + (r % 17) * 0.05:.3f}"
        ta, va, ordered = begin(a)
        if ordered:  # the first participant, then the others once it voted yes
            prepared(a, [0], ta, va)
            emit(a, "recv-yes", peer=names[0], txid=ta)
            prepared(a, everyone[1:], ta, va)
            yes_to_come = everyone[1:]
        else:
            prepared(a, everyone, ta, va)
            yes_to_come = everyone
        asked: list[int] = []
        if b is not None:
            tb, vb, b_ordered = begin(b)
            asked = [0] if b_ordered else everyone
            for i in asked:
                emit(b, "send-prepare", peer=names[i], txid=tb, value=vb)
            for i in asked:
                p = servers[i]
                emit(p, "recv-prepare", peer=port_of[b, p], txid=tb, value=vb)
                emit(p, "durable-aborted", txid=tb, value=vb, lock=ta)
                emit(p, "send-no", peer=port_of[b, p], txid=tb, lock=ta)
        for i in yes_to_come:
            emit(a, "recv-yes", peer=names[i], txid=ta)
        emit(a, "decide-committed", txid=ta)
        for name in names:
            emit(a, "send-commit", peer=name, txid=ta)
        if b is not None:
            # b decides on the first NOK; those that had not voted yet get the ABORT
            emit(b, "recv-no", peer=names[0], txid=tb, lock=ta)
            emit(b, "decide-aborted", txid=tb, peer=names[0], lock=ta)
            for i in asked[1:]:
                emit(b, "recv-no", peer=names[i], txid=tb, lock=ta)
            for i in asked[1:]:
                emit(b, "send-abort", peer=names[i], txid=tb)
        for p in servers:
            emit(p, "recv-commit", peer=port_of[a, p], txid=ta)
            emit(p, "durable-committed", txid=ta, value=va, version=r)
            emit(p, "send-committed", peer=port_of[a, p], txid=ta)
        if b is not None:
            for i in asked[1:]:
                emit(servers[i], "recv-abort", peer=port_of[b, servers[i]], txid=tb)
                emit(servers[i], "send-aborted", peer=port_of[b, servers[i]], txid=tb)
        for name in names:
            emit(a, "recv-committed", peer=name, txid=ta)
        done(a, "committed", ta, va, latency)
        if b is not None:
            for i in asked[1:]:
                emit(b, "recv-aborted", peer=names[i], txid=tb)
            done(b, "aborted", tb, vb, latency, peer=names[0], lock=ta)
            aborted += 1
        committed.append([ta, r, va])

    for c in client_names:
        emit(c, "stopped")
    last = {"storage": committed[-1][2], "version": r, "committed": r, "aborted": aborted}
    for p, name in zip(servers, names, strict=True):
        emit(p, "recv-status", peer=f"{HOST}:59999")
        emit(p, "send-state", peer=f"{HOST}:59999", node=name, **last)
        emit(p, "stopped")
    files.close()

    run_json = {
        "seed": 0,
        "command": "python -m harness.bench (synthetic checker folder)",
        "participants": [{"node": p, "address": a} for p, a in zip(servers, names, strict=True)],
        "clients": client_names,
    }
    status = {"storage_server": committed[-1][2], "version": r, "lock": None, "committed": r, "aborted": aborted}
    final = {
        p: {"address": a, "status": status, "storage": {"committed": committed, "prepared": [], "aborted": aborted}}
        for p, a in zip(servers, names, strict=True)
    }
    (folder / "run.json").write_text(json.dumps(run_json, indent=2) + "\n")
    (folder / "final_states.json").write_text(json.dumps(final) + "\n")
    return files.lines


def line_shapes(folder: Path) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(node kind, event, message kind, field keys in order) of every event line of a run folder."""
    shapes = set()
    for path in folder.glob("*.log"):
        if path.name == "nemesis.log":
            continue
        for line in read_log(path):
            shapes.add((line.node.rstrip("0123456789"), line.event, line.fields.get("msg", ""), tuple(line.fields)))
    return shapes


def read_floor(folder: Path) -> int:
    """The checker's floor: read every log line of a folder and split it, nothing else."""
    n = 0
    for path in folder.glob("*.log"):
        with open(path, encoding="utf-8") as f:
            for raw in f:
                raw.split(" ", 3)
                n += 1
    return n


def time_check(folder: Path, expected: int) -> float:
    gc.collect()
    t = time.perf_counter()
    report = check_run(folder)
    elapsed = time.perf_counter() - t
    if not report.consistent:
        raise CheckError(f"{folder}: the synthetic folder is inconsistent: {report.violations[:3]}")
    if report.lines != expected:
        raise CheckError(f"{folder}: the checker read {report.lines} lines, {expected} were written")
    return elapsed


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a
# large benchmark process would report the benchmark's size.
_PEAK = """
import sys
from pathlib import Path
from harness.verify.checker import check_run
if sys.argv[1]:
    check_run(Path(sys.argv[1]))
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def check_peak_mib(folder: Path | None) -> float:
    """Peak resident memory, in MiB, of a fresh interpreter that checks ``folder``
    (None: that only imports the checker, the floor)."""
    done = subprocess.run([sys.executable, "-c", _PEAK, str(folder or "")], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024


def time_floor(folder: Path, expected: int) -> float:
    t = time.perf_counter()
    n = read_floor(folder)
    elapsed = time.perf_counter() - t
    if n != expected:
        raise CheckError(f"{folder}: read {n} lines, {expected} were written")
    return elapsed
