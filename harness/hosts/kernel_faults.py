"""Network faults made by the kernel, in a netns run: nftables drop rules and tc token buckets.

Theory of operation. Every node's traffic to another node crosses the run's
bridge, in the hub namespace (harness.hosts.netns). One nftables table of the
run, ``bridge h2pc_<id>``, hooks the bridge's forward path, so a rule there
sees each frame between two nodes (never the runner's own STATUS queries,
which the bridge delivers to itself). A fault is a set of rules; the chain is
rewritten from the set of active faults in one ``nft -f`` transaction each
time one is applied or healed, so a heal is atomic and idempotent (healing a
healed fault rewrites the same chain). A dropped frame is silent: no reset, no
ICMP; the sender's TCP retransmits into the void until the fault heals or the
protocol's own timeouts give up, as across a real partition.

* partitions: ``ip saddr A ip daddr B drop`` (one-way), both directions
  (symmetric), a node isolated, a majority/minority split of the participants,
  a ring of grudges (each participant hears only the next ones, a majority
  that no two share; Jepsen's majorities ring);
* loss: ``numgen random mod 100 < P drop`` on every frame to and from a node
  (the kernel's random numbers, not the run's seed: the kernel does not take one);
* bandwidth: a ``tc tbf`` token bucket on both ends of a node's veth (what it
  sends and what it receives), a tc qdisc and not an nft rule;
* delay: netem where the kernel has it (:func:`has_netem`); this project's
  kernel does not, so delay stays with the fault proxy of loopback runs;
* between phases: frames from client1 to server2 whose TCP payload starts
  with ``COMMIT `` are dropped (votes get out, COMMITs do not).

:meth:`KernelFaults.leftovers` lists every rule and qdisc of ours still in
place; the runner asserts it is empty after healing. Deleting the run's
namespaces removes the table and the qdiscs in any case.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from harness.hosts.netns import NetnsError, Network, in_netns, run_tool

COMMIT_PREFIX = b"COMMIT ".hex()  # the payload a between-phases fault drops


class Scheme(enum.StrEnum):
    """A partition's shape, as nemesis.log names it."""

    ISOLATE = "isolate"  # one participant cut from every node, both ways
    ONE_WAY = "one-way"  # one direction between two nodes dropped
    CLIENT = "client"  # a client cut from a participant, both ways
    PEERS = "peers"  # two participants cut from each other, both ways
    SPLIT = "split"  # participants split into a majority and a minority
    RING = "ring"  # each participant hears only a majority no other shares


@dataclass(frozen=True)
class KernelFault:
    """What one fault does: its description, its nft rules, its token buckets (node, kbit/s)."""

    what: str
    rules: tuple[str, ...] = ()
    buckets: tuple[tuple[str, int], ...] = ()
    delays: tuple[tuple[str, int], ...] = ()  # (node, milliseconds): netem, where the kernel has it


