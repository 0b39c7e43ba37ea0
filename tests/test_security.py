"""Trust nobody on the wire (docs/security.md), on real processes.

Membership refusals, mutual TLS and roles, the bind rule, bounded
connections, stores that cannot lie and the fail-stop log: each attack of the
issue, made with well-formed lines as an adversary would, and what must (not)
change.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, Cluster, LineClient, NodeProcess, child_env

from harness.node.certificates import issue as issue_certs
from harness.node.tls import Role, names_in
from harness.node.tls import load as load_tls


def _rows(out: str) -> dict[str, tuple[str, str, str]]:
    return {
        m.group(1): (m.group(2), m.group(3), m.group(4))
        for m in re.finditer(r"^(127\.0\.0\.1:\d+)[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)", out, re.M)
    }


def _participant(cwd: Path, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.participant", *args, "--quiet"],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and one client's certificate (``client``); each cluster adds its members'."""
    folder = tmp_path_factory.mktemp("certs")
    issue_certs(folder, clients=["client"])
    return folder


@pytest.fixture
def tls_cluster(tmp_path: Path, certs: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    issue_certs(certs, c.members.split(","))  # its ports are picked up front: one certificate per member
    c.extra = ["--tls", str(certs)]
    try:
        for n in (1, 2, 3):
            c.start_participant(n, "--resolve-after", "0.5")
        yield c
    finally:
        c.stop()


# ---------------------------------------------------------------- membership


def test_forged_prepares_on_a_subset_or_naming_an_outsider_change_nothing(cluster: Cluster, dead_port: int) -> None:
    for n in (1, 2, 3):
        cluster.start_participant(n, "--resolve-after", "0.3")
    names = cluster.servers.split(",")
    attacks = [
        [names[1]],  # P2 alone: it would commit on its own after --resolve-after
        [names[0], names[1]],
        [*names, f"127.0.0.1:{dead_port}"],  # an extra "peer": a lock held forever
        [names[0], names[1], f"127.0.0.1:{dead_port}"],  # a peer the sender controls in a member's place
    ]
    for i, participants in enumerate(attacks):
        target = names.index(participants[0]) + 1
        c = LineClient(cluster.ports[target])
        try:
            reply = c.ask(f"PREPARE txid=forged{i} value=555 participants={','.join(participants)}")
            assert reply.startswith(f"ERROR code=not-cluster txid=forged{i} "), reply
            assert c.ask(f"COMMIT txid=forged{i}").startswith("ERROR code=not-prepared")
        finally:
            c.close()
    done = cluster.client("--value", "7")
    assert done.returncode == 0, done.stdout + done.stderr
    status = cluster.status()
    assert status.returncode == 0, status.stdout
    assert set(_rows(status.stdout).values()) == {("7", "1", "-")}
    for n in (1, 2, 3):  # no participant ever connected to the outsider
        log = (cluster.workdir / "logs" / f"server{n}.log").read_text()
        assert not re.search(rf" (send|unreachable) peer=127\.0\.0\.1:{dead_port} ", log)
        assert " forged" not in "".join(line for line in log.splitlines(True) if " durable " in line)


def test_a_participant_not_in_its_cluster_refuses_to_start(tmp_path: Path) -> None:
    done = _participant(tmp_path, "1", "--port", "9", "--cluster", "127.0.0.1:8886,127.0.0.1:8887")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not a member of its cluster" in done.stderr


# ---------------------------------------------------------------- binding and TLS


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_listening_off_loopback_without_tls_is_refused_with_one_line(tmp_path: Path, host: str) -> None:
    done = _participant(tmp_path, "1", "--host", host, "--port", "0")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "without --tls" in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_tls_cluster_commits_and_shows_its_status(tls_cluster: Cluster) -> None:
    done = tls_cluster.client("--value", "11", "--count", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    status = tls_cluster.status()
    assert status.returncode == 0, status.stdout + status.stderr
    assert set(_rows(status.stdout).values()) == {("11", "2", "-")}


def _tls_line(port: int, context: ssl.SSLContext) -> tuple[ssl.SSLSocket, object]:
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
    return sock, sock.makefile("rb")


def test_without_the_right_certificate_nothing_gets_through(tls_cluster: Cluster, certs: Path, tmp_path: Path) -> None:
    port = tls_cluster.ports[1]
    names = tls_cluster.servers
    # plain TCP: the handshake fails, the line is never read
    plain = LineClient(port)
    try:
        plain.send(f"PREPARE txid=p1 value=5 participants={names}\nCOMMIT txid=p1\n".encode())
        assert plain.readline() == "" or not plain.readline().startswith(("VOTE", "OUTCOME"))
    except (ConnectionError, OSError):
        pass
    finally:
        plain.close()
    # a certificate of another cluster's CA: refused at the handshake
    other = tmp_path / "other"
    issue_certs(other, clients=["client"])
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        sock, f = _tls_line(port, load_tls(other, member=False).client)
        sock.sendall(f"PREPARE txid=p2 value=5 participants={names}\n".encode())
        if not f.readline():  # type: ignore[attr-defined]
            raise ConnectionError("closed")
    # a member certificate may resolve and ask STATUS, but not prepare, commit or abort
    member = load_tls(certs, member=True, name=names.split(",")[0]).client
    for line in (f"PREPARE txid=p3 value=5 participants={names}", "COMMIT txid=p3", "ABORT txid=p3"):
        sock, f = _tls_line(port, member)
        try:
            sock.sendall(f"{line}\n".encode())
            reply = f.readline().decode()  # type: ignore[attr-defined]
            assert reply.startswith("ERROR code=forbidden"), reply
        finally:
            sock.close()
    status = tls_cluster.status()
    assert set(_rows(status.stdout).values()) == {("0", "0", "-")}, status.stdout
    log = (tls_cluster.workdir / "logs" / "server1.log").read_text()
    assert " durable " not in log  # not one record was written


def test_a_client_certificate_cannot_pose_as_a_participant(tls_cluster: Cluster, certs: Path) -> None:
    # A "participant" presenting the client certificate: the client refuses to ask it anything.
    impostor = socket.create_server(("127.0.0.1", 0))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "clients" / "client.pem", certs / "clients" / "client.key")
    try:
        port = impostor.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "harness.client", "--servers", f"127.0.0.1:{port}", "--tls", str(certs)],
            cwd=tls_cluster.workdir,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    finally:
        impostor.close()
    assert done.returncode == 2 and "cannot connect" in done.stderr


