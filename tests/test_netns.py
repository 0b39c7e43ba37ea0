"""Nodes in network namespaces, faults made by the kernel, cleanup of what a killed runner left.

Tests that need root (namespaces, nftables, tc) skip elsewhere, saying so; CI
runs them as root. Everything a test makes carries a prefix of its own and is
removed by it; the last tests check that nothing of theirs is left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hosts_support import env, need_root

from harness.experiment.config import RunConfig, with_default_timeouts
from harness.experiment.faults import FaultKind
from harness.experiment.processes import RunError
from harness.experiment.runner import run
from harness.experiment.workload import RetryMode
from harness.hosts import kernel_faults, netns
from harness.hosts.netns import NetworkMode
from harness.run import main as run_main
from harness.verify.checker import check_run

ROOT = Path(__file__).resolve().parent.parent


def _net(nodes: list[str]) -> netns.Network:
    """A Network that names addresses without making anything (for rule text)."""
    return netns.Network("h2pc-000000-", {n: netns.node_address(n) for n in nodes})


# ------------------------------------------------------------ rules, without root


def test_addresses_are_distinct_and_private() -> None:
    nodes = [f"server{i}" for i in range(1, 251)] + [f"client{i}" for i in range(1, 1001)]
    addresses = [netns.node_address(n) for n in nodes]
    assert len(set(addresses)) == len(addresses)
    assert all(a.startswith("10.213.") and a != netns.HUB_ADDRESS for a in addresses)
    with pytest.raises(netns.NetnsError):
        netns.node_address("proxy")


def test_ring_each_participant_hears_a_majority_no_other_shares() -> None:
    servers = [f"server{i}" for i in range(1, 6)]
    net = _net(servers)
    fault = kernel_faults.ring(servers, net)
    dropped = set()
    for rule in fault.rules:
        words = rule.split()
        src, dst = words[words.index("saddr") + 1], words[words.index("daddr") + 1]
        dropped.add((src, dst))
    heard = {
        s: frozenset({s} | {o for o in servers if o != s and (net.nodes[o], net.nodes[s]) not in dropped})
        for s in servers
    }
    assert all(len(h) == 3 for h in heard.values())  # a majority of 5, itself included
    assert len(set(heard.values())) == len(servers)  # no two share it


def test_between_phases_matches_the_commit_verb_at_the_payload_start() -> None:
    fault = kernel_faults.between_phases("client1", "server2", _net(["client1", "server2"]))
    (rule,) = fault.rules
    hexed = rule.split("0x")[1].split()[0]
    assert bytes.fromhex(hexed) == b"COMMIT "
    assert f"@ih,0,{len(b'COMMIT ') * 8}" in rule


def test_kernel_fault_kinds_need_netns() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.run", "--nemesis", "loss", "--clients", "1"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs --network netns" in done.stderr


def test_netns_without_root_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as a user would run it (the check asks the kernel)
    code = run_main(["--network", "netns", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "needs root" in lines[0], err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------ the kernel's faults on the wire


def _probe(net: netns.Network, src: str, dst: str, port: int) -> str:
    """Connect from ``src``'s namespace to ``dst``: 'open', 'refused' or 'silent' (no answer at all)."""
    with netns.entered(net.ns(src)), socket.socket() as s:
        s.settimeout(0.4)
        try:
            s.connect((net.nodes[dst], port))
            return "open"
        except TimeoutError:
            return "silent"
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:
                return "refused"
            raise


@pytest.fixture
def wire() -> object:
    need_root()
    nodes = ["server1", "server2", "server3", "client1"]
    net = netns.Network.create(nodes)
    listeners = []
    try:
        for node in nodes:
            with netns.entered(net.ns(node)):
                s = socket.create_server((net.nodes[node], 7000))
            listeners.append(s)
        faults = kernel_faults.KernelFaults(net)
        yield net, faults
        faults.close()
    finally:
        for s in listeners:
            s.close()
        net.destroy()
    assert not net.leftovers()


def _reach(net: netns.Network) -> dict[tuple[str, str], str]:
    return {(a, b): _probe(net, a, b, 7000) for a in net.nodes for b in net.nodes if a != b}


