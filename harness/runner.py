"""Run a contention experiment: participants and clients as real processes.

Theory of operation. The runner forks M participant processes and waits for
each to report, over a pipe, the address it listens on (a readiness signal,
never a sleep). It then forks N client processes; each connects to every
participant, reports ready and waits on one shared Event, so that all of them
start their transactions together and really contend. While they run, the
runner shows progress from the outcomes they send back. When every client is
done it waits until no participant holds a lock (a client that timed out
leaves the decision to the participants), reads each participant's final state
through STATUS, stops them with SIGTERM (SIGKILL if they do not stop), reads
their storage files, and hands the run folder to the checker.

Every process it starts, it stops, by its own handle, on success, failure and
Ctrl-C alike; children also ask the kernel to send them SIGTERM should the
runner itself die (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from harness import client as client_mod
from harness import participant as participant_mod
from harness.nodes import ConnectError, query_all
from harness.protocol.messages import State, TxState
from harness.storage import Storage, StorageError

logger = logging.getLogger("harness.runner")

# fork: children start in milliseconds with the runner's modules already
# imported (start-up is part of the experiment). The runner never forks while
# an event loop or a thread of its own is running.
_mp = multiprocessing.get_context("fork")

READY_TIMEOUT = 10.0  # seconds for a process to report ready before the run fails
STOP_TIMEOUT = 5.0  # seconds a participant gets to stop on SIGTERM before SIGKILL


class RunError(Exception):
    """The run could not be carried out (a port in use, a process that died)."""


@dataclass
class RunConfig:
    """One experiment. Defaults give a run that shows contention in seconds."""

    clients: int = 5
    participants: int = 3
    transactions: int = 10  # per client
    base_port: int = 8886  # participant i listens on base_port + i - 1; 0 = ephemeral ports
    host: str = "127.0.0.1"
    delay: float = 0.0
    retry: str = "none"
    value: int | None = None  # None: a distinct value per transaction (client*1_000_000 + op)
    seed: int | None = None  # None: drawn at random and recorded
    out: Path | None = None  # None: reports/<UTC time>-<short id>
    timeout: float = 2.0  # the clients' --timeout
    resolve_after: float = 5.0  # the participants' --resolve-after
    durable: bool = True


@dataclass
class RunResult:
    folder: Path
    seed: int
    command: str
    elapsed: float
    final: dict[str, Any] = field(default_factory=dict)


def repeat_command(config: RunConfig, seed: int) -> str:
    """The command line that repeats this run (same flags, same seed)."""
    defaults = RunConfig()
    args = ["python", "-m", "harness.run"]
    for name, value in asdict(config).items():
        if name in ("seed", "out") or value == getattr(defaults, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            args += [flag, str(value)]
    args += ["--seed", str(seed)]
    return shlex.join(args)


def default_folder() -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path("reports") / f"{stamp}-{secrets.token_hex(3)}"


def transaction_value(client_index: int, op: int) -> int:
    """The default value: client 3's 7th transaction writes 3000007, so the
    final storage_server names the transaction that wrote it."""
    return client_index * 1_000_000 + op


# ---------------------------------------------------------------- children


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child if the runner dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _participant_child(config: participant_mod.ParticipantConfig, conn: multiprocessing.connection.Connection) -> None:
    _die_with_parent()
    try:
        asyncio.run(participant_mod.serve(config, ready=lambda address: conn.send(("ready", address))))
    except participant_mod.StartError as e:
        conn.send(("error", str(e)))
        sys.exit(2)


def _client_child(config: client_mod.ClientConfig, conn: multiprocessing.connection.Connection, go: Any) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us; Ctrl-C is its to handle

    async def wait_go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)

    def on_result(op: int, attempt: int, result: Any) -> None:
        conn.send(("result", result.result.value))

    try:
        asyncio.run(client_mod.run(config, on_result, go=wait_go, connected=lambda: conn.send(("ready", None))))
    except ConnectError as e:
        conn.send(("error", str(e)))
        sys.exit(2)
    conn.send(("done", None))


# ---------------------------------------------------------------- the run


class _Processes:
    """Every child of the run, stopped by handle when the run ends."""

    def __init__(self) -> None:
        self.procs: list[BaseProcess] = []

    def start(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> BaseProcess:
        sys.stdout.flush()
        sys.stderr.flush()
        proc = _mp.Process(target=target, args=args, name=name, daemon=False)
        proc.start()
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[BaseProcess] | None = None) -> None:
        """SIGTERM, then SIGKILL whatever has not exited in STOP_TIMEOUT."""
        procs = self.procs if procs is None else procs
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                logger.warning("%s did not stop on SIGTERM; killing it", p.name)
                p.kill()
                p.join()


def _await_ready(name: str, proc: BaseProcess, conn: multiprocessing.connection.Connection, deadline: float) -> Any:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunError(f"{name} did not report ready within {READY_TIMEOUT}s")
        ready = multiprocessing.connection.wait([conn, proc.sentinel], timeout=left)
        if conn in ready:
            try:
                kind, payload = conn.recv()
            except EOFError:
                raise RunError(f"{name} exited (code {proc.exitcode}) before reporting ready") from None
            if kind == "error":
                raise RunError(f"{name}: {payload}")
            return payload
        if proc.sentinel in ready and not conn.poll():
            proc.join()
            raise RunError(f"{name} exited (code {proc.exitcode}) before reporting ready")


class Progress:
    """One self-rewriting line on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, result: str) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1
        self.show()

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        c = self.counts
        done = sum(c.values())
        self.stream.write(
            f"\r{done} attempts ({c.get('committed', 0)} committed, {c.get('aborted', 0)} aborted, "
            f"{c.get('unknown', 0)} unknown) of {self.total} transactions, {now - self.started:.1f}s "
        )
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.show(force=True)
            self.stream.write("\n")
            self.stream.flush()


