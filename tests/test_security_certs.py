"""Per-node certificates and who may say what (docs/security.md), on real processes.

One certificate per member, naming it (``host:port``), and one per client
(its name, which begins its txids). A client may prepare, commit, abort and
resolve only its own txids; a member may resolve any; a member's certificate
is good only under its own name, and only for a member of the cluster.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, Cluster, child_env

from harness import certs as certs_cli
from harness.events.log import EventLog
from harness.node.certificates import CertError, issue
from harness.node.client_node import ClientNode
from harness.node.tls import TRUSTED, Identity, Role, load, names_in, refusal, txid_owner
from harness.protocol.messages import TXID_RE, decode

ALICE, MALLORY = "alice", "mal-lory"  # a dash in a name: the owner is all before the txid's last two


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=WAIT
    )


# ---------------------------------------------------------------- the rule, without processes


def test_a_txid_belongs_to_the_client_whose_name_begins_it(tmp_path: Path) -> None:
    for name in ("client1", MALLORY, "a-b-c", "x" * 40):  # the longest name harness.certs issues
        client = ClientNode(name, [], EventLog(None, name))
        txid = client.new_txid()  # the txids a real client makes
        assert txid_owner(txid) == name, txid
        assert TXID_RE.fullmatch(txid.rsplit("-", 1)[0] + f"-{10**9}"), txid  # a valid txid, up to its billionth
    assert txid_owner("solo") is None and txid_owner("-x-1") is None


def test_refusal_by_role_and_owner() -> None:
    alice, mallory = Identity(Role.CLIENT, ALICE), Identity(Role.CLIENT, MALLORY)
    member = Identity(Role.MEMBER, "127.0.0.1:8886")
    mine = "alice-00aa-1"
    for line in (f"PREPARE txid={mine} value=1 participants=127.0.0.1:8886", f"COMMIT txid={mine}"):
        msg = decode(line.encode())
        assert refusal(alice, msg) is None and refusal(TRUSTED, msg) is None
        assert getattr(refusal(mallory, msg), "code", None) == "not-yours"
        assert getattr(refusal(member, msg), "code", None) == "forbidden"
    for line in (f"ABORT txid={mine}", f"RESOLVE txid={mine}"):
        assert getattr(refusal(mallory, decode(line.encode())), "code", None) == "not-yours"
    resolve = decode(f"RESOLVE txid={mine}".encode())
    assert refusal(member, resolve) is None and refusal(alice, resolve) is None
    assert refusal(mallory, decode(b"STATUS")) is None


def test_the_certs_command_adds_to_its_ca_and_refuses_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "c"
    assert certs_cli.main([str(folder)]) == 0  # the seed's three members and one client
    assert names_in(folder, Role.MEMBER) == ["127.0.0.1:8886", "127.0.0.1:8887", "127.0.0.1:8888"]
    ca = (folder / "ca.pem").read_bytes()
    assert certs_cli.main([str(folder), "--members", "10.0.0.5:8886", "--clients", "bob"]) == 0
    assert (folder / "ca.pem").read_bytes() == ca  # the same CA: the new certificates join the old ones
    assert names_in(folder, Role.CLIENT) == ["bob", "client"]
    assert (folder / "members" / "10.0.0.5:8886.key").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    for bad in (["--members", "10.0.0.5"], ["--clients", "../x"], ["--clients", "a b"], ["--clients", "x" * 41]):
        assert certs_cli.main([str(folder), *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(CertError):
        issue(folder, members=["host/x:1"])
    assert certs_cli.main([str(folder), "--force", "--members", "127.0.0.1:9"]) == 0
    assert (folder / "ca.pem").read_bytes() != ca and names_in(folder, Role.MEMBER) == ["127.0.0.1:9"]


# ---------------------------------------------------------------- real processes


@pytest.fixture
def certified(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    """A TLS cluster of three, each with its own certificate, and clients alice and mallory."""
    c = Cluster(tmp_path)
    folder = tmp_path / "certs"
    issue(folder, c.members.split(","), [ALICE, MALLORY])
    c.extra = ["--tls", str(folder)]
    try:
        yield c, folder
    finally:
        c.stop()


class _Line:
    """A TLS connection speaking the wire protocol by hand."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        self.file = self.sock.makefile("rb")

    def ask(self, line: str) -> str:
        self.sock.sendall(f"{line}\n".encode())
        return self.file.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_a_client_cannot_commit_abort_or_resolve_another_clients_transaction(
    certified: tuple[Cluster, Path],
) -> None:
    cluster, folder = certified
    for n in (1, 2, 3):
        cluster.start_participant(n, "--resolve-after", "30")  # nobody resolves it meanwhile
    names, port = cluster.members, cluster.ports[1]
    txid = f"{ALICE}-0a0b-1"
    alice = _Line(port, load(folder, member=False, name=ALICE).client)
    try:
        assert alice.ask(f"PREPARE txid={txid} value=42 participants={names}").startswith(f"VOTE txid={txid} vote=ok")
        for line in (
            f"COMMIT txid={txid}",
            f"ABORT txid={txid}",
            f"RESOLVE txid={txid}",
            f"PREPARE txid={txid} value=666 participants={names}",
        ):
            mallory = _Line(port, load(folder, member=False, name=MALLORY).client)
            try:
                reply = mallory.ask(line)
                assert reply.startswith("ERROR code=not-yours "), (line, reply)
                assert mallory.file.readline() == b""  # and closed
            finally:
                mallory.close()
        # A member may resolve anyone's transaction (cooperative termination): it is still prepared.
        member = _Line(port, load(folder, member=True, name=names.split(",")[1]).client)
        try:
            assert member.ask(f"RESOLVE txid={txid}").startswith(f"OUTCOME txid={txid} state=prepared")
        finally:
            member.close()
        status = cluster.status()
        assert f"127.0.0.1:{port}" in status.stdout and f" {txid} " in status.stdout, status.stdout
        assert alice.ask(f"ABORT txid={txid}").startswith(f"OUTCOME txid={txid} state=aborted")  # its owner may
    finally:
        alice.close()
    done = cluster.client("--name", ALICE, "--value", "7")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent: storage_server=7 version=1" in cluster.status().stdout
    log = (cluster.workdir / "logs" / "server1.log").read_text()
    assert len(re.findall(r" bad-input peer=\S+ code=not-yours ", log)) == log.count(" bad-input ") == 4, log[-2000:]