@pytest.mark.slow
def test_each_partition_drops_silently_what_it_names_and_heals(
    wire: tuple[netns.Network, kernel_faults.KernelFaults],
) -> None:
    net, faults = wire
    assert set(_reach(net).values()) == {"open"}
    cases = {
        "isolate": kernel_faults.isolate("server2", net),
        "one-way": kernel_faults.one_way("client1", "server1", net),
        "split": kernel_faults.split(["server1"], ["server2", "server3"], net),
        "ring": kernel_faults.ring(["server1", "server2", "server3"], net),
    }
    # Which (src, dst) connections each should stop: a connect needs both
    # directions, so a one-way drop stops it either way round.
    expected_cut = {
        "isolate": {(a, b) for a in net.nodes for b in net.nodes if a != b and "server2" in (a, b)},
        "one-way": {("client1", "server1"), ("server1", "client1")},
        "split": {
            (a, b) for a in net.nodes for b in net.nodes if {a, b} in ({"server1", "server2"}, {"server1", "server3"})
        },
        "ring": {(a, b) for a in net.nodes for b in net.nodes if a != b and a != "client1" and b != "client1"},
    }
    for fid, (name, fault) in enumerate(cases.items(), 1):
        faults.apply(fid, fault)
        reach = _reach(net)
        cut = {pair for pair, how in reach.items() if how != "open"}
        assert cut == expected_cut[name], name
        assert {reach[pair] for pair in cut} == {"silent"}, f"{name}: a drop must be silent, not a reset"
        faults.heal(fid)
        faults.heal(fid)  # idempotent
        assert not faults.leftovers()
        assert set(_reach(net).values()) == {"open"}


@pytest.mark.slow
def test_one_way_drop_lets_the_other_direction_through(wire: tuple[netns.Network, kernel_faults.KernelFaults]) -> None:
    """UDP shows one direction alone: client1 -> server1 lost, server1 -> client1 delivered."""
    net, faults = wire
    socks = {}
    for node in ("client1", "server1"):
        with netns.entered(net.ns(node)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((net.nodes[node], 7001))
        s.settimeout(0.3)
        socks[node] = s
    try:
        faults.apply(1, kernel_faults.one_way("client1", "server1", net))
        socks["client1"].sendto(b"lost", (net.nodes["server1"], 7001))
        socks["server1"].sendto(b"delivered", (net.nodes["client1"], 7001))
        assert socks["client1"].recv(100) == b"delivered"
        with pytest.raises(TimeoutError):
            socks["server1"].recv(100)
        faults.heal(1)
        socks["client1"].sendto(b"healed", (net.nodes["server1"], 7001))
        assert socks["server1"].recv(100) == b"healed"
    finally:
        for s in socks.values():
            s.close()


SO_RCVBUFFORCE = 33  # root may size a receive buffer past rmem_max (socket(7))


def _datagrams(net: netns.Network, src: str, dst: str, count: int, port: int) -> int:
    """Send ``count`` 1000-byte datagrams from ``src`` to ``dst`` as fast as possible;
    how many arrive. The receiver's buffer holds them all, so only the network drops any."""
    with netns.entered(net.ns(dst)):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(net.ns(src)):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * 1024 * 1024)
        rx.bind((net.nodes[dst], port))
        for _ in range(count):
            tx.sendto(b"x" * 1000, (net.nodes[dst], port))
        got = 0
        rx.settimeout(0.5)  # a limited link still trickles its queue out for 200 ms
        with contextlib.suppress(TimeoutError):
            while rx.recv(2000):
                got += 1
    finally:
        rx.close()
        tx.close()
    return got


@pytest.mark.slow
def test_loss_drops_about_the_share_it_names(wire: tuple[netns.Network, kernel_faults.KernelFaults]) -> None:
    net, faults = wire
    faults.apply(1, kernel_faults.loss("server3", 30, net))
    assert sum("numgen random mod 100 < 30" in line for line in faults.leftovers()) == 2  # to and from it
    arrived = _datagrams(net, "server2", "server3", 1000, 7010)  # one rule applies: about 700 arrive
    assert 500 < arrived < 900, arrived  # binomial(1000, 0.7): 14 either way is one standard deviation
    faults.heal(1)
    assert faults.leftovers() == []
    assert _datagrams(net, "server2", "server3", 1000, 7011) > 900


@pytest.mark.slow
def test_bandwidth_limits_a_node_and_heals(wire: tuple[netns.Network, kernel_faults.KernelFaults]) -> None:
    net, faults = wire
    unlimited = _datagrams(net, "server2", "server1", 2000, 7020)
    faults.apply(1, kernel_faults.bandwidth("server1", 64))
    assert sum(" tbf " in line for line in faults.leftovers()) == 2  # both ends of server1's link
    # 64 kbit/s is 8 datagrams a second, after a 2 KB burst and a 200 ms queue.
    limited = _datagrams(net, "server2", "server1", 2000, 7021)
    assert limited < 100, (limited, unlimited)
    assert unlimited > 500 and limited < unlimited / 5, (limited, unlimited)
    faults.heal(1)
    assert faults.leftovers() == []


