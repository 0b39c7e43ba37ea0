"""The guided tour (docs/tutorial.md) runs as written: every ``$`` command in it, here.

Theory of operation. The tour's commands are its lines that start with ``$``
in fenced blocks (a trailing backslash continues one). This module names every
one it runs, in the tables below, and ``test_every_command_of_the_tour_is_run_here``
holds the two lists equal: a command added to the tour without a test here, or
a command here that the tour no longer shows, fails. Each runner also refuses
a command the tour does not contain.

The by-hand steps (1 to 4) run through real processes in the order a person
types them, in a temporary folder: three participants, clients, status. The
tour shows the seed's ports 8886-8888; here, and only here, a participant gets
``--port`` (a free one, kept when it restarts) and a client or ``status`` gets
``--servers`` naming them. The ``harness.run`` commands run as written, with
``--base-port 0`` and ``--out`` added. Every output the tour shows is checked
for what the tour says about it, and for its width: COLUMNS=80, and no line
wider than 80 characters, but for two outputs that are not ours to fold: the
client's one-line result (its reason quoted whole) and the explorer's trace.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, WAIT, NodeProcess, child_env, pick_port

from harness.experiment.config import RunConfig, repeat_command, with_default_timeouts
from harness.experiment.faults import parse_nemesis
from harness.protocol import coordinator as co
from harness.protocol.messages import Vote
from harness.report import chromium
from harness.sim import variants
from harness.tour import pictures

DOC = ROOT / "docs" / "tutorial.md"
COLUMNS = 80
RUN_TIMEOUT = 120.0  # a harness.run with faults: its resolve timers, a restart, the checks

# ---------------------------------------------------------------- the tour's commands, by step

P1, P2, P3 = (f"python -m harness.participant {n}" for n in (1, 2, 3))
STATUS = "python -m harness.status"
CLIENT_42 = "python -m harness.client --value 42 -v"
CLIENT_1 = "python -m harness.client --value 1 --delay 1"
CLIENT_2 = "python -m harness.client --value 2 --delay 1"
CLIENT_KILLED = "python -m harness.client --value 7 --crash after-prepare"
P2_CRASH = "python -m harness.participant 2 --crash after-vote"
CLIENT_9 = "python -m harness.client --value 9"
BY_HAND = (P1, P2, P3, STATUS, CLIENT_42, CLIENT_1, CLIENT_2, CLIENT_KILLED, P2_CRASH, CLIENT_9)

NEMESIS = (
    "python -m harness.run --clients 3 --duration 4 --seed 7 --nemesis kill-participant,kill-client,pause,partition"
)
RUNS = {  # a harness.run command -> its exit status and what its output must say
    "python -m harness.run --clients 1 --transactions 3": (0, [r"CONSISTENT: 3 replicas hold storage_server=1000003"]),
    "python -m harness.run --clients 2 --transactions 5": (0, [r"CONSISTENT: 3 replicas"]),
    "python -m harness.run --clients 1 --crash client:after-prepare": (
        0,
        [r"decided among themselves, without their client: 1", r"longest time a lock was held: \d{4}", "CONSISTENT"],
    ),
    "python -m harness.run --clients 1 --crash participant:after-vote": (
        0,
        [r"crash \(after-vote\)\s+server1", r"restarts", "CONSISTENT"],
    ),
    "python -m harness.run --clients 1 --crash partition:between-phases": (
        0,
        [r"partition \(between-phases\)\s+client1->server2", r"longest time a lock was held: \d{4}", "CONSISTENT"],
    ),
    NEMESIS: (0, [r"faults injected: \d+, all healed", "CONSISTENT"]),
    "python -m harness.run --clients 3 --transactions 5 --variant count-no-as-yes": (
        1,
        [r"VIOLATION: \d+ violations? found", r"\[client-truth\] client was told \S+ committed"],
    ),
}
EXPLORE = "python -m harness.sim explore --variant count-no-as-yes"
RANDOM = "python -m harness.sim random --runs 200 --seed 1"
SIM = (EXPLORE, RANDOM)


def doc_commands() -> list[str]:
    """Every ``$`` command of the tour, continuation lines joined, in order."""
    commands, fenced, pending = [], False, ""
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        if pending:
            pending += " " + line.strip()
        elif line.startswith("$ "):
            pending = line[2:].strip()
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
        else:
            commands.append(pending)
            pending = ""
    return commands


def in_tour(command: str) -> list[str]:
    """The words of ``command``, which the tour must show."""
    assert command in doc_commands(), f"not a command of docs/tutorial.md: {command}"
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    return words[2:]


def env80() -> dict[str, str]:
    return {**child_env(), "COLUMNS": str(COLUMNS)}


def too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > COLUMNS]


def test_every_command_of_the_tour_is_run_here() -> None:
    shown = set(doc_commands())
    assert shown, "docs/tutorial.md shows no $ command"
    assert shown == set(BY_HAND) | set(RUNS) | set(SIM)


def test_the_tour_links_every_picture_the_script_makes_and_the_readme_links_the_tour() -> None:
    text = DOC.read_text()
    for shot in pictures.SHOTS:
        assert f"(tutorial/{shot.name}.png)" in text
        assert (DOC.parent / "tutorial" / f"{shot.name}.png").stat().st_size <= pictures.MAX_BYTES
        # the picture is of the very command the tour shows
        assert shlex.join(["python", "-m", "harness.run", *shot.flags]) in RUNS
    readme = (ROOT / "README.md").read_text()
    assert "docs/tutorial.md" in readme.split("## ")[0], "the README links the tour near the top"


# ---------------------------------------------------------------- steps 1-4 by hand


class Terminals:
    """The by-hand steps' processes: participants in terminals of their own, on
    free ports they keep across restarts; one-shot commands run to the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # Picked up front: each participant is told its cluster (the seed's three, on free ports).
        self.ports: dict[int, int] = {n: pick_port() for n in (1, 2, 3)}
        self.participants: dict[int, NodeProcess] = {}
        self.procs: list[NodeProcess] = []

    def argv(self, command: str) -> list[str]:
        words = in_tour(command)
        if words[0] == "harness.participant":
            members = ",".join(f"127.0.0.1:{self.ports[n]}" for n in sorted(self.ports))
            words += ["--port", str(self.ports[int(words[1])]), "--cluster", members]
        elif words[0] in ("harness.client", "harness.status"):
            words += ["--servers", ",".join(f"127.0.0.1:{self.ports[n]}" for n in sorted(self.ports))]
        return ["-m", *words]

    def participant(self, command: str) -> NodeProcess:
        n = int(in_tour(command)[1])
        proc = self.start(command)
        m = proc.wait_for(r" listening addr=127\.0\.0\.1:(\d+) ")
        self.ports[n] = int(m.group(1))
        self.participants[n] = proc
        return proc

    def start(self, command: str) -> NodeProcess:
        proc = NodeProcess(self.argv(command), self.workdir)
        self.procs.append(proc)
        return proc

    def run(self, command: str, status: int) -> str:
        done = subprocess.run(
            [sys.executable, *self.argv(command)],
            cwd=self.workdir,
            env=env80(),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert done.returncode == status, f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def ctrl_c(self, n: int) -> None:
        proc = self.participants.pop(n)
        proc.proc.send_signal(signal.SIGINT)
        proc.wait_exit()

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def terminals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Terminals]:
    monkeypatch.setenv("COLUMNS", str(COLUMNS))  # an 80-column terminal, for every process started
    t = Terminals(tmp_path)
    try:
        yield t
    finally:
        t.stop()


