"""Where a run's nodes live and how the runner reaches them: the launcher behind ``--network`` and ``--hosts``.

Theory of operation. The runner asks its placement four things, and nothing
else about where nodes live:

* ``listen(node, port)``: a listening socket for a participant, bound before
  anything starts (so every address is known), or None where the node binds
  its own port (a remote host);
* ``start(procs, node, target, args, keep)``: a process for a node, by handle;
* ``signal(node, proc, sig)``: SIGKILL, SIGSTOP, SIGCONT for the nemesis;
* ``collect(folder)``: bring logs and storage files home at the end.

:class:`Placement` itself forks on this machine, every node on 127.0.0.1 (the default).
:class:`Netns` makes a namespace per node (harness.hosts.netns), enters the
hub for the length of the run, binds each participant's socket inside its
namespace and forks each child into its own; its network faults are made by
the kernel (:attr:`kernel`). :class:`Ssh` starts participants (and, if the
inventory says so, clients) on remote hosts, through a relay per node
(harness.hosts.ssh).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from harness.experiment.config import RunConfig
from harness.experiment.processes import STOP_TIMEOUT, Processes, RunError
from harness.experiment.remote import encode_client
from harness.hosts import netns, ssh
from harness.hosts.kernel_faults import KernelFaults
from harness.node.address import listen_socket
from harness.node.serve import ParticipantConfig


class Placement:
    """Where nodes live. This base places every node in a local process on
    ``host`` (127.0.0.1 by default): loopback, the default mode."""

    kernel: KernelFaults | None = None  # network faults made by the kernel, where there are
    shared_clock = True  # every node's log stamped by this machine's clock
    # Only the run's own nodes reach the addresses participants listen on, so
    # they may listen without TLS (harness.node.tls.check_bind): loopback needs
    # no such word, the run's namespaces are private, remote hosts only when
    # their inventory says so.
    private_network = False

    def __init__(self, host: str) -> None:
        self.host = host

    def open(self, participants: list[str], clients: list[str]) -> None:
        """Make whatever the nodes need before any starts."""

    def listen(self, node: str, port: int) -> socket.socket | None:
        return listen_socket(self.host, port)

    def address(self, node: str) -> str:
        """The address a node (a participant) listens on."""
        return self.host

    def start(
        self,
        procs: Processes,
        node: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        keep: socket.socket | None = None,
    ) -> BaseProcess:
        return procs.start(target, args, node, keep=keep)

    def signal(self, node: str, proc: BaseProcess, sig: signal.Signals) -> None:
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # gone already: nothing to signal
                os.kill(proc.pid, sig)

    def local(self, path: Path) -> Path:
        """Where a node's file (its log, its storage) is on this machine once collected."""
        return path

    def collect(self, folder: Path) -> None:
        """Bring every node's files into the run folder (they are there already)."""

    def check_healed(self) -> None:
        """RunError if a fault of the run is still in place after healing."""

    def close(self) -> None:
        """Remove whatever open() made. Idempotent."""


class Netns(Placement):
    """Every node in a network namespace of its own, on the run's bridge."""

    private_network = True  # the bridge has no uplink and no route: only the run's namespaces reach it

    def __init__(self, folder: Path) -> None:
        super().__init__(netns.HUB_ADDRESS)
        self.folder = folder
        self.net: netns.Network | None = None
        self.stack = contextlib.ExitStack()

    def open(self, participants: list[str], clients: list[str]) -> None:
        why = netns.check_root()
        if why is not None:
            raise RunError(why)
        try:
            netns.cleanup_abandoned()  # what runners killed before their end left behind
            self.net = netns.Network.create(participants + clients, self.folder)
            # The runner's side: STATUS queries and readiness go over the bridge.
            self.stack.enter_context(netns.entered(self.net.hub))
            self.kernel = KernelFaults(self.net)
        except netns.NetnsError as e:
            raise RunError(f"--network netns: {e}") from None

    def _net(self) -> netns.Network:
        assert self.net is not None, "open() first"
        return self.net

    def address(self, node: str) -> str:
        return self._net().nodes[node]

    def listen(self, node: str, port: int) -> socket.socket | None:
        net = self._net()
        with netns.entered(net.ns(node)):  # the socket stays in the namespace it was made in
            return listen_socket(net.nodes[node], port)

    def start(
        self,
        procs: Processes,
        node: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        keep: socket.socket | None = None,
    ) -> BaseProcess:
        enter = functools.partial(netns.enter, self._net().ns(node))
        return procs.start(target, args, node, keep=keep, enter=enter)

    def check_healed(self) -> None:
        if self.kernel is None:
            return
        self.kernel.heal_all()
        left = self.kernel.leftovers()
        if left:
            raise RunError("kernel faults still in place after healing: " + "; ".join(left))

    def close(self) -> None:
        try:
            self.stack.close()  # back to the namespace the runner came from
        finally:
            if self.net is not None:
                self.net.destroy()


def for_run(config: RunConfig, folder: Path) -> Placement:
    """The placement ``config`` asks for."""
    if config.hosts is not None:
        return Ssh(config.hosts, folder, config.value)
    if config.network is netns.NetworkMode.NETNS:
        return Netns(folder)
    return Placement(config.host)


