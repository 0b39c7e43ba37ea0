"""``python -m harness.bench``: how fast the harness runs, as multiples of what the machine allows.

Theory of operation (docs/architecture.md). The machines here are shared and
noisy, so an absolute time means little alone: every figure is printed next to
the floor it should be compared with, measured in the same run, and as a ratio
to it. The floors:

* network: one asyncio client fans a real encoded PREPARE out to three echo
  processes and waits for all three echoes, then does the same with a COMMIT
  (one transaction's two rounds): transactions/s and latency;
* disk: the median fsync of a ~200-byte append in the data directory (a
  durable vote is at least one of those, on the critical path);
* start-up: forking three echo processes and five processes that connect to
  them, each ready by a pipe message, through the runner's harness.experiment.processes;
* memory: the resident size of an idle asyncio echo process forked from the
  same parent;
* checker: reading the same log files line by line and splitting each line.

Every throughput figure comes with the CPU time it cost per transaction, in
all processes together: the floor's from /proc/<pid>/schedstat, a run's from
RUSAGE_CHILDREN (the runner reaps every process it starts), so that a gap to
the floor can be told apart from a machine busy with other work.

The measurements drive the product's own code paths: harness.experiment.runner.run for
the one-client and contention runs and for start-up (read from the event
logs' timestamps: a participant logs ``listening`` and a client ``connected``
just before it reports ready), the runner's child entry points for memory,
and harness.verify.checker.check_run on a synthetic run folder whose lines are
rendered by harness.events from real messages, and compared line shape by
line shape with a real run's.

The rules it keeps: every process is started through harness.experiment.processes and
stopped by its handle; everything listens on 127.0.0.1 ephemeral ports;
nothing sleeps to wait for readiness; every measurement is repeated and its
median reported.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench import report as report_bench
from harness.bench.conflict import CONFLICT_CLIENTS, CONFLICTS, conflict_run, with_ratios
from harness.bench.floor import (
    PARTICIPANTS,
    interpreter_startup,
    measure_fan_out,
    measure_fsync,
    measure_storage_write,
    protocol_lines,
    start_echoes,
    startup_floor,
)
from harness.bench.measure import Runs, contention, memory, one_client, startup
from harness.bench.state import state
from harness.bench.stats import median, pct, say
from harness.bench.synth import check_peak_mib, line_shapes, synthesize_run, time_check, time_floor
from harness.experiment.config import RunConfig
from harness.experiment.processes import Processes, RunError
from harness.experiment.workload import RetryMode
from harness.node import event_loop
from harness.node.event_loop import LoopKind
from harness.protocol.conflict import ConflictPolicy
from harness.verify.model import CheckError

CHECKER_SMALL = 4  # the linearity folder is this many times smaller


# Targets (the brief of the benchmark).
TARGET_NOT_DURABLE = 0.7  # one client, no fsync: at least this times the floor's tx/s


TARGET_CPU = 2.0  # one client, no fsync: CPU per transaction of every process, at most this times the floor's
SHORT_RUN = 10  # transactions of the run whose CPU (start-up and stop, mostly) the marginal figure leaves out


TARGET_DURABLE_RATIO = 0.8  # one client: durable committed/s at least this times not durable's, same run


MANY_PARTICIPANTS = 9
TARGET_MANY_PARTICIPANTS = 0.5  # one client, 9 participants: at least this times 3 participants' committed/s


TARGET_DURABLE_FSYNCS = 3  # one client, durable: p50 at most floor p50 + this many fsyncs


TARGET_CONTENTION_CLIENTS = 20


TARGET_CONTENTION = 0.5  # 20 clients: at least this times one client's committed/s


STARVATION_RUN = 10.0  # seconds: in a run this long, every client commits at least once


TARGET_STARTUP = 0.5  # seconds until three participants and five clients are ready


TARGET_CHECKER = 200_000  # log lines per second
# Peak resident memory checking a 1-million-line folder: 100 MB (issue 16), read as
# the whole process's peak (the stricter reading), in MiB as the table prints it.
TARGET_CHECKER_MIB = 100e6 / 2**20


TARGET_PARTICIPANT_MIB = 40.0


TARGET_CLIENT_MIB = 30.0


TARGET_FLAT_MIB = 5.0  # participant and client RSS within this of their start after a million transactions


SECTIONS = (
    "one-client",
    "uvloop",
    "participants",
    "contention",
    "conflict",
    "startup",
    "memory",
    "checker",
    "report",
    "state",
)


@dataclass
class BenchConfig:
    """What one benchmark run measures, and how much of it."""

    quick: bool = False
    repeat: int = 3  # repetitions of every measurement; medians are reported
    transactions: int = 500  # per floor repetition and per one-client run
    duration: float = STARVATION_RUN  # seconds per contention run
    clients: tuple[int, ...] = (5, 20, 100)  # contention runs
    conflict_clients: tuple[int, ...] = CONFLICT_CLIENTS  # conflict runs, under each policy of ``conflicts``
    conflicts: tuple[ConflictPolicy, ...] = CONFLICTS
    checker_lines: int = 1_000_000  # lines of the large checker folder
    memory_transactions: int = 500  # transactions before resident memory is read
    state_transactions: int = 20_000  # the state section's run (compaction): long enough for a slope
    fsyncs: int = 100  # fsync and storage-write samples per repetition
    sections: tuple[str, ...] = SECTIONS
    workdir: Path | None = None  # None: a temporary folder, removed at the end
    keep: bool = False
    json_path: Path | None = None  # None: reports/bench-<UTC time>.json


QUICK = {
    "repeat": 2,
    "transactions": 100,
    "duration": 1.0,
    "conflict_clients": (1, 20),
    "checker_lines": 100_000,
    "memory_transactions": 100,
    "state_transactions": 2_000,
    "fsyncs": 30,
}


def _medians(reps: list[dict[str, Any]]) -> dict[str, float]:
    """The median of every numeric figure across repetitions."""
    keys = [k for k, v in reps[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return {k: median([float(r[k]) for r in reps]) for k in keys}


def _filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync is free on tmpfs)."""
    real, best, kind = str(path.resolve()), "", "?"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                mount, fstype = line.split()[1:3]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind


class Bench:
    """One benchmark run: measures every section, keeps the raw figures."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.runs = Runs(workdir / "runs")
        self.results: dict[str, Any] = {}

    def execute(self) -> dict[str, Any]:
        c = self.config
        self.results["machine"] = {
            "cpus": os.cpu_count(),
            "load_at_start": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "workdir": str(self.workdir),
            "workdir_filesystem": _filesystem(self.workdir),
        }
        steps: list[tuple[str, Callable[[], None]]] = [
            # Memory and state first: their nodes are forked from this process, and a
            # child's VmRSS counts the pages it still shares with its parent, which the
            # checker's million-line folder later grows past 200 MiB.
            ("memory", self.memory),
            ("state", self.state),
            ("floor", self.floor_and_one_client),
            ("uvloop", self.uvloop),
            ("participants", self.participants),
            ("startup", self.startup),
            ("contention", self.contention),
            ("conflict", self.conflict),
            ("checker", self.checker),
            ("report", self.report),
        ]
        self.results["section_s"] = {}
        self.results["failed_sections"] = {}
        for name, step in steps:
            if name == "floor" or name in c.sections:
                t = time.monotonic()
                if name == "floor":
                    step()  # every other figure is a ratio to it: its failure ends the bench
                else:
                    self.measure_section(name, step)
                self.results["section_s"][name] = time.monotonic() - t
        self.results["machine"]["load_at_end"] = list(os.getloadavg())
        self.results["inconsistent_runs"] = self.runs.inconsistent
        return self.results

    def measure_section(self, name: str, step: Callable[[], None]) -> None:
        """Measure one section; a run that fails there (a child that would not start,
        a check that could not read its folder) is reported, and the others still run."""
        before = set(self.results)
        try:
            step()
        except (RunError, CheckError) as e:
            for key in set(self.results) - before:  # no half-measured section in the table
                del self.results[key]
            self.results["failed_sections"][name] = str(e)
            say(f"{name}: failed, the other sections go on: {e}")

    def floor_and_one_client(self) -> None:
        """Floor repetitions interleaved with the one-client runs, so that both
        see the same moments of a noisy machine."""
        c = self.config
        fsyncs: list[float] = []
        writes: list[float] = []
        probes = self.workdir / "data"
        probes.mkdir(parents=True, exist_ok=True)

        def disk() -> None:
            nonlocal fsyncs, writes
            fsyncs += measure_fsync(probes, c.fsyncs)
            writes += measure_storage_write(probes, c.fsyncs)

        floor, one, addresses = self._floor_and_one_client("floor", disk)
        self.results["floor"] = {
            **floor,
            "fsync_ms": median(fsyncs) * 1000,
            "fsync_p99_ms": pct(fsyncs, 99) * 1000,
            "fsync_samples": len(fsyncs),
            "storage_write_ms": median(writes) * 1000,
            "storage_write_p99_ms": pct(writes, 99) * 1000,
            "line_bytes": [len(line) for line in protocol_lines(addresses)],
        }
        if one:
            self.results["one_client"] = one

    def uvloop(self) -> None:
        """The floor and one client again, every process on uvloop (harness.node.event_loop)."""
        if not event_loop.available(LoopKind.UVLOOP):
            say("uvloop is not installed (pip install '.[fast]'): its figures are left out")
            return
        before = os.environ.get(event_loop.ENV)
        event_loop.choose(LoopKind.UVLOOP)  # this process and every child it forks
        try:
            floor, one, _ = self._floor_and_one_client("uvloop floor", lambda: None)
        finally:
            if before is None:
                os.environ.pop(event_loop.ENV, None)
            else:
                os.environ[event_loop.ENV] = before
        self.results["uvloop"] = {"floor": floor, **({"one_client": one} if one else {})}

    def _floor_and_one_client(
        self, label: str, between: Callable[[], None]
    ) -> tuple[dict[str, Any], dict[str, Any] | None, list[tuple[str, int]]]:
        """(floor medians, one-client figures or None, echo addresses): floor
        repetitions, each followed by ``between`` and the one-client runs."""
        c = self.config
        procs = Processes()
        floor: list[dict[str, float]] = []
        durable: list[dict[str, Any]] = []
        not_durable: list[dict[str, Any]] = []
        try:
            echoes = start_echoes(procs)
            for rep in range(1, c.repeat + 1):
                floor.append(measure_fan_out(echoes, c.transactions))
                between()
                f = floor[-1]
                line = f"{label} {rep}/{c.repeat}: {f['tx_s']:.0f} tx/s, p50 {f['p50_ms']:.2f} ms"
                if "one-client" in c.sections:
                    durable.append(one_client(self.runs, True, c.transactions))
                    not_durable.append(one_client(self.runs, False, c.transactions))
                    if c.transactions > SHORT_RUN:
                        # The floor's CPU counts transactions only: so does the marginal figure,
                        # a run's CPU less a short run's (start-up and stop), per extra transaction.
                        short = one_client(self.runs, False, SHORT_RUN)
                        full = not_durable[-1]
                        extra = full["committed"] - short["committed"]
                        spent = full["cpu_ms_per_tx"] * full["committed"] - short["cpu_ms_per_tx"] * short["committed"]
                        full["marginal_cpu_ms_per_tx"] = spent / extra if extra > 0 else math.nan
                    line += (
                        f"; one client: durable {durable[-1]['tx_s']:.0f} tx/s, "
                        f"not durable {not_durable[-1]['tx_s']:.0f} tx/s"
                    )
                say(line)
        finally:
            procs.stop()
        one = None
        if durable:
            one = {
                "transactions": c.transactions,
                "durable": {"reps": durable, **_medians(durable)},
                "not_durable": {"reps": not_durable, **_medians(not_durable)},
            }
        return {"reps": floor, **_medians(floor)}, one, [a for _, a in echoes]

    def participants(self) -> None:
        """One client with 3 and with MANY_PARTICIPANTS participants, interleaved,
        beside the echo fan-out to as many echo processes (what this machine's
        cores allow: every participant is a process)."""
        c = self.config
        many = MANY_PARTICIPANTS
        procs = Processes()
        echo: dict[int, list[dict[str, float]]] = {PARTICIPANTS: [], many: []}
        runs: dict[int, list[dict[str, Any]]] = {PARTICIPANTS: [], many: []}
        try:
            echoes = {n: start_echoes(procs, n) for n in (PARTICIPANTS, many)}
            for rep in range(1, c.repeat + 1):
                for n in (PARTICIPANTS, many):
                    echo[n].append(measure_fan_out(echoes[n], c.transactions))
                    runs[n].append(one_client(self.runs, False, c.transactions, participants=n))
                say(
                    f"participants {rep}/{c.repeat}: one client not durable, {PARTICIPANTS}: "
                    f"{runs[PARTICIPANTS][-1]['tx_s']:.0f} tx/s, {many}: {runs[many][-1]['tx_s']:.0f} tx/s "
                    f"(echo {echo[PARTICIPANTS][-1]['tx_s']:.0f}, {echo[many][-1]['tx_s']:.0f})"
                )
        finally:
            procs.stop()
        self.results["participants"] = {
            str(n): {
                "participants": n,
                "echo": {"reps": echo[n], **_medians(echo[n])},
                "one_client": {"reps": runs[n], **_medians(runs[n])},
            }
            for n in (PARTICIPANTS, many)
        }

    def memory(self) -> None:
        reps = []
        for rep in range(1, self.config.repeat + 1):
            reps.append(memory(self.workdir / f"memory-{rep}", self.config.memory_transactions))
            m = reps[-1]
            say(
                f"memory {rep}/{self.config.repeat}: participant {m['participant_mib']:.1f} MiB, "
                f"client {m['client_mib']:.1f} MiB, echo {m['echo_mib']:.1f} MiB"
            )
        self.results["memory"] = {"reps": reps, **_medians(reps)}

    def state(self) -> None:
        """Flat state with compaction (harness.bench.state): one long run, sampled 10 times at least."""
        n = self.config.state_transactions
        out = state(self.workdir / "state", n, max(1, n // 20))
        say(
            f"state, {n} transactions: participant {out['participant_mib_start']:.1f} -> "
            f"{out['participant_mib_end']:.1f} MiB ({out['participant_mib_per_100k']:+.2f} MiB per 100k), client "
            f"{out['client_mib_start']:.1f} -> {out['client_mib_end']:.1f} MiB "
            f"({out['client_mib_per_100k']:+.2f} MiB per 100k), store {out['store_kib_end']:.0f} KiB, "
            f"restart {out['restart_ms_end']:.1f} ms"
        )
        self.results["state"] = out

    def startup(self) -> None:
        reps = []
        for rep in range(1, self.config.repeat + 1):
            floor = startup_floor()
            measured = startup(self.runs)
            reps.append(
                {
                    "floor_s": floor,
                    **measured,
                    "python_s": interpreter_startup(None),
                    "import_s": interpreter_startup("harness.run"),
                }
            )
            say(f"start-up {rep}/{self.config.repeat}: {measured['all_ready_s']:.3f} s (floor {floor:.3f} s)")
        self.results["startup"] = {"reps": reps, **_medians(reps)}

    def contention(self) -> None:
        c = self.config
        reps: dict[int, list[dict[str, Any]]] = {n: [] for n in c.clients}
        for rep in range(1, c.repeat + 1):
            for n in c.clients:
                reps[n].append(contention(self.runs, n, c.duration))
                r = reps[n][-1]
                say(
                    f"contention {rep}/{c.repeat}, {n} clients: {r['committed_s']:.0f} committed/s, "
                    f"{r['aborts_per_commit']:.2f} aborts per commit, min {r['min_client_commits']} commits"
                )
        self.results["contention"] = {
            str(n): {
                "clients": n,
                "duration_s": c.duration,
                "reps": rs,
                **_medians(rs),
                "min_client_commits": min(r["min_client_commits"] for r in rs),  # the worst run
            }
            for n, rs in reps.items()
        }

    def conflict(self) -> None:
        """Each policy at each client count, interleaved: rounds of every (policy, count) pair."""
        c = self.config
        reps: dict[str, list[dict[str, Any]]] = {}
        for rep in range(1, c.repeat + 1):
            for n in c.conflict_clients:
                for policy in c.conflicts:
                    r = conflict_run(self.runs, n, c.duration, policy)
                    reps.setdefault(f"{policy}-{n}", []).append(r)
                    say(
                        f"conflict {rep}/{c.repeat}, {policy}, {n} clients: {r['committed_s']:.0f} committed/s, "
                        f"Jain {r['jain']:.2f}, {r['zero_clients']} with no commit"
                    )
        out: dict[str, dict[str, Any]] = {}
        for key, rs in reps.items():
            name, _, count = key.rpartition("-")
            out[key] = {
                "policy": name,
                "clients": int(count),
                "duration_s": c.duration,
                "reps": rs,
                **_medians(rs),
                "zero_clients": max(r["zero_clients"] for r in rs),  # the worst run
            }
        with_ratios(out)
        self.results["conflict"] = out

    def checker(self) -> None:
        c = self.config
        # A small real contended run: the synthetic lines must have its shapes.
        real, _, _ = self.runs.run(
            "checker-reference", RunConfig(clients=3, transactions=10, retry=RetryMode.BACKOFF, durable=False)
        )
        real_shapes = line_shapes(real)
        sizes = {"large": c.checker_lines, "small": c.checker_lines // CHECKER_SMALL}
        folders = {label: self.workdir / f"checker-{label}" for label in sizes}
        lines, made = {}, {}
        for label, wanted in sizes.items():
            t = time.perf_counter()
            lines[label] = synthesize_run(folders[label], wanted)
            made[label] = time.perf_counter() - t
        synthetic_shapes = line_shapes(folders["small"])  # the same generator wrote both
        checks: dict[str, list[float]] = {label: [] for label in sizes}
        floors: dict[str, list[float]] = {label: [] for label in sizes}
        for _ in range(c.repeat):  # interleaved, so that both sizes see the same moments
            for label in sizes:
                checks[label].append(time_check(folders[label], lines[label]))
                floors[label].append(time_floor(folders[label], lines[label]))
        out: dict[str, Any] = {}
        for label in sizes:
            out[label] = {
                "lines": lines[label],
                "synthesized_s": made[label],
                "check_s": median(checks[label]),
                "lines_s": lines[label] / median(checks[label]),
                "floor_s": median(floors[label]),
                "floor_lines_s": lines[label] / median(floors[label]),
                "check_reps_s": checks[label],
                "floor_reps_s": floors[label],
            }
            if label == "large":  # the checker streams: its memory must not grow with the logs
                out[label]["peak_mib"] = check_peak_mib(folders[label])
                out[label]["floor_peak_mib"] = check_peak_mib(None)
            say(
                f"checker, {lines[label]} lines: {out[label]['lines_s']:,.0f} lines/s "
                f"(floor {out[label]['floor_lines_s']:,.0f})"
            )
            if not c.keep:
                shutil.rmtree(folders[label])
        large, small = out["large"], out["small"]
        # time per line at the large size over time per line at the small one: 1.0 is linear
        out["linearity"] = (large["check_s"] / large["lines"]) / (small["check_s"] / small["lines"])
        out["shapes"] = {
            "synthetic": len(synthetic_shapes),
            "synthetic_not_in_real": sorted(map(str, synthetic_shapes - real_shapes)),
            "real_not_in_synthetic": sorted(map(str, real_shapes - synthetic_shapes)),
        }
        if out["shapes"]["synthetic_not_in_real"]:
            self.runs.inconsistent.append(
                f"synthetic checker lines unlike a real run's: {out['shapes']['synthetic_not_in_real'][:3]}"
            )
        self.results["checker"] = out

    def report(self) -> None:
        """report.html on the checker's synthetic folder size (harness.bench.report)."""
        c = self.config
        out = report_bench.measure(self.workdir, c.checker_lines, c.repeat)
        say(
            f"report, {out['lines']} lines: {out['report_s']:.2f}s, {out['ratio']:.2f} x check_run, "
            f"{out['bytes_per_line']:.2f} bytes/line, first paint {out.get('first_paint_ms', float('nan')):.0f} ms"
        )
        self.results["report"] = out