# ---------------------------------------------------------------- bounded resources


def test_connection_cap_idle_and_slow_lines(cluster: Cluster) -> None:
    cluster.start_participant(1, "--max-connections", "4", "--idle-timeout", "1", "--line-timeout", "0.5")
    port = cluster.ports[1]
    first = LineClient(port)
    slow = LineClient(port)
    extra = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(30)]
    try:
        assert first.ask("STATUS").startswith("STATE ")  # an existing connection keeps being served
        slow.send(b"STAT")  # half a line, never finished
        assert slow.readline().startswith("ERROR code=slow-line")
        assert slow.readline() == ""
        # at the cap, the others were closed at once: one read returns EOF (or a reset)
        closed = 0
        for s in extra:
            try:
                closed += s.recv(1) == b""
            except ConnectionError:
                closed += 1
        assert closed >= 30 - 4
        started = time.monotonic()
        assert first.readline() == ""  # idle: closed by the participant
        assert time.monotonic() - started < 5
    finally:
        for s in extra:
            s.close()
        first.close()
        slow.close()
    log = (cluster.workdir / "logs" / "server1.log").read_text()
    assert len(re.findall(r" overload reason=cap limit=4 ", log)) == 1
    fresh = LineClient(port)  # the episode is over: served again
    try:
        assert fresh.ask("STATUS").startswith("STATE ")
    finally:
        fresh.close()


def test_at_its_descriptor_limit_a_participant_keeps_serving_and_logs_one_line(tmp_path: Path) -> None:
    from harness.node.address import pick_port

    code = (
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (80, 80)); "
        "sys.argv = ['harness.participant'] + sys.argv[1:]; "
        "runpy.run_module('harness.participant', run_name='__main__')"
    )
    port = pick_port()
    proc = NodeProcess(["-c", code, "1", "--port", str(port), "--cluster", f"127.0.0.1:{port}"], tmp_path)
    try:
        proc.wait_for(r" listening ")
        keep = LineClient(port)
        flood = []
        for _ in range(300):
            try:
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
            except OSError:
                break
        assert keep.ask("STATUS").startswith("STATE ")
        for s in flood:
            s.close()
        keep.close()
    finally:
        proc.stop()
    out = "\n".join(proc.seen) + "".join(iter(lambda: proc.lines.get(timeout=WAIT) or "", ""))
    assert "Traceback" not in out
    assert len(re.findall(r" overload ", out)) == 1


# ---------------------------------------------------------------- storage that cannot lie


