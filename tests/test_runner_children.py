"""The runner's children die with it, even when stopped; a crash point that never fired fails the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import WAIT, child_env

PARENT = """
import os, signal, sys
from harness.experiment.processes import Processes

def sleeper():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as a participant handles SIGTERM
    print(os.getpid(), flush=True)  # its parent-death signal is set by now
    signal.pause()

procs = Processes()
procs.start(sleeper, (), "sleeper")
sys.stdin.read()  # until the test kills us
"""


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_stopped_child_dies_with_a_sigkilled_runner() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    pid = 0
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        os.kill(pid, signal.SIGSTOP)  # as the nemesis pauses a node
        parent.kill()
        parent.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while not _gone(pid):  # polling the kernel: nothing announces a death to a non-parent
            assert time.monotonic() < deadline, f"child {pid} outlived its runner while stopped"
            time.sleep(0.01)
    finally:
        if pid and not _gone(pid):  # the test failed: do not leave the orphan behind
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()


def test_a_requested_crash_point_that_never_fires_fails_the_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.run",
            "--clients",
            "1",
            "--transactions",
            "2",
            "--base-port",
            "0",
            "--crash",
            "participant:after-commit:50",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "crash point server1:after-commit:50 never fired" in done.stderr
    assert "CONSISTENT" in done.stdout  # the run itself was fine: only the test it asked for did not happen