def run(config: RunConfig, progress_stream: Any = None) -> RunResult:
    """Carry out one experiment and write its run folder (not yet checked)."""
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    command = repeat_command(config, seed)
    folder = config.out or default_folder()
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise RunError(f"{folder} already exists: choose another --out") from None
    except OSError as e:
        raise RunError(f"cannot create {folder}: {e.strerror}") from None
    started = time.monotonic()
    procs = _Processes()
    names = [f"server{i}" for i in range(1, config.participants + 1)]
    try:
        # 1. participants, each ready before any client starts
        pconfigs = []
        waits = []
        for i, node in enumerate(names, 1):
            pcfg = participant_mod.ParticipantConfig(
                node=node,
                host=config.host,
                port=config.base_port + i - 1 if config.base_port else 0,
                data=folder / "data" / f"{node}.sqlite3",
                log=folder / f"{node}.log",
                delay=config.delay,
                resolve_after=config.resolve_after,
                durable=config.durable,
            )
            parent, child = _mp.Pipe(duplex=False)
            proc = procs.start(_participant_child, (pcfg, child), node)
            child.close()
            pconfigs.append(pcfg)
            waits.append((node, proc, parent))
        deadline = time.monotonic() + READY_TIMEOUT
        addresses: list[tuple[str, int]] = [tuple(_await_ready(n, p, c, deadline)) for n, p, c in waits]
        participant_procs = list(procs.procs)
        _write_json(
            folder / "run.json",
            {
                "seed": seed,
                "command": command,
                "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
                "participants": [
                    {"node": n, "address": f"{h}:{p}"} for n, (h, p) in zip(names, addresses, strict=True)
                ],
                "clients": [f"client{i}" for i in range(1, config.clients + 1)],
            },
        )

        # 2. clients: connect, report ready, then start together on one Event
        go = _mp.Event()
        client_waits = []
        for i in range(1, config.clients + 1):
            cname = f"client{i}"
            ccfg = client_mod.ClientConfig(
                name=cname,
                servers=addresses,
                log=folder / f"{cname}.log",
                values=_values(i, config.value),
                count=config.transactions,
                timeout=config.timeout,
                delay=config.delay,
                retry=config.retry,
                seed=seed * 1009 + i,
            )
            parent, child = _mp.Pipe(duplex=False)
            proc = procs.start(_client_child, (ccfg, child, go), cname)
            child.close()
            client_waits.append((cname, proc, parent))
        deadline = time.monotonic() + READY_TIMEOUT
        for cname, proc, conn in client_waits:
            _await_ready(cname, proc, conn, deadline)
        go.set()

        # 3. wait for the clients, showing progress
        progress = Progress(config.clients * config.transactions, progress_stream)
        pending = {conn: (cname, proc) for cname, proc, conn in client_waits}
        while pending:
            for ready in multiprocessing.connection.wait(list(pending), timeout=0.25):
                conn = pending_conn(ready)
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    cname, proc = pending.pop(conn)
                    proc.join()
                    if proc.exitcode not in (0, None):
                        raise RunError(
                            f"{cname} exited with code {proc.exitcode}; see {folder / (cname + '.log')}"
                        ) from None
                    continue
                if kind == "result":
                    progress.add(payload)
            progress.show()
        progress.end()
        for _, proc, _ in client_waits:
            proc.join()

        # 4. quiescence: no lock held anywhere, then the final states
        final = _settle(addresses, names, config)
        procs.stop(participant_procs)
        for node, pcfg in zip(names, pconfigs, strict=True):
            final[node]["storage"] = _read_storage(pcfg.data, node)
        _write_json(folder / "final_states.json", final)
    finally:
        procs.stop()
    return RunResult(folder=folder, seed=seed, command=command, elapsed=time.monotonic() - started, final=final)