def test_a_member_certificate_is_good_only_under_its_own_name(certified: tuple[Cluster, Path], tmp_path: Path) -> None:
    cluster, folder = certified
    p1 = cluster.start_participant(1, "--resolve-after", "0.3")
    cluster.start_participant(2, "--resolve-after", "0.3")
    names = cluster.members.split(",")
    # In member 3's place, a server presenting member 2's certificate (a stolen key used under another name).
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(folder / "ca.pem")
    server.load_cert_chain(folder / "members" / f"{names[1]}.pem", folder / "members" / f"{names[1]}.key")
    impostor = socket.create_server(("127.0.0.1", cluster.ports[3]))
    heard: list[bytes] = []
    handshakes = threading.Semaphore(0)
    accepted: list[socket.socket] = []  # shut down at the end: a read blocked on one returns

    def serve() -> None:
        while True:
            try:
                raw, _ = impostor.accept()
            except OSError:
                return  # closed: the test is over
            accepted.append(raw)
            raw.settimeout(WAIT)
            try:
                with server.wrap_socket(raw, server_side=True) as conn:
                    handshakes.release()
                    heard.append(conn.recv(4096))
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # A client refuses it: its certificate is not member 3's.
        done = cluster.client("--name", ALICE, "--value", "5")
        assert done.returncode == 2 and f"cannot connect to participant {names[2]}" in done.stderr, done.stderr
        assert handshakes.acquire(timeout=WAIT)
        status = cluster.status()  # nor does harness.status believe its STATE
        assert f"not member {names[2]}'s" in status.stdout + status.stderr, status.stdout + status.stderr
        # A peer refuses it too: member 1, holding a transaction prepared, asks its peers to resolve it.
        alice = _Line(cluster.ports[1], load(folder, member=False, name=ALICE).client)
        try:
            reply = alice.ask(f"PREPARE txid={ALICE}-0c-1 value=5 participants={','.join(names)}")
            assert reply.startswith("VOTE"), reply
            p1.wait_for(rf" unreachable .*its certificate is not member {re.escape(names[2])}'s")
        finally:
            alice.close()
    finally:
        with contextlib.suppress(OSError):
            impostor.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not, on Linux)
        impostor.close()
        for raw in accepted:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
        thread.join(WAIT)
    assert not thread.is_alive()
    assert not [h for h in heard if h], heard  # nobody sent it a line
    # A member certificate of a name outside the cluster: refused at once, nothing read.
    issue(folder, members=["127.0.0.1:1"])
    outsider = _Line(cluster.ports[1], load(folder, member=True, name="127.0.0.1:1").client)
    try:
        with pytest.raises(OSError):
            reply = outsider.ask(f"RESOLVE txid={ALICE}-0c-1")
            if not reply:
                raise ConnectionError("closed")
    finally:
        outsider.close()
    p1.wait_for(r"forbidden.*member 127\.0\.0\.1:1 is not in this cluster")


def test_a_participant_or_client_without_its_certificate_is_told_in_one_line(certified: tuple[Cluster, Path]) -> None:
    cluster, folder = certified
    port = 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = _run(
        cluster.workdir,
        *("-m", "harness.participant", "1", "--port", str(port), "--cluster", f"127.0.0.1:{port}"),
        *("--tls", str(folder), "--quiet"),
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"no certificate for member 127.0.0.1:{port}" in done.stderr and "--members" in done.stderr
    done = _run(cluster.workdir, "-m", "harness.client", "--servers", cluster.members, "--tls", str(folder))
    assert done.returncode == 2 and "--name" in done.stderr and ALICE in done.stderr, done.stderr
