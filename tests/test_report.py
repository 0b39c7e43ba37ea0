"""The report: what a run folder's report.html, history.jsonl and events.jsonl hold.

Theory of operation. A hand-made run folder with known messages (one
transaction: PREPARE, votes, a COMMIT lost on its way to server3, which then
asks server1 with RESOLVE) pins what is read and drawn: each message matched
from its send to its receipt across the ephemeral ports the participants see,
the lost one a stub, the lock intervals, the history in Jepsen's form, every
line in events.jsonl. The page's packed columns are decoded here as the
browser does. Real runs, one with faults and one with a broken coordinator,
are opened in headless Chromium (tests/test_report_browser.py).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest
from report_folders import ADDRESS, EXPECTED, PARTICIPANTS, T0, TX, Folder, one_transaction

from harness.events.log import utc_timestamp
from harness.protocol.messages import format_fields
from harness.report import history, html
from harness.report.columns import Kind, Mark, Result
from harness.report.files import write_all
from harness.report.rundata import read_run

ROOT = Path(__file__).resolve().parent.parent


def test_messages_are_matched_send_to_receipt_across_ephemeral_ports(tmp_path: Path) -> None:
    folder, _ = one_transaction(tmp_path)
    data = read_run(folder)
    assert data.lanes == ["client1", "server1", "server2", "server3"]  # no "others": every sender resolved
    got = sorted(
        (Kind(k), data.lanes[s], data.lanes[d], r >= 0)
        for k, s, d, r in zip(data.m_kind, data.m_src, data.m_dst, data.m_recv, strict=True)
    )
    assert got == EXPECTED
    for i in range(len(data.m_send)):  # a receipt is never before its send
        assert data.m_send[i] >= 0 and (data.m_recv[i] < 0 or data.m_recv[i] >= data.m_send[i])
        assert data.txids[data.m_tx[i]] == TX
    # each end cites its own line: the send line's text is in the sender's log at that number
    logs = {n: (folder / f"{n}.log").read_text().splitlines() for n in data.lanes}
    for i in range(len(data.m_send)):
        sent = logs[data.lanes[data.m_src[i]]][data.m_send_line[i] - 1]
        assert " send " in sent and f"msg={Kind(data.m_kind[i]).name.split('_')[0]}" in sent
        if data.m_recv[i] >= 0:
            assert " recv " in logs[data.lanes[data.m_dst[i]]][data.m_recv_line[i] - 1]


def test_lock_intervals_run_from_the_yes_vote_to_the_decision(tmp_path: Path) -> None:
    folder, known = one_transaction(tmp_path)
    data = read_run(folder)
    intervals = {data.lanes[lane]: (a, b) for lane, a, b in zip(data.l_lane, data.l_from, data.l_to, strict=True)}
    assert intervals == {s: (known[f"prepared {s}"], known[f"committed {s}"]) for s in ADDRESS}
    assert data.n_t == []  # nobody was refused
    kinds = [Mark(k) for k, lane in zip(data.k_kind, data.k_lane, strict=True) if data.lanes[lane] == "server3"]
    assert kinds == [Mark.START, Mark.PREPARED, Mark.TIMEOUT, Mark.COMMITTED]


def test_history_is_an_invoke_then_its_completion_in_jepsen_form(tmp_path: Path) -> None:
    folder, known = one_transaction(tmp_path)
    path = history.write(folder, read_run(folder))
    ops = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(o["type"], o["process"], o["f"], o["value"], o["txid"], o["time"]) for o in ops] == [
        ("invoke", 0, "write", 7, TX, known["begin"] * 1000),
        ("ok", 0, "write", 7, TX, known["end"] * 1000),
    ]
    assert ops[1]["cause"] == "all-yes" and ops[1]["latency_ms"] == 3.0


def test_client_killed_mid_transaction_completes_as_info_and_its_successor_is_a_new_process(tmp_path: Path) -> None:
    f = Folder()
    f.emit("client1", "connected", ("pid", 2), ("participants", PARTICIPANTS))
    f.emit("client1", "begin", ("txid", TX), ("value", 7), ("participants", PARTICIPANTS))
    f.emit("client1", "connected", ("pid", 3), ("participants", PARTICIPANTS))  # the client that takes over
    f.emit("client1", "begin", ("txid", "client1-b-1"), ("value", 7), ("participants", PARTICIPANTS))
    folder = f.write(tmp_path / "killed")
    data = read_run(folder)
    ops = history.operations(data)
    assert [(o["type"], o["process"], o["txid"]) for o in ops] == [
        ("invoke", 0, TX),
        ("invoke", 1, "client1-b-1"),  # process 0 + 1 client
        ("info", 0, TX),
        ("info", 1, "client1-b-1"),
    ]
    assert Result.ABANDONED in data.o_result


def test_events_jsonl_holds_every_line_with_its_fields(tmp_path: Path) -> None:
    folder, _ = one_transaction(tmp_path)
    # a quoted value with an escape, and a torn line (skipped: the checker flags it)
    quoted = format_fields([("error", 'a "b" c')])
    with open(folder / "server2.log", "a") as log:
        log.write(f"{utc_timestamp(T0 + 1)} server2 error {quoted}\ntorn li\n")
    with open(folder / "events.jsonl", "w") as out:
        data = read_run(folder, out)
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    lines = {n: (folder / f"{n}.log").read_text().splitlines() for n in data.lanes}
    assert len(events) == data.lines == sum(len(v) for v in lines.values()) - 1
    for e in events:
        text = lines[e["node"]][e["line"] - 1]
        assert e["file"] == f"{e['node']}.log" and text.startswith(f"{e['ts']} {e['node']} {e['event']}")
    assert [e["fields"] for e in events if e["event"] == "error"] == [{"error": 'a "b" c'}]
    vote = next(e for e in events if e["fields"].get("msg") == "VOTE" and e["event"] == "send")
    assert vote["fields"] == {"peer": "127.0.0.1:50001", "msg": "VOTE", "txid": TX, "vote": "ok"}


def _packed(page: str) -> tuple[dict[str, Any], bytes]:
    header = json.loads(re.search(r"<script id=header type=application/json>(.*?)</script>", page, re.S)[1])  # type: ignore[index]
    blob = re.search(r"<script id=blob type=application/octet-stream>(.*?)</script>", page, re.S)[1]  # type: ignore[index]
    return header, gzip.decompress(base64.b64decode(blob))


def _column(header: dict[str, Any], raw: bytes, name: str) -> list[Any]:
    code, offset, size = header["columns"][name]
    return list(array(code, raw[offset : offset + size]))


def _cumulative(values: list[int]) -> list[int]:
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out


def test_page_packs_every_message_and_fetches_nothing(tmp_path: Path) -> None:
    folder, _ = one_transaction(tmp_path)
    data = read_run(folder)
    page = html.page(data, None)
    header, raw = _packed(page)
    # as the browser decodes them: times from deltas, in time order
    times = _cumulative(_column(header, raw, "m_t"))
    durations = _column(header, raw, "m_dur")
    kinds = _column(header, raw, "m_kind")
    assert times == sorted(data.m_send)
    assert sorted((t, t + d if d >= 0 else -1) for t, d in zip(times, durations, strict=True)) == sorted(
        zip(data.m_send, data.m_recv, strict=True)
    )
    assert sorted(k & 15 for k in kinds) == sorted(data.m_kind) and header["messages"] == len(EXPECTED)
    # no script, style or font from anywhere: everything is inline
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "@import" not in page and "url(http" not in page


def test_report_command_writes_the_files_and_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder, _ = one_transaction(tmp_path)
    cli = [sys.executable, "-m", "harness.report"]
    done = subprocess.run([*cli, str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("report.html", "history.jsonl", "events.jsonl"):
        assert (folder / name).stat().st_size > 0
    header, _ = _packed((folder / "report.html").read_text())
    assert header["checked"] and header["violations"] == []
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = subprocess.run([*cli, str(empty)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "run.json" in refused.stderr
    assert not (empty / "report.html").exists()


def test_violations_link_to_the_time_and_lane_of_each_cited_line(tmp_path: Path) -> None:
    folder, known = one_transaction(tmp_path)
    # server3 aborts where the others committed: the checker cites both lines
    log = (
        (folder / "server3.log")
        .read_text()
        .replace("state=committed value=7 version=1", "state=aborted value=7 version=0")
    )
    (folder / "server3.log").write_text(log)
    write_all(folder, events=False)
    header, _ = _packed((folder / "report.html").read_text())
    agreement = [v for v in header["violations"] if v["kind"] == "agreement"]
    assert agreement and agreement[0]["txid"] == TX
    cited = {(header["lanes"][e["lane"]], e["t"]) for e in agreement[0]["evidence"]}
    assert ("server3", known["committed server3"]) in cited


@pytest.mark.parametrize("bad", ["", "not a log line at all\n", "2026-13-45T99:99:99.000000Z x y\n"])
def test_damaged_logs_do_not_stop_the_report(tmp_path: Path, bad: str) -> None:
    folder, _ = one_transaction(tmp_path)
    (folder / "client1.log").write_text(bad)
    data = read_run(folder)
    assert data.lanes[0] == "client1" and html.page(data, None)


def test_fault_windows_come_from_nemesis_log_with_the_nodes_they_touch(tmp_path: Path) -> None:
    folder, _ = one_transaction(tmp_path)
    links = "server1->server3,server2->server3,server3->server1,client1->server3"
    quoted = format_fields([("target", "server3 isolated")])
    lines = [
        f"{utc_timestamp(T0 + 0.0055 + 5e-7)} nemesis fault id=1 kind=partition {quoted} t=0.005 links={links}",
        f"{utc_timestamp(T0 + 0.0075 + 5e-7)} nemesis fault id=2 kind=pause target=server2 t=0.007 pid=9",
        f"{utc_timestamp(T0 + 0.0105 + 5e-7)} nemesis heal id=1 kind=partition {quoted} t=0.010",
    ]
    (folder / "nemesis.log").write_text("".join(line + "\n" for line in lines))
    data = read_run(folder)
    by_id = {f["id"]: f for f in data.faults}
    assert (by_id["1"]["kind"], by_id["1"]["lanes"], by_id["1"]["start"], by_id["1"]["end"]) == (
        "partition",
        ["server3"],  # the isolated node: on every link cut
        4500,
        9500,
    )
    assert (by_id["2"]["lanes"], by_id["2"]["end"]) == (["server2"], -1)  # never healed
    paused = [i for i, k in enumerate(data.k_kind) if k == Mark.PAUSE]
    assert [(data.lanes[data.k_lane[i]], data.k_line[i]) for i in paused] == [("server2", -2)]  # nemesis.log:2