def echoed(proc: NodeProcess) -> list[str]:
    return proc.seen


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_steps_1_to_4_by_hand_as_the_tour_shows(terminals: Terminals) -> None:
    t = terminals
    for command in (P1, P2, P3):
        t.participant(command)

    # 1. one client: PREPARE to all, three ok, COMMIT to all; the value on every replica
    out = t.run(CLIENT_42, 0)
    assert len(re.findall(r"-> \S+ PREPARE \(commit\) ", out)) == 3
    assert len(re.findall(r"<- \S+ VOTE ok ", out)) == 3
    assert "decide committed" in out and len(re.findall(r"-> \S+ COMMIT \(alterar\) ", out)) == 3
    assert re.search(r"^committed txid=\S+ value=42 ", out, re.M)
    assert too_wide(out.split("\ncommitted txid=")[0]) == []
    for proc in t.participants.values():
        proc.wait_for(r"durable committed \S+ value=42 version=1")
    out = t.run(STATUS, 0)
    assert "consistent: storage_server=42 version=1" in out and len(re.findall(r" 42 +1 +- ", out)) == 3
    assert too_wide(out) == []

    # 2. two clients at once: the lock, a NOK, an ABORT everywhere
    a, b = t.start(CLIENT_1), t.start(CLIENT_2)
    statuses = sorted([a.wait_exit(WAIT), b.wait_exit(WAIT)])
    a.stop(), b.stop()  # their output read to the end
    results = [line for line in _all_lines(a) + _all_lines(b) if line.startswith(("committed", "aborted"))]
    aborted = [line for line in results if line.startswith("aborted") and "voted NOK: locked by" in line]
    assert len(results) == 2 and aborted, results
    assert statuses in ([0, 1], [1, 1])
    out = t.run(STATUS, 0)
    assert "lock" in out and re.search(r"consistent: storage_server=[12] version=[23]", out), out

    # 3. a client killed between the phases: the participants finish it among themselves
    t.run(CLIENT_KILLED, -signal.SIGKILL)
    for proc in t.participants.values():
        proc.wait_for(r"durable committed \S+ value=7 ")  # after --resolve-after, on their own
    assert any(" RESOLVE " in line for proc in t.participants.values() for line in echoed(proc))
    out = t.run(STATUS, 0)
    assert re.search(r"consistent: storage_server=7 ", out), out

    # 4. a participant killed with -9 after its yes vote, then restarted
    t.ctrl_c(2)
    crashing = t.participant(P2_CRASH)
    out = t.run(CLIENT_9, 0)
    assert re.search(r"^committed txid=\S+ value=9 ", out, re.M), out
    crashing.wait_for(r"crash point=after-vote signal=SIGKILL")
    assert crashing.wait_exit() == -signal.SIGKILL
    out = t.run(STATUS, 1)
    assert "no answer" in out and "NOT consistent" in out
    restarted = t.participant(P2)
    assert any(re.search(r"restored prepared \S+ value=9", line) for line in restarted.seen)
    restarted.wait_for(r"durable committed \S+ value=9 ")
    out = t.run(STATUS, 0)
    assert re.search(r"consistent: storage_server=9 ", out), out
    for proc in t.participants.values():
        assert too_wide("\n".join(echoed(proc))) == []


