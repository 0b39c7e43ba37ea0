"""``python -m harness.postgres.figures``: PostgreSQL beside our participants, measured in the same run.

Theory of operation. The machines here are shared and noisy, so every
PostgreSQL figure is printed beside the same figure for our own participants,
measured moments apart by the same runner, and as a ratio to it:

* one client, ``--duration`` seconds: committed/s, latency p50 and p99;
* 20 clients with ``--retry backoff``: committed/s, aborts per commit;
* an abandoned transaction: client1 SIGKILLed between the phases
  (``--crash client:after-prepare``) while client2 goes on; the time from its
  crash line to the resolver's ``resolved`` line, and that time less
  ``--resolve-after`` (what resolving itself costs). Our participants resolve
  among themselves; their figure is from the crash line to the last
  participant's decision without its client.

Every run is checked; an inconsistent run makes the exit status 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tabulate import tabulate

from harness.events.log import read_log
from harness.experiment.config import Backend, RunConfig, with_default_timeouts
from harness.experiment.runner import run
from harness.experiment.workload import PrepareMode, RetryMode
from harness.verify.checker import check_run
from harness.verify.model import CheckReport, ClientStats

ABANDON_TRIES = 5


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Measured:
    committed_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    aborts_per_commit: float


def _measure(report: CheckReport, folder: Path) -> Measured:
    begins, ends = [], []
    for c in report.clients:
        for line in read_log(folder / f"{c.name}.log"):
            if line.event == "begin":
                begins.append(_ts(line.ts))
            elif line.event == "outcome":
                ends.append(_ts(line.ts))
    window = max(ends) - min(begins) if begins and ends else float("nan")
    committed = sum(c.committed for c in report.clients)
    aborted = sum(c.aborted_total for c in report.clients)
    everyone = ClientStats(name="all", latencies_ms=[x for c in report.clients for x in c.latencies_ms])
    return Measured(committed / window, everyone.latency(0.5), everyone.latency(0.99), aborted / max(1, committed))


def _resolve_time(folder: Path, backend: Backend) -> float | None:
    """Seconds from client1's crash line to the decision made without it."""
    crash = next((_ts(line.ts) for line in read_log(folder / "client1.log") if line.event == "crash"), None)
    if crash is None:
        return None
    if backend is Backend.POSTGRES:
        resolved = [_ts(line.ts) for line in read_log(folder / "resolver.log") if line.event == "resolved"]
    else:
        resolved = [
            _ts(line.ts)
            for path in sorted(folder.glob("server*.log"))
            for line in read_log(path)
            if line.event == "durable"
            and line.fields.get("state") in ("committed", "aborted")
            and line.fields.get("why", "").startswith(("every participant voted yes", "peer "))
        ]
    return max(resolved) - crash if resolved else None


def _show(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


class Figures:
    def __init__(self, workdir: Path, duration: float, resolve_after: float) -> None:
        self.workdir = workdir
        self.duration = duration
        self.resolve_after = resolve_after
        self.inconsistent: list[str] = []
        self.count = 0

    def run(self, label: str, **kw: object) -> tuple[CheckReport, Path]:
        self.count += 1
        folder = self.workdir / f"{self.count:02d}-{label}"
        config = with_default_timeouts(RunConfig(base_port=0, out=folder, seed=self.count, **kw))  # type: ignore[arg-type]
        if "resolve_after" in kw:
            config.resolve_after = float(kw["resolve_after"])  # type: ignore[arg-type]
        run(config)
        report = check_run(folder)
        if not report.consistent:
            self.inconsistent.append(f"{label}: {folder}")
        return report, folder

    def measure(self) -> list[list[object]]:
        rows: list[list[object]] = []
        one: dict[Backend, Measured] = {}
        many: dict[Backend, Measured] = {}
        resolve: dict[Backend, float | None] = {}
        for backend in (Backend.OURS, Backend.POSTGRES):
            report, folder = self.run(f"{backend}-1", backend=backend, clients=1, duration=self.duration)
            one[backend] = _measure(report, folder)
            report, folder = self.run(
                f"{backend}-20", backend=backend, clients=20, duration=self.duration, retry=RetryMode.BACKOFF
            )
            many[backend] = _measure(report, folder)
            # client1 killed between the phases while client2 goes on (so that the run
            # lasts past --resolve-after); a seed where client1's transaction lost every
            # vote leaves nothing to resolve, so the next seed is tried.
            for _ in range(ABANDON_TRIES):
                _, folder = self.run(
                    f"{backend}-abandoned",
                    backend=backend,
                    clients=2,
                    duration=3 * self.resolve_after + 1.0,
                    prepare=PrepareMode.ORDERED,
                    crash=("client:after-prepare",),
                    resolve_after=self.resolve_after,
                )
                resolve[backend] = _resolve_time(folder, backend)
                if resolve[backend] is not None:
                    break

        def row(name: str, ours: float | None, pg: float | None, fmt: str = ".1f") -> list[object]:
            ratio = f"{pg / ours:.2f}" if ours and pg is not None else "-"
            return [name, _show(ours, fmt), _show(pg, fmt), ratio]

        o, p = one[Backend.OURS], one[Backend.POSTGRES]
        rows.append(row("1 client: committed/s", o.committed_per_s, p.committed_per_s))
        rows.append(row("1 client: p50 ms", o.p50_ms, p.p50_ms, ".2f"))
        rows.append(row("1 client: p99 ms", o.p99_ms, p.p99_ms, ".2f"))
        o, p = many[Backend.OURS], many[Backend.POSTGRES]
        rows.append(row("20 clients, backoff: committed/s", o.committed_per_s, p.committed_per_s))
        rows.append(row("20 clients, backoff: aborts per commit", o.aborts_per_commit, p.aborts_per_commit, ".2f"))
        ro, rp = resolve[Backend.OURS], resolve[Backend.POSTGRES]
        rows.append(row(f"abandoned: s to resolve (resolve-after {self.resolve_after:g} s)", ro, rp, ".3f"))
        after = self.resolve_after
        rows.append(
            row(
                "abandoned: s to resolve, less resolve-after",
                None if ro is None else ro - after,
                None if rp is None else rp - after,
                ".3f",
            )
        )
        return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.postgres.figures", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds of transactions per run (default 5)")
    p.add_argument("--resolve-after", type=float, default=1.0, help="the abandoned runs' --resolve-after (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="harness-pg-figures-"))
    workdir.chmod(0o755)  # reachable by the clusters' user when run as root
    try:
        figures = Figures(workdir, args.duration, args.resolve_after)
        rows = figures.measure()
        print(tabulate(rows, headers=["figure", "ours", "postgres", "postgres / ours"], disable_numparse=True))
        for bad in figures.inconsistent:
            print(f"INCONSISTENT: {bad}")
        if args.keep:
            print(f"run folders: {workdir}")
        return 1 if figures.inconsistent else 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