# ------------------------------------------------------------ runs in netns mode


def _netns_run(tmp_path: Path, **kw: object) -> tuple[Path, dict[str, object]]:
    need_root()
    config = with_default_timeouts(RunConfig(network=NetworkMode.NETNS, out=tmp_path / "run", **kw))  # type: ignore[arg-type]
    result = run(config)
    report = check_run(result.folder)
    assert report.consistent, [v.message for v in report.violations]
    network = json.loads((result.folder / "network.json").read_text())
    assert not [n for n in netns.list_namespaces() if n.startswith(network["prefix"])]
    assert not (netns.REGISTRY / f"{network['prefix']}json").exists()
    summary = (
        json.loads((result.folder / "summary.json").read_text()) if (result.folder / "summary.json").exists() else {}
    )
    return result.folder, {"report": report, "network": network, "summary": summary}


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", [FaultKind.PARTITION, FaultKind.LOSS, FaultKind.BANDWIDTH, FaultKind.KILL_PARTICIPANT, FaultKind.PAUSE]
)
def test_each_fault_kind_in_netns_mode_is_checked(tmp_path: Path, kind: FaultKind) -> None:
    folder, got = _netns_run(
        tmp_path, clients=3, duration=2.5, retry=RetryMode.BACKOFF, nemesis=(kind,), nemesis_interval=0.5, seed=901
    )
    faults = [line for line in (folder / "nemesis.log").read_text().splitlines() if " fault " in line]
    heals = [line for line in (folder / "nemesis.log").read_text().splitlines() if " heal " in line]
    assert faults and all(f"kind={kind.value}" in f for f in faults)
    assert len(heals) == len(faults)
    assert got["network"]["nodes"]["server1"] == "10.213.1.1"
    assert "10.213.1.1:" in (folder / "server1.log").read_text()


@pytest.mark.slow
def test_one_way_partition_between_phases_is_finished_by_the_participants(tmp_path: Path) -> None:
    folder, got = _netns_run(tmp_path, clients=1, transactions=2, crash=("partition:between-phases",), seed=902)
    log = (folder / "nemesis.log").read_text()
    assert "point=between-phases" in log and "COMMITs dropped" in log
    server2 = (folder / "server2.log").read_text().splitlines()
    client1 = (folder / "client1.log").read_text()
    txid = next(line for line in server2 if " recv " in line and "msg=PREPARE" in line).split("txid=")[1].split()[0]
    assert f"send peer=10.213.1.2:8887 msg=COMMIT txid={txid}" in client1  # the client sent it ...
    decided = next(line for line in server2 if f"durable txid={txid} state=committed" in line)
    assert 'why="peer ' in decided  # ... but server2 committed with its peers (RESOLVE),
    # The COMMIT came through, if at all, only after client1 had ended, and so after the fault was
    # healed (the run heals at its end). One clock stamps every log of a netns run: they compare.
    client_done = [line.split()[0] for line in client1.splitlines() if " outcome " in line][-1]
    got_commit = [line.split()[0] for line in server2 if " recv " in line and f"msg=COMMIT txid={txid}" in line]
    assert all(at > client_done for at in got_commit), (got_commit, client_done)
    assert got["report"].resolved_by_peers >= 1  # the participants finished it among themselves


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_seeded_nemesis_soak_in_netns_mode(tmp_path: Path) -> None:
    kinds = (
        FaultKind.PARTITION,
        FaultKind.LOSS,
        FaultKind.BANDWIDTH,
        FaultKind.KILL_PARTICIPANT,
        FaultKind.KILL_CLIENT,
        FaultKind.PAUSE,
    )
    folder, _ = _netns_run(
        tmp_path, clients=5, duration=10, retry=RetryMode.BACKOFF, nemesis=kinds, nemesis_interval=0.6, seed=903
    )
    kinds_seen = {line.split("kind=")[1].split()[0] for line in (folder / "nemesis.log").read_text().splitlines()}
    assert len(kinds_seen) >= 3


# ------------------------------------------------------------ a runner killed: nothing left after --cleanup


