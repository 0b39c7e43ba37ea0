"""What a remote host runs for the runner: ``python -m harness.experiment.remote participant|client CONFIG``.

Theory of operation. Started over SSH by the runner's relay
(harness.hosts.ssh), in the run's directory on the host. It writes its pid to
``<node>.pid`` there (kill, pause and resume are ``kill`` on that pid), runs a
participant or a client from CONFIG (JSON; paths relative to the run's
directory), and speaks to the relay in JSON lines on standard output, the
messages a local child sends over its pipe (harness.experiment.children):
``["ready", payload]``, ``["error", text]``, and for a client ``["result",
[op, attempt, result]]`` and ``["done", null]``. A client waits for a ``go``
line on standard input before its first transaction (the runner's start
signal, forwarded by the relay). Either stops, as on SIGTERM, when its
standard input closes: the relay stopped it, or the connection or the runner
died.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from harness.experiment import workload
from harness.experiment.config import client_values
from harness.node import event_loop
from harness.node.client_node import ConnectError, TxResult
from harness.node.limits import Limits
from harness.node.serve import ParticipantConfig, StartError, serve
from harness.protocol.conflict import ConflictPolicy


def say(kind: str, payload: object) -> None:
    sys.stdout.write(json.dumps([kind, payload]) + "\n")
    sys.stdout.flush()


def encode_client(config: workload.ClientConfig, index: int, fixed: int | None) -> str:
    """A ClientConfig as JSON: its value function as the (index, fixed value) it was made from."""
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "values"}
    data["log"] = str(config.log) if config.log is not None else None
    data["servers"] = [list(s) for s in config.servers]
    data["values"] = [index, fixed]
    return json.dumps(data)


def client_config(blob: str) -> workload.ClientConfig:
    data = json.loads(blob)
    index, fixed = data.pop("values")
    config = workload.ClientConfig(**data, values=client_values(index, fixed))
    config.servers = [(h, int(p)) for h, p in config.servers]
    config.log = Path(config.log) if config.log is not None else None
    config.retry = workload.RetryMode(config.retry)
    config.prepare = workload.PrepareMode(config.prepare)
    return config


def participant_config(blob: str) -> ParticipantConfig:
    data = json.loads(blob)
    names = {f.name for f in dataclasses.fields(ParticipantConfig)} - {"sock", "routes"}
    config = ParticipantConfig(**{k: v for k, v in data.items() if k in names})
    config.data = Path(config.data)
    config.log = Path(config.log) if config.log is not None else None
    config.tls = Path(config.tls) if config.tls is not None else None
    config.cluster = tuple(config.cluster) if config.cluster is not None else None
    config.limits = Limits(**cast(dict[str, Any], config.limits))
    config.conflict = ConflictPolicy(config.conflict)
    return config


def _watch_stdin(on_line: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    buffered = b""

    def readable() -> None:
        nonlocal buffered
        chunk = os.read(0, 4096)
        if not chunk:  # EOF: the relay, the connection or the runner is gone
            loop.remove_reader(0)
            on_eof()
            return
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            on_line(line)

    loop.add_reader(0, readable)


async def run_participant(config: ParticipantConfig) -> None:
    stop = asyncio.Event()
    _watch_stdin(lambda line: None, stop.set)
    await serve(config, ready=lambda address: say("ready", list(address)), stop=stop)


async def run_client(config: workload.ClientConfig) -> None:
    go = asyncio.Event()
    stopped = asyncio.Event()

    def on_eof() -> None:
        stopped.set()
        go.set()

    _watch_stdin(lambda line: go.set() if line.strip() == b"go" else None, on_eof)

    async def wait_go() -> None:
        await go.wait()
        if stopped.is_set():
            raise SystemExit(0)  # stopped before the start: nothing to do

    def on_result(op: int, attempt: int, result: TxResult) -> None:
        say("result", [op, attempt, result.result.value])

    task = asyncio.ensure_future(workload.run(config, on_result, go=wait_go, connected=lambda: say("ready", None)))
    stop_wait = asyncio.ensure_future(stopped.wait())
    await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    if not task.done():  # told to stop mid-run: as on SIGTERM
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return
    task.result()
    say("done", None)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("participant", "client"):
        print("usage: python -m harness.experiment.remote participant|client CONFIG_JSON", file=sys.stderr)
        return 2
    role, blob = argv
    config: Any = participant_config(blob) if role == "participant" else client_config(blob)
    name = config.node if role == "participant" else config.name
    Path(f"{name}.pid").write_text(f"{os.getpid()}\n")
    try:
        if role == "participant":
            config.data.parent.mkdir(parents=True, exist_ok=True)
            event_loop.run(run_participant(config))
        else:
            event_loop.run(run_client(config))
    except (StartError, ConnectError) as e:
        say("error", str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