def _all_lines(proc: NodeProcess) -> list[str]:
    return proc.seen + _drain(proc)


def _drain(proc: NodeProcess) -> list[str]:
    out = []
    while not proc.lines.empty():
        line = proc.lines.get_nowait()
        if line is not None:
            out.append(line)
    return out


# ---------------------------------------------------------------- harness.run, steps 1-6


def harness_run(command: str, out: Path) -> subprocess.CompletedProcess[str]:
    words = in_tour(command)
    return subprocess.run(
        [sys.executable, "-m", *words, "--base-port", "0", "--out", str(out)],
        cwd=out.parent,
        env=env80(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", [c for c in RUNS if c != NEMESIS])
def test_harness_run_steps_end_as_the_tour_says(command: str, tmp_path: Path) -> None:
    status, says = RUNS[command]
    done = harness_run(command, tmp_path / "run")
    assert done.returncode == status, done.stdout + done.stderr
    for pattern in says:
        assert re.search(pattern, done.stdout), f"{pattern!r} not in:\n{done.stdout}"
    assert too_wide(done.stdout) == []
    assert (tmp_path / "run" / "report.html").is_file()
    # the repeat command names the run's own flags (the tour relies on it in step 5)
    assert all(w in done.stdout for w in in_tour(command)[1:] if w.startswith("--") and w != "--transactions")


def _faults(folder: Path) -> list[tuple[str, str]]:
    lines = (folder / "nemesis.log").read_text().splitlines()
    return [tuple(re.findall(r" (?:kind|target)=(\S+)", line)) for line in lines if " fault " in line]  # type: ignore[misc]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_step_5_random_faults_from_a_seed_repeat(tmp_path: Path) -> None:
    first, again = harness_run(NEMESIS, tmp_path / "first"), harness_run(NEMESIS, tmp_path / "again")
    for done in (first, again):
        assert done.returncode == 0, done.stdout + done.stderr
        assert too_wide(done.stdout) == []
        for pattern in RUNS[NEMESIS][1]:
            assert re.search(pattern, done.stdout), done.stdout
    assert "--nemesis kill-participant,kill-client,pause,partition" in " ".join(first.stdout.split())
    a, b = _faults(tmp_path / "first"), _faults(tmp_path / "again")
    # The same faults against the same targets, in the same order (a fault timed for the
    # last moments may fall after one run's clients stopped: compare what both injected).
    n = min(len(a), len(b))
    assert n >= 1 and a[:n] == b[:n], (a, b)


# ---------------------------------------------------------------- the simulator, steps 6-7


def sim(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *in_tour(command)], env=env80(), capture_output=True, text=True, timeout=WAIT * 3
    )


def test_step_6_the_explorer_finds_the_broken_client_with_a_six_step_trace() -> None:
    done = sim(EXPLORE)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "counterexample (shortest):" in done.stdout
    # "Six steps": a refusal, and the client reporting COMMITTED anyway (which participant
    # refuses may vary with the explorer's order of search; the length is the shortest).
    steps = re.findall(r"^\s+(\d+)\. ", done.stdout, re.M)
    assert steps == [str(i) for i in range(1, 7)], done.stdout
    assert "vote=NOK code=locked" in done.stdout and "reports COMMITTED to its user" in done.stdout
    assert re.search(r"VIOLATION client told the truth: client\d reports t\d COMMITTED", done.stdout)
    assert "--variant count-no-as-yes" in done.stdout  # the repeat command keeps the variant
    correct = subprocess.run(
        [sys.executable, "-m", "harness.sim", "explore", "--max-states", "2000"],
        env=env80(),
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
    )
    assert "VIOLATION" not in correct.stdout  # the real protocol: nothing within the same states


def test_step_7_random_simulations_pass() -> None:
    done = sim(RANDOM)
    assert done.returncode == 0 and "200 runs" in done.stdout and "no violation" in done.stdout, done.stdout


# ---------------------------------------------------------------- the variants and the repeat command


def test_installing_a_variant_breaks_the_real_coordinator_and_undo_restores_it() -> None:
    def decide_after_one_no() -> co.Result | None:
        core = co.CoordinatorCore(txid="t1", value=1, participants=("a", "b"))
        core.start()
        core.on_reply("a", Vote(txid="t1", yes=True))
        core.on_reply("b", Vote(txid="t1", yes=False))
        return core.result

    assert decide_after_one_no() is co.Result.ABORTED
    undo = variants.install("count-no-as-yes")
    try:
        assert decide_after_one_no() is co.Result.COMMITTED
    finally:
        undo()
    assert decide_after_one_no() is co.Result.ABORTED
    with pytest.raises(ValueError, match="known: count-no-as-yes"):
        variants.install("no-such-variant")


def test_the_repeat_command_keeps_the_runs_faults() -> None:
    crash = with_default_timeouts(RunConfig(clients=1, crash=("client:after-prepare",)))
    assert repeat_command(crash, 5) == "python -m harness.run --clients 1 --crash client:after-prepare --seed 5"
    faults = with_default_timeouts(RunConfig(clients=3, nemesis=parse_nemesis("pause,partition")))
    assert repeat_command(faults, 7) == "python -m harness.run --clients 3 --nemesis pause,partition --seed 7"
    variant = RunConfig(variant="count-no-as-yes")
    assert repeat_command(variant, 1).endswith("--variant count-no-as-yes --seed 1")


# ---------------------------------------------------------------- the pictures


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_picture_script_photographs_a_real_run(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install '.[test]')")
    if chromium.binary() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; CI installs it)")
    done = subprocess.run(
        [sys.executable, "-m", "harness.tour", "pictures", "--only", "1-one-client", "--out", str(tmp_path / "pics")],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [png] = (tmp_path / "pics").iterdir()
    data = png.read_bytes()
    assert png.name == "1-one-client.png" and data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (pictures.VIEWPORT["width"], pictures.VIEWPORT["height"])
    assert 10_000 < len(data) <= pictures.MAX_BYTES  # a drawn page, not a blank one