def _ours() -> set[str]:
    return {n for n in netns.list_namespaces() if n.startswith(netns.PREFIX_HEAD)}


def _run_processes(folder: Path) -> list[int]:
    """Pids of processes of the run writing to ``folder`` (the runner's children share its command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(folder).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue  # gone meanwhile
    return pids


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "then"),
    [(signal.SIGKILL, "--cleanup"), (signal.SIGKILL, "a later run"), (signal.SIGTERM, ""), (signal.SIGINT, "")],
)
def test_a_killed_runner_leaves_nothing_behind(tmp_path: Path, how: signal.Signals, then: str) -> None:
    need_root()
    before = _ours()
    runner = subprocess.Popen(
        [sys.executable, "-m", "harness.run", "--network", "netns", "--clients", "3", "--duration", "60",
         "--nemesis", "partition,bandwidth", "--nemesis-interval", "0.3", "--seed", str(904 + how),
         "--out", str(tmp_path / "run")],
        cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        nemesis = tmp_path / "run" / "nemesis.log"
        while " fault " not in (nemesis.read_text() if nemesis.exists() else ""):
            assert runner.poll() is None, runner.stderr.read() if runner.stderr else ""
            assert time.monotonic() < deadline, "the run never injected a fault"
            time.sleep(0.02)  # polling a file the runner writes as it goes
        prefix = json.loads((tmp_path / "run" / "network.json").read_text())["prefix"]
        assert {n for n in _ours() - before if n.startswith(prefix)}
        runner.send_signal(how)
        runner.wait(60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if runner.stderr is not None:
            runner.stderr.close()
    deadline = time.monotonic() + 20
    while _run_processes(tmp_path / "run"):  # its children die with it (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, f"processes of the run left: {_run_processes(tmp_path / 'run')}"
        time.sleep(0.02)  # polling the kernel's process table
    if then == "--cleanup":
        assert any(n.startswith(prefix) for n in netns.list_namespaces())  # left behind, as expected
        done = subprocess.run(
            [sys.executable, "-m", "harness.run", "--cleanup"],
            env=env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0 and f"{prefix}hub" in done.stdout, done.stdout + done.stderr
    elif then == "a later run":
        assert any(n.startswith(prefix) for n in netns.list_namespaces())
        _netns_run(tmp_path / "later", clients=1, transactions=1, seed=908)
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    assert not (netns.REGISTRY / f"{prefix}json").exists()
    assert (
        prefix.replace("-", "_").rstrip("_")
        not in subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    )


def test_cleanup_spares_a_live_run() -> None:
    need_root()
    prefix = netns.new_prefix()
    netns.register(prefix, None)  # registered by this (live) process
    netns.ip("netns", "add", f"{prefix}hub")
    try:
        removed = netns.cleanup_abandoned()
        assert f"{prefix}hub" not in removed and f"{prefix}hub" in netns.list_namespaces()
    finally:
        netns.remove_prefix(prefix)
    assert f"{prefix}hub" not in netns.list_namespaces()


# ------------------------------------------------------------ delay: the proxy, or netem where the kernel has it


def test_delay_stays_with_the_proxy_on_loopback(tmp_path: Path) -> None:
    config = RunConfig(clients=2, duration=2.0, base_port=0, nemesis=(FaultKind.DELAY,), nemesis_interval=0.4, seed=906)
    result = run(with_default_timeouts(replace(config, out=tmp_path / "run")))
    assert check_run(result.folder).consistent
    faults = [line for line in (result.folder / "nemesis.log").read_text().splitlines() if " fault " in line]
    assert faults and all("kind=delay" in f and "ms each way" in f for f in faults)


def test_delay_in_netns_mode_uses_netem_or_says_it_cannot(tmp_path: Path) -> None:
    need_root()
    net = netns.Network.create(["server1"])
    try:
        netem = kernel_faults.has_netem(net)
    finally:
        net.destroy()
    config = RunConfig(network=NetworkMode.NETNS, clients=1, duration=1.5, nemesis=(FaultKind.DELAY,), seed=907)
    if netem:
        _netns_run(tmp_path, **{k: getattr(config, k) for k in ("clients", "duration", "nemesis", "seed")})
        return
    with pytest.raises(RunError, match="no netem"):
        run(with_default_timeouts(replace(config, out=tmp_path / "run")))
    network = json.loads((tmp_path / "run" / "network.json").read_text())
    assert not [n for n in netns.list_namespaces() if n.startswith(network["prefix"])]
