"""What a person at the terminal sees: reports that fit 80 columns, compact echoed events, the
progress line, throughput and fairness. Reports come from real runs (processes on ephemeral ports)."""

from __future__ import annotations

import io
import json
import multiprocessing
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cluster, child_env

from harness.console.terminal import clip, fit_table, shell_wrap, terminal_width, wrap
from harness.experiment.config import RunConfig
from harness.experiment.progress import Progress
from harness.experiment.runner import run
from harness.node.watch import Echo, LogTail, compact, short_txid
from harness.report import fairness, summary, tables
from harness.verify.checker import check_run
from harness.verify.model import CheckReport, ClientStats, Violation, ViolationKind


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory: pytest.TempPathFactory) -> CheckReport:
    """A real run with contention and a participant crash: every table and figure has rows."""
    folder = tmp_path_factory.mktemp("term") / "run"
    config = RunConfig(clients=6, transactions=4, base_port=0, out=folder, crash=("participant:after-vote",))
    run(config)
    assert multiprocessing.active_children() == []
    return check_run(folder)


def _fits(text: str, width: int) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert too_wide == [], "\n".join(too_wide)


@pytest.mark.parametrize("width", [80, 60])
def test_a_real_report_fits_the_terminal_and_keeps_every_client(crashed_run: CheckReport, width: int) -> None:
    command = crashed_run.run["command"] + " --out reports/a-folder-with-a-long-name-to-wrap"
    extra = ["", *shell_wrap("repeat it:  ", command, width)]
    text = tables.render(crashed_run, width=width, extra=extra)
    _fits(text, width)
    full = tables.render(crashed_run, extra=extra)
    assert max(len(line) for line in full.splitlines()) > width  # the fitting had work to do
    for c in crashed_run.clients:  # every client's row survives folding, its committed count beside its name
        assert re.search(rf"^{c.name}\s+{c.attempted}\s+{c.committed}\b", text, re.M), text
    assert crashed_run.faults and "crash" in text
    # the command, wrapped with continuations, is still the same command
    lines = [line for line in text.splitlines() if line.startswith("repeat it:") or line.startswith("    ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("repeat it:"))
    joined = ""
    for line in lines[start:]:
        joined += line.removeprefix("repeat it:") + " "
        if not line.endswith("\\"):
            break
    assert shlex.split(joined.replace("\\ ", " ")) == shlex.split(command)


def test_columns_that_are_zero_everywhere_are_hidden_and_the_others_kept() -> None:
    headers = ["client", "committed", "aborted\ntimeout", "unknown", "p50 ms"]
    rows = [["client1", 4, 0, 0, "1.5"], ["client2", 0, 0, 0, "2.5"]]
    text = fit_table(headers, rows, 80)
    assert "timeout" not in text and "unknown" not in text
    assert "committed" in text and "p50 ms" in text
    assert "unknown" in fit_table(headers, rows, 80, keep=(0, 3))
    assert "unknown" in fit_table(headers, rows, None)  # piped: the table as it is


def test_a_table_too_wide_is_folded_repeating_its_key_column() -> None:
    headers = ["client", *(f"figure{i:02d}" for i in range(12))]
    rows = [[f"client{n}", *(n * 100 + i for i in range(12))] for n in range(1, 4)]
    text = fit_table(headers, rows, 50)
    _fits(text, 50)
    folds = text.split("\n\n")
    assert len(folds) > 1 and all(fold.lstrip().startswith("client") for fold in folds)
    for i in range(12):
        assert f"figure{i:02d}" in text and f"{300 + i}" in text


def test_prose_and_quoted_log_lines_fit(crashed_run: CheckReport) -> None:
    evidence = "server1.log:12: " + "x" * 300
    crashed_run_violated = CheckReport(
        crashed_run.folder,
        [Violation(ViolationKind.AGREEMENT, "t1", "a message " * 30, (evidence,))],
        crashed_run.clients,
        crashed_run.replicas,
        crashed_run.lines,
        crashed_run.run,
    )
    text = tables.render(crashed_run_violated, width=80)
    _fits(text, 80)
    assert "VIOLATION: 1 violation found" in text and "…" in text
    assert wrap("word " * 40, 30)[1].startswith("    ")
    assert clip("abcdef", 4) == "abc…" and clip("abc", 4) == "abc"


def test_width_is_columns_then_the_terminal_then_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal_width(io.StringIO()) is None  # piped, no COLUMNS: whole lines
    monkeypatch.setenv("COLUMNS", "72")
    assert terminal_width(io.StringIO()) == 72


def test_throughput_and_fairness_are_in_the_tables_and_summary(crashed_run: CheckReport, tmp_path: Path) -> None:
    committed = sum(c.committed for c in crashed_run.clients)
    seconds = fairness.run_seconds(crashed_run)
    assert seconds is not None and seconds > 0
    rate = fairness.committed_per_second(crashed_run)
    assert rate == pytest.approx(committed / seconds)
    text = tables.render(crashed_run, width=80)
    assert f"throughput: {rate:.1f} committed/s ({committed} commits" in text
    assert "Jain's index" in text
    data = json.loads(json.dumps(summary.summary(crashed_run)))
    assert data["committed_per_s"] == pytest.approx(rate, abs=0.001)
    fair = data["fairness"]
    counts = [c.committed for c in crashed_run.clients]
    assert (fair["fewest_commits"], fair["most_commits"]) == (min(counts), max(counts))
    assert fair["jain_index"] == pytest.approx(sum(counts) ** 2 / (len(counts) * sum(x * x for x in counts)), abs=1e-4)
    assert data["schema_version"] == summary.SCHEMA_VERSION and data["version"]
    # typed numbers: a fault's time and pid are numbers, not strings
    for f in data["faults"]:
        assert isinstance(f["t"], float) and isinstance(f["id"], int)
        assert "pid" not in f or isinstance(f["pid"], int)


def test_jain_index_and_uneven_flag() -> None:
    assert fairness.jain_index([5, 5, 5, 5]) == 1.0
    assert fairness.jain_index([20, 0, 0, 0]) == pytest.approx(0.25)
    assert fairness.jain_index([]) is None
    report = CheckReport(
        Path("."),
        [],
        [ClientStats(name="client1", committed=40), ClientStats(name="client2", committed=768)],
        [],
        0,
        {},
    )
    line = fairness.fairness_line(report)
    assert line is not None and "fewest commits 40 (client1), most 768 (client2)" in line and "UNEVEN" in line
    # the remedy named is a flag the run did not have already
    assert line.endswith("try --retry backoff")
    report.run = {"config": {"retry": "backoff", "conflict": "nok"}}
    assert (fairness.fairness_line(report) or "").endswith("(the oldest operation waits instead of losing)")
    report.run = {"config": {"retry": "backoff", "conflict": "wait-die"}}
    assert (fairness.fairness_line(report) or "").endswith("some clients starved")
    report.run = {"config": {"retry": "backoff", "conflict": "nok", "backend": "postgres"}}  # not our participants
    assert (fairness.fairness_line(report) or "").endswith("some clients starved")


LOG = [
    "2026-11-30T06:22:58.438363Z server1 recv peer=127.0.0.1:36802 msg=PREPARE "
    "txid=client26872-0615a8336cc9-1 value=42 participants=127.0.0.1:21001,127.0.0.1:21002,127.0.0.1:21003",
    "2026-11-30T06:22:58.439434Z server1 durable txid=client26872-0615a8336cc9-1 state=prepared value=42 "
    'version=0 participants=127.0.0.1:21001,127.0.0.1:21002,127.0.0.1:21003 why="vote yes"',
    "2026-11-30T06:22:58.439484Z server1 send peer=127.0.0.1:36802 msg=VOTE txid=client26872-0615a8336cc9-1 vote=NOK "
    "code=locked",
    "2026-11-30T06:22:58.440261Z server1 recv peer=127.0.0.1:36802 msg=COMMIT txid=client26872-0615a8336cc9-1",
]


def test_compact_lines_keep_time_direction_verb_seed_word_and_transaction() -> None:
    prepare, durable, vote, commit = (compact(line) for line in LOG)
    assert prepare == "06:22:58.438 <- 127.0.0.1:36802 PREPARE (commit) client26872…-1 value=42"
    assert durable == "06:22:58.439 durable prepared client26872…-1 value=42 (vote yes)"
    assert vote == "06:22:58.439 -> 127.0.0.1:36802 VOTE NOK locked client26872…-1"
    assert commit == "06:22:58.440 <- 127.0.0.1:36802 COMMIT (alterar) client26872…-1"
    assert compact(LOG[0], node=True).startswith("06:22:58.438 server1 <- ")
    assert all(len(compact(line)) < 80 <= len(line) for line in LOG[:2])
    assert compact("not an event line") == "not an event line"
    assert short_txid("c3-5f2a9c1b7e44-12 and c3-5f2a9c1b7e44-13") == "c3…-12 and c3…-13"


def test_echo_compacts_cuts_and_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    echo = Echo(out, skip=frozenset({"durable"}))
    echo.write("".join(line + "\n" for line in LOG))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(len(line) <= 40 for line in lines)
    assert lines[0].startswith("06:22:58.438 <- ") and lines[0].endswith("…")


def test_log_tail_returns_whole_lines_once_in_time_order(tmp_path: Path) -> None:
    tail = LogTail(tmp_path)
    (tmp_path / "b.log").write_text(LOG[1] + "\n" + LOG[3][:30])  # the last line still being written
    (tmp_path / "a.log").write_text(LOG[0] + "\n")
    assert tail.poll() == [LOG[0], LOG[1]]
    with open(tmp_path / "b.log", "a") as f:
        f.write(LOG[3][30:] + "\n")
    assert tail.poll() == [LOG[3]]
    assert tail.poll() == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_done_of_total_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    p = Progress(total=50, stream=_Terminal())
    p.started -= 10.0  # ten seconds ago
    for done in range(1, 26):
        p.counts["committed"] = done
        p.done = done
    text = p.text(p.started + 10.0)
    assert text.startswith("25/50 transactions (25 committed, 0 aborted, 0 unknown), 10.0s, about 10s left")
    timed = Progress(total=None, duration=30.0, stream=_Terminal())
    assert "about 20s left" in timed.text(timed.started + 10.0)
    p.show(force=True)
    assert p.stream.getvalue().startswith("\r\x1b[K25/50 transactions")


def test_client_verbose_prints_every_send_and_reply_as_the_seed_did(cluster: Cluster) -> None:
    for n in (1, 2, 3):
        cluster.start_participant(n)
    done = cluster.client("-v", "--value", "42")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for pattern in (
        r"-> 127\.0\.0\.1:\d+ PREPARE \(commit\) client\d+…-1 value=42$",
        r"<- 127\.0\.0\.1:\d+ VOTE ok client\d+…-1$",
        r"-> 127\.0\.0\.1:\d+ COMMIT \(alterar\) client\d+…-1$",
        r"<- 127\.0\.0\.1:\d+ OUTCOME committed client\d+…-1$",
    ):
        assert sum(bool(re.search(pattern, line)) for line in lines) == 3, (pattern, done.stdout)
    decided = next(i for i, line in enumerate(lines) if " decide committed " in line)
    first_commit = next(i for i, line in enumerate(lines) if "COMMIT (alterar)" in line)
    assert max(i for i, line in enumerate(lines) if " VOTE ok " in line) < decided < first_commit
    assert any(line.startswith("committed txid=") for line in lines)
    assert all(len(line) <= 100 for line in lines), done.stdout
    quiet = cluster.client("--value", "43")
    assert quiet.stdout.count("\n") == 1 and quiet.stdout.startswith("committed txid=")


def test_run_watch_streams_every_nodes_events_before_the_report(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.run", "--clients", "2", "--transactions", "1", "--base-port", "0", "--watch"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = done.stdout.index("client   ") if "client   " in done.stdout else done.stdout.index("client  ")
    events = done.stdout[:report].splitlines()
    for who in ("server1", "server2", "server3", "client1", "client2"):
        assert any(re.match(rf"\d\d:\d\d:\d\d\.\d{{3}} {who} ", line) for line in events), who
    assert sum(" PREPARE (commit) " in line for line in events) == 12  # 2 clients x 3 participants, sent and received
    assert "CONSISTENT" in done.stdout[report:]
    unwatched = subprocess.run(
        [sys.executable, "-m", "harness.run", "--clients", "2", "--transactions", "1", "--base-port", "0"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unwatched.returncode == 0 and unwatched.stdout.startswith("client ")