class Ssh(Placement):
    """Participants (and, if the inventory says so, clients) on remote hosts over SSH (harness.hosts.ssh)."""

    shared_clock = False  # each host stamps its log with its own clock

    def __init__(self, inventory: Path, folder: Path, value: int | None) -> None:
        super().__init__("")
        self.inventory = inventory
        self.folder = folder
        self.value = value  # --value: a remote client rebuilds its values from it
        self.placed: dict[str, ssh.Host] = {}  # node -> its host
        self.masters: list[subprocess.Popen[bytes]] = []  # one shared connection per host
        self.control_dir: Path | None = None

    def open(self, participants: list[str], clients: list[str]) -> None:
        if shutil.which("ssh") is None:
            raise RunError("--hosts needs the OpenSSH client, ssh (Debian: apt-get install openssh-client)")
        try:
            inventory = ssh.read_inventory(self.inventory)
        except ssh.InventoryError as e:
            raise RunError(f"--hosts: {e}") from None
        self.private_network = inventory.private_network
        n = len(inventory.hosts)
        # Participant i on host (i-1) mod n; client i too, if the inventory puts clients on the hosts.
        where = {node: i % n for i, node in enumerate(participants)}
        if inventory.remote_clients:
            where |= {node: i % n for i, node in enumerate(clients)}
        self.control_dir = Path(tempfile.mkdtemp(prefix="h2pc-ssh-"))  # 0700: the sockets are ours alone
        # Every host's master at once (each costs a key exchange), then wait for each.
        started = {
            i: self._start_master(inventory.hosts[i], str(self.control_dir / str(i))) for i in set(where.values())
        }
        hosts = {i: self._await_master(host, master) for i, (host, master) in started.items()}
        self.placed = {node: hosts[i] for node, i in where.items()}

    def _start_master(self, host: ssh.Host, control: str) -> tuple[ssh.Host, subprocess.Popen[bytes]]:
        """Start the host's master connection: the host using it, and the master."""
        master = subprocess.Popen(host.master(control), stdin=subprocess.DEVNULL, preexec_fn=ssh.die_with_parent)
        self.masters.append(master)
        return dataclasses.replace(host, control=control), master

    def _await_master(self, host: ssh.Host, master: subprocess.Popen[bytes]) -> ssh.Host:
        """``host``, once its master connection is up."""
        assert host.control is not None
        deadline = time.monotonic() + ssh.SSH_TIMEOUT
        while not (os.path.exists(host.control) and host.check_master()):
            if master.poll() is not None:
                raise RunError(
                    f"--hosts: ssh to {host.user}@{host.address}:{host.port} failed (exit {master.returncode})"
                )
            if time.monotonic() > deadline:
                raise RunError(f"--hosts: ssh to {host.address} not up after {ssh.SSH_TIMEOUT:g}s")
            time.sleep(0.02)  # polling ssh's control socket: it announces nothing
        return host

    def _used(self) -> list[ssh.Host]:
        """The hosts that run a participant, each once."""
        return list({id(h): h for h in self.placed.values()}.values())

    def workdir(self, host: ssh.Host) -> str:
        return f"{host.dir}/{self.folder.name}"

    def address(self, node: str) -> str:
        return self.placed[node].address

    def listen(self, node: str, port: int) -> socket.socket | None:
        return None  # the remote participant binds its own port

    def start(
        self,
        procs: Processes,
        node: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        keep: socket.socket | None = None,
    ) -> BaseProcess:
        host = self.placed.get(node)
        if host is None:  # a client on this machine
            return procs.start(target, args, node, keep=keep)
        go = None
        if isinstance(args[0], ParticipantConfig):
            config, conn = args
            remote = dataclasses.replace(
                config, data=Path("data", config.data.name), log=Path(f"{node}.log"), sock=None
            )
            role, blob = "participant", ssh.encode(remote)
        else:
            client, conn, go = args
            role, blob = (
                "client",
                encode_client(dataclasses.replace(client, log=Path(f"{node}.log")), int(node[6:]), self.value),
            )
        command = host.python_command(self.workdir(host), "harness.experiment.remote", role, blob)
        command = f"mkdir -p {shlex.quote(self.workdir(host))} && {command}"
        return procs.start(ssh.relay, (host.ssh(command), conn, go), node)

    def signal(self, node: str, proc: BaseProcess, sig: signal.Signals) -> None:
        host = self.placed.get(node)
        if host is None:
            super().signal(node, proc, sig)
            return
        pidfile = shlex.quote(f"{self.workdir(host)}/{node}.pid")
        try:
            host.run(f"kill -{sig.name[3:]} $(cat {pidfile})")
        except ssh.InventoryError as e:
            # A node that has just exited (a client done with its work) has
            # nothing to signal, as a local zombie has not: its exit is seen anyway.
            if "No such process" not in str(e):
                raise RunError(f"cannot signal {node}: {e}") from None

    def local(self, path: Path) -> Path:
        return path if path.is_absolute() else self.folder / path

    def collect(self, folder: Path) -> None:
        try:
            ssh.fetch_dirs([(host, self.workdir(host)) for host in self._used()], folder)
        except ssh.InventoryError as e:
            raise RunError(f"cannot bring the logs home: {e}") from None

    def close(self) -> None:
        for master in self.masters:
            master.terminate()
        for master in self.masters:
            try:
                master.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait()
        self.masters.clear()
        if self.control_dir is not None:
            shutil.rmtree(self.control_dir, ignore_errors=True)
