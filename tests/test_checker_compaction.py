"""The checker on runs whose participants compact (``harness.run --compact``).

Theory of operation. One real compacting run is made per module: its
participants forget decided records, log a ``forgotten`` line for each batch,
and keep a summary in their stores (``final_states.json`` shows it). The
checker must find that run consistent, and must catch each way its logs and
stores could lie about what was forgotten: a record forgotten that was never
durable, a NOK that says "forgotten" while the record is held, a store whose
summary counts other commits than the log forgot, a forgotten commit missing
from the log's account, and replicas that disagree where both kept a version.
Each test copies the run folder, breaks one thing, and asserts the violation.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.experiment.config import RunConfig
from harness.experiment.runner import run
from harness.verify.checker import check_run
from harness.verify.model import CheckReport

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def compacted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compacted") / "run"
    run(RunConfig(clients=2, transactions=40, base_port=0, out=folder, compact=True, seed=5))
    return folder


@pytest.fixture
def folder(compacted: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(compacted, copy)
    return copy


def kinds(report: CheckReport) -> set[str]:
    return {str(v.kind) for v in report.violations}


def first_forgotten(folder: Path, node: str = "server1") -> tuple[str, list[str]]:
    """The first ``forgotten`` line of ``node``'s log and the txids it names."""
    for line in (folder / f"{node}.log").read_text().splitlines():
        if m := re.search(r" forgotten count=\d+ txids=(\S+)", line):
            return line, m.group(1).split(",")
    raise AssertionError(f"{node} forgot nothing: the run is too short to compact")


def final(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "final_states.json").read_text())
    return data


def test_a_compacting_run_forgets_and_is_consistent(compacted: Path) -> None:
    _, txids = first_forgotten(compacted)
    assert txids
    summary = final(compacted)["server1"]["storage"]["forgotten"]
    assert summary["committed"] + summary["aborted"] > 0
    report = check_run(compacted)
    assert report.consistent, [v.message for v in report.violations][:5]


def test_a_record_forgotten_without_ever_being_durable_is_lost(folder: Path) -> None:
    line, _ = first_forgotten(folder)
    stranger = "client9-ffffffffffff-1"
    log = folder / "server1.log"
    log.write_text(log.read_text().replace(line, line.replace(" txids=", f" txids={stranger},"), 1))
    report = check_run(folder)
    assert kinds(report) == {"lost"}, [v.message for v in report.violations]
    assert report.violations[0].txid == stranger


def test_a_nok_saying_forgotten_while_the_record_is_held(folder: Path) -> None:
    log = folder / "server2.log"
    lines = log.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if " durable " in line and "state=committed" in line)
    durable = lines[at]
    txid = re.search(r"txid=(\S+)", durable).group(1)  # type: ignore[union-attr]
    ts = durable.split(" ", 1)[0]
    nok = f"msg=VOTE txid={txid} vote=NOK code=aborted reason=forgotten"
    lines.insert(at + 1, f"{ts} server2 send peer=127.0.0.1:1 {nok}\n")
    log.write_text("".join(lines))
    report = check_run(folder)
    assert "durability" in kinds(report), [v.message for v in report.violations]
    assert any(v.txid == txid and "forgot" in v.message for v in report.violations)


def test_a_store_summary_that_counts_other_commits_than_the_log_forgot(folder: Path) -> None:
    data = final(folder)
    data["server3"]["storage"]["forgotten"]["committed"] += 1
    (folder / "final_states.json").write_text(json.dumps(data))
    report = check_run(folder)
    assert kinds(report) == {"log-storage"}, [v.message for v in report.violations]
    assert "server3" in report.violations[0].message


def test_a_commit_the_store_forgot_but_the_log_does_not_say_so(folder: Path) -> None:
    log = folder / "server2.log"
    text = log.read_text()
    committed = {m.group(1) for m in re.finditer(r" durable txid=(\S+) state=committed", text)}
    line, gone = next(
        (m.group(0), t)
        for m in re.finditer(r"^.* forgotten count=\d+ txids=(\S+).*$", text, re.M)
        for t in m.group(1).split(",")
        if t in committed
    )
    txids = re.search(r" txids=(\S+)", line).group(1)  # type: ignore[union-attr]
    rest = ",".join(t for t in txids.split(",") if t != gone) or "client9-ffffffffffff-1"
    log.write_text(text.replace(line, line.replace(f" txids={txids}", f" txids={rest}"), 1))
    report = check_run(folder)
    assert "log-storage" in kinds(report), [v.message for v in report.violations]
    assert any(v.txid == gone for v in report.violations)


def test_replicas_that_disagree_on_a_version_both_kept(folder: Path) -> None:
    data = final(folder)
    kept = data["server2"]["storage"]["committed"]
    assert kept, "server2 kept no commit: nothing to compare"
    kept[-1][0] = "client9-ffffffffffff-9"
    (folder / "final_states.json").write_text(json.dumps(data))
    report = check_run(folder)
    assert "replicas" in kinds(report), [v.message for v in report.violations]


def test_a_summary_whose_value_another_replica_contradicts(folder: Path) -> None:
    data = final(folder)
    summary = data["server1"]["storage"]["forgotten"]
    others = [item for item in data["server2"]["storage"]["committed"] if item[1] == summary["version"]]
    if not others:  # server2 forgot that version too: give it the commit back, as a store that kept it would
        others = [[f"client9-ffffffffffff-{summary['version']}", summary["version"], summary["storage_server"]]]
        data["server2"]["storage"]["committed"] = sorted(
            [*data["server2"]["storage"]["committed"], others[0]], key=lambda item: item[1]
        )
    summary["storage_server"] = others[0][2] + 1
    (folder / "final_states.json").write_text(json.dumps(data))
    report = check_run(folder)
    assert any("compaction summary holds value" in v.message for v in report.violations), [
        v.message for v in report.violations
    ]
