"""``python -m harness.bench``: how fast the harness runs, as multiples of what the machine allows.

Theory of operation (design section 7). The machines here are shared and
noisy, so an absolute time means little alone: every figure is printed next to
the floor it should be compared with, measured in the same run, and as a ratio
to it. The floors:

* network: one asyncio client fans a real encoded PREPARE out to three echo
  processes and waits for all three echoes, then does the same with a COMMIT
  (one transaction's two rounds): transactions/s and latency;
* disk: the median fsync of a ~200-byte append in the data directory (a
  durable vote is at least one of those, on the critical path);
* start-up: forking three echo processes and five processes that connect to
  them, each ready by a pipe message, through the runner's harness.processes;
* memory: the resident size of an idle asyncio echo process forked from the
  same parent;
* checker: reading the same log files line by line and splitting each line.

Every throughput figure comes with the CPU time it cost per transaction, in
all processes together: the floor's from /proc/<pid>/schedstat, a run's from
RUSAGE_CHILDREN (the runner reaps every process it starts), so that a gap to
the floor can be told apart from a machine busy with other work.

The measurements drive the product's own code paths: harness.runner.run for
the one-client and contention runs and for start-up (read from the event
logs' timestamps: a participant logs ``listening`` and a client ``connected``
just before it reports ready), the runner's child entry points for memory,
and harness.checker.check_run on a synthetic run folder whose lines are
rendered by harness.eventlog from real messages, and compared line shape by
line shape with a real run's.

The rules it keeps: every process is started through harness.processes and
stopped by its handle; everything listens on 127.0.0.1 ephemeral ports;
nothing sleeps to wait for readiness; every measurement is repeated and its
median reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import math
import multiprocessing.connection
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness import client as client_mod
from harness import participant as participant_mod
from harness.checker import CheckError, CheckReport, check_run
from harness.eventlog import EventLog
from harness.processes import MP, READY_TIMEOUT, Processes, RunError, await_ready
from harness.protocol import coordinator as co
from harness.protocol.messages import (
    Abort,
    Commit,
    Message,
    Outcome,
    Prepare,
    State,
    Status,
    TxState,
    Vote,
    encode,
    split_fields,
)
from harness.protocol.participant import TxRecord
from harness.runner import RunConfig, _client_child, _participant_child, run
from harness.storage import Storage

HOST = "127.0.0.1"
PARTICIPANTS = 3  # as the product runs them; also the floor's echo processes
FSYNC_APPEND = 200  # bytes: about one durable record (txid, state, value, participant list)
FLOOR_WARMUP = 20  # untimed floor transactions first: connections and code paths warm
STARTUP_CLIENTS = 5
SYNTH_CLIENTS = 5  # clients in the synthetic checker folder
CHECKER_SMALL = 4  # the linearity folder is this many times smaller
RESULT_WAIT = 60.0  # seconds the memory measurement waits for one transaction before giving up

# Targets (the brief of the benchmark).
TARGET_NOT_DURABLE = 0.7  # one client, no fsync: at least this times the floor's tx/s
TARGET_DURABLE_FSYNCS = 3  # one client, durable: p50 at most floor p50 + this many fsyncs
TARGET_CONTENTION_CLIENTS = 20
TARGET_CONTENTION = 0.5  # 20 clients: at least this times one client's committed/s
STARVATION_RUN = 10.0  # seconds: in a run this long, every client commits at least once
TARGET_STARTUP = 0.5  # seconds until three participants and five clients are ready
TARGET_CHECKER = 200_000  # log lines per second
TARGET_PARTICIPANT_MIB = 40.0
TARGET_CLIENT_MIB = 30.0

SECTIONS = ("one-client", "contention", "startup", "memory", "checker")


@dataclass
class BenchConfig:
    """What one benchmark run measures, and how much of it."""

    quick: bool = False
    repeat: int = 3  # repetitions of every measurement; medians are reported
    transactions: int = 500  # per floor repetition and per one-client run
    duration: float = STARVATION_RUN  # seconds per contention run
    clients: tuple[int, ...] = (5, 20, 100)  # contention runs
    checker_lines: int = 1_000_000  # lines of the large checker folder
    memory_transactions: int = 500  # transactions before resident memory is read
    fsyncs: int = 100  # fsync and storage-write samples per repetition
    sections: tuple[str, ...] = SECTIONS
    workdir: Path | None = None  # None: a temporary folder, removed at the end
    keep: bool = False
    json_path: Path | None = None  # None: reports/bench-<UTC time>.json


QUICK = {
    "repeat": 2,
    "transactions": 100,
    "duration": 1.0,
    "checker_lines": 100_000,
    "memory_transactions": 100,
    "fsyncs": 30,
}


# ====================================================================== statistics


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _pct(values: list[float], q: int) -> float:
    """The q-th percentile (1-99), inclusive method; the value itself for one sample."""
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _log_time(ts: str) -> float:
    """An event-log timestamp (2026-11-27T02:41:03.123456Z) as seconds since the epoch."""
    return datetime.fromisoformat(ts).timestamp()


def _say(text: str) -> None:
    """Progress, on standard error: the table alone goes to standard output."""
    print(text, file=sys.stderr, flush=True)


# ====================================================================== floor processes


class _Echo(asyncio.Protocol):
    """Writes back every byte it receives: the cheapest possible participant."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _echo_child(conn: multiprocessing.connection.Connection) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Echo, HOST, 0)
        conn.send(("ready", server.sockets[0].getsockname()[:2]))
        conn.close()
        await loop.create_future()  # until the bench stops it (SIGTERM)

    asyncio.run(serve())


def _connector_child(addresses: list[tuple[str, int]], conn: multiprocessing.connection.Connection) -> None:
    """The start-up floor's client: connect to every echo process, report ready."""

    async def connect() -> None:
        streams = [await asyncio.open_connection(h, p) for h, p in addresses]
        conn.send(("ready", len(streams)))
        conn.close()
        await asyncio.get_running_loop().create_future()  # until the bench stops it

    asyncio.run(connect())