def _values(client_index: int, fixed: int | None) -> Callable[[int], int]:
    if fixed is not None:
        return lambda op: fixed
    return lambda op: transaction_value(client_index, op)


def pending_conn(ready: object) -> multiprocessing.connection.Connection:
    assert isinstance(ready, multiprocessing.connection.Connection)
    return ready


def _settle(addresses: list[tuple[str, int]], names: list[str], config: RunConfig) -> dict[str, Any]:
    """Poll STATUS until no participant holds a lock, or the time a silent
    client's transactions need to be resolved by the participants has passed."""
    deadline = time.monotonic() + config.resolve_after + 4 * config.timeout + 5.0
    while True:
        states = asyncio.run(query_all(addresses, timeout=2.0))
        locked = [s for s in states if not isinstance(s, State) or s.lock is not None]
        if not locked or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling a live system for quiescence, not waiting for a guess
    final: dict[str, Any] = {}
    for node, (host, port), s in zip(names, addresses, states, strict=True):
        entry: dict[str, Any] = {"address": f"{host}:{port}"}
        if isinstance(s, State):
            entry["status"] = {
                "storage_server": s.storage_server,
                "version": s.version,
                "lock": s.lock,
                "committed": s.committed,
                "aborted": s.aborted,
            }
        else:
            entry["status"] = None
            entry["status_error"] = s
        final[node] = entry
    return final


def _read_storage(path: Path, node: str) -> dict[str, Any]:
    """The participant's records, read from its file after it stopped."""
    try:
        storage = Storage(path, node)
    except StorageError as e:
        return {"error": str(e)}
    try:
        records = storage.load()
    finally:
        storage.close()
    committed = sorted((r for r in records if r.state is TxState.COMMITTED), key=lambda r: r.version)
    return {
        "committed": [[r.txid, r.version, r.value] for r in committed],
        "prepared": sorted(r.txid for r in records if r.state is TxState.PREPARED),
        "aborted": len([r for r in records if r.state is TxState.ABORTED]),
    }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
