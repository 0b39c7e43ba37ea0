"""The runner's child processes: what runs in each, and the handle the runner keeps of it.

A child reports to the runner over a pipe: ``("ready", payload)`` once it can
be used (a participant's bound address; a client connected to every
participant), ``("error", text)`` if it cannot start, and a client then sends
``("result", (op, attempt, result))`` after every attempt and ``("done",
None)`` at the end. The benchmark forks the same entry points.
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from harness.experiment import workload
from harness.experiment.processes import READY_TIMEOUT, RunError, await_ready
from harness.experiment.progress import Progress
from harness.node import event_loop
from harness.node.client_node import ConnectError, TxResult
from harness.node.serve import ParticipantConfig, StartError, serve


def participant_child(config: ParticipantConfig, conn: multiprocessing.connection.Connection) -> None:
    """A participant process: serve until SIGTERM, ready once it listens."""
    try:
        event_loop.run(serve(config, ready=lambda address: conn.send(("ready", address))))
    except StartError as e:
        conn.send(("error", str(e)))
        sys.exit(2)


def client_child(config: workload.ClientConfig, conn: multiprocessing.connection.Connection, go: Any) -> None:
    """A client process: connect, report ready, wait for ``go`` (an Event), run the workload."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us; Ctrl-C is its to handle

    async def wait_go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go.wait)

    def on_result(op: int, attempt: int, result: TxResult) -> None:
        conn.send(("result", (op, attempt, result.result.value)))

    try:
        event_loop.run(workload.run(config, on_result, go=wait_go, connected=lambda: conn.send(("ready", None))))
    except ConnectError as e:
        conn.send(("error", str(e)))
        sys.exit(2)
    conn.send(("done", None))


@dataclass
class ParticipantProcess:
    """The runner's handle of one participant: its configuration, its process, whether it is down."""

    node: str
    config: ParticipantConfig
    address: tuple[str, int]
    proc: BaseProcess | None = None
    down_since: float | None = None  # killed or crashed, not yet restarted


@dataclass
class ClientProcess:
    """The runner's handle of one client process and the operations it has finished."""

    name: str
    config: workload.ClientConfig
    proc: BaseProcess
    conn: multiprocessing.connection.Connection
    running: bool = True
    killed: bool = False
    done_ops: int = 0  # operations finished (their last attempt reported)


def resumed_config(c: ClientProcess, duration: float | None, transactions: int, clients_until: float) -> Any | None:
    """The configuration a killed client's new process starts with: the
    operations it had not finished (new txids, no crash point, patience while
    a participant restarts), or None if nothing is left to do. Any backend's
    client configuration: a dataclass with these fields."""
    if duration:
        left = clients_until - time.monotonic()
        if left <= 0.05:
            return None
        return replace(c.config, duration=left, first_op=c.done_ops + 1, crash=None, connect_patience=READY_TIMEOUT)
    if c.done_ops >= transactions:
        return None
    return replace(c.config, first_op=c.done_ops + 1, crash=None, connect_patience=READY_TIMEOUT)


def judge_client_exit(
    client: ClientProcess, crashes: dict[str, str], folder: Path, crashed: Callable[[str, str], object] | None
) -> None:
    """A client process ended: as planned (SIGKILL by the nemesis, or at its own
    crash point, then ``crashed(name, point)`` records it), cleanly, or not:
    RunError naming its log."""
    client.running = False
    client.proc.join()
    code = client.proc.exitcode
    if code == -signal.SIGKILL and (client.killed or client.name in crashes):
        if not client.killed and crashed is not None:
            crashed(client.name, crashes[client.name])
        return
    if code != 0:
        raise RunError(f"{client.name} exited with code {code}; see {folder / (client.name + '.log')}")


def receive(
    client: ClientProcess,
    clients: list[ClientProcess],
    retry: workload.RetryMode,
    progress: Progress,
    exited: Callable[[ClientProcess], None],
) -> None:
    """Read what a client whose pipe is ready sent (any backend's runner): a
    result moves its finished operations and the progress line on; the end of
    the pipe means the process ended, which ``exited`` judges."""
    try:
        kind, payload = client.conn.recv()
    except EOFError:
        exited(client)
        return
    if kind == "result":
        op, _attempt, result = payload
        if result != "aborted" or retry is workload.RetryMode.NONE:
            client.done_ops = max(client.done_ops, op)  # may be retried otherwise: not done yet
        progress.add(result, sum(c.done_ops for c in clients))


def restart(
    c: ClientProcess,
    fork: Callable[[Any], tuple[BaseProcess, multiprocessing.connection.Connection]],
    duration: float | None,
    transactions: int,
    clients_until: float,
) -> bool:
    """Start a killed client again as a new process (new txids), going on with
    the operations it had not finished. False if nothing is left to do."""
    config = resumed_config(c, duration, transactions, clients_until)
    if config is None:
        return False
    c.proc, c.conn = fork(config)
    await_ready(c.name, c.proc, c.conn, time.monotonic() + 2 * READY_TIMEOUT)
    c.running, c.killed = True, False
    return True