def _fork(
    procs: Processes, target: Callable[..., None], args: tuple[Any, ...], name: str
) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
    """Fork ``target(*args, pipe)``; the parent keeps the pipe's reading end."""
    parent, child = MP.Pipe(duplex=False)
    proc = procs.start(target, (*args, child), name)
    child.close()
    return proc, parent


def _await_all(started: list[tuple[BaseProcess, multiprocessing.connection.Connection]]) -> list[Any]:
    """Every child's ready payload, in order (the runner's await_ready)."""
    deadline = time.monotonic() + READY_TIMEOUT
    payloads = []
    for proc, conn in started:
        payloads.append(await_ready(proc.name or "child", proc, conn, deadline))
        conn.close()
    return payloads


def start_echoes(procs: Processes, count: int = PARTICIPANTS) -> list[tuple[BaseProcess, tuple[str, int]]]:
    """Fork ``count`` echo processes on ephemeral loopback ports; return them once ready."""
    started = [_fork(procs, _echo_child, (), f"echo{i}") for i in range(1, count + 1)]
    addresses = _await_all(started)
    return [(proc, (a[0], a[1])) for (proc, _), a in zip(started, addresses, strict=True)]


def _protocol_lines(addresses: list[tuple[str, int]]) -> tuple[bytes, bytes]:
    """A real PREPARE and COMMIT, as a client sends them to these participants."""
    txid = f"client1-{secrets.token_hex(6)}-1"
    names = tuple(f"{h}:{p}" for h, p in addresses)
    return encode(Prepare(txid=txid, value=1_000_001, participants=names)), encode(Commit(txid=txid))


