"""Bad paths a person meets at the terminal: each ends in one line naming the problem and exit 2
(usage or environment) or 3 (storage failure), never a traceback. Real processes throughout."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cluster, child_env

from harness import __version__
from harness.node.address import default_servers
from harness.node.storage import Storage
from harness.protocol.messages import TxState
from harness.protocol.participant import TxRecord


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=60
    )


def _one_line_error(done: subprocess.CompletedProcess[str], status: int, *words: str) -> str:
    """The process exited ``status`` with one line on standard error holding every one of ``words``."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _free_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_participant_data_dir_under_a_regular_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = _cli("harness.participant", "1", "--port", "0", "--data-dir", "file/data", cwd=tmp_path)
    _one_line_error(done, 2, "participant 1:", "file is a file, not a folder")


def test_participant_log_under_a_regular_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = _cli("harness.participant", "1", "--port", "0", "--log", "file/server1.log", cwd=tmp_path)
    _one_line_error(done, 2, "cannot write the event log", "file")


def test_client_log_under_a_regular_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = _cli("harness.client", "--servers", f"127.0.0.1:{_free_port()}", "--log", "file/c.log", cwd=tmp_path)
    _one_line_error(done, 2, "harness.client:", "cannot write the event log")


def test_participant_on_a_read_only_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    if os.geteuid() != 0:
        data.chmod(0o555)
        done = _cli("harness.participant", "1", "--port", "0", "--data-dir", "ro", cwd=tmp_path)
    else:  # root writes through file modes: make the folder a read-only mount, in a mount namespace of its own
        if shutil.which("unshare") is None:
            pytest.skip("root, and no unshare(1) to make a read-only mount")
        script = (
            f"mount -t tmpfs -o ro tmpfs {data} && "
            f"exec {sys.executable} -m harness.participant 1 --port 0 --data-dir ro --log logs/server1.log"
        )
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    _one_line_error(done, 2, "participant 1:", "ro is read-only")


def _stored(tmp_path: Path) -> Path:
    """A store of participant 1 of the seed's cluster, with one record."""
    path = tmp_path / "data" / "server1.sqlite3"
    storage = Storage(path, "server1", cluster=[f"{h}:{p}" for h, p in default_servers()])
    storage.write([TxRecord(txid="c1-000000000000-1", state=TxState.PREPARED, value=7, participants=("a:1", "b:2"))])
    storage.close()
    return path


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE txns SET state = 'bogus'",
        "UPDATE txns SET value = 'seven'",
        "UPDATE txns SET participants = 12",
    ],
)
def test_participant_with_a_damaged_row_refuses_to_start_in_one_line(tmp_path: Path, damage: str) -> None:
    """A store it cannot trust: refused at start, exit 2 (docs/security.md); the row is named."""
    path = _stored(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(damage)
    done = _cli("harness.participant", "1", "--port", "0", cwd=tmp_path)
    _one_line_error(done, 2, "participant 1:", "c1-000000000000-1", "is corrupt")


def test_participant_with_a_file_that_is_not_a_database_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "server1.sqlite3").write_bytes(b"this is not SQLite" * 100)
    done = _cli("harness.participant", "1", "--port", "0", cwd=tmp_path)
    _one_line_error(done, 2, "participant 1:", "server1.sqlite3")


@pytest.mark.parametrize("value", [str(2**63), "99999999999999999999999", str(-(2**63) - 1)])
def test_an_out_of_range_value_is_a_usage_error_up_front(tmp_path: Path, value: str) -> None:
    # nothing listens: the value is refused before anything is tried
    client = _cli("harness.client", "--servers", f"127.0.0.1:{_free_port()}", "--value", value, cwd=tmp_path)
    assert client.returncode == 2 and "--value must be within" in client.stderr
    assert "Traceback" not in client.stderr
    run = _cli("harness.run", "--base-port", "0", "--value", value, cwd=tmp_path)
    assert run.returncode == 2 and "--value must be within" in run.stderr
    assert not (tmp_path / "reports").exists()  # refused before a run folder was made


def test_status_with_nothing_listening_is_one_line_and_exit_2(tmp_path: Path) -> None:
    servers = f"127.0.0.1:{_free_port()},127.0.0.1:{_free_port()}"
    done = _cli("harness.status", "--servers", servers, cwd=tmp_path)
    line = _one_line_error(done, 2, "harness.status: no participant answered", "Connection refused")
    assert "Errno" not in line and done.stdout == ""


def test_status_refuses_a_negative_timeout(tmp_path: Path) -> None:
    done = _cli("harness.status", "--timeout", "-1", cwd=tmp_path)
    assert done.returncode == 2 and "--timeout must be > 0" in done.stderr


@pytest.mark.parametrize(
    "program",
    ["harness", "harness.participant", "harness.client", "harness.status", "harness.run", "harness.check"],
)
def test_every_program_tells_its_version(tmp_path: Path, program: str) -> None:
    done = _cli(program, "--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith(__version__), done.stdout + done.stderr


def test_python_m_harness_runs_each_program_by_name(tmp_path: Path) -> None:
    for name in ("sim", "bench"):
        done = _cli("harness", name, "--version", cwd=tmp_path)
        assert done.returncode == 0 and __version__ in done.stdout
    done = _cli("harness", "status", "--timeout", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--timeout must be > 0" in done.stderr
    done = _cli("harness", cwd=tmp_path)
    assert done.returncode == 2 and "harness --help" in done.stderr
    done = _cli("harness", "nonsense", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_pip_install_puts_the_commands_beside_python(tmp_path: Path) -> None:
    scripts = Path(sys.executable).parent
    if not (scripts / "harness-run").exists():
        pytest.skip("the harness is not pip-installed into this Python (CI installs it: pip install '.[test]')")
    for command in ("harness", "harness-run", "harness-participant", "harness-client", "harness-status"):
        done = subprocess.run(
            [str(scripts / command), "--version"], env=child_env(), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and __version__ in done.stdout, (command, done.stderr)


def test_a_reader_that_goes_away_is_not_met_with_a_traceback(tmp_path: Path) -> None:
    # `harness sim random ... | head -1`: the pipe closes before the program writes
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "sim", "random", "--runs", "2", "--seed", "1"],
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err == ""


def test_a_participant_goes_on_from_its_records_and_fresh_starts_from_zero(cluster: Cluster) -> None:
    storage = Storage(cluster.workdir / "data" / "server1.sqlite3", "server1", cluster=cluster.members.split(","))
    storage.write(
        [TxRecord(txid="c1-000000000000-1", state=TxState.COMMITTED, value=42, participants=("a:1",), version=1)]
    )
    storage.close()
    (cluster.workdir / "logs").mkdir()
    (cluster.workdir / "logs" / "server1.log").write_text("an old session's log\n")
    old = cluster.start_participant(1)
    assert any("going on from data/server1.sqlite3; --fresh starts from 0" in line for line in old.seen)
    assert " storage_server=42 " in old.seen[-1]
    old.stop()
    fresh = cluster.start_participant(1, "--fresh")
    assert any("removed data/server1.sqlite3" in line and "logs/server1.log" in line for line in fresh.seen)
    assert " storage_server=0 version=0 " in fresh.seen[-1]
    assert "an old session" not in (cluster.workdir / "logs" / "server1.log").read_text()
