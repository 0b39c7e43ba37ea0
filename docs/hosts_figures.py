"""The figures of docs/hosts.md: start-up, one-client committed/s and time to heal, per mode.

    sudo PYTHONPATH=. python docs/hosts_figures.py [--repeat 3]

Needs root, ip, nft, tc, sshd (as the tests do; SSH hosts are made the way
tests/hosts_support.py makes them). Each figure is also given as a ratio to
the loopback figure measured in the same run: the machines are shared and
noisy, so compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hosts_support import env, ssh_hosts  # noqa: E402

from harness.experiment.processes import Processes  # noqa: E402
from harness.experiment.proxy import ProxyHandle  # noqa: E402
from harness.hosts import kernel_faults, netns  # noqa: E402


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def first(path: Path, event: str) -> float:
    for line in path.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) > 2 and parts[2] == event:
            return stamp(parts[0].replace("Z", "") + "Z")
    raise SystemExit(f"{path}: no {event}")


def window(folder: Path) -> tuple[int, float]:
    """(committed, seconds from client1's first begin to its last outcome)."""
    begins, outcomes, committed = [], [], 0
    for line in (folder / "client1.log").read_text().splitlines():
        parts = line.split(" ", 3)
        if parts[2] == "begin":
            begins.append(stamp(parts[0]))
        elif parts[2] == "outcome":
            outcomes.append(stamp(parts[0]))
            committed += "result=committed" in parts[3]
    return committed, max(outcomes) - min(begins)


def run(prefix: list[str], args: list[str], out: Path) -> tuple[float, Path]:
    t0 = time.time()
    argv = [*prefix, sys.executable, "-m", "harness.run", *args, "--out", str(out)]
    done = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return t0, out


def figures(mode: str, prefix: list[str], extra: list[str], tmp: Path, i: int) -> dict[str, float]:
    t0, folder = run(prefix, [*extra, "--clients", "5", "--transactions", "1"], tmp / f"{mode}-start-{i}")
    ready = max(first(folder / f"client{c}.log", "connected") for c in range(1, 6))
    _, folder = run(prefix, [*extra, "--clients", "1", "--duration", "3"], tmp / f"{mode}-one-{i}")
    committed, seconds = window(folder)
    return {"startup_s": ready - t0, "committed_per_s": committed / seconds}


def heal_times(tmp: Path, repeat: int) -> dict[str, float]:
    """Kernel: from the heal call to the first connection that gets through; and the nft call alone."""
    net = netns.Network.create(["server1", "client1"])
    calls, through = [], []
    try:
        with netns.entered(net.ns("server1")):
            server = socket.create_server((net.nodes["server1"], 7000))
        faults = kernel_faults.KernelFaults(net)
        for fid in range(1, repeat * 5 + 1):
            faults.apply(fid, kernel_faults.isolate("server1", net))
            t = time.monotonic()
            faults.heal(fid)
            calls.append(time.monotonic() - t)
            with netns.entered(net.ns("client1")):
                while True:
                    try:
                        socket.create_connection((net.nodes["server1"], 7000), timeout=1).close()
                        break
                    except OSError:
                        pass
            through.append(time.monotonic() - t)
            server.accept()[0].close()
        server.close()
    finally:
        net.destroy()
    return {"heal_call_ms": statistics.median(calls) * 1000, "heal_to_first_connect_ms": statistics.median(through) * 1000}


def proxy_heal_times(tmp: Path, repeat: int) -> dict[str, float]:
    """Loopback: the fault proxy's heal, from the call to the first connection through it."""
    procs = Processes()
    calls, through = [], []
    try:
        proxy = ProxyHandle.start(procs, tmp, 1)
        server = socket.create_server(("127.0.0.1", 0))
        host, port = proxy.link("client1", "server1", server.getsockname()[:2])
        for _ in range(repeat * 5):
            proxy.call("sever", ["client1->server1"])
            t = time.monotonic()
            proxy.call("heal", ["client1->server1"])
            calls.append(time.monotonic() - t)
            socket.create_connection((host, port), timeout=1).close()
            through.append(time.monotonic() - t)
            server.accept()[0].close()
        server.close()
    finally:
        procs.stop()
    return {"heal_call_ms": statistics.median(calls) * 1000, "heal_to_first_connect_ms": statistics.median(through) * 1000}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hosts-figures-"))
    rows: dict[str, list[dict[str, float]]] = {"loopback": [], "netns": [], "ssh": []}
    (tmp / "ssh").mkdir()
    with ssh_hosts(tmp / "ssh") as (net, inventory):
        for i in range(args.repeat):
            rows["loopback"].append(figures("loopback", [], ["--base-port", "0"], tmp, i))
            rows["netns"].append(figures("netns", [], ["--network", "netns"], tmp, i))
            hub = ["ip", "netns", "exec", net.hub]
            rows["ssh"].append(figures("ssh", hub, ["--hosts", str(inventory)], tmp, i))
    medians = {m: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for m, runs in rows.items()}
    floor = medians["loopback"]
    out = {
        "medians": medians,
        "heal": heal_times(tmp, args.repeat),
        "proxy_heal": proxy_heal_times(tmp, args.repeat),
        "repeat": args.repeat,
    }
    print(f"{'mode':10} {'start-up s':>11} {'x loopback':>11} {'1-client tx/s':>14} {'x loopback':>11}")
    for mode, m in medians.items():
        print(
            f"{mode:10} {m['startup_s']:11.2f} {m['startup_s'] / floor['startup_s']:11.2f} "
            f"{m['committed_per_s']:14.0f} {m['committed_per_s'] / floor['committed_per_s']:11.2f}"
        )
    print(f"kernel heal: nft call {out['heal']['heal_call_ms']:.1f} ms, first connection through after "
          f"{out['heal']['heal_to_first_connect_ms']:.1f} ms (medians of {args.repeat * 5})")  # fmt: skip
    print(f"proxy heal:  pipe call {out['proxy_heal']['heal_call_ms']:.1f} ms, first connection through after "
          f"{out['proxy_heal']['heal_to_first_connect_ms']:.1f} ms")  # fmt: skip
    (tmp / "figures.json").write_text(json.dumps(out, indent=2))
    print(f"figures: {tmp / 'figures.json'}")


if __name__ == "__main__":
    main()