def _cpu_seconds(pid: int) -> float:
    """CPU time of a single-threaded process so far (/proc/<pid>/schedstat, in ns)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


async def _fan_out(
    addresses: list[tuple[str, int]], transactions: int, pids: list[int]
) -> tuple[float, list[float], float]:
    """(elapsed seconds, per-transaction latencies, CPU seconds of this process
    and of the echo processes ``pids``) of ``transactions`` two-round fan-outs."""
    lines = _protocol_lines(addresses)
    streams = [await asyncio.open_connection(h, p) for h, p in addresses]
    latencies: list[float] = []
    try:

        async def transaction() -> None:
            for line in lines:
                for _, writer in streams:
                    writer.write(line)
                for reader, _ in streams:  # waiting for each in turn is waiting for all three
                    if not await reader.readline():
                        raise RunError("an echo process closed its connection")

        for _ in range(FLOOR_WARMUP):
            await transaction()
        cpu = time.process_time() + sum(_cpu_seconds(pid) for pid in pids)
        started = time.perf_counter()
        for _ in range(transactions):
            t = time.perf_counter()
            await transaction()
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() + sum(_cpu_seconds(pid) for pid in pids) - cpu
    finally:
        for _, writer in streams:
            writer.close()
    return elapsed, latencies, cpu


def measure_fan_out(echoes: list[tuple[BaseProcess, tuple[str, int]]], transactions: int) -> dict[str, float]:
    pids = [proc.pid for proc, _ in echoes if proc.pid is not None]
    elapsed, latencies, cpu = asyncio.run(_fan_out([a for _, a in echoes], transactions, pids))
    return {
        "tx_s": transactions / elapsed,
        "p50_ms": _pct(latencies, 50) * 1000,
        "p99_ms": _pct(latencies, 99) * 1000,
        "cpu_ms_per_tx": cpu / transactions * 1000,
    }


def measure_fsync(directory: Path, count: int) -> list[float]:
    """Seconds of ``count`` fsyncs, each after a FSYNC_APPEND-byte append."""
    path = directory / f"fsync-probe-{secrets.token_hex(3)}"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    record = b"x" * (FSYNC_APPEND - 1) + b"\n"
    times = []
    try:
        for _ in range(count):
            os.write(fd, record)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return times


def measure_storage_write(directory: Path, count: int) -> list[float]:
    """Seconds of ``count`` durable one-record writes through harness.storage (a vote's persist)."""
    storage = Storage(directory / f"storage-probe-{secrets.token_hex(3)}.sqlite3", "bench", durable=True)
    participants = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    times = []
    try:
        for i in range(count):
            record = TxRecord(txid=f"bench-{i}", state=TxState.PREPARED, value=i, participants=participants, version=0)
            t = time.perf_counter()
            storage.write([record])
            times.append(time.perf_counter() - t)
    finally:
        storage.close()
    return times


# ====================================================================== runs through the runner


def _client_window(folder: Path, clients: list[str]) -> float:
    """Seconds from the first ``begin`` to the last ``outcome`` in the clients' logs."""
    first: str | None = None
    last: str | None = None
    for name in clients:
        with open(folder / f"{name}.log", encoding="utf-8") as f:
            for raw in f:
                parts = raw.split(" ", 3)
                if len(parts) < 3:
                    continue
                if parts[2] == "begin" and (first is None or parts[0] < first):
                    first = parts[0]
                elif parts[2] == "outcome" and (last is None or parts[0] > last):
                    last = parts[0]
    if first is None or last is None:
        raise RunError(f"{folder}: no transaction in the clients' logs")
    return _log_time(last) - _log_time(first)


def _first_event(path: Path, event: str) -> float:
    """When ``event`` first appears in an event log."""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            parts = raw.split(" ", 3)
            if len(parts) >= 3 and parts[2] == event:
                return _log_time(parts[0])
    raise RunError(f"{path}: no {event} line")


class Runs:
    """Runs experiments through harness.runner.run in the work folder, and checks each."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0
        self.inconsistent: list[str] = []

    def run(self, label: str, config: RunConfig) -> tuple[Path, CheckReport, float]:
        """(run folder, its check, CPU seconds of every process of the run)."""
        self.count += 1
        folder = self.workdir / f"{self.count:03d}-{label}"
        config = replace(config, base_port=0, host=HOST, out=folder, seed=config.seed or self.count)
        # The runner reaps every child it starts, so their CPU time lands here.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run(config, progress_stream=io.StringIO())  # a non-terminal stream: no progress line
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        report = check_run(folder)
        if not report.consistent:
            self.inconsistent.append(f"{folder}: {len(report.violations)} violations")
        return folder, report, cpu


def one_client(runs: Runs, durable: bool, transactions: int) -> dict[str, Any]:
    folder, report, cpu = runs.run(
        "one-client-durable" if durable else "one-client-not-durable",
        RunConfig(clients=1, transactions=transactions, durable=durable),
    )
    (c,) = report.clients
    window = _client_window(folder, ["client1"])
    return {
        "committed": c.committed,
        "attempted": c.attempted,
        "tx_s": c.committed / window,
        "p50_ms": _pct(c.latencies_ms, 50),
        "p99_ms": _pct(c.latencies_ms, 99),
        # every process, start and stop included: per committed transaction
        "cpu_ms_per_tx": cpu / max(1, c.committed) * 1000,
        "consistent": report.consistent,
        "folder": str(folder),
    }


def contention(runs: Runs, clients: int, duration: float) -> dict[str, Any]:
    folder, report, cpu = runs.run(
        f"contention-{clients}", RunConfig(clients=clients, retry="backoff", duration=duration)
    )
    names = [c.name for c in report.clients]
    window = _client_window(folder, names)
    committed = sum(c.committed for c in report.clients)
    aborted = sum(c.aborted_total for c in report.clients)
    return {
        "committed": committed,
        "aborted": aborted,
        "unknown": sum(c.unknown for c in report.clients),
        "window_s": window,
        "committed_s": committed / window,
        "aborts_per_commit": aborted / committed if committed else math.inf,
        "min_client_commits": min(c.committed for c in report.clients),
        "cpu_ms_per_commit": cpu / max(1, committed) * 1000,
        "consistent": report.consistent,
        "folder": str(folder),
    }


def startup(runs: Runs) -> dict[str, float]:
    """The runner's start-up, from the call to run() to the last client's ready,
    read from the timestamps of the participants' ``listening`` and the
    clients' ``connected`` lines (each logged just before its ready message)."""
    t0 = time.time()
    folder, _, _ = runs.run("startup", RunConfig(clients=STARTUP_CLIENTS, participants=PARTICIPANTS, transactions=1))
    participants = [_first_event(folder / f"server{i}.log", "listening") for i in range(1, PARTICIPANTS + 1)]
    clients = [_first_event(folder / f"client{i}.log", "connected") for i in range(1, STARTUP_CLIENTS + 1)]
    return {"participants_ready_s": max(participants) - t0, "all_ready_s": max(clients) - t0}


def startup_floor() -> float:
    """Seconds to fork three echo processes and five that connect to them, all ready."""
    procs = Processes()
    t0 = time.perf_counter()
    try:
        echoes = start_echoes(procs)
        addresses = [a for _, a in echoes]
        _await_all(
            [_fork(procs, _connector_child, (addresses,), f"connector{i}") for i in range(1, STARTUP_CLIENTS + 1)]
        )
        return time.perf_counter() - t0
    finally:
        procs.stop()


def interpreter_startup(module: str | None) -> float:
    """Seconds for a fresh interpreter to import ``module`` (None: to do nothing)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}" if module else "pass"], check=True)
    return time.perf_counter() - t0


# ====================================================================== memory


def _proc_status(pid: int, key: str) -> float:
    """A /proc/<pid>/status size (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RunError(f"/proc/{pid}/status has no {key}")


def _private_mib(pid: int) -> float:
    """Memory only this process holds (USS: private clean + dirty pages), in MiB.
    A forked child's VmRSS also counts the pages it still shares with its parent."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def memory(workdir: Path, transactions: int) -> dict[str, Any]:
    """Resident memory of three participants and one client forked by the
    runner's own child entry points, after ``transactions`` transactions (and
    after half as many, to show growth), beside an idle echo process.

    The participants do not fsync: memory does not depend on it, and the
    measurement takes half the time. The bench runs this first, while its own
    process is as small as the runner's (a forked child's VmRSS counts the
    pages it shares with its parent)."""
    folder = workdir / "memory"
    procs = Processes()
    try:
        echo_proc, _ = start_echoes(procs, 1)[0]
        started = []
        for i in range(1, PARTICIPANTS + 1):
            config = participant_mod.ParticipantConfig(
                node=f"server{i}",
                host=HOST,
                port=0,
                data=folder / "data" / f"server{i}.sqlite3",
                log=folder / f"server{i}.log",
                durable=False,
            )
            started.append(_fork(procs, _participant_child, (config,), f"server{i}"))
        addresses = [(a[0], a[1]) for a in _await_all(started)]
        participants = [p for p, _ in started]
        go = MP.Event()
        ccfg = client_mod.ClientConfig(
            name="client1", servers=addresses, log=folder / "client1.log", values=lambda op: op, count=10**9
        )
        parent, child = MP.Pipe(duplex=False)
        client = procs.start(_client_child, (ccfg, child, go), "client1")
        child.close()
        await_ready("client1", client, parent, time.monotonic() + READY_TIMEOUT)
        go.set()

        def sample() -> dict[str, float]:
            assert client.pid is not None and echo_proc.pid is not None
            pids = [p.pid for p in participants if p.pid is not None]
            return {
                "participant_mib": max(_proc_status(pid, "VmRSS") for pid in pids),
                "participant_hwm_mib": max(_proc_status(pid, "VmHWM") for pid in pids),
                "client_mib": _proc_status(client.pid, "VmRSS"),
                "client_hwm_mib": _proc_status(client.pid, "VmHWM"),
                "participant_private_mib": max(_private_mib(pid) for pid in pids),
                "client_private_mib": _private_mib(client.pid),
                "echo_private_mib": _private_mib(echo_proc.pid),
                "echo_mib": _proc_status(echo_proc.pid, "VmRSS"),
                "bench_mib": _proc_status(os.getpid(), "VmRSS"),
            }

        samples = {}
        done = 0
        for target in (transactions // 2, transactions):
            while done < target:
                if not parent.poll(RESULT_WAIT):
                    raise RunError(f"the memory client finished no transaction in {RESULT_WAIT}s")
                try:
                    kind, _ = parent.recv()
                except EOFError:
                    raise RunError(f"the memory client exited (code {client.exitcode})") from None
                if kind == "result":
                    done += 1
            samples[target] = sample()
        parent.close()
        procs.stop([client])  # first: no transaction is in flight when the participants stop
    finally:
        procs.stop()
    half, full = samples[transactions // 2], samples[transactions]
    return {
        **full,
        "transactions": transactions,
        "participant_growth_mib_per_1000": (full["participant_mib"] - half["participant_mib"])
        / max(1, transactions - transactions // 2)
        * 1000,
        "client_growth_mib_per_1000": (full["client_mib"] - half["client_mib"])
        / max(1, transactions - transactions // 2)
        * 1000,
    }


# ====================================================================== checker


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
_S = {name: sentinel for sentinel, name in _SENTINELS.items()}


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


def _msg(event: str, msg: Message) -> Callable[[EventLog], None]:
    return lambda log: log.message(event, _S["peer"], msg)


def _ev(event: str, *fields: tuple[str, object]) -> Callable[[EventLog], None]:
    return lambda log: log.event(event, *fields)


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

    Every line is rendered by harness.eventlog from a real message (or with
    the fields the nodes log), so its format is exactly a real one's. The
    workload is a run with ``--retry backoff``: in every other round two
    clients contend, one prepares and commits everywhere while the other's
    PREPARE finds the participants locked, is voted NOK and aborted, and is
    retried by the same client as the next round's committer. Clients prepare
    in order for ORDERED_AFTER_CONTENTION transactions after a NOK vote, as
    ``--prepare adaptive`` does."""
    folder.mkdir(parents=True)
    names = [f"{HOST}:{41001 + i}" for i in range(PARTICIPANTS)]
    servers = [f"server{i}" for i in range(1, PARTICIPANTS + 1)]
    client_names = [f"client{i}" for i in range(1, clients + 1)]
    listed = ",".join(names)
    prep = Prepare(txid=_S["txid"], value=int(_S["value"]), participants=tuple(names))
    locked = f"locked by {_S['lock']}"
    state = State(
        node=_S["node"],
        storage_server=int(_S["storage"]),
        version=int(_S["version"]),
        lock=None,
        committed=int(_S["committed"]),
        aborted=int(_S["aborted"]),
    )

    def durable(state: TxState, why: str) -> Callable[[EventLog], None]:
        return _ev(
            "durable",
            ("txid", _S["txid"]),
            ("state", state.value),
            ("value", _S["value"]),
            ("version", _S["version"] if state is TxState.COMMITTED else 0),
            ("participants", listed),
            ("why", why),
        )

    def outcome(result: co.Result, cause: co.Cause, reason: str) -> Callable[[EventLog], None]:
        return _ev(
            "outcome",
            ("txid", _S["txid"]),
            ("result", result.value),
            ("op", _S["op"]),
            ("attempt", _S["attempt"]),
            ("value", _S["value"]),
            ("latency_ms", _S["latency"]),
            ("cause", cause.value),
            ("reason", reason),
        )

    nok_reason = f"{_S['peer']} voted NOK: {locked}"
    p_kinds: dict[str, Callable[[EventLog], None]] = {
        "recv-status": _msg("recv", Status()),
        "send-state": _msg("send", state),
        "recv-prepare": _msg("recv", prep),
        "durable-prepared": durable(TxState.PREPARED, "vote yes"),
        "durable-aborted": durable(TxState.ABORTED, f"vote no: {locked}"),
        "durable-committed": durable(TxState.COMMITTED, "COMMIT received"),
        "send-yes": _msg("send", Vote(txid=_S["txid"], yes=True)),
        "send-no": _msg("send", Vote(txid=_S["txid"], yes=False, reason=locked)),
        "recv-commit": _msg("recv", Commit(txid=_S["txid"])),
        "recv-abort": _msg("recv", Abort(txid=_S["txid"])),
        "send-committed": _msg("send", Outcome(txid=_S["txid"], state=TxState.COMMITTED)),
        "send-aborted": _msg("send", Outcome(txid=_S["txid"], state=TxState.ABORTED)),
        "stopped": _ev("stopped"),
    }
    c_kinds: dict[str, Callable[[EventLog], None]] = {
        "send-status": _msg("send", Status()),
        "recv-state": _msg("recv", state),
        "connected": _ev("connected", ("pid", _S["op"]), ("participants", listed)),
        "begin": _ev(
            "begin", ("txid", _S["txid"]), ("value", _S["value"]), ("participants", listed), ("prepare", _S["mode"])
        ),
        "send-prepare": _msg("send", prep),
        "recv-yes": _msg("recv", Vote(txid=_S["txid"], yes=True)),
        "recv-no": _msg("recv", Vote(txid=_S["txid"], yes=False, reason=locked)),
        "decide-committed": _ev(
            "decide", ("txid", _S["txid"]), ("result", "committed"), ("reason", "every participant voted yes")
        ),
        "decide-aborted": _ev("decide", ("txid", _S["txid"]), ("result", "aborted"), ("reason", nok_reason)),
        "send-commit": _msg("send", Commit(txid=_S["txid"])),
        "send-abort": _msg("send", Abort(txid=_S["txid"])),
        "recv-committed": _msg("recv", Outcome(txid=_S["txid"], state=TxState.COMMITTED)),
        "recv-aborted": _msg("recv", Outcome(txid=_S["txid"], state=TxState.ABORTED)),
        "outcome-committed": outcome(co.Result.COMMITTED, co.Cause.ALL_YES, "every participant voted yes"),
        "outcome-aborted": outcome(co.Result.ABORTED, co.Cause.NO_VOTE, nok_reason),
        "stopped": _ev("stopped"),
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
                    "listening",
                    ("addr", names[pi]),
                    ("pid", 4000 + pi),
                    ("name", names[pi]),
                    ("storage_server", 0),
                    ("version", 0),
                    ("lock", "-"),
                    ("records", 0),
                    ("data", folder / "data" / f"{node}.sqlite3"),
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
            ordered_left[c] = client_mod.ORDERED_AFTER_CONTENTION

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
        with open(path, encoding="utf-8") as f:
            for raw in f:
                parts = raw.rstrip("\n").split(" ", 3)
                if len(parts) < 3:
                    continue
                fields = list(split_fields(parts[3])) if len(parts) == 4 else []
                msg = next((v for k, v in fields if k == "msg"), "")
                shapes.add((parts[1].rstrip("0123456789"), parts[2], msg, tuple(k for k, _ in fields)))
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


def time_floor(folder: Path, expected: int) -> float:
    t = time.perf_counter()
    n = read_floor(folder)
    elapsed = time.perf_counter() - t
    if n != expected:
        raise CheckError(f"{folder}: read {n} lines, {expected} were written")
    return elapsed


# ====================================================================== the benchmark


def _medians(reps: list[dict[str, Any]]) -> dict[str, float]:
    """The median of every numeric figure across repetitions."""
    keys = [k for k, v in reps[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return {k: _median([float(r[k]) for r in reps]) for k in keys}


def _filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync is free on tmpfs)."""
    real, best, kind = str(path.resolve()), "", "?"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                mount, fstype = line.split()[1:3]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind


class Bench:
    """One benchmark run: measures every section, keeps the raw figures."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.runs = Runs(workdir / "runs")
        self.results: dict[str, Any] = {}

    def execute(self) -> dict[str, Any]:
        c = self.config
        self.results["machine"] = {
            "cpus": os.cpu_count(),
            "load_at_start": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "workdir": str(self.workdir),
            "workdir_filesystem": _filesystem(self.workdir),
        }
        steps: list[tuple[str, Callable[[], None]]] = [
            ("memory", self.memory),  # first: see memory()
            ("floor", self.floor_and_one_client),
            ("startup", self.startup),
            ("contention", self.contention),
            ("checker", self.checker),
        ]
        self.results["section_s"] = {}
        for name, step in steps:
            if name == "floor" or name in c.sections:
                t = time.monotonic()
                step()
                self.results["section_s"][name] = time.monotonic() - t
        self.results["machine"]["load_at_end"] = list(os.getloadavg())
        self.results["inconsistent_runs"] = self.runs.inconsistent
        return self.results

    def floor_and_one_client(self) -> None:
        """Floor repetitions interleaved with the one-client runs, so that both
        see the same moments of a noisy machine."""
        c = self.config
        procs = Processes()
        floor: list[dict[str, float]] = []
        fsyncs: list[float] = []
        writes: list[float] = []
        durable: list[dict[str, Any]] = []
        not_durable: list[dict[str, Any]] = []
        probes = self.workdir / "data"
        probes.mkdir(parents=True, exist_ok=True)
        try:
            echoes = start_echoes(procs)
            addresses = [a for _, a in echoes]
            for rep in range(1, c.repeat + 1):
                floor.append(measure_fan_out(echoes, c.transactions))
                fsyncs += measure_fsync(probes, c.fsyncs)
                writes += measure_storage_write(probes, c.fsyncs)
                f = floor[-1]
                line = f"floor {rep}/{c.repeat}: {f['tx_s']:.0f} tx/s, p50 {f['p50_ms']:.2f} ms"
                if "one-client" in c.sections:
                    durable.append(one_client(self.runs, True, c.transactions))
                    not_durable.append(one_client(self.runs, False, c.transactions))
                    line += (
                        f"; one client: durable {durable[-1]['tx_s']:.0f} tx/s, "
                        f"not durable {not_durable[-1]['tx_s']:.0f} tx/s"
                    )
                _say(line)
        finally:
            procs.stop()
        self.results["floor"] = {
            "reps": floor,
            **_medians(floor),
            "fsync_ms": _median(fsyncs) * 1000,
            "fsync_p99_ms": _pct(fsyncs, 99) * 1000,
            "fsync_samples": len(fsyncs),
            "storage_write_ms": _median(writes) * 1000,
            "storage_write_p99_ms": _pct(writes, 99) * 1000,
            "line_bytes": [len(line) for line in _protocol_lines(addresses)],
        }
        if durable:
            self.results["one_client"] = {
                "transactions": c.transactions,
                "durable": {"reps": durable, **_medians(durable)},
                "not_durable": {"reps": not_durable, **_medians(not_durable)},
            }

    def memory(self) -> None:
        reps = []
        for rep in range(1, self.config.repeat + 1):
            reps.append(memory(self.workdir / f"memory-{rep}", self.config.memory_transactions))
            m = reps[-1]
            _say(
                f"memory {rep}/{self.config.repeat}: participant {m['participant_mib']:.1f} MiB, "
                f"client {m['client_mib']:.1f} MiB, echo {m['echo_mib']:.1f} MiB"
            )
        self.results["memory"] = {"reps": reps, **_medians(reps)}

    def startup(self) -> None:
        reps = []
        for rep in range(1, self.config.repeat + 1):
            floor = startup_floor()
            measured = startup(self.runs)
            reps.append(
                {
                    "floor_s": floor,
                    **measured,
                    "python_s": interpreter_startup(None),
                    "import_s": interpreter_startup("harness.run"),
                }
            )
            _say(f"start-up {rep}/{self.config.repeat}: {measured['all_ready_s']:.3f} s (floor {floor:.3f} s)")
        self.results["startup"] = {"reps": reps, **_medians(reps)}

    def contention(self) -> None:
        c = self.config
        reps: dict[int, list[dict[str, Any]]] = {n: [] for n in c.clients}
        for rep in range(1, c.repeat + 1):
            for n in c.clients:
                reps[n].append(contention(self.runs, n, c.duration))
                r = reps[n][-1]
                _say(
                    f"contention {rep}/{c.repeat}, {n} clients: {r['committed_s']:.0f} committed/s, "
                    f"{r['aborts_per_commit']:.2f} aborts per commit, min {r['min_client_commits']} commits"
                )
        self.results["contention"] = {
            str(n): {
                "clients": n,
                "duration_s": c.duration,
                "reps": rs,
                **_medians(rs),
                "min_client_commits": min(r["min_client_commits"] for r in rs),  # the worst run
            }
            for n, rs in reps.items()
        }

    def checker(self) -> None:
        c = self.config
        # A small real contended run: the synthetic lines must have its shapes.
        real, _, _ = self.runs.run(
            "checker-reference", RunConfig(clients=3, transactions=10, retry="backoff", durable=False)
        )
        real_shapes = line_shapes(real)
        sizes = {"large": c.checker_lines, "small": c.checker_lines // CHECKER_SMALL}
        folders = {label: self.workdir / f"checker-{label}" for label in sizes}
        lines, made = {}, {}
        for label, wanted in sizes.items():
            t = time.perf_counter()
            lines[label] = synthesize_run(folders[label], wanted)
            made[label] = time.perf_counter() - t
        synthetic_shapes = line_shapes(folders["small"])  # the same generator wrote both
        checks: dict[str, list[float]] = {label: [] for label in sizes}
        floors: dict[str, list[float]] = {label: [] for label in sizes}
        for _ in range(c.repeat):  # interleaved, so that both sizes see the same moments
            for label in sizes:
                checks[label].append(time_check(folders[label], lines[label]))
                floors[label].append(time_floor(folders[label], lines[label]))
        out: dict[str, Any] = {}
        for label in sizes:
            out[label] = {
                "lines": lines[label],
                "synthesized_s": made[label],
                "check_s": _median(checks[label]),
                "lines_s": lines[label] / _median(checks[label]),
                "floor_s": _median(floors[label]),
                "floor_lines_s": lines[label] / _median(floors[label]),
                "check_reps_s": checks[label],
                "floor_reps_s": floors[label],
            }
            _say(
                f"checker, {lines[label]} lines: {out[label]['lines_s']:,.0f} lines/s "
                f"(floor {out[label]['floor_lines_s']:,.0f})"
            )
            if not c.keep:
                shutil.rmtree(folders[label])
        large, small = out["large"], out["small"]
        # time per line at the large size over time per line at the small one: 1.0 is linear
        out["linearity"] = (large["check_s"] / large["lines"]) / (small["check_s"] / small["lines"])
        out["shapes"] = {
            "synthetic": len(synthetic_shapes),
            "synthetic_not_in_real": sorted(map(str, synthetic_shapes - real_shapes)),
            "real_not_in_synthetic": sorted(map(str, real_shapes - synthetic_shapes)),
        }
        if out["shapes"]["synthetic_not_in_real"]:
            self.runs.inconsistent.append(
                f"synthetic checker lines unlike a real run's: {out['shapes']['synthetic_not_in_real'][:3]}"
            )
        self.results["checker"] = out


# ====================================================================== the report


@dataclass
class Row:
    """One line of the table: a figure, its floor, and its target if it has one."""

    section: str
    figure: str
    value: float
    unit: str
    floor: float | None = None  # the same kind of figure, measured on the floor in this run
    floor_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.value / self.floor if self.floor else None


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if unit in ("tx/s", "lines/s", "committed/s"):
        return f"{value:,.0f}"
    if unit in ("ms", "ms CPU"):
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "MiB":
        return f"{value:.1f}"
    if unit == "":
        return f"{value:.2f}"
    return f"{value:g}"


def build_rows(results: dict[str, Any], config: BenchConfig) -> list[Row]:
    rows: list[Row] = []
    f = results["floor"]
    floor_tx, floor_p50, floor_p99, fsync = f["tx_s"], f["p50_ms"], f["p99_ms"], f["fsync_ms"]
    rows += [
        Row("floor", "echo fan-out, 3 processes x 2 rounds", floor_tx, "tx/s", floor_tx, "echo tx/s"),
        Row("floor", "echo fan-out latency p50", floor_p50, "ms", floor_p50, "echo p50"),
        Row("floor", "echo fan-out latency p99", floor_p99, "ms", floor_p99, "echo p99"),
        Row("floor", f"fsync of a {FSYNC_APPEND}-byte append (median)", fsync, "ms", fsync, "fsync"),
        Row("floor", "harness.storage durable write, 1 record", f["storage_write_ms"], "ms", fsync, "fsync"),
        Row("floor", "CPU per tx, client + 3 echo processes", f["cpu_ms_per_tx"], "ms CPU", f["cpu_ms_per_tx"], "echo"),
    ]
    floor_cpu = f["cpu_ms_per_tx"]
    one = results.get("one_client")
    if one:
        d, n = one["durable"], one["not_durable"]
        limit = floor_p50 + TARGET_DURABLE_FSYNCS * fsync
        rows += [
            Row(
                "one client",
                "not durable: committed/s",
                n["tx_s"],
                "tx/s",
                floor_tx,
                "echo tx/s",
                f">= {TARGET_NOT_DURABLE} x floor = {TARGET_NOT_DURABLE * floor_tx:,.0f}",
                n["tx_s"] >= TARGET_NOT_DURABLE * floor_tx,
            ),
            Row("one client", "not durable: latency p50", n["p50_ms"], "ms", floor_p50, "echo p50"),
            Row("one client", "not durable: latency p99", n["p99_ms"], "ms", floor_p99, "echo p99"),
            Row(
                "one client", "not durable: CPU per tx, all processes", n["cpu_ms_per_tx"], "ms CPU", floor_cpu, "echo"
            ),
            Row("one client", "durable: committed/s", d["tx_s"], "tx/s", floor_tx, "echo tx/s"),
            Row(
                "one client",
                "durable: latency p50",
                d["p50_ms"],
                "ms",
                floor_p50,
                "echo p50",
                f"<= floor p50 + {TARGET_DURABLE_FSYNCS} fsyncs = {limit:.2f}",
                d["p50_ms"] <= limit,
            ),
            Row("one client", "durable: latency p99", d["p99_ms"], "ms", floor_p99, "echo p99"),
            Row("one client", "durable: CPU per tx, all processes", d["cpu_ms_per_tx"], "ms CPU", floor_cpu, "echo"),
            Row("one client", "durable - not durable p50, in fsyncs", (d["p50_ms"] - n["p50_ms"]) / fsync, ""),
        ]
    mem = results.get("memory")
    if mem:
        echo = mem["echo_mib"]
        per = f"after {config.memory_transactions} tx"
        rows += [
            Row(
                "memory",
                f"participant VmRSS {per}",
                mem["participant_mib"],
                "MiB",
                echo,
                "echo RSS",
                f"< {TARGET_PARTICIPANT_MIB:g}",
                mem["participant_mib"] < TARGET_PARTICIPANT_MIB,
            ),
            Row(
                "memory",
                f"client VmRSS {per}",
                mem["client_mib"],
                "MiB",
                echo,
                "echo RSS",
                f"< {TARGET_CLIENT_MIB:g}",
                mem["client_mib"] < TARGET_CLIENT_MIB,
            ),
            Row(
                "memory",
                "participant private (USS)",
                mem["participant_private_mib"],
                "MiB",
                mem["echo_private_mib"],
                "echo USS",
            ),
            Row(
                "memory", "client private (USS)", mem["client_private_mib"], "MiB", mem["echo_private_mib"], "echo USS"
            ),
            Row("memory", "participant growth per 1000 tx", mem["participant_growth_mib_per_1000"], "MiB"),
            Row("memory", "client growth per 1000 tx", mem["client_growth_mib_per_1000"], "MiB"),
        ]
    st = results.get("startup")
    if st:
        rows += [
            Row(
                "start-up",
                f"{PARTICIPANTS} participants + {STARTUP_CLIENTS} clients ready (runner)",
                st["all_ready_s"],
                "s",
                st["floor_s"],
                "fork+ready",
                f"< {TARGET_STARTUP}",
                st["all_ready_s"] < TARGET_STARTUP,
            ),
            Row(
                "start-up", "of which participants ready", st["participants_ready_s"], "s", st["floor_s"], "fork+ready"
            ),
            Row("start-up", "python -c 'import harness.run'", st["import_s"], "s", st["python_s"], "python -c pass"),
        ]
    cont = results.get("contention")
    if cont:
        single = one["durable"]["tx_s"] if one else None
        for key, r in cont.items():
            n = r["clients"]
            target, met = "", None
            if n == TARGET_CONTENTION_CLIENTS and single is not None:
                target = f">= {TARGET_CONTENTION} x one client = {TARGET_CONTENTION * single:,.0f}"
                met = r["committed_s"] >= TARGET_CONTENTION * single
            starve = f">= 1 in a {STARVATION_RUN:g} s run"
            if r["duration_s"] < STARVATION_RUN:
                # Short runs (--quick) weigh the start of every client at once and
                # the retries of their last transactions: say so next to the verdict.
                starve += f" (this run: {r['duration_s']:g} s)"
                if target:
                    target += f" ({r['duration_s']:g} s runs)"
            rows += [
                Row(
                    f"{key} clients", "committed/s", r["committed_s"], "committed/s", floor_tx, "echo tx/s", target, met
                ),
                Row(f"{key} clients", "aborts per commit", r["aborts_per_commit"], ""),
                Row(
                    f"{key} clients",
                    "CPU per commit, all processes",
                    r["cpu_ms_per_commit"],
                    "ms CPU",
                    floor_cpu,
                    "echo",
                ),
                Row(
                    f"{key} clients",
                    "min commits of any client (worst run)",
                    r["min_client_commits"],
                    "count",
                    None,
                    "",
                    starve,
                    r["min_client_commits"] >= 1,
                ),
            ]
    ch = results.get("checker")
    if ch:
        for label in ("large", "small"):
            r = ch[label]
            target, met = "", None
            if label == "large":
                target, met = f">= {TARGET_CHECKER:,}", r["lines_s"] >= TARGET_CHECKER
            rows.append(
                Row(
                    "checker",
                    f"check_run on {r['lines']:,} lines",
                    r["lines_s"],
                    "lines/s",
                    r["floor_lines_s"],
                    "read+split",
                    target,
                    met,
                )
            )
        rows.append(Row("checker", f"linearity (time/line, {CHECKER_SMALL}x larger / smaller)", ch["linearity"], ""))
    return rows


def render(results: dict[str, Any], config: BenchConfig, rows: list[Row]) -> str:
    m = results["machine"]
    load = " ".join(f"{x:.1f}" for x in m["load_at_start"])
    load_end = " ".join(f"{x:.1f}" for x in m["load_at_end"])
    head = [
        f"harness.bench: {m['cpus']} CPUs, Python {m['python']}, load average {load} at start, {load_end} at end; "
        f"data in {m['workdir']} ({m['workdir_filesystem']})",
        f"medians of {config.repeat} repetitions; x floor = the figure divided by its floor, measured in this run",
        "",
    ]
    table = tabulate(
        [
            [
                r.section,
                r.figure,
                _fmt(r.value, r.unit),
                r.unit,
                f"{_fmt(r.floor, r.unit)} ({r.floor_name})" if r.floor is not None else "",
                f"{r.ratio:.2f}" if r.ratio is not None else "",
                r.target,
                "" if r.met is None else ("yes" if r.met else "NO"),
            ]
            for r in rows
        ],
        headers=["section", "figure", "median", "unit", "floor (same run)", "x floor", "target", "met"],
        disable_numparse=True,
    )
    targets = [r for r in rows if r.met is not None]
    missed = [f"{r.section}: {r.figure}" for r in targets if not r.met]
    tail = ["", f"targets met: {len(targets) - len(missed)} of {len(targets)}"]
    tail += [f"  not met: {x}" for x in missed]
    ch = results.get("checker")
    if ch:
        s = ch["shapes"]
        tail.append(
            f"checker folder: {s['synthetic']} line shapes, {len(s['synthetic_not_in_real'])} not seen in a real run"
        )
    for bad in results.get("inconsistent_runs", []):
        tail.append(f"INCONSISTENT: {bad}")
    return "\n".join([*head, table, *tail])


# ====================================================================== command line

EPILOG = f"""\
what it measures (every figure beside its floor, measured in the same run):
  floor       one asyncio client, three forked echo processes, a real PREPARE and
              COMMIT per transaction; fsync of a {FSYNC_APPEND}-byte append in the data folder
  one-client  harness.runner.run with 1 client, durable and --no-durable: committed/s, p50/p99
  contention  harness.runner.run with --retry backoff for --duration seconds, per client count
  startup     3 participants and 5 clients ready, from the logs of a runner run
  memory      VmRSS of a participant and a client after --memory-transactions transactions
  checker     check_run on a synthetic run folder of --checker-lines lines and one {CHECKER_SMALL}x smaller

targets: one client not durable >= {TARGET_NOT_DURABLE} x floor tx/s; durable p50 <= floor p50 +
{TARGET_DURABLE_FSYNCS} fsyncs; 20 clients >= {TARGET_CONTENTION} x one client's committed/s; every client commits
in a {STARVATION_RUN:g} s run; start-up < {TARGET_STARTUP} s; checker >= {TARGET_CHECKER:,} lines/s; participant <
{TARGET_PARTICIPANT_MIB:g} MiB, client < {TARGET_CLIENT_MIB:g} MiB.

exit status: 0 measured (read the table for unmet targets), 1 a run or the checker's
folder was inconsistent, 2 a usage or infrastructure error.
"""


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="python -m harness.bench",
        description="Measure the harness against the floor that the machine allows (design section 7), "
        "print a table and write the figures as JSON.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a run of under a minute: {', '.join(f'{k}={v}' for k, v in QUICK.items())} "
        "(flags given explicitly still win)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"repetitions of every measurement, medians reported (default {d.repeat})",
    )
    p.add_argument(
        "--transactions",
        type=int,
        metavar="N",
        help=f"transactions per floor repetition and per one-client run (default {d.transactions})",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help=f"seconds of each contention run (default {d.duration:g})"
    )
    p.add_argument(
        "--clients",
        type=_int_list,
        metavar="N,N,...",
        help=f"client counts of the contention runs, comma-separated (default {','.join(map(str, d.clients))})",
    )
    p.add_argument(
        "--checker-lines",
        type=int,
        metavar="N",
        help=f"lines of the large synthetic folder for the checker (default {d.checker_lines:,})",
    )
    p.add_argument(
        "--memory-transactions",
        type=int,
        metavar="N",
        help=f"transactions before reading resident memory (default {d.memory_transactions})",
    )
    p.add_argument(
        "--fsyncs", type=int, metavar="N", help=f"fsync and storage-write samples per repetition (default {d.fsyncs})"
    )
    p.add_argument(
        "--only",
        type=_sections,
        metavar="SECTION,...",
        help=f"measure only these sections besides the floor, comma-separated: {','.join(SECTIONS)}",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="folder for run folders and data files; fsync is measured there (default: a new temporary folder)",
    )
    p.add_argument("--keep", action="store_true", help="keep the run folders instead of removing them at the end")
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        dest="json_path",
        help="where to write the figures (default reports/bench-<UTC time>.json)",
    )
    return p


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give at least one client count, each 1 or more")
    return values


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return names


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BenchConfig:
    config = BenchConfig(quick=args.quick, keep=args.keep, workdir=args.workdir, json_path=args.json_path)
    if args.quick:
        config = replace(config, **QUICK)  # type: ignore[arg-type]
    given = {
        "repeat": args.repeat,
        "transactions": args.transactions,
        "duration": args.duration,
        "clients": args.clients,
        "checker_lines": args.checker_lines,
        "memory_transactions": args.memory_transactions,
        "fsyncs": args.fsyncs,
        "sections": args.only,
    }
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    if config.repeat < 1 or config.transactions < 1 or config.fsyncs < 1:
        parser.error("--repeat, --transactions and --fsyncs must be 1 or more")
    if config.duration <= 0:
        parser.error("--duration must be > 0")
    if config.checker_lines < 100 * CHECKER_SMALL:
        parser.error(f"--checker-lines must be at least {100 * CHECKER_SMALL}")
    if config.memory_transactions < 2:
        parser.error("--memory-transactions must be 2 or more")
    return config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from_args(args, parser)
    json_path = config.json_path or Path("reports") / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="harness-bench-", dir=config.workdir))
    started = time.monotonic()
    try:
        results = Bench(config, workdir).execute()
    except (RunError, CheckError) as e:
        print(f"harness.bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if not config.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    results["command"] = ["python", "-m", "harness.bench", *(sys.argv[1:] if argv is None else argv)]
    results["elapsed_s"] = time.monotonic() - started
    rows = build_rows(results, config)
    results["rows"] = [{**asdict(r), "ratio": r.ratio} for r in rows]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(render(results, config, rows))
    print(
        f"\nfigures: {json_path}   ({results['elapsed_s']:.0f} s)"
        + (f"; run folders kept in {workdir}" if config.keep else "")
    )
    return 1 if results["inconsistent_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
