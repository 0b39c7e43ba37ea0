"""Fixtures for tests that run real participant and client processes.

Readiness is a line the process prints (a participant echoes its event log on
standard output), read by a thread into a queue: tests wait on that queue with
a timeout and never sleep. Every process a test starts is stopped by its own
handle when the test ends.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.node.address import pick_port

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0  # seconds to wait for a line before the test fails; generous for a loaded CI machine


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class NodeProcess:
    """A harness process whose standard output is read line by line."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first new output line matching ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s; saw:\n" + "\n".join(self.seen[-20:])
                ) from None
            if line is None:
                raise AssertionError(
                    f"process exited ({self.proc.wait()}) before printing {pattern!r}; saw:\n"
                    + "\n".join(self.seen[-20:])
                )
            self.seen.append(line)
            if m := regex.search(line):
                return m

    def wait_exit(self, timeout: float = WAIT) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump_thread.join(5)  # the pipe is at EOF once the process is gone
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Cluster:
    """Participants started by hand, as a person would in terminals: ``size``
    members whose ports are picked up front, so that each is told its cluster."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.workdir = workdir
        self.procs: list[NodeProcess] = []
        self.ports: dict[int, int] = {n: pick_port() for n in range(1, size + 1)}
        self.extra: list[str] = []  # flags for every node (e.g. --tls DIR)

    @property
    def members(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in sorted(self.ports))

    def start_participant(self, n: int, *extra: str) -> NodeProcess:
        port = self.ports.get(n, 0)
        args = ["-m", "harness.participant", str(n), "--port", str(port), "--cluster", self.members]
        proc = NodeProcess([*args, *self.extra, *extra], self.workdir)
        self.procs.append(proc)
        m = proc.wait_for(r" listening addr=127\.0\.0\.1:(\d+) ")
        self.ports[n] = int(m.group(1))
        return proc

    @property
    def servers(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in sorted(self.ports))

    def client(self, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.client", "--servers", self.servers, *self.extra, *args],
            cwd=self.workdir,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_client(self, *args: str) -> NodeProcess:
        proc = NodeProcess(["-m", "harness.client", "--servers", self.servers, *self.extra, *args], self.workdir)
        self.procs.append(proc)
        return proc

    def status(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.status", "--servers", self.servers, *self.extra],
            cwd=self.workdir,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening for the test's duration:
    connecting to it is refused, and nobody else can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


class LineClient:
    """A raw TCP connection speaking the wire protocol by hand, like nc."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.file = self.sock.makefile("rb")
        host, port = self.sock.getsockname()[:2]
        self.name = f"{host}:{port}"  # as the participant names this peer in its log

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, line: str) -> str:
        self.send(line.encode() + b"\n")
        return self.readline()

    def readline(self) -> str:
        return self.file.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()
