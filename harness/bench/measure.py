"""Measurements of the product itself: runs through the runner, start-up, resident memory."""

from __future__ import annotations

import io
import math
import multiprocessing.connection
import os
import resource
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from harness.bench.floor import HOST, PARTICIPANTS, STARTUP_CLIENTS, await_all, fork, start_echoes
from harness.bench.stats import log_time, pct
from harness.events.log import read_log
from harness.events.schema import BEGIN, CONNECTED, LISTENING, OUTCOME, EventKind
from harness.experiment.children import client_child, participant_child
from harness.experiment.config import RunConfig
from harness.experiment.processes import MP, READY_TIMEOUT, Processes, RunError, await_ready
from harness.experiment.runner import run
from harness.experiment.workload import ClientConfig, RetryMode
from harness.node.serve import ParticipantConfig
from harness.verify.checker import check_run
from harness.verify.model import CheckReport

RESULT_WAIT = 60.0  # seconds the memory measurement waits for one transaction before giving up


def _client_window(folder: Path, clients: list[str]) -> float:
    """Seconds from the first ``begin`` to the last ``outcome`` in the clients' logs."""
    begins = [line.ts for name in clients for line in read_log(folder / f"{name}.log") if line.event == BEGIN.name]
    ends = [line.ts for name in clients for line in read_log(folder / f"{name}.log") if line.event == OUTCOME.name]
    if not begins or not ends:
        raise RunError(f"{folder}: no transaction in the clients' logs")
    return log_time(max(ends)) - log_time(min(begins))


def _first_event(path: Path, kind: EventKind) -> float:
    """When an event of ``kind`` first appears in an event log."""
    for line in read_log(path):
        if line.event == kind.name:
            return log_time(line.ts)
    raise RunError(f"{path}: no {kind.name} line")


class Runs:
    """Runs experiments through harness.experiment.runner.run in the work folder, and checks each."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.count = 0
        self.inconsistent: list[str] = []

    def run(self, label: str, config: RunConfig) -> tuple[Path, CheckReport, float]:
        """(run folder, its check, CPU seconds of every process of the run)."""
        self.count += 1
        folder = self.workdir / f"{self.count:03d}-{label}"
        config = replace(config, base_port=0, host=HOST, out=folder, seed=config.seed or self.count)
        # The runner reaps every child it starts, so their CPU time lands here.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run(config, progress_stream=io.StringIO())  # a non-terminal stream: no progress line
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        report = check_run(folder)
        if not report.consistent:
            self.inconsistent.append(f"{folder}: {len(report.violations)} violations")
        return folder, report, cpu


def one_client(runs: Runs, durable: bool, transactions: int, participants: int = PARTICIPANTS) -> dict[str, Any]:
    label = "one-client-durable" if durable else "one-client-not-durable"
    folder, report, cpu = runs.run(
        label if participants == PARTICIPANTS else f"{label}-{participants}-participants",
        RunConfig(clients=1, transactions=transactions, durable=durable, participants=participants),
    )
    (c,) = report.clients
    window = _client_window(folder, ["client1"])
    return {
        "committed": c.committed,
        "attempted": c.attempted,
        "tx_s": c.committed / window,
        "p50_ms": pct(c.latencies_ms, 50),
        "p99_ms": pct(c.latencies_ms, 99),
        # every process, start and stop included: per committed transaction
        "cpu_ms_per_tx": cpu / max(1, c.committed) * 1000,
        "consistent": report.consistent,
        "folder": str(folder),
    }


def contention(runs: Runs, clients: int, duration: float) -> dict[str, Any]:
    folder, report, cpu = runs.run(
        f"contention-{clients}", RunConfig(clients=clients, retry=RetryMode.BACKOFF, duration=duration)
    )
    names = [c.name for c in report.clients]
    window = _client_window(folder, names)
    committed = sum(c.committed for c in report.clients)
    aborted = sum(c.aborted_total for c in report.clients)
    return {
        "committed": committed,
        "aborted": aborted,
        "unknown": sum(c.unknown for c in report.clients),
        "window_s": window,
        "committed_s": committed / window,
        "aborts_per_commit": aborted / committed if committed else math.inf,
        "min_client_commits": min(c.committed for c in report.clients),
        "cpu_ms_per_commit": cpu / max(1, committed) * 1000,
        "consistent": report.consistent,
        "folder": str(folder),
    }


def startup(runs: Runs) -> dict[str, float]:
    """The runner's start-up, from the call to run() to the last client's ready,
    read from the timestamps of the participants' ``listening`` and the
    clients' ``connected`` lines (each logged just before its ready message)."""
    t0 = time.time()
    folder, _, _ = runs.run("startup", RunConfig(clients=STARTUP_CLIENTS, participants=PARTICIPANTS, transactions=1))
    participants = [_first_event(folder / f"server{i}.log", LISTENING) for i in range(1, PARTICIPANTS + 1)]
    clients = [_first_event(folder / f"client{i}.log", CONNECTED) for i in range(1, STARTUP_CLIENTS + 1)]
    return {"participants_ready_s": max(participants) - t0, "all_ready_s": max(clients) - t0}