def has_netem(net: Network) -> bool:
    """Whether this kernel has netem (delay): tried on the hub's loopback, removed at once."""
    try:
        run_tool(["tc", "-n", net.hub, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    except NetnsError:
        return False
    run_tool(["tc", "-n", net.hub, "qdisc", "del", "dev", "lo", "root"])
    return True


class KernelFaults:
    """The run's nft table and token buckets: apply, heal, list what is left."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.table = "h2pc_" + net.prefix[len("h2pc-") : -1]
        self.active: dict[int, KernelFault] = {}
        in_netns(net.hub, "nft", "-f", "-", stdin=self._ruleset())
        self.netem = has_netem(net)

    def addr(self, node: str) -> str:
        return self.net.nodes[node]

    def _ruleset(self) -> str:
        rules = [r for f in self.active.values() for r in f.rules]
        body = "".join(f"    {r}\n" for r in rules)
        # "add table" then "flush chain" makes the transaction idempotent: the
        # chain ends up holding exactly the active faults' rules.
        return (
            f"add table bridge {self.table}\n"
            f"add chain bridge {self.table} filter {{ type filter hook forward priority 0; policy accept; }}\n"
            f"flush chain bridge {self.table} filter\n"
            f"table bridge {self.table} {{\n  chain filter {{\n{body}  }}\n}}\n"
        )

    def apply(self, fid: int, fault: KernelFault) -> None:
        self.active[fid] = fault
        in_netns(self.net.hub, "nft", "-f", "-", stdin=self._ruleset())
        if fault.delays and not self.netem:
            raise NetnsError("this kernel has no netem: delay needs the fault proxy (--network loopback)")
        shaped = [(n, ["tbf", "rate", f"{kbit}kbit", "burst", "16kb", "latency", "200ms"]) for n, kbit in fault.buckets]
        shaped += [(n, ["netem", "delay", f"{ms}ms"]) for n, ms in fault.delays]
        for node, spec in shaped:
            for ns, dev in self._ends(node):
                run_tool(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", *spec])

    def heal(self, fid: int) -> None:
        """Undo fault ``fid``; healing one already healed changes nothing."""
        fault = self.active.pop(fid, None)
        in_netns(self.net.hub, "nft", "-f", "-", stdin=self._ruleset())
        for node, _ in (fault.buckets + fault.delays) if fault is not None else ():
            if any(node == n for f in self.active.values() for n, _ in f.buckets + f.delays):
                continue
            for ns, dev in self._ends(node):
                try:
                    run_tool(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"])
                except NetnsError as e:
                    if "No such file" not in str(e) and "handle of zero" not in str(e):
                        raise

    def heal_all(self) -> None:
        for fid in list(self.active):
            self.heal(fid)

    def _ends(self, node: str) -> list[tuple[str, str]]:
        """Both ends of a node's veth: its eth0 (what it sends), the bridge's port (what it receives)."""
        return [(self.net.ns(node), "eth0"), (self.net.hub, self.net.veths[node])]

    def leftovers(self) -> list[str]:
        """Every rule and token bucket of ours still in place, as text (empty when all is healed)."""
        out = []
        try:
            listing = in_netns(self.net.hub, "nft", "list", "chain", "bridge", self.table, "filter")
        except NetnsError:
            listing = ""  # no table: no rule
        out += [line.strip() for line in listing.splitlines() if " drop" in line]
        for node in self.net.nodes:
            for ns, dev in self._ends(node):
                qdiscs = run_tool(["tc", "-n", ns, "qdisc", "show", "dev", dev])
                out += [f"{ns} {dev}: {q.strip()}" for q in qdiscs.splitlines() if " tbf " in q or " netem " in q]
        return out

    def close(self) -> None:
        """Heal everything and remove the table (the namespaces' deletion would too)."""
        self.heal_all()
        in_netns(self.net.hub, "nft", "delete", "table", "bridge", self.table)


# ------------------------------------------------------------ the faults themselves


def drop(src: str, dst: str, net: Network) -> str:
    return f"ip saddr {net.nodes[src]} ip daddr {net.nodes[dst]} drop"


def both_ways(a: str, b: str, net: Network) -> tuple[str, ...]:
    return drop(a, b, net), drop(b, a, net)


def isolate(node: str, net: Network) -> KernelFault:
    a = net.nodes[node]
    return KernelFault(f"{node} isolated", (f"ip saddr {a} drop", f"ip daddr {a} drop"))


def one_way(src: str, dst: str, net: Network) -> KernelFault:
    return KernelFault(f"{src} -> {dst} dropped, one way", (drop(src, dst, net),))


def split(minority: list[str], majority: list[str], net: Network) -> KernelFault:
    lo = ", ".join(net.nodes[n] for n in minority)
    hi = ", ".join(net.nodes[n] for n in majority)
    rules = (f"ip saddr {{ {lo} }} ip daddr {{ {hi} }} drop", f"ip saddr {{ {hi} }} ip daddr {{ {lo} }} drop")
    return KernelFault(f"{','.join(minority)} split from {','.join(majority)}", rules)


def ring(servers: list[str], net: Network) -> KernelFault:
    """Participant i hears only from the next n//2 participants (its majority,
    with itself); the others' frames to it are dropped."""
    n = len(servers)
    rules = []
    for i, node in enumerate(servers):
        heard = {servers[(i + k) % n] for k in range(n // 2 + 1)}
        rules += [drop(other, node, net) for other in servers if other not in heard]
    return KernelFault(
        "ring: " + ", ".join(f"{s} hears {servers[(i + 1) % n]}" for i, s in enumerate(servers)), tuple(rules)
    )


def loss(node: str, percent: int, net: Network) -> KernelFault:
    a = net.nodes[node]
    rules = (
        f"ip saddr {a} numgen random mod 100 < {percent} drop",
        f"ip daddr {a} numgen random mod 100 < {percent} drop",
    )
    return KernelFault(f"{node} loses {percent}% of frames", rules)


def bandwidth(node: str, kbit: int) -> KernelFault:
    return KernelFault(f"{node} limited to {kbit} kbit/s", buckets=((node, kbit),))


def delay(node: str, ms: int) -> KernelFault:
    return KernelFault(f"{node} delayed {ms} ms each way", delays=((node, ms),))


def between_phases(client: str, server: str, net: Network) -> KernelFault:
    """Frames from ``client`` to ``server`` that carry a COMMIT (its payload's first bytes) dropped."""
    bits = len(COMMIT_PREFIX) * 4
    rule = f"ip saddr {net.nodes[client]} ip daddr {net.nodes[server]} @ih,0,{bits} 0x{COMMIT_PREFIX} drop"
    return KernelFault(f"{client} -> {server} COMMITs dropped", (rule,))


def draw_partition(
    rng: random.Random, servers: list[str], clients: list[str], net: Network
) -> tuple[Scheme, KernelFault]:
    """A partition for the nemesis, from the run's seed."""
    schemes = [Scheme.ISOLATE] + ([Scheme.CLIENT] if clients else [])
    if len(servers + clients) > 1:
        schemes.append(Scheme.ONE_WAY)
    if len(servers) > 1:
        schemes += [Scheme.PEERS, Scheme.SPLIT]
    if len(servers) > 2:
        schemes.append(Scheme.RING)
    scheme = rng.choice(schemes)
    if scheme is Scheme.ISOLATE:
        return scheme, isolate(rng.choice(servers), net)
    if scheme is Scheme.ONE_WAY:
        a, b = rng.sample(servers + clients, 2)
        return scheme, one_way(a, b, net)
    if scheme is Scheme.CLIENT:
        c, s = rng.choice(clients), rng.choice(servers)
        return scheme, KernelFault(f"{c} cut from {s}", both_ways(c, s, net))
    if scheme is Scheme.PEERS:
        a, b = rng.sample(servers, 2)
        return scheme, KernelFault(f"{a} cut from {b}", both_ways(a, b, net))
    if scheme is Scheme.SPLIT:
        shuffled = rng.sample(servers, len(servers))
        cut = (len(servers) - 1) // 2 or 1
        return scheme, split(shuffled[:cut], shuffled[cut:], net)
    return scheme, ring(servers, net)
