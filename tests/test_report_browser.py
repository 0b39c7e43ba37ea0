"""report.html in a real browser: headless Chromium opens reports of hand-made and real runs.

Theory of operation. Playwright for Python drives the system's Chromium
(Debian's ``chromium`` package; no browser is downloaded): it reports console
errors and uncaught exceptions, moves the mouse and clicks as a person would,
and takes screenshots. The page exposes ``window.REPORT`` (ready, the number of
messages it decoded and drew, its view, the transaction selected), which the
tests read after real input. Each test writes a screenshot into its tmp
folder for a person to look at. Where Chromium or Playwright is absent, the
tests skip and say which; CI installs both (.ci/run).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from report_folders import TX, one_transaction

from harness.experiment.config import RunConfig
from harness.experiment.runner import run
from harness.protocol import coordinator as co
from harness.protocol.messages import Vote
from harness.report import chromium
from harness.report.columns import Kind
from harness.report.files import write_all

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ("PREPARE", "VOTE", "COMMIT", "ABORT", "RESOLVE", "OUTCOME")


@pytest.fixture
def browser() -> Iterator[Callable[[], Any]]:
    """Launches Chromium when called: after the test's run, since Playwright's
    synchronous API keeps an event loop on this thread that the runner's own
    asyncio.run would refuse."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install '.[test]')")
    binary = chromium.binary()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; CI installs it)")
    with contextlib.ExitStack() as stack:

        def launch() -> Any:
            p = stack.enter_context(sync_api.sync_playwright())
            b = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
            stack.callback(b.close)
            return b

        yield launch