def next_result(parent: multiprocessing.connection.Connection, client: BaseProcess, section: str) -> str:
    """The next transaction's result (committed, aborted, unknown) that a client
    forked by the bench reports on its pipe (harness.experiment.children);
    RunError if it reports none in RESULT_WAIT seconds or exits."""
    while True:
        if not parent.poll(RESULT_WAIT):
            raise RunError(f"the {section} client finished no transaction in {RESULT_WAIT}s")
        try:
            kind, payload = parent.recv()
        except EOFError:
            raise RunError(f"the {section} client exited (code {client.exitcode})") from None
        if kind == "result":
            return str(payload[2])


def proc_status(pid: int, key: str) -> float:
    """A /proc/<pid>/status size (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RunError(f"/proc/{pid}/status has no {key}")


def _private_mib(pid: int) -> float:
    """Memory only this process holds (USS: private clean + dirty pages), in MiB.
    A forked child's VmRSS also counts the pages it still shares with its parent."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def start_participants(
    procs: Processes, folder: Path, *, compact: bool = False
) -> tuple[list[BaseProcess], list[tuple[str, int]]]:
    """Three participants that do not fsync (memory does not depend on it), forked
    by the runner's own child entry point, with their logs and data in ``folder``;
    their processes and addresses once all listen."""
    started = []
    for i in range(1, PARTICIPANTS + 1):
        config = ParticipantConfig(
            node=f"server{i}",
            host=HOST,
            port=0,
            data=folder / "data" / f"server{i}.sqlite3",
            log=folder / f"server{i}.log",
            durable=False,
            compact=compact,
        )
        started.append(fork(procs, participant_child, (config,), f"server{i}"))
    addresses = [(a[0], a[1]) for a in await_all(started)]
    return [p for p, _ in started], addresses


def memory(workdir: Path, transactions: int) -> dict[str, Any]:
    """Resident memory of three participants and one client forked by the
    runner's own child entry points, after ``transactions`` transactions (and
    after half as many, to show growth), beside an idle echo process.

    The participants do not fsync: memory does not depend on it, and the
    measurement takes half the time. The bench runs this first, while its own
    process is as small as the runner's (a forked child's VmRSS counts the
    pages it shares with its parent)."""
    folder = workdir / "memory"
    procs = Processes()
    try:
        echo_proc, _ = start_echoes(procs, 1)[0]
        participants, addresses = start_participants(procs, folder)
        go = MP.Event()
        ccfg = ClientConfig(
            name="client1", servers=addresses, log=folder / "client1.log", values=lambda op: op, count=10**9
        )
        parent, child = MP.Pipe(duplex=False)
        client = procs.start(client_child, (ccfg, child, go), "client1")
        child.close()
        await_ready("client1", client, parent, time.monotonic() + READY_TIMEOUT)
        go.set()

        def sample() -> dict[str, float]:
            assert client.pid is not None and echo_proc.pid is not None
            pids = [p.pid for p in participants if p.pid is not None]
            return {
                "participant_mib": max(proc_status(pid, "VmRSS") for pid in pids),
                "participant_hwm_mib": max(proc_status(pid, "VmHWM") for pid in pids),
                "client_mib": proc_status(client.pid, "VmRSS"),
                "client_hwm_mib": proc_status(client.pid, "VmHWM"),
                "participant_private_mib": max(_private_mib(pid) for pid in pids),
                "client_private_mib": _private_mib(client.pid),
                "echo_private_mib": _private_mib(echo_proc.pid),
                "echo_mib": proc_status(echo_proc.pid, "VmRSS"),
                "bench_mib": proc_status(os.getpid(), "VmRSS"),
            }

        samples = {}
        done = 0
        for target in (transactions // 2, transactions):
            while done < target:
                next_result(parent, client, "memory")
                done += 1
            samples[target] = sample()
        parent.close()
        procs.stop([client])  # first: no transaction is in flight when the participants stop
    finally:
        procs.stop()
    half, full = samples[transactions // 2], samples[transactions]
    return {
        **full,
        "transactions": transactions,
        "participant_growth_mib_per_1000": (full["participant_mib"] - half["participant_mib"])
        / max(1, transactions - transactions // 2)
        * 1000,
        "client_growth_mib_per_1000": (full["client_mib"] - half["client_mib"])
        / max(1, transactions - transactions // 2)
        * 1000,
    }
