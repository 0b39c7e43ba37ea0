"""The nodes on uvloop: chosen once (HARNESS_LOOP), inherited by every child, the run still consistent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.events.log import read_log
from harness.experiment.config import RunConfig
from harness.experiment.runner import run
from harness.node import event_loop
from harness.node.event_loop import LoopKind, LoopUnavailable
from harness.node.tls import TlsError
from harness.node.tls import load as load_tls
from harness.verify.checker import check_run

needs_uvloop = pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed (pip install '.[fast]'; CI has it)"
)


def test_the_default_loop_is_asyncios(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.chosen() is LoopKind.ASYNCIO


def test_a_loop_that_does_not_exist_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "tokio")
    with pytest.raises(LoopUnavailable, match="must be one of asyncio, uvloop"):
        event_loop.chosen()


def test_uvloop_asked_for_but_not_installed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv(event_loop.ENV, "uvloop")
    with pytest.raises(LoopUnavailable, match="not installed"):
        event_loop.chosen()
    with pytest.raises(LoopUnavailable, match="not installed"):
        event_loop.choose(LoopKind.UVLOOP)


@needs_uvloop
def test_a_run_on_uvloop_is_consistent_and_every_node_ran_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(event_loop.ENV, "asyncio")  # recorded first: the test's end puts back what was there
    event_loop.choose(LoopKind.UVLOOP)

    async def loop_name() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__

    assert event_loop.run(loop_name()).startswith("uvloop")
    result = run(RunConfig(clients=3, transactions=5, base_port=0, out=tmp_path / "run", seed=3))
    report = check_run(result.folder)
    assert report.consistent, report.violations
    assert sum(c.committed for c in report.clients) >= 1
    started = [
        line
        for log in sorted(result.folder.glob("*.log"))
        for line in read_log(log)
        if line.event in ("listening", "connected")
    ]
    assert len(started) == 3 + 3 and {line.fields["loop"] for line in started} == {"uvloop"}


@needs_uvloop
def test_tls_on_uvloop_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS is asyncio's own here (its buffers are tuned for asyncio's transport): on
    uvloop it is refused up front, not left to fail at the first handshake."""
    monkeypatch.setenv(event_loop.ENV, "uvloop")
    with pytest.raises(TlsError, match="unset HARNESS_LOOP=uvloop"):
        load_tls(tmp_path, member=True)
