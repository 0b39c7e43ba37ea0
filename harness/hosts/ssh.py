"""Remote hosts over OpenSSH: the inventory file, the commands, and the relay of a remote node.

Theory of operation. ``harness.run --hosts FILE`` reads an inventory (TOML)::

    [defaults]                      # every key may also be set per host
    user = "h2pc"
    key = "~/.ssh/id_ed25519"       # the private key ssh uses (-i)
    python = "/usr/bin/python3"     # a Python with this package installed
    dir = "/tmp/h2pc"               # where the run's files go on the host
    port = 22
    known_hosts = "~/.ssh/known_hosts"
    env = { PYTHONPATH = "/opt/2pc" }   # set for the remote command

    clients = "hosts"               # optional: clients on the hosts too (default "local")
    private_network = true          # optional: only these hosts reach each other's addresses,
                                    # so participants may listen without --tls (default false)

    [[host]]
    address = "192.0.2.10"
    [[host]]
    address = "192.0.2.11"

The runner opens one master connection per host (``ssh -M``, its socket in a
private temporary directory) and every later command shares it, so a kill or a
pause costs a round trip, not a key exchange; the masters are stopped by
handle at the end, and die with the runner.

Participant i runs on host ``(i-1) mod len(hosts)``, listening on the host's
address and ``--base-port + i - 1``; with ``clients = "hosts"``, client i runs
on host ``(i-1) mod len(hosts)`` too, else on the runner's machine. Everything goes through the ``ssh``
command (BatchMode: a key, never a password prompt):

* a node is ``ssh HOST 'cd DIR && env ... PYTHON -m harness.experiment.remote
  participant CONFIG'`` (or ``client``), run by a *relay*: a local child of the runner that
  turns the remote's JSON lines on standard output into the pipe messages a
  local child would send (``ready``, ``error``), and exits as the remote did
  (killed by SIGKILL there: killed by SIGKILL here), so the runner handles a
  remote node like a local one. The remote command is not ``exec``'d, so the
  remote shell reports a signal as 128+N;
* the remote node writes its pid to ``DIR/<node>.pid``; kill, pause and resume
  are ``ssh HOST kill -SIG $(cat DIR/<node>.pid)``;
* the remote node stops when its standard input closes: when the runner stops
  the relay, and when the runner or the relay dies (the relay asks the kernel
  to kill its ssh should it die), so nothing is left running on the hosts;
* at the end, ``ssh HOST tar -C DIR -cf - .`` brings the logs and storage
  files home into the run folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import io
import json
import multiprocessing.connection
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULTS = {"user": "root", "python": "python3", "dir": "/tmp/h2pc", "port": 22}
HOST_KEYS = {"address", "user", "key", "python", "dir", "port", "known_hosts", "env"}
SSH_TIMEOUT = 30.0  # seconds for one short command (mkdir, kill, tar)


class InventoryError(Exception):
    """The inventory file cannot be read, or names a host badly."""


@dataclass(frozen=True)
class Host:
    address: str
    user: str = "root"
    key: str | None = None
    python: str = "python3"
    dir: str = "/tmp/h2pc"
    port: int = 22
    known_hosts: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    control: str | None = None  # the socket of this run's master connection to the host, once it has one

    def _options(self) -> list[str]:
        argv = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(self.known_hosts)}"]
            argv += ["-o", "StrictHostKeyChecking=yes"]
        if self.key:
            argv += ["-i", os.path.expanduser(self.key), "-o", "IdentitiesOnly=yes"]
        return [*argv, "-p", str(self.port), "-l", self.user]

    def ssh(self, *command: str) -> list[str]:
        """The argv of ``ssh`` running ``command`` (one shell string) on this host,
        over the run's master connection if it has one."""
        control = ["-o", f"ControlPath={self.control}", "-o", "ControlMaster=no"] if self.control else []
        return ["ssh", *control, *self._options(), self.address, "--", *command]

    def master(self, control: str) -> list[str]:
        """The argv of a master connection (no command) that later ``ssh`` commands share."""
        return [
            "ssh",
            "-M",
            "-N",
            "-o",
            f"ControlPath={control}",
            "-o",
            "ControlPersist=no",
            *self._options(),
            self.address,
        ]

    def check_master(self) -> bool:
        """Whether this host's master connection is up."""
        argv = ["ssh", "-o", f"ControlPath={self.control}", "-O", "check", *self._options(), self.address]
        return subprocess.run(argv, capture_output=True, timeout=SSH_TIMEOUT).returncode == 0

    def python_command(self, workdir: str, module: str, *args: str) -> str:
        """A shell command on the host: in ``workdir``, run ``python -m module args``."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        py = shlex.join([self.python, "-m", module, *args])
        return f"cd {shlex.quote(workdir)} && {'env ' + env + ' ' if env else ''}{py}"

    def run(self, command: str, timeout: float = SSH_TIMEOUT) -> bytes:
        """Run a short command on the host; InventoryError with its message if it fails."""
        try:
            done = subprocess.run(self.ssh(command), capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InventoryError(f"ssh {self.address}: {e}") from None
        if done.returncode != 0:
            raise InventoryError(f"ssh {self.address} {command!r}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout


@dataclass(frozen=True)
class Inventory:
    hosts: list[Host]
    remote_clients: bool = False  # clients on the hosts too, not on the runner's machine
    private_network: bool = False  # the operator vouches: nothing else reaches the hosts' addresses


def read_inventory(path: Path) -> Inventory:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InventoryError(f"{path}: {e}") from None
    unknown_top = set(data) - {"defaults", "host", "clients", "private_network"}
    if unknown_top:
        raise InventoryError(f"{path}: unknown keys {', '.join(sorted(unknown_top))}")
    if data.get("clients", "local") not in ("local", "hosts"):
        raise InventoryError(f'{path}: clients must be "local" or "hosts"')
    defaults = {**DEFAULTS, **data.get("defaults", {})}
    hosts = []
    for i, entry in enumerate(data.get("host", []), 1):
        merged = {**defaults, **entry}
        unknown = set(merged) - HOST_KEYS
        if unknown:
            raise InventoryError(f"{path}: host {i}: unknown keys {', '.join(sorted(unknown))}")
        if "address" not in merged:
            raise InventoryError(f"{path}: host {i} has no address")
        try:
            hosts.append(Host(**merged))
        except TypeError as e:
            raise InventoryError(f"{path}: host {i}: {e}") from None
    if not hosts:
        raise InventoryError(f"{path}: no [[host]] entries")
    if not isinstance(data.get("private_network", False), bool):
        raise InventoryError(f"{path}: private_network must be true or false")
    return Inventory(
        hosts, remote_clients=data.get("clients") == "hosts", private_network=data.get("private_network", False)
    )


def fetch_dirs(sources: list[tuple[Host, str]], local: Path) -> None:
    """Copy each host's remote directory's files (but pid files) into ``local``:
    tar streams over ssh, from every host at once."""
    with concurrent.futures.ThreadPoolExecutor(max(1, len(sources))) as pool:
        streams = list(
            pool.map(lambda s: s[0].run(f"tar -C {shlex.quote(s[1])} --exclude=*.pid -cf - .", timeout=120), sources)
        )
    for data in streams:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            bad = [m.name for m in tar.getmembers() if m.name.startswith("/") or ".." in Path(m.name).parts]
            if bad or any(not (m.isfile() or m.isdir()) for m in tar.getmembers()):
                raise InventoryError(f"a host sent files outside its run directory or not plain: {bad}")
            tar.extractall(local)  # names checked above (Pythons before 3.11.4 lack tarfile filters)


# ------------------------------------------------------------ the relay: a local child per remote node


def die_with_parent() -> None:
    """In a child about to exec ssh: the kernel kills it should its parent die."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def relay(argv: list[str], conn: multiprocessing.connection.Connection, go: Any = None) -> None:
    """Run ``ssh`` for a remote node; forward its JSON lines as pipe messages;
    once it is ready and ``go`` (an Event) is set, tell it ``go``; exit as it
    exited. SIGTERM closes the remote's standard input: it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent)
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def stop(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def start_when_go() -> None:
        go.wait()
        with contextlib.suppress(OSError, ValueError):
            stdin.write(b"go\n")
            stdin.flush()

    signal.signal(signal.SIGTERM, stop)
    for raw in proc.stdout:
        try:
            kind, payload = json.loads(raw)
        except ValueError:
            sys.stderr.write(raw.decode(errors="replace"))  # not ours: show it
            continue
        with contextlib.suppress(OSError):
            conn.send((kind, payload))
        if kind == "ready" and go is not None:
            threading.Thread(target=start_when_go, daemon=True).start()
    code = proc.wait()
    if 128 < code < 128 + signal.NSIG:
        signal.signal(code - 128, signal.SIG_DFL)
        os.kill(os.getpid(), code - 128)  # die as the remote node died
    sys.exit(code)


def encode(config: Any) -> str:
    """A dataclass of paths, numbers, strings and dataclasses of those as one JSON argument."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {k: plain(x) for k, x in vars(v).items()}
        return v

    return json.dumps({k: plain(v) for k, v in vars(config).items()})
