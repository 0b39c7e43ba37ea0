"""The runner end to end: real processes on ephemeral ports, checked from the run folder."""

from __future__ import annotations

import json
import multiprocessing
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env

from harness.events.log import read_log
from harness.experiment.config import RunConfig
from harness.experiment.processes import RunError
from harness.experiment.runner import run
from harness.verify.checker import check_run


def _run(tmp_path: Path, **kw: object) -> Path:
    config = RunConfig(base_port=0, out=tmp_path / "run", **kw)  # type: ignore[arg-type]
    run(config)
    assert multiprocessing.active_children() == []  # every child stopped
    return tmp_path / "run"


def test_five_clients_contend_and_stay_consistent(tmp_path: Path) -> None:
    folder = _run(tmp_path, clients=5, transactions=5, seed=1)
    report = check_run(folder)
    assert report.violations == []
    assert sum(c.attempted for c in report.clients) == 25
    committed = sum(c.committed for c in report.clients)
    assert committed >= 1
    # every replica applied every commit, and holds the last one's value
    final = json.loads((folder / "final_states.json").read_text())
    sequences = {tuple(map(tuple, f["storage"]["committed"])) for f in final.values()}
    assert len(sequences) == 1
    (sequence,) = sequences
    assert len(sequence) == committed
    assert {r.storage_server for r in report.replicas} == {sequence[-1][2]}


def test_twenty_clients_stay_consistent(tmp_path: Path) -> None:
    report = check_run(_run(tmp_path, clients=20, transactions=3, retry="backoff", seed=2))
    assert report.consistent, report.violations
    assert sum(c.attempted for c in report.clients) >= 60


def test_a_lone_client_commits_every_transaction(tmp_path: Path) -> None:
    report = check_run(_run(tmp_path, clients=1, transactions=20))
    assert report.consistent
    (client,) = report.clients
    assert (client.attempted, client.committed, client.unknown) == (20, 20, 0)  # AC4: no conflict, all commit
    assert {(r.storage_server, r.version) for r in report.replicas} == {(1_000_020, 20)}


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RunError, match=rf"cannot listen on 127\.0\.0\.1:{port}: .*in use"):
            run(RunConfig(clients=1, participants=1, base_port=port, out=tmp_path / "run"))
    assert multiprocessing.active_children() == []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=120
    )


def test_cli_reports_tables_summary_and_the_repeat_command(tmp_path: Path) -> None:
    done = _cli(
        "harness.run",
        "--clients",
        "3",
        "--transactions",
        "4",
        "--base-port",
        "0",
        "--seed",
        "7",
        "--out",
        "r1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^CONSISTENT: 3 replicas hold storage_server=\d+ \(version \d+\)$", done.stdout, re.M)
    assert "repeat it:  python -m harness.run --clients 3 --transactions 4 --base-port 0 --seed 7" in done.stdout
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["verdict"] == "consistent" and summary["seed"] == 7
    assert sum(c["attempted"] for c in summary["clients"]) == 12
    assert {r["storage_server"] for r in summary["replicas"]} == {summary["replicas"][0]["storage_server"]}
    assert "| client" in (tmp_path / "r1" / "summary.md").read_text()
    again = _cli("harness.check", "r1", cwd=tmp_path)
    assert again.returncode == 0 and "CONSISTENT" in again.stdout


def test_check_exits_1_on_a_tampered_folder_and_2_on_a_missing_one(tmp_path: Path) -> None:
    folder = _run(tmp_path, clients=2, transactions=3)
    final_path = folder / "final_states.json"
    final = json.loads(final_path.read_text())
    final["server2"]["storage"]["committed"][-1][2] += 1  # one replica's last value is off
    final_path.write_text(json.dumps(final))
    assert _cli("harness.check", str(folder), cwd=tmp_path).returncode == 1
    missing = _cli("harness.check", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and "run.json is missing" in missing.stderr


@pytest.mark.parametrize("args", [["--clients", "0"], ["--base-port", "80"], ["--retry", "sometimes"]])
def test_bad_flags_exit_2_with_a_message(tmp_path: Path, args: list[str]) -> None:
    done = _cli("harness.run", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def _pids(folder: Path) -> list[int]:
    pids = []
    for log in folder.glob("*.log"):
        pids += [int(line.fields["pid"]) for line in read_log(log) if line.event in ("listening", "connected")]
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead but not yet reaped by its parent
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_stops_every_process_and_checks_what_it_did(tmp_path: Path, signum: int) -> None:
    # A terminal, so that the runner shows progress: its first progress line
    # says the clients are running. SIGINT goes to the runner's process group,
    # as a terminal's Ctrl-C does; SIGTERM to the runner alone, as kill does.
    leader, follower = pty.openpty()
    # A shell's background job starts with SIGINT ignored, and an ignored
    # signal stays ignored across exec: give the runner the default a terminal
    # gives it (a handled signal is reset to the default by exec). Not
    # preexec_fn: unsafe with the threads the fixtures start.
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness.run",
                "--clients",
                "3",
                "--transactions",
                "1000",
                "--base-port",
                "0",
                "--delay",
                "0.01",
                "--no-watch",
                "--out",
                "r",
            ],
            cwd=tmp_path,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            start_new_session=True,
        )
    finally:
        if sigint is not None:  # None: a handler not set from Python, left as it was
            signal.signal(signal.SIGINT, sigint)
    os.close(follower)
    seen = b""
    try:
        while not re.search(rb"/3000 transactions \([1-9]", seen):  # the clients have committed some
            chunk = os.read(leader, 4096)
            assert chunk, "the runner closed its terminal before showing progress"
            seen += chunk
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        while True:  # what the runner wrote to its terminal after the signal
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            seen += chunk
        os.close(leader)
        assert proc.stdout is not None
        proc.stdout.close()
    name = signal.Signals(signum).name
    assert f"harness.run: {name}: stopping the clients" in seen.decode(errors="replace")
    assert f"INTERRUPTED ({name}): no violation in what it did" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == name
    assert 0 < sum(c["committed"] for c in summary["clients"]) < 3000
    again = _cli("harness.check", "r", cwd=tmp_path)
    assert again.returncode == 0 and f"INTERRUPTED ({name})" in again.stdout
    pids = _pids(tmp_path / "r")
    assert len(pids) == 6
    assert [p for p in pids if _alive(p)] == []
