"""The floors: what this machine allows, measured in the same run as every figure (echo processes, fsync, start-up)."""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

from harness.bench.stats import pct
from harness.experiment.processes import MP, READY_TIMEOUT, Processes, RunError, await_ready
from harness.node import event_loop
from harness.node.storage import Storage
from harness.protocol.messages import (
    Commit,
    Prepare,
    TxState,
    encode,
)
from harness.protocol.participant import TxRecord

HOST = "127.0.0.1"


PARTICIPANTS = 3  # as the product runs them; also the floor's echo processes


FSYNC_APPEND = 200  # bytes: about one durable record (txid, state, value, participant list)


FLOOR_WARMUP = 20  # untimed floor transactions first: connections and code paths warm


STARTUP_CLIENTS = 5


class _Echo(asyncio.Protocol):
    """Writes back every byte it receives: the cheapest possible participant."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _echo_child(conn: multiprocessing.connection.Connection) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Echo, HOST, 0)
        conn.send(("ready", server.sockets[0].getsockname()[:2]))
        conn.close()
        await loop.create_future()  # until the bench stops it (SIGTERM)

    event_loop.run(serve())


def _connector_child(addresses: list[tuple[str, int]], conn: multiprocessing.connection.Connection) -> None:
    """The start-up floor's client: connect to every echo process, report ready."""

    async def connect() -> None:
        streams = [await asyncio.open_connection(h, p) for h, p in addresses]
        conn.send(("ready", len(streams)))
        conn.close()
        await asyncio.get_running_loop().create_future()  # until the bench stops it

    event_loop.run(connect())


def fork(
    procs: Processes, target: Callable[..., None], args: tuple[Any, ...], name: str
) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
    """Fork ``target(*args, pipe)``; the parent keeps the pipe's reading end."""
    parent, child = MP.Pipe(duplex=False)
    proc = procs.start(target, (*args, child), name)
    child.close()
    return proc, parent


def await_all(started: list[tuple[BaseProcess, multiprocessing.connection.Connection]]) -> list[Any]:
    """Every child's ready payload, in order (the runner's await_ready)."""
    deadline = time.monotonic() + READY_TIMEOUT
    payloads = []
    for proc, conn in started:
        payloads.append(await_ready(proc.name or "child", proc, conn, deadline))
        conn.close()
    return payloads


def start_echoes(procs: Processes, count: int = PARTICIPANTS) -> list[tuple[BaseProcess, tuple[str, int]]]:
    """Fork ``count`` echo processes on ephemeral loopback ports; return them once ready."""
    started = [fork(procs, _echo_child, (), f"echo{i}") for i in range(1, count + 1)]
    addresses = await_all(started)
    return [(proc, (a[0], a[1])) for (proc, _), a in zip(started, addresses, strict=True)]


def protocol_lines(addresses: list[tuple[str, int]]) -> tuple[bytes, bytes]:
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
    lines = protocol_lines(addresses)
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
    elapsed, latencies, cpu = event_loop.run(_fan_out([a for _, a in echoes], transactions, pids))
    return {
        "tx_s": transactions / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
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
    """Seconds of ``count`` durable one-record writes through harness.node.storage (a vote's persist)."""
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


def startup_floor() -> float:
    """Seconds to fork three echo processes and five that connect to them, all ready."""
    procs = Processes()
    t0 = time.perf_counter()
    try:
        echoes = start_echoes(procs)
        addresses = [a for _, a in echoes]
        await_all([fork(procs, _connector_child, (addresses,), f"connector{i}") for i in range(1, STARTUP_CLIENTS + 1)])
        return time.perf_counter() - t0
    finally:
        procs.stop()


def interpreter_startup(module: str | None) -> float:
    """Seconds for a fresh interpreter to import ``module`` (None: to do nothing)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}" if module else "pass"], check=True)
    return time.perf_counter() - t0
