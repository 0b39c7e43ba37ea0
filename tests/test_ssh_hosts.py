"""Participants on remote hosts over SSH, and a checker that does not trust their clocks.

The SSH test makes three hosts of its own: namespaces on a bridge, each with an
sshd on its address, keys made in the test's tmp dir (tests/hosts_support.py).
It needs root, so it runs in CI and skips elsewhere, saying so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hosts_support import env, need_root, ssh_hosts

from harness.experiment.config import RunConfig, with_default_timeouts
from harness.experiment.runner import run
from harness.hosts import ssh
from harness.run import main as run_main
from harness.verify.checker import check_run
from harness.verify.model import ViolationKind


def test_inventory_defaults_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(
        '[defaults]\nuser = "h2pc"\npython = "/opt/py/bin/python3"\n\n'
        '[[host]]\naddress = "192.0.2.1"\n[[host]]\naddress = "192.0.2.2"\nport = 2222\nuser = "other"\n'
    )
    inventory = ssh.read_inventory(path)
    a, b = inventory.hosts
    assert not inventory.remote_clients
    assert not inventory.private_network  # remote hosts need --tls unless the inventory vouches for them
    assert (a.address, a.user, a.port, a.python) == ("192.0.2.1", "h2pc", 22, "/opt/py/bin/python3")
    assert (b.address, b.user, b.port) == ("192.0.2.2", "other", 2222)
    argv = b.ssh("true")
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "other"
    assert "BatchMode=yes" in argv  # never a password prompt


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no [[host]]"),
        ('[[host]]\nuser = "x"\n', "no address"),
        ('[[host]]\naddress = "a"\nkye = "k"\n', "kye"),
        ('private_network = "yes"\n[[host]]\naddress = "a"\n', "private_network must be true or false"),
    ],
)
def test_inventory_errors_name_the_problem(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(ssh.InventoryError, match=re.escape(error)):
        ssh.read_inventory(path)


def test_remote_command_quotes_and_sets_env() -> None:
    host = ssh.Host(address="192.0.2.1", python="/p y/python", env={"PYTHONPATH": "/a b"})
    command = host.python_command("/tmp/x y", "harness.experiment.remote", "participant", '{"a": 1}')
    assert (
        command
        == "cd '/tmp/x y' && env PYTHONPATH='/a b' '/p y/python' -m harness.experiment.remote participant '{\"a\": 1}'"
    )


# ------------------------------------------------------------ clocks


def _skew(log: Path, seconds: float) -> None:
    """Move every timestamp of a log by ``seconds``, as a host with its own clock would write it."""

    def shift(m: re.Match[str]) -> str:
        t = datetime.strptime(m.group(0), "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(seconds=seconds)
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    log.write_text(re.sub(r"^\S+Z", shift, log.read_text(), flags=re.M))


@pytest.mark.parametrize("clock", ["shared", "per-host"])
def test_validity_compares_timestamps_across_nodes_only_on_one_clock(tmp_path: Path, clock: str) -> None:
    result = run(
        with_default_timeouts(RunConfig(clients=1, transactions=2, base_port=0, out=tmp_path / "run", seed=77))
    )
    assert check_run(result.folder).consistent
    _skew(result.folder / "server2.log", 60.0)  # server2's clock a minute ahead: its votes look late
    meta = json.loads((result.folder / "run.json").read_text())
    meta["clock"] = clock
    (result.folder / "run.json").write_text(json.dumps(meta))
    report = check_run(result.folder)
    early = [v for v in report.violations if v.kind is ViolationKind.VALIDITY and "before server2 voted" in v.message]
    if clock == "shared":
        assert early and not report.consistent  # on one clock, a commit before a vote is a violation
    else:
        assert not early and report.consistent  # on separate clocks, timestamps across nodes prove nothing


# ------------------------------------------------------------ three hosts over SSH


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(("clients", "kinds"), [("local", "kill-participant,pause"), ("hosts", "kill-client,pause")])
def test_nodes_on_three_ssh_hosts_with_kills_and_pauses(tmp_path: Path, clients: str, kinds: str) -> None:
    need_root("sshd", "ssh", "ssh-keygen")
    with ssh_hosts(tmp_path, clients=clients) as (net, inventory):
        done = subprocess.run(
            ["ip", "netns", "exec", net.hub, sys.executable, "-m", "harness.run", "--hosts", str(inventory),
             "--clients", "3", "--duration", "5", "--retry", "backoff", "--nemesis", kinds,
             "--nemesis-interval", "1", "--seed", "905", "--out", str(tmp_path / "run")],
            env=env(), capture_output=True, text=True, timeout=200,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        folder = tmp_path / "run"
        meta = json.loads((folder / "run.json").read_text())
        assert meta["clock"] == "per-host"
        assert [p["address"] for p in meta["participants"]] == [
            f"{a}:{8886 + i}" for i, a in enumerate(net.nodes.values())
        ]
        for i in (1, 2, 3):  # brought home from the hosts
            assert "listening addr=10.213.3." in (folder / f"server{i}.log").read_text()
            assert (folder / "data" / f"server{i}.sqlite3").exists()
        if clients == "hosts":  # clients ran there too: their logs came home with the participants'
            assert all((folder / f"client{i}.log").exists() for i in (1, 2, 3))
            assert json.loads((folder / "summary.json").read_text())["clients"]
        assert not list(folder.glob("*.pid"))
        nemesis = (folder / "nemesis.log").read_text()
        assert " fault " in nemesis and nemesis.count(" fault ") == nemesis.count(" heal ")
        assert check_run(folder).consistent
        # Nothing is left running on the hosts: every remote participant's pid is gone.
        for pidfile in (tmp_path / "remote" / "run").glob("*.pid"):
            pid = int(pidfile.read_text())
            assert not Path(f"/proc/{pid}").exists() or "harness.experiment.remote" not in Path(
                f"/proc/{pid}/cmdline"
            ).read_text(errors="replace"), f"{pidfile.name}: still running"
    assert os.path.exists(tmp_path / "run" / "summary.json")


@pytest.mark.slow
def test_a_host_that_refuses_the_key_is_an_infrastructure_error(tmp_path: Path) -> None:
    need_root("sshd", "ssh", "ssh-keygen")
    with ssh_hosts(tmp_path, count=1) as (net, inventory):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
        text = inventory.read_text()
        key = text.split('key = "')[1].split('"')[0]
        inventory.write_text(text.replace(key, str(tmp_path / "stranger")))
        done = subprocess.run(
            ["ip", "netns", "exec", net.hub, sys.executable, "-m", "harness.run", "--hosts", str(inventory),
             "--clients", "1", "--out", str(tmp_path / "run")],
            env=env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"ssh to root@{net.nodes['host1']}:22 failed" in done.stderr


@pytest.mark.parametrize(
    "fault", [["--nemesis", "partition"], ["--nemesis", "delay"], ["--crash", "partition:between-phases"]]
)
def test_remote_hosts_refuse_network_faults(
    tmp_path: Path, fault: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_main(["--hosts", str(tmp_path / "hosts.toml"), *fault, "--out", str(tmp_path / "run")])
    assert exited.value.code == 2
    assert "remote hosts take kills and pauses only" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
