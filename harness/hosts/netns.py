"""Network namespaces for a run: a host of its own for every node, on a bridge the run makes.

Theory of operation. A run in ``--network netns`` mode makes, with ``ip``:

* a hub namespace ``<prefix>hub`` holding a bridge ``br0`` with the address
  ``10.213.0.1/16``: the runner's side. The runner enters it for the length of
  the run (its STATUS queries go over the bridge), and every nftables rule and
  token bucket of the run lives there or in a node's namespace;
* one namespace per node, ``<prefix>server1``, ``<prefix>client3``, ..., joined
  to the bridge by a veth pair (``eth0`` inside, ``v<i>`` on the bridge), with an
  address of its own: participants ``10.213.1.<i>``, clients ``10.213.4.<i>``
  onwards (see :func:`node_address`).

No namespace has an uplink or a default route: the only route anywhere is the
bridge's /16, so nothing a node sends can leave the run's namespaces.

Everything is named by the run's prefix ``h2pc-<6 hex>-``, made before anything
else and registered in ``/run/h2pc/<prefix>.json`` with the runner's pid and
start time (and in the run folder's ``network.json``). Deleting the namespaces
removes everything inside them (veths, the bridge, nft tables, qdiscs), so
cleanup is: delete every namespace whose name starts with the prefix. A runner
that was SIGKILLed cannot do it; :func:`cleanup_abandoned` (run by every later
netns run and by ``harness.run --cleanup``) does it for every registered prefix
whose runner is gone, and names nothing it did not register.

A process enters a namespace with setns(2) (:func:`enter`): the runner's forked
children enter their node's namespace before they run, and a socket made while
a thread is in a namespace stays there, which is how the runner binds a
participant's port inside its namespace before starting it.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")  # where ``ip netns add`` mounts a namespace's name
REGISTRY = Path("/run/h2pc")  # one file per live (or abandoned) run: its prefix and its runner
PREFIX_HEAD = "h2pc-"
SUBNET = "10.213"  # private, used only on a run's own bridge (a /16)
HUB_ADDRESS = f"{SUBNET}.0.1"
MASK = 16
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetworkMode(enum.StrEnum):
    """Where a run's nodes live (``--network``)."""

    LOOPBACK = "loopback"  # every node on 127.0.0.1; network faults through the fault proxy
    NETNS = "netns"  # a namespace and an address per node; network faults made by the kernel


class NetnsError(Exception):
    """A namespace, link or address could not be made, or this process may not make them."""


def check_root() -> str | None:
    """Why netns mode cannot run here (one line), or None if it can."""
    if os.geteuid() != 0:
        return "--network netns needs root (network namespaces, nftables, tc): run it as root, or use loopback"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"--network netns needs the {tool!r} command (Debian: apt-get install iproute2 nftables)"
    return None


def new_prefix() -> str:
    """A prefix no namespace or registration uses yet."""
    while True:
        prefix = f"{PREFIX_HEAD}{secrets.token_hex(3)}-"
        if not (REGISTRY / f"{prefix}json").exists() and not any(n.startswith(prefix) for n in list_namespaces()):
            return prefix


# Each role's block of the /16: its first third octet and how many /24s it may span.
BLOCKS = {"server": (1, 1), "host": (3, 1), "client": (4, 200)}


def node_address(node: str) -> str:
    """server<i> -> 10.213.1.<i>; host<i> -> 10.213.3.<i>; client<i> -> 10.213.<4 + (i-1)//250>.<(i-1)%250 + 1>."""
    role = node.rstrip("0123456789")
    number = node[len(role) :]
    if role in BLOCKS and number.isdigit() and int(number) >= 1:
        third, blocks = BLOCKS[role]
        i = int(number) - 1
        if i < 250 * blocks:
            return f"{SUBNET}.{third + i // 250}.{i % 250 + 1}"
    raise NetnsError(f"no address for node {node!r} (server1..250, host1..250, client1..50000)")


def ip(*args: str, stdin: str | None = None) -> str:
    """Run ``ip ARGS``; NetnsError with its message if it fails."""
    return run_tool(["ip", *args], stdin)


def run_tool(argv: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{argv[0]}: {e}") from None
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv[:6])}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def in_netns(ns: str, *argv: str, stdin: str | None = None) -> str:
    """Run a command inside namespace ``ns``."""
    return run_tool(["ip", "netns", "exec", ns, *argv], stdin)


