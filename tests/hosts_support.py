"""Test support for netns and SSH runs: the root check, and hosts made of namespaces running sshd.

Every namespace made here carries a prefix unique to the test (harness.hosts.netns),
every sshd is stopped by its own handle, and the keys live in the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.hosts import netns

ROOT = Path(__file__).resolve().parent.parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"  # sshd refuses to start by a relative path


def need_root(*tools: str) -> None:
    """Skip, saying why, unless this is root with the tools (CI is)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, tc): runs in CI, which is root")
    missing = [t for t in ("ip", "nft", "tc", *tools) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (CI installs them: .ci/run)")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def wait_port(ns: str, address: str, port: int, deadline: float) -> None:
    """Poll until something accepts on address:port inside ``ns`` (sshd has no readiness signal)."""
    with netns.entered(ns):
        while True:
            try:
                socket.create_connection((address, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"nothing listens on {address}:{port} in {ns}") from None
                time.sleep(0.02)  # polling a daemon that announces nothing


@contextmanager
def ssh_hosts(tmp: Path, count: int = 3, clients: str = "local") -> Iterator[tuple[netns.Network, Path]]:
    """``count`` hosts, each a namespace on a bridge running its own sshd with
    keys made here; yields the network and an inventory file naming them."""
    net = netns.Network.create([f"host{i}" for i in range(1, count + 1)])
    sshds: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        keys = tmp / "keys"
        keys.mkdir()
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
        shutil.copy(keys / "user_key.pub", keys / "authorized_keys")
        host_pub = (keys / "host_key.pub").read_text().split()[:2]
        (keys / "known_hosts").write_text("".join(f"{a} {' '.join(host_pub)}\n" for a in net.nodes.values()))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for node, address in net.nodes.items():
            config = tmp / f"sshd-{node}.conf"
            config.write_text(
                f"ListenAddress {address}\nPort 22\nHostKey {keys / 'host_key'}\n"
                f"AuthorizedKeysFile {keys / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
                f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                f"PidFile {tmp / f'sshd-{node}.pid'}\n"
            )
            logs.append(open(tmp / f"sshd-{node}.log", "wb"))  # noqa: SIM115 - closed in finally
            sshds.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", net.ns(node), SSHD, "-D", "-e", "-f", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=logs[-1],
                )
            )
        deadline = time.monotonic() + 20
        for address in net.nodes.values():
            wait_port(net.hub, address, 22, deadline)
        inventory = tmp / "hosts.toml"
        inventory.write_text(
            # the hosts are namespaces this test made: only they reach each other
            f'clients = "{clients}"\nprivate_network = true\n[defaults]\n'
            f'user = "root"\nkey = "{keys / "user_key"}"\npython = "{sys.executable}"\n'
            f'dir = "{tmp / "remote"}"\nknown_hosts = "{keys / "known_hosts"}"\n'
            f'env = {{ PYTHONPATH = "{ROOT}" }}\n\n'
            + "".join(f'[[host]]\naddress = "{a}"\n' for a in net.nodes.values())
        )
        yield net, inventory
    finally:
        for p in sshds:
            p.terminate()
        for p in sshds:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
        net.destroy()
