"""What a remote host runs for the runner: ``python -m harness.hosts.remote participant CONFIG``.

Theory of operation. Started over SSH by the runner's relay
(harness.hosts.ssh), in the run's directory on the host. It writes its pid to
``<node>.pid`` there (kill, pause and resume are ``kill`` on that pid), runs a
participant from CONFIG (the JSON of a ParticipantConfig, paths relative to the
run's directory), and speaks to the relay in JSON lines on standard output:
``["ready", [host, port]]`` once it listens, ``["error", text]`` if it cannot
start. It stops, as on SIGTERM, when its standard input closes: the relay
stopped it, or the connection or the runner died.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path

from harness.node.serve import ParticipantConfig, StartError, serve


def _say(kind: str, payload: object) -> None:
    sys.stdout.write(json.dumps([kind, payload]) + "\n")
    sys.stdout.flush()


def participant_config(blob: str) -> ParticipantConfig:
    data = json.loads(blob)
    names = {f.name for f in dataclasses.fields(ParticipantConfig)} - {"sock", "routes"}
    config = ParticipantConfig(**{k: v for k, v in data.items() if k in names})
    config.data = Path(config.data)
    config.log = Path(config.log) if config.log is not None else None
    return config


async def run_participant(config: ParticipantConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stdin_readable() -> None:
        if not os.read(0, 4096):  # EOF: the relay, the connection or the runner is gone
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, stdin_readable)
    await serve(config, ready=lambda address: _say("ready", list(address)), stop=stop)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "participant":
        print("usage: python -m harness.hosts.remote participant CONFIG_JSON", file=sys.stderr)
        return 2
    config = participant_config(argv[1])
    Path(f"{config.node}.pid").write_text(f"{os.getpid()}\n")
    config.data.parent.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run_participant(config))
    except StartError as e:
        _say("error", str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