class Page:
    """A report opened in a fresh page, its console watched."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_function("window.REPORT && (REPORT.ready || REPORT.errors.length)", timeout=30_000)

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")


def test_hand_made_report_draws_its_messages_and_hover_and_click_find_them(
    browser: Callable[[], Any], tmp_path: Path
) -> None:
    folder, _ = one_transaction(tmp_path)
    write_all(folder)
    page = Page(browser(), folder / "report.html")
    assert page.js("REPORT.errors") == [] and page.problems == []
    assert page.js("[REPORT.messages, REPORT.drawnMessages]") == [13, 13]
    counts = page.js("REPORT.kindCounts")
    assert {Kind(k).name: n for k, n in enumerate(counts) if n} == {
        "PREPARE": 3, "VOTE_OK": 3, "COMMIT": 3, "OUTCOME": 3, "RESOLVE": 1,
    }  # fmt: skip
    # hover over the middle of the RESOLVE arrow: the tooltip names it and its log lines
    i = page.js(f"Array.from(REPORT.C.m_kind).indexOf({Kind.RESOLVE})")
    x1, y1, x2, y2, _ = page.js(f"REPORT.ends({i})")
    box = page.page.locator("#diagram").bounding_box()
    page.page.mouse.move(box["x"] + (x1 + x2) / 2, box["y"] + (y1 + y2) / 2)
    tip = page.page.locator("#tip").inner_text()
    assert "RESOLVE" in tip and "server3.log:" in tip and "server1.log:" in tip
    # a PREPARE shows the value its client proposed
    i = page.js(f"Array.from(REPORT.C.m_kind).lastIndexOf({Kind.PREPARE})")
    px1, py1, px2, py2, _ = page.js(f"REPORT.ends({i})")
    page.page.mouse.move(box["x"] + (px1 + px2) / 2, box["y"] + (py1 + py2) / 2)
    tip = page.page.locator("#tip").inner_text()
    assert "PREPARE" in tip and "value=7" in tip and "client1.log:" in tip
    page.page.mouse.click(box["x"] + (x1 + x2) / 2, box["y"] + (y1 + y2) / 2)
    assert page.js("REPORT.selected") == TX
    assert TX in page.page.locator("#selection").inner_text()
    page.screenshot(tmp_path / "hand-made.png")


def _protocol_messages(folder: Path, addresses: dict[str, str]) -> int:
    """Messages the logs hold, counted apart from the report's reader: every
    sent line, plus each received line no sent line accounts for (a request
    is known by its receiver, a reply by its sender: the other end is a port)."""
    node_of = {a: n for n, a in addresses.items()}
    sent: Counter[tuple[str, str, str, str]] = Counter()
    received: Counter[tuple[str, str, str, str]] = Counter()
    for log in folder.glob("*.log"):
        for line in log.read_text().splitlines():
            words = line.split()
            if len(words) < 5 or words[2] not in ("send", "recv"):
                continue
            fields = dict(w.split("=", 1) for w in words[3:6] if "=" in w)
            verb, txid, peer, node = fields.get("msg", ""), fields.get("txid", ""), fields["peer"], words[1]
            if verb not in PROTOCOL:
                continue
            if words[2] == "send":
                sent[("to", node_of[peer], verb, txid) if peer in node_of else ("from", node, verb, txid)] += 1
            else:
                received[("from", node_of[peer], verb, txid) if peer in node_of else ("to", node, verb, txid)] += 1
    matched = sum(min(n, sent[k]) for k, n in received.items())
    return sum(sent.values()) + sum(received.values()) - matched


@pytest.mark.slow
def test_report_of_a_real_run_with_faults_draws_every_message_and_zooms(
    browser: Callable[[], Any], tmp_path: Path
) -> None:
    folder = tmp_path / "faults"
    # A count of transactions, not a duration: the run stays under the page's
    # 12,000 messages a frame however fast the machine (about 12 lines each).
    command = [sys.executable, "-m", "harness.run", "--clients", "3", "--transactions", "120", "--base-port", "0",
               "--retry", "backoff", "--nemesis", "kill-participant,kill-client,pause,partition",
               "--nemesis-interval", "0.4", "--seed", "11", "--out", str(folder)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    assert (folder / "report.html").exists() and (folder / "history.jsonl").exists()
    page = Page(browser(), folder / "report.html")
    assert page.js("REPORT.errors") == [] and page.problems == []
    addresses = {p["node"]: p["address"] for p in json.loads((folder / "run.json").read_text())["participants"]}
    counts = page.js("REPORT.kindCounts")
    assert sum(counts[: Kind.STATUS]) == _protocol_messages(folder, addresses)
    assert page.js("REPORT.drawnMessages") == page.js("REPORT.messages")  # all of them: a small run
    faults = page.js("REPORT.header.faults")
    assert faults and all(f["start"] >= 0 for f in faults)
    # zoom in with the wheel: the view narrows around the pointer, and redraws fast
    before = page.js("REPORT.view")
    box = page.page.locator("#diagram").bounding_box()
    page.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 60)
    page.page.mouse.wheel(0, -600)
    page.page.wait_for_function(f"REPORT.view.v1 - REPORT.view.v0 < {(before['v1'] - before['v0']) / 2}")
    assert page.js("REPORT.lastDrawMs") < 1000
    # zoomed in, every message sent in view is drawn (and those received in it)
    assert page.js("REPORT.stride") == 1
    assert page.js("REPORT.drawnMessages") >= page.js("REPORT.visibleMessages") > 0
    page.screenshot(tmp_path / "faults.png")


@pytest.mark.slow
def test_violation_link_moves_the_diagram_to_the_lines_that_prove_it(
    browser: Callable[[], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_reply = co.CoordinatorCore.on_reply

    def counts_no_as_yes(self: co.CoordinatorCore, src: str, msg: Any) -> list[co.CoordinatorAction]:
        if isinstance(msg, Vote) and not msg.yes:
            msg = Vote(txid=msg.txid, yes=True)
        return on_reply(self, src, msg)

    monkeypatch.setattr(co.CoordinatorCore, "on_reply", counts_no_as_yes)  # the runner forks: its clients run this
    folder = tmp_path / "broken"
    run(RunConfig(clients=4, transactions=3, base_port=0, out=folder, seed=20261127))
    write_all(folder)
    page = Page(browser(), folder / "report.html")
    assert page.js("REPORT.errors") == [] and page.problems == []
    violations = page.js("REPORT.header.violations")
    assert violations, "the broken coordinator went unnoticed"
    assert "violation" in page.page.locator("#verdict").inner_text()
    whole = page.js("REPORT.view")
    link = page.page.locator("a.evidence").first
    cited = violations[0]["evidence"][0]
    link.click()
    page.page.wait_for_function("REPORT.jumps === 1")
    page.page.wait_for_function(f"REPORT.view.v1 - REPORT.view.v0 < {(whole['v1'] - whole['v0']) / 2}")
    view = page.js("REPORT.view")
    assert view["v0"] <= cited["t"] <= view["v1"] and view != whole
    assert page.js("REPORT.selected") == violations[0]["txid"]
    page.screenshot(tmp_path / "violation.png")
