"""Off loopback: participants on the address of a network namespace this test makes (root only).

A veth pair joins a namespace of the test's own to this one, on a /30 of
10.213.0.0/16 that nothing else uses; every link, namespace and process is
removed by its own name or handle at the end. Off loopback a participant
refuses to listen without TLS; with it, a client inside the namespace commits,
and a stranger there gets nothing through.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WAIT, NodeProcess, child_env

from harness.node.address import pick_port
from harness.node.certificates import issue as issue_certs

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 to make a network namespace (CI runs as root)",
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=WAIT)


@pytest.fixture
def namespace() -> Iterator[tuple[str, str, str]]:
    """(namespace name, this side's address, the namespace side's address)."""
    tag = secrets.token_hex(3)
    ns, here, there = f"sec{tag}", f"sa{tag}", f"sb{tag}"
    third = int(tag[:2], 16)
    fourth = int(tag[2:4], 16) & 0xFC
    mine, theirs = f"10.213.{third}.{fourth + 1}", f"10.213.{third}.{fourth + 2}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{mine}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", ns, "addr", "add", f"{theirs}/30", "dev", there)
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, mine, theirs
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=WAIT)  # takes its veth end along
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=WAIT)  # gone already, normally


def _in(ns: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )


def test_off_loopback_only_with_tls_and_only_for_certificate_holders(
    namespace: tuple[str, str, str], tmp_path: Path
) -> None:
    ns, mine, _theirs = namespace
    plain = subprocess.run(
        [sys.executable, "-m", "harness.participant", "1", "--host", mine, "--port", "0", "--quiet"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1 and "without --tls" in plain.stderr

    ports = [pick_port(mine) for _ in range(3)]
    members = ",".join(f"{mine}:{p}" for p in ports)
    certs = tmp_path / "certs"
    issue_certs(certs, members.split(","), ["client"])
    tls = ["--cluster", members, "--tls", str(certs)]
    procs = []
    try:
        for n, port in enumerate(ports, 1):
            proc = NodeProcess(
                ["-m", "harness.participant", str(n), "--host", mine, "--port", str(port), *tls],
                tmp_path,
            )
            procs.append(proc)
            proc.wait_for(rf" listening addr={re.escape(mine)}:{port} ")
        done = _in(ns, "-m", "harness.client", "--servers", members, "--tls", str(certs), "--value", "9", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        stranger = _in(
            ns,
            "-c",
            "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); "
            "s.sendall(b'PREPARE txid=evil value=666 participants=' + sys.argv[3].encode() + b'\\n'); "
            "s.sendall(b'COMMIT txid=evil\\n'); print(repr(s.recv(4096)))",
            mine,
            str(ports[0]),
            members,
            cwd=tmp_path,
        )
        assert b"VOTE" not in stranger.stdout.encode() and "OUTCOME" not in stranger.stdout, stranger.stdout
        status = _in(ns, "-m", "harness.status", "--servers", members, "--tls", str(certs), cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "consistent: storage_server=9 version=1" in status.stdout
    finally:
        for proc in procs:
            proc.stop()