def test_a_store_deleted_while_running_stops_the_participant_and_it_refuses_to_start_until_rejoined(
    cluster: Cluster,
) -> None:
    procs = [cluster.start_participant(n, "--resolve-after", "0.5") for n in (1, 2, 3)]
    assert cluster.client("--value", "3").returncode == 0
    for f in (cluster.workdir / "data").glob("server1.sqlite3*"):
        f.unlink()
    done = cluster.client("--value", "4")
    assert done.returncode != 0 or "committed" in done.stdout  # whatever the client heard ...
    assert procs[0].wait_exit() == 3  # ... P1 stopped before acknowledging its vote
    assert "deleted or replaced" in "\n".join(procs[0].seen) + "".join(
        iter(lambda: procs[0].lines.get(timeout=WAIT) or "", "")
    )
    again = _participant(
        cluster.workdir, "1", "--port", str(cluster.ports[1]), "--cluster", cluster.members, timeout=WAIT
    )
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "its state is lost" in again.stderr
    status = cluster.status()
    rows = _rows(status.stdout)
    live = {rows[f"127.0.0.1:{cluster.ports[n]}"] for n in (2, 3)}
    assert len(live) == 1
    value, version, _lock = live.pop()
    rejoined = cluster.start_participant(1, "--rejoin-empty", "--resolve-after", "0.5")
    rejoined.wait_for(rf" rejoined storage_server={value} version={version} ")
    # The peers learn that P1 aborted the transaction in flight at their next RESOLVE:
    # poll the live cluster until no lock is held (the system itself must be polled).
    deadline = time.monotonic() + WAIT
    while any(lock != "-" for _v, _ver, lock in _rows(cluster.status().stdout).values()):
        assert time.monotonic() < deadline, "the transaction in flight was never settled"
        time.sleep(0.05)
    assert cluster.client("--value", "5").returncode == 0
    status = cluster.status()
    assert status.returncode == 0, status.stdout
    assert set(_rows(status.stdout).values()) == {("5", str(int(version) + 1), "-")}


@pytest.mark.parametrize("damage", ["emptied", "zero-length", "replaced", "foreign"])
def test_a_damaged_store_found_at_start_is_refused_with_one_line(cluster: Cluster, damage: str) -> None:
    for n in (1, 2, 3):
        cluster.start_participant(n)
    assert cluster.client("--value", "8").returncode == 0
    cluster.stop()
    data = cluster.workdir / "data"
    one = data / "server1.sqlite3"
    if damage == "emptied":
        for f in data.glob("server1.sqlite3*"):
            f.unlink()
    elif damage == "zero-length":
        one.write_bytes(b"")
    elif damage == "replaced":  # a store of server1, but not the one it ran on: made in another folder
        from harness.node.storage import Storage

        other = cluster.workdir / "elsewhere"
        Storage(other / "x.sqlite3", "server1", cluster=cluster.members.split(",")).close()
        one.write_bytes((other / "x.sqlite3").read_bytes())
    elif damage == "foreign":
        one.write_bytes((data / "server2.sqlite3").read_bytes())
    for f in data.glob("server1.sqlite3-*"):
        if damage != "emptied":
            f.unlink()
    done = _participant(cluster.workdir, "1", "--port", str(cluster.ports[1]), "--cluster", cluster.members)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_log_that_cannot_be_written_stops_the_participant_with_exit_3(tmp_path: Path) -> None:
    from harness.node.address import pick_port

    port = pick_port()
    done = _participant(tmp_path, "1", "--port", str(port), "--cluster", f"127.0.0.1:{port}", "--log", "/dev/full")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "cannot write its event log" in done.stderr, done.stderr


def test_a_run_over_tls_with_a_participant_crash_point_is_consistent(tmp_path: Path, certs: Path) -> None:
    # Crash points watch the write buffer, whose limits asyncio's TLS transport reads differently.
    args = ["--clients", "2", "--transactions", "4", "--base-port", "0", "--tls", str(certs)]
    args += ["--crash", "participant:after-vote", "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "harness.run", *args],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "CONSISTENT" in done.stdout
    assert " tls=on" in (tmp_path / "run" / "server1.log").read_text()
    # The folder had the CA's key: the run made each of its nodes a certificate by its name
    # in this run (ports bound only then), and gave the nodes that folder, not the key.
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    issued = tmp_path / "run" / "tls"
    assert sorted(names_in(issued, Role.MEMBER)) == sorted(p["address"] for p in run["participants"])
    assert names_in(issued, Role.CLIENT) == ["client1", "client2"]
    assert not (issued / "ca.key").exists()
