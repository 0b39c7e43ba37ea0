"""Participants and clients as real processes on free ports, as a person runs them."""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import pytest
from conftest import Cluster, LineClient

from harness.node import address


def _status_rows(out: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in out.splitlines():
        m = re.match(r"(127\.0\.0\.1:\d+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return rows


def test_client_commits_on_three_participants(cluster: Cluster) -> None:
    for n in (1, 2, 3):
        cluster.start_participant(n)
    done = cluster.client("--value", "42", "--name", "c1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("committed txid=c1-")
    status = cluster.status()
    assert status.returncode == 0, status.stdout
    assert set(_status_rows(status.stdout).values()) == {("42", "1", "-")}


def test_client_aborts_when_a_participant_promised_another_transaction(cluster: Cluster) -> None:
    for n in (1, 2, 3):
        cluster.start_participant(n)
    names = cluster.servers
    # A coordinator by hand takes every participant's promise for txid hand-1 ...
    hand = [LineClient(cluster.ports[n]) for n in (1, 2, 3)]
    try:
        for c in hand:
            assert c.ask(f"PREPARE txid=hand-1 value=7 participants={names}") == "VOTE txid=hand-1 vote=ok"
        # ... so the client gets NOK ("already promised") and aborts everywhere.
        contender = cluster.client("--value", "99", "--name", "c2")
        assert contender.returncode == 1
        assert contender.stdout.startswith("aborted txid=c2-")
        assert "voted NOK: locked by hand-1" in contender.stdout
        for c in hand:
            assert c.ask("COMMIT txid=hand-1") == "OUTCOME txid=hand-1 state=committed"
    finally:
        for c in hand:
            c.close()
    status = cluster.status()
    assert status.returncode == 0
    assert set(_status_rows(status.stdout).values()) == {("7", "1", "-")}


def test_concurrent_clients_leave_every_replica_equal(cluster: Cluster) -> None:
    for n in (1, 2, 3):
        cluster.start_participant(n)
    clients = [
        cluster.start_client(
            "--value", str(v), "--count", "5", "--name", f"c{v}", "--retry", "backoff", "--seed", str(v)
        )
        for v in (1, 2, 3)
    ]
    codes = [c.wait_exit() for c in clients]
    assert codes == [0, 0, 0]  # with retries every transaction commits in the end
    rows = _status_rows(cluster.status().stdout)
    assert len(set(rows.values())) == 1
    value, version, lock = next(iter(rows.values()))
    assert version == "15" and lock == "-"
    assert value in {"1", "2", "3"}


def test_participant_killed_after_its_yes_vote_recovers_the_commit(cluster: Cluster) -> None:
    cluster.start_participant(1)
    cluster.start_participant(2)
    p3 = cluster.start_participant(3, "--crash", "after-vote")
    done = cluster.client("--value", "42", "--name", "c1")
    p3.wait_for(r" crash point=after-vote signal=SIGKILL")
    assert p3.wait_exit() == -9
    assert done.returncode == 0, done.stdout  # every vote was yes: the decision is commit
    p3 = cluster.start_participant(3)  # same port, same data directory
    p3.wait_for(r" durable committed c1\S+ value=42 version=1 ")
    status = cluster.status()
    assert status.returncode == 0, status.stdout
    assert set(_status_rows(status.stdout).values()) == {("42", "1", "-")}


def test_participant_killed_before_its_vote_leaves_an_unknown_that_the_participants_resolve(
    cluster: Cluster,
) -> None:
    cluster.start_participant(1, "--resolve-after", "0.2")
    cluster.start_participant(2, "--resolve-after", "0.2")
    p3 = cluster.start_participant(3, "--crash", "before-vote")
    done = cluster.client("--value", "5", "--name", "c1", "--timeout", "0.5")
    assert p3.wait_exit() == -9
    # p3's yes vote was durable but never sent: the client cannot know.
    assert done.returncode == 1 and done.stdout.startswith("unknown txid=c1-"), done.stdout
    p3 = cluster.start_participant(3)
    # Restarted, p3 asks its peers; everyone voted yes, so all commit.
    p3.wait_for(r" durable committed c1\S+ value=5 version=1 ")
    status = cluster.status()
    for _ in range(2):  # the peers commit when their own resolve timer fires
        if status.returncode == 0:
            break
        cluster.procs[0].wait_for(r" durable committed c1\S+ ")
        cluster.procs[1].wait_for(r" durable committed c1\S+ ")
        status = cluster.status()
    assert set(_status_rows(status.stdout).values()) == {("5", "1", "-")}, status.stdout


def test_a_reply_is_in_the_participants_log_before_it_arrives(cluster: Cluster) -> None:
    """The log is buffered, but flushed before anything leaves: whoever holds a
    reply can find it, and the durable record behind it, in the log already."""
    cluster.start_participant(1)
    log = cluster.workdir / "logs" / "server1.log"
    c = LineClient(cluster.ports[1])
    try:
        # Hand-typed, with extra blanks: logged as it came.
        assert c.ask(f"PREPARE  txid=hand-1 value=7 participants={cluster.servers}") == "VOTE txid=hand-1 vote=ok"
        events = [line.split(" ", 3)[2:] for line in log.read_text().splitlines()]
        assert events[-3:] == [
            ["recv", f"peer={c.name} msg=PREPARE  txid=hand-1 value=7 participants={cluster.servers}"],
            ["durable", f'txid=hand-1 state=prepared value=7 version=0 participants={cluster.servers} why="vote yes"'],
            ["send", f"peer={c.name} msg=VOTE txid=hand-1 vote=ok"],
        ]
        assert c.ask("COMMIT txid=hand-1") == "OUTCOME txid=hand-1 state=committed"
        # (The commit record itself may follow: it is lazy, harness.protocol.participant.)
        sent = f" send peer={c.name} msg=OUTCOME txid=hand-1 state=committed"
        assert any(line.endswith(sent) for line in log.read_text().splitlines())
    finally:
        c.close()


def test_a_peer_done_sending_still_gets_its_replies_then_a_close(cluster: Cluster) -> None:
    # nc -N: the request, then shutdown(SHUT_WR); with --delay the vote is still queued then.
    cluster.start_participant(1, "--delay", "0.2")
    c = LineClient(cluster.ports[1])
    try:
        c.send(f"PREPARE txid=hand-1 value=7 participants={cluster.servers}\nSTATUS\n".encode())
        c.sock.shutdown(socket.SHUT_WR)
        assert c.readline() == "VOTE txid=hand-1 vote=ok"
        assert c.readline().startswith("STATE ")
        assert c.readline() == ""  # and then the participant closes
    finally:
        c.close()


def test_garbage_gets_an_error_reply_and_a_closed_connection(cluster: Cluster) -> None:
    cluster.start_participant(1)
    port = cluster.ports[1]
    for garbage in (
        b"hello\n",
        b"PREPARE txid=x value=notanumber participants=127.0.0.1:1\n",
        b"\xff\xfe\n",
        b"A" * 5000,
        b"COMMIT txid=t1 extra=1\n",
    ):
        c = LineClient(port)
        try:
            c.send(garbage)
            reply = c.readline()
            assert reply.startswith("ERROR code="), (garbage[:20], reply)
            assert c.readline() == ""  # then the participant closes the connection
        finally:
            c.close()
    c = LineClient(port)
    try:
        assert re.match(
            r"STATE node=127\.0\.0\.1:\d+ storage_server=0 version=0 lock=- committed=0 aborted=0$", c.ask("STATUS")
        )
    finally:
        c.close()


def test_client_without_participants_exits_2_with_one_line(cluster: Cluster, dead_port: int) -> None:
    cluster.start_participant(1)
    cluster.start_participant(2)
    free = cluster.ports[3] = dead_port
    done = cluster.client("--value", "1")
    assert done.returncode == 2
    assert done.stderr.strip() == f"harness.client: cannot connect to participant 127.0.0.1:{free}"
    assert done.stdout == ""


def test_status_exits_1_when_a_participant_does_not_answer(cluster: Cluster, dead_port: int) -> None:
    cluster.start_participant(1)
    cluster.ports[2] = dead_port
    status = cluster.status()
    assert status.returncode == 1
    assert f"127.0.0.1:{dead_port}: Connection refused" in status.stdout and "NOT consistent" in status.stdout


def test_port_0_listens_below_the_ephemeral_range_and_a_taken_port_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Below the range connect() draws local ports from, a port stays free
    # while its participant is down (and no client can be given it as its own).
    ranges = tmp_path / "ip_local_port_range"
    monkeypatch.setattr(address, "LOCAL_PORT_RANGE", str(ranges))
    ranges.write_text("41000\t60999\n")
    socks = [address.listen_socket("127.0.0.1", 0) for _ in range(5)]
    try:
        ports = [s.getsockname()[1] for s in socks]
        assert all(address.STATIC_PORTS_FROM <= p < 41000 for p in ports) and len(set(ports)) == 5
        with pytest.raises(OSError) as taken:
            address.listen_socket("127.0.0.1", ports[0])
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        for s in socks:
            s.close()
    # No room below the range, or no range to read: any free port, as the kernel gives it.
    real = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low, high = map(int, real.read_text().split()) if real.exists() else (1, 65535)
    for text in ("20500 60999\n", None):
        if text is None:
            ranges.unlink()
        else:
            ranges.write_text(text)
        with address.listen_socket("127.0.0.1", 0) as sock:
            assert low <= sock.getsockname()[1] <= high
