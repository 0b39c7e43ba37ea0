"""A bounded hostile campaign against a live TLS cluster on loopback (docs/security.md).

Three participants with ``--tls`` and short idle and line timeouts. While a
legitimate client commits transaction after transaction, attackers send:
random bytes and mutated protocol lines over plain TCP (they never get past
the handshake), over TLS with another cluster's certificates (refused at the
handshake), over TLS with a *member's* certificate (authenticated, but a
member may not prepare, commit or abort: every line is refused or answered
without a change), and with another *client's* certificate (authenticated, but
every line is about the legitimate client's txids, which are not its own:
refused); floods of connections held idle; slow senders dribbling a
line a byte at a time. Asserted at the end: no participant crashed or logged
a traceback; the replicas agree and their state is exactly what the
legitimate client's commits made (no durable record of any other
transaction); each participant's memory and descriptors stayed bounded; and
the legitimate client's p99 latency under attack is under 10x its idle p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WAIT, Cluster, child_env

from harness.node.certificates import issue as issue_certs
from harness.node.tls import load as load_tls

PAUSE = 0.05  # seconds each attacker waits between two attacks
ROUNDS = 4  # idle and attacked rounds, alternating
ROUND_SECONDS = 2.5  # each round: the legitimate client commits for this long
BATCH = 40  # transactions per legitimate client process
IDLE_TIMEOUT = "2"
LINE_TIMEOUT = "1"
MAX_CONNECTIONS = "128"
LEGIT = "legit"  # the legitimate client's name (its certificate's, and its txids' owner)
MALLORY = "mallory"  # an attacker with a client certificate of its own


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Attack:
    """Attackers on an event loop of their own, in a process of their own (so
    that the test process, which reads the participants' output, is not starved),
    until ``stop``; then ``sent`` and ``unexpected`` come back over a pipe."""

    def __init__(self, ports: list[int], names: str, certs: Path, other: Path) -> None:
        self.ports = ports
        self.names = names
        self.certs, self.other = certs, other
        self.rng = random.Random(13)
        self.sent = 0
        self.unexpected: list[str] = []  # a reply an attacker should never get
        self.stopping: asyncio.Event | None = None
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self.active = ctx.Event()  # attack while set, rest while clear (idle rounds)
        self._results, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=self._run, args=(child,), daemon=True)

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        self._stop.set()
        if self._results.poll(WAIT):
            self.sent, self.unexpected = self._results.recv()
        self._proc.join(WAIT)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def _run(self, results: multiprocessing.connection.Connection) -> None:
        # The machine has two shared cores: the attackers' own CPU must not be what
        # slows the participants down, only the work their input costs them.
        os.nice(19)
        self.member = load_tls(self.certs, member=True, name=self.names.split(",")[0]).client
        self.mallory = load_tls(self.certs, member=False, name=MALLORY).client
        self.stranger = load_tls(self.other, member=False).client
        asyncio.run(self._main())
        results.send((self.sent, self.unexpected))

    async def _watch_stop(self) -> None:
        assert self.stopping is not None
        await asyncio.get_running_loop().run_in_executor(None, self._stop.wait)
        self.stopping.set()

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        watcher = asyncio.ensure_future(self._watch_stop())
        tasks = [
            *(self._forever(self._plain_junk) for _ in range(2)),
            self._forever(self._stranger),
            self._forever(self._member_lines),
            self._forever(self._client_lines),  # in a second member attacker's place: the same load as before
            self._forever(self._flood),
            *(self._forever(self._slow) for _ in range(3)),
        ]
        await asyncio.gather(*tasks)
        await watcher

    async def _forever(self, attack: object) -> None:
        assert self.stopping is not None
        while not self.stopping.is_set():
            if not self.active.is_set():
                await asyncio.sleep(PAUSE)
                continue
            with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError):  # SSLError is an OSError
                await asyncio.wait_for(attack(), 10)  # type: ignore[operator]
            await asyncio.sleep(PAUSE)  # a bounded rate: the machine is shared

    def _legit_lines(self) -> list[str]:
        t = f"evil{self.rng.randrange(10**6)}"
        return [
            f"PREPARE txid={t} value={self.rng.randrange(-(2**63), 2**63)} participants={self.names}",
            f"COMMIT txid={t}",
            f"ABORT txid={t}",
            "STATUS",
            f"VOTE txid={t} vote=ok",
            f"OUTCOME txid={t} state=committed",
        ]

    def _mutate(self, line: str) -> bytes:
        data = bytearray(line.encode())
        for _ in range(self.rng.randrange(1, 4)):
            how = self.rng.randrange(6)
            i = self.rng.randrange(len(data) + 1)
            if how == 0 and data:
                data[min(i, len(data) - 1)] ^= 1 << self.rng.randrange(8)
            elif how == 1:
                data[i:i] = self.rng.choice(["\u00a0", "\u2003", "\u2028", "\x0b", "\t", '"', "\\", "="]).encode()
            elif how == 2:
                del data[i : i + self.rng.randrange(1, 8)]
            elif how == 3:
                data[i:i] = data[: self.rng.randrange(len(data) + 1)]
            elif how == 4:
                data[i:i] = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 20)))
            else:
                data += b" txid=x" * self.rng.randrange(1, 4)
        return bytes(data).replace(b"\n", b" ") + b"\n"

    async def _plain_junk(self) -> None:
        port = self.rng.choice(self.ports)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            lines = [self._mutate(self.rng.choice(self._legit_lines())) for _ in range(5)]
            lines.append(bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 300))))
            writer.write(b"".join(lines))
            self.sent += len(lines)
            answer = await asyncio.wait_for(reader.read(4096), 3)
            if re.search(rb"^(VOTE|OUTCOME|STATE) ", answer, re.M):
                self.unexpected.append(f"plain TCP got {answer[:80]!r}")
        finally:
            writer.close()

    async def _stranger(self) -> None:
        port = self.rng.choice(self.ports)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=self.stranger)
        try:
            writer.write(f"PREPARE txid=s1 value=1 participants={self.names}\n".encode())
            answer = await asyncio.wait_for(reader.readline(), 3)
            if answer:
                self.unexpected.append(f"another CA's certificate got {answer[:80]!r}")
        finally:
            writer.close()

    async def _member_lines(self) -> None:
        # A member's certificate: it may RESOLVE and ask STATUS, nothing else.
        await self._authenticated(
            self.member,
            lambda: self.rng.choice(self._legit_lines()),
            mutated=0.7,
            allowed=(b"RESOLVE", b"STATUS"),
            who="member certificate",
        )

    async def _client_lines(self) -> None:
        # An authenticated client, sending lines about the legitimate client's
        # txids (their owner is LEGIT, not it): every one is refused.
        def line() -> str:
            t = f"{LEGIT}-{self.rng.randrange(16**12):012x}-{self.rng.randrange(1, 1000)}"
            return self.rng.choice(
                [
                    f"PREPARE txid={t} value=666 participants={self.names}",
                    f"COMMIT txid={t}",
                    f"ABORT txid={t}",
                    f"RESOLVE txid={t}",
                ]
            )

        await self._authenticated(
            self.mallory, line, mutated=0.3, allowed=(b"STATUS",), who="another client's certificate"
        )

    async def _authenticated(
        self,
        context: ssl.SSLContext,
        line: Callable[[], str],
        *,
        mutated: float,
        allowed: tuple[bytes, ...],
        who: str,
    ) -> None:
        """Twenty lines on one connection made with ``context``'s certificate, a
        share of them mutated; each must be answered with an ERROR (or close
        the connection), except the requests the certificate is ``allowed``."""
        port = self.rng.choice(self.ports)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        try:
            for _ in range(20):
                text = line()
                data = self._mutate(text) if self.rng.random() < mutated else f"{text}\n".encode()
                if data.startswith(allowed):
                    continue  # what this certificate may ask: not an attack
                writer.write(data)
                self.sent += 1
                answer = await asyncio.wait_for(reader.readline(), 3)
                if not answer:
                    return  # refused and closed: the next connection
                if not answer.startswith(b"ERROR "):
                    self.unexpected.append(f"{who} sent {data[:60]!r}, got {answer[:80]!r}")
        finally:
            writer.close()

    async def _flood(self) -> None:
        conns = []
        try:
            for _ in range(150):
                conns.append(await asyncio.open_connection("127.0.0.1", self.rng.choice(self.ports)))
            assert self.stopping is not None
            await asyncio.sleep(1.0)
        finally:
            for _reader, writer in conns:
                writer.close()

    async def _slow(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.rng.choice(self.ports), ssl=self.member)
        try:
            for byte in b"STATUS":  # never the newline: the line timeout must refuse it
                writer.write(bytes([byte]))
                await asyncio.sleep(0.3)
            answer = await asyncio.wait_for(reader.readline(), 3)
            if answer and not answer.startswith(b"ERROR code=slow-line"):
                self.unexpected.append(f"a slow sender got {answer[:80]!r}")
        finally:
            writer.close()


def _latencies(cluster: Cluster, certs: Path, count: int, name: str) -> list[float]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.client",
            "--servers",
            cluster.servers,
            "--tls",
            str(certs),
            "--count",
            str(count),
            "--name",
            name,
        ],
        cwd=cluster.workdir,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    return [float(m) for m in re.findall(r"^committed .* latency_ms=([\d.]+)", done.stdout, re.M)]


def _for(seconds: float, batch: Callable[[int], list[float]]) -> list[float]:
    """Run ``batch`` again and again for ``seconds``; every latency it returned."""
    out: list[float] = []
    until = time.monotonic() + seconds
    i = 0
    while time.monotonic() < until:
        out += batch(i)
        i += 1
    return out


def _p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.99 * len(values)))]


@pytest.fixture
def hostile_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    certs = tmp_path / "certs"
    c = Cluster(tmp_path)
    issue_certs(certs, c.members.split(","), [LEGIT, MALLORY])  # one certificate per node, by name
    c.extra = ["--tls", str(certs)]
    try:
        for n in (1, 2, 3):
            c.start_participant(
                n,
                "--idle-timeout",
                IDLE_TIMEOUT,
                "--line-timeout",
                LINE_TIMEOUT,
                "--max-connections",
                MAX_CONNECTIONS,
            )
        yield c, certs
    finally:
        c.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_hostile_campaign_changes_nothing_and_costs_the_legitimate_client_little(
    hostile_cluster: tuple[Cluster, Path], tmp_path: Path
) -> None:
    cluster, certs = hostile_cluster
    pids = [p.proc.pid for p in cluster.procs]
    other = tmp_path / "other-ca"
    issue_certs(other, clients=["client"])
    attack = Attack([cluster.ports[n] for n in (1, 2, 3)], cluster.servers, certs, other)
    attack.start()
    peak_fds = [0, 0, 0]
    idle: list[float] = []
    under: list[float] = []
    rss0: list[int] = []
    try:
        # Idle and attacked rounds alternate, so that the shared machine's own
        # noise (other tests, fsync stalls) falls on both alike.

        def batch(_: int) -> list[float]:
            return _latencies(cluster, certs, BATCH, LEGIT)

        for _ in range(ROUNDS):
            idle += _for(ROUND_SECONDS, batch)
            rss0 = rss0 or [_rss_kib(pid) for pid in pids]
            attack.active.set()
            under += _for(ROUND_SECONDS, batch)
            peak_fds = [max(f, _fds(pid)) for f, pid in zip(peak_fds, pids, strict=True)]
            attack.active.clear()
    finally:
        attack.stop()
    rss1 = [_rss_kib(pid) for pid in pids]
    for proc in cluster.procs:
        assert proc.proc.poll() is None, "a participant died"
    status = cluster.status()
    assert status.returncode == 0, status.stdout + status.stderr
    commits = len(idle) + len(under)
    assert re.search(rf"consistent: storage_server=1 version={commits}$", status.stdout, re.M), status.stdout
    output = []
    for proc in cluster.procs:
        proc.stop()
        output += proc.seen
        while (line := proc.lines.get(timeout=WAIT)) is not None:
            output.append(line)
    assert not [line for line in output if "Traceback" in line or "Exception" in line], output[-20:]
    assert attack.sent > 500, attack.sent
    assert attack.unexpected == []
    # exactly the legitimate commits, everywhere, and no durable record of anything else
    for n in (1, 2, 3):
        log = (cluster.workdir / "logs" / f"server{n}.log").read_text()
        assert "Traceback" not in log
        durable = re.findall(r" durable txid=(\S+) ", log)
        assert durable and all(t.startswith(f"{LEGIT}-") for t in durable), sorted(set(durable))[:5]
        assert len(re.findall(r" overload ", log)) < 50  # one line per episode, not one per connection
        versions = [int(v) for v in re.findall(r" durable txid=\S+ state=committed value=1 version=(\d+) ", log)]
        assert sorted(versions) == list(range(1, commits + 1))
    # bounded: memory and descriptors
    for before, after in zip(rss0, rss1, strict=True):
        assert after - before < 40 * 1024, (rss0, rss1)
    assert max(peak_fds) < int(MAX_CONNECTIONS) + 64, peak_fds
    # the legitimate client still commits promptly
    idle_p99, under_p99 = _p99(idle), _p99(under)
    print(
        f"\nhostile campaign: {attack.sent} hostile lines; legit p50 {statistics.median(idle):.1f} -> "
        f"{statistics.median(under):.1f} ms, p99 {idle_p99:.1f} -> {under_p99:.1f} ms "
        f"(x{under_p99 / idle_p99:.1f}); rss {rss0} -> {rss1} KiB; peak fds {peak_fds}"
    )
    assert under_p99 < 10 * idle_p99, (idle_p99, under_p99)