def list_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def enter(ns: str) -> None:
    """Move the calling thread (a forked child: the process) into namespace ``ns``."""
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """The calling thread inside ``ns`` for the block, back where it was after."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(ns)
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise NetnsError(f"setns back from {ns}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(home)


@dataclass
class Network:
    """One run's namespaces: the hub and a namespace per node."""

    prefix: str
    nodes: dict[str, str] = field(default_factory=dict)  # node -> its address
    veths: dict[str, str] = field(default_factory=dict)  # node -> its veth on the bridge (in the hub)

    @property
    def hub(self) -> str:
        return f"{self.prefix}hub"

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    @classmethod
    def create(cls, nodes: list[str], folder: Path | None = None, prefix: str | None = None) -> Network:
        """Register the prefix, then make the hub, the bridge and a namespace per node.
        On failure whatever was made is removed before NetnsError is raised."""
        net = cls(prefix or new_prefix())
        register(net.prefix, folder)
        try:
            net._make(nodes)
        except BaseException:
            net.destroy()
            raise
        if folder is not None:
            net.write(folder / "network.json")
        return net

    def _make(self, nodes: list[str]) -> None:
        ip("-batch", "-", stdin="".join(f"netns add {self.ns(n)}\n" for n in ["hub", *nodes]))
        hub = [
            "link set lo up",
            "link add br0 type bridge",
            f"addr add {HUB_ADDRESS}/{MASK} dev br0",
            "link set br0 up",
        ]
        for i, node in enumerate(nodes, 1):
            self.nodes[node] = node_address(node)
            self.veths[node] = f"v{i}"
            hub += [f"link add v{i} type veth peer name eth0 netns {self.ns(node)}", f"link set v{i} master br0 up"]
        ip("-n", self.hub, "-batch", "-", stdin="\n".join(hub) + "\n")
        for node, address in self.nodes.items():
            ip(
                "-n",
                self.ns(node),
                "-batch",
                "-",
                stdin=f"link set lo up\nlink set eth0 up\naddr add {address}/{MASK} dev eth0\n",
            )

    def write(self, path: Path) -> None:
        data = {"prefix": self.prefix, "hub": self.hub, "hub_address": HUB_ADDRESS, "nodes": self.nodes}
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def leftovers(self) -> list[str]:
        """The run's namespaces that still exist."""
        return [n for n in list_namespaces() if n.startswith(self.prefix)]

    def destroy(self) -> None:
        """Delete every namespace of the run (and with them every link, rule and
        qdisc in them), then its registration. Idempotent."""
        remove_prefix(self.prefix)


def remove_prefix(prefix: str) -> list[str]:
    """Delete the namespaces named ``prefix*`` and the prefix's registration; the names removed."""
    assert prefix.startswith(PREFIX_HEAD) and prefix.endswith("-") and len(prefix) > len(PREFIX_HEAD) + 1
    gone = [n for n in list_namespaces() if n.startswith(prefix)]
    for name in gone:
        with contextlib.suppress(NetnsError):  # gone meanwhile: fine
            ip("netns", "delete", name)
    with contextlib.suppress(FileNotFoundError):
        (REGISTRY / f"{prefix}json").unlink()
    return gone


# ------------------------------------------------------------ registration and cleanup


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def register(prefix: str, folder: Path | None) -> None:
    """Record that this process owns ``prefix``, before anything is made under it."""
    REGISTRY.mkdir(mode=0o755, exist_ok=True)
    entry = {"prefix": prefix, "pid": os.getpid(), "start": _start_time(os.getpid()), "folder": str(folder or "")}
    (REGISTRY / f"{prefix}json").write_text(json.dumps(entry) + "\n")


def registered() -> list[dict[str, object]]:
    out = []
    for path in sorted(REGISTRY.glob(f"{PREFIX_HEAD}*json")) if REGISTRY.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def cleanup_abandoned() -> list[str]:
    """Remove what runners that are gone left behind (their namespaces, and so
    their links, rules and qdiscs); never a live run's. The names removed."""
    removed: list[str] = []
    for entry in registered():
        pid, start, prefix = entry.get("pid"), entry.get("start"), str(entry.get("prefix", ""))
        if isinstance(pid, int) and _start_time(pid) == start and start is not None:
            continue  # its runner is alive: its namespaces are in use
        if prefix.startswith(PREFIX_HEAD) and prefix.endswith("-"):
            removed += remove_prefix(prefix)
    return removed
